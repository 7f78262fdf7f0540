"""``Session.arun`` without threads or streams, for the common case: the command is sent
from the event loop, its captured pipes are read by plain reader callbacks, and its end
report completes a future.

An MCP server or agent loop runs most commands through ``arun`` with captured output and
no input. The general path (``aio_process``: asyncio stream transports, a task per stream,
the "started" reply awaited on its own) costs as many event-loop turns as a worker thread
saves; here one turn per pipe read and one for the end report are all. Everything that
decides what the command may do (the approval step, the request, the report's findings,
the audit record) is :class:`Session`'s own, as with ``Session.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import IO, TYPE_CHECKING, Any

from ringfence.popen_args import PopenArgs
from ringfence.stdio import EOF_GRACE, LAST_READS

if TYPE_CHECKING:
    from ringfence.connection import Pending
    from ringfence.session import Process, Session

READ_SIZE = 1 << 16


class _Stream:
    """One captured pipe: ``limit`` bytes kept, the rest read and dropped (so the command
    never blocks on a full pipe). Read from the loop until its end, then let go of at once:
    the descriptor is closed later, and its number may by then be another's."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, f: IO[bytes], limit: int | None, changed: Any
    ) -> None:
        self.loop = loop
        self.f = f
        self.fd = f.fileno()
        self.limit = limit
        self.data = bytearray()
        self.truncated = False
        self.eof = False
        self.reading = False
        self._changed = changed
        os.set_blocking(self.fd, False)

    def start(self) -> None:
        self.loop.add_reader(self.fd, self.ready)
        self.reading = True

    def stop(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def ready(self) -> bool:
        """One read; whether it brought anything."""
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            self.stop()
            self._changed()
            return False
        room = len(chunk) if self.limit is None else self.limit - len(self.data)
        if room >= len(chunk):
            self.data += chunk
        else:
            self.data += chunk[: max(room, 0)]
            self.truncated = True
        return True


class Capture:
    """A command sent with captured stdout/stderr (``ours``: the host's read ends, None for
    a stream not captured), until its end report and the end of both pipes."""

    def __init__(self, pending: Pending, ours: list[IO[bytes] | None], limit: int | None):
        self.loop = asyncio.get_running_loop()
        self.pending = pending
        self.stopped = False
        self._grace: asyncio.TimerHandle | None = None
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.streams = [
            _Stream(self.loop, f, limit, self._check) for f in ours[1:] if f is not None
        ]
        try:
            for s in self.streams:
                s.start()
        except BaseException:
            self.stop()
            raise
        pending.callbacks.append(self._wake)
        if pending.done.is_set():
            self._check()

    def _wake(self) -> None:  # the session's reader thread
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self.loop.call_soon_threadsafe(self._check)

    def _check(self) -> None:
        # A wake-up may come after stop() (the report after a cancel, or just after the
        # pipes' end): nothing of this capture may be touched then.
        if self.stopped or self.ended.done() or not self.pending.done.is_set():
            return
        never_started = "started" not in self.pending.report and self.pending.pid is None
        if never_started or all(s.eof for s in self.streams):
            self.ended.set_result(None)
        elif self._grace is None:  # someone outside the command may hold its pipes
            self._grace = self.loop.call_later(EOF_GRACE, self._give_up)

    def _give_up(self) -> None:
        """EOF_GRACE after the end: what is in the pipes is read, the rest not waited for."""
        if self.stopped or self.ended.done():
            return
        for s in self.streams:
            for _ in range(LAST_READS):
                if s.eof or not s.ready():
                    break
        if not self.ended.done():  # (a last end seen just now has ended it already)
            self.ended.set_result(None)

    def stop(self) -> None:
        """Stop reading, for good (the host's read ends stay open: ``Session._spawned`` or
        the caller closes them)."""
        self.stopped = True
        if self._grace is not None:
            self._grace.cancel()
        for s in self.streams:
            s.stop()

    def output(self, ours: list[IO[bytes] | None]) -> tuple[Any, Any, bool, bool]:
        got = {id(s.f): s for s in self.streams}
        out = got.get(id(ours[1])) if ours[1] is not None else None
        err = got.get(id(ours[2])) if ours[2] is not None else None
        return (
            bytes(out.data) if out else None,
            bytes(err.data) if err else None,
            bool(out and out.truncated),
            bool(err and err.truncated),
        )


async def run(
    session: Session,
    args: Any,
    *,
    stdio: tuple[Any, Any, Any],
    cwd: str | os.PathLike[str] | None,
    env: Any,
    shell: bool,
    extra: PopenArgs,
    limit: int | None,
    timeout: float | None,
) -> tuple[Process, tuple[Any, Any, bool, bool]]:
    """Start and wait for a command with no input; its process (ended) and its captured
    output. On a timeout the whole tree is killed first and ``proc.timed_out`` is set (the
    caller raises)."""
    binary = PopenArgs(extra.executable, extra.umask, extra.pass_fds)
    sent = session._submit(
        args, stdio=stdio, cwd=cwd, env=env, shell=shell, pty=False, extra=binary
    )  # fmt: skip
    pending, ours = sent.pending, sent.ours
    timed_out = False
    try:
        capture = Capture(pending, ours, limit)
    except BaseException:
        _kill(sent.conn, pending)
        _close(ours)
        session._finish_unwatched(sent)
        raise
    try:
        try:
            await asyncio.wait_for(asyncio.shield(capture.ended), timeout)
        except TimeoutError:
            timed_out = True
            _kill(sent.conn, pending)
            await capture.ended
    except BaseException:  # cancelled: nothing may go on running unwatched
        capture.stop()
        _kill(sent.conn, pending)
        _close(ours)
        session._finish_unwatched(sent)
        raise
    capture.stop()
    output = capture.output(ours)
    proc = session._spawned(sent, binary, (None, None))  # a start error is raised here
    _close(ours)
    proc.timed_out = timed_out
    proc.wait()
    return proc, output


def _kill(conn: Any, pending: Pending) -> None:
    """Kill the command's tree, now or as soon as it has started."""

    def kill() -> None:
        conn.control(pending.id, "kill")

    pending.on_started.append(kill)
    if pending.started.is_set():
        kill()


def _close(ours: list[IO[bytes] | None]) -> None:
    for f in ours:
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
