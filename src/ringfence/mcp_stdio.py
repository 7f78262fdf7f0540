"""The stdio transport of ``ringfence mcp``: the SDK's own framing, without its thread hops.

The SDK reads stdin and writes stdout through ``anyio.wrap_file``: every line read, every
write and every flush is a round trip to a worker thread, three per tool call, each a pair
of thread wake-ups on the call's critical path. Here the event loop waits for stdin itself
(``add_reader``) and writes a small response itself when the pipe has room for it (a larger
one goes to a writer thread, in order, so a slow client never stalls the loop). The
messages are the SDK's (``stdio_server`` with our two streams parses and serialises them);
only the byte moving differs.

As the SDK's 2.x transport does, the wire gets private descriptors while the server runs,
and fds 0 and 1 point at /dev/null and stderr: no command or stray ``print`` can read from
or write into the protocol. They are put back when the server ends.
"""

import asyncio
import contextlib
import fcntl
import os
import queue
import select
import threading
from collections.abc import AsyncIterator
from typing import Any

DRAIN_S = 10.0  # at exit: how long the last responses may take to reach the client
INLINE_MAX = 4096  # PIPE_BUF: a message this small is written at once when there is room


class LineReader:
    """``async for line in reader``: the client's newline-framed messages, as text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""
        self._eof = False
        self._pollable = True  # a regular file cannot be polled; it never blocks either

    def __aiter__(self) -> "LineReader":
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line, self._buf = self._buf[: end + 1], self._buf[end + 1 :]
                return line.decode("utf-8", "replace")
            if self._eof:
                if not self._buf:
                    raise StopAsyncIteration
                line, self._buf = self._buf, b""
                return line.decode("utf-8", "replace")
            await self._readable()
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""  # the client is gone: as at the end of its input
            if chunk:
                self._buf += chunk
            else:
                self._eof = True

    async def _readable(self) -> None:
        if not self._pollable:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, wake)
        except (OSError, ValueError):
            self._pollable = False
            return
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)


class LineWriter:
    """``await writer.write(text)``: a message that surely fits in the pipe is written at
    once, on the event loop; a larger one, or any behind one still being written, goes to a
    writer thread, in order, so a client that reads slowly never stalls the loop. ``flush``
    is a no-op (nothing is buffered on this side). A failed write (the client went away) is
    raised by the next call, as the SDK's writer would raise it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0  # messages handed to the thread and not yet written
        self._lock = threading.Lock()
        self._error: OSError | None = None
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)
        self._thread = threading.Thread(target=self._drain, name="mcp-stdout", daemon=True)
        self._thread.start()

    async def write(self, text: str) -> None:
        if self._error is not None:
            raise self._error
        data = text.encode("utf-8")
        with self._lock:
            inline = not self._queued and len(data) <= INLINE_MAX and self._writable()
            if not inline:
                self._queued += 1
                self._queue.put(data)
        if inline:  # only this task writes, and nothing is queued: the order holds
            try:
                _write_all(self.fd, data)
            except OSError as e:
                self._error = e
                raise

    async def flush(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self, timeout: float = DRAIN_S) -> None:
        """Write what is queued (up to ``timeout``), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _writable(self) -> bool:
        """Room for at least PIPE_BUF bytes now (a pipe that is not full has a free page; a
        socket or a terminal is writable for a small message), so a write cannot block."""
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return False

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:  # else the client is gone: drop the rest
                try:
                    _write_all(self.fd, data)
                except OSError as e:
                    self._error = e
            with self._lock:
                self._queued -= 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _claim(fd: int, diversion: int) -> int:
    """A private duplicate of ``fd`` (the wire), with ``fd`` itself pointed at ``diversion``."""
    private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(diversion, fd)
    return private


@contextlib.asynccontextmanager
async def transport() -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``stdio_server`` streams, over our reader and writer."""
    from mcp.server.stdio import stdio_server

    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        wire_in = _claim(0, null)
    finally:
        os.close(null)
    try:
        wire_out = _claim(1, 2)
    except OSError:
        os.dup2(wire_in, 0)
        os.close(wire_in)
        raise
    writer = LineWriter(wire_out)
    try:
        async with stdio_server(stdin=LineReader(wire_in), stdout=writer) as streams:  # type: ignore[arg-type]
            yield streams
    finally:
        writer.close()
        for fd, private in ((0, wire_in), (1, wire_out)):
            with contextlib.suppress(OSError):
                os.dup2(private, fd)
            os.close(private)
