"""The proxy of one session, served on its own asyncio loop in a thread of the host process.

It ends with the session (``close``); since the listening socket lives in the sandbox's
network namespace, nothing can reach the proxy once the sandbox is gone, and nothing is left
on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ringfence.network.proxy import CHUNK, DomainProxy, NetEvent, pipe
from ringfence.policy.netrules import NetRules


class ProxyService:
    """``listener``: the filtering proxy's socket (None without an allowlist); ``forwards``:
    (socket, port) pairs whose connections go to the host's 127.0.0.1:port."""

    def __init__(
        self,
        listener: socket.socket | None,
        rules: NetRules,
        *,
        allow_local: bool = False,
        forwards: Sequence[tuple[socket.socket, int]] = (),
        ask: Callable[[str, int], str] | None = None,
        on_event: Callable[[NetEvent], None] | None = None,
    ) -> None:
        self.events: list[NetEvent] = []
        self._on_event = on_event
        self._lock = threading.Lock()
        self.proxy = DomainProxy(
            rules,
            allow_local=allow_local,
            on_event=self._record,
            ask=_in_thread(ask) if ask is not None else None,
        )
        raise_fd_limit()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_when_out_of_fds)
        self._listener = listener
        self._forwards = list(forwards)
        self._started = threading.Event()
        self._servers: list[asyncio.Server] = []
        self.thread = threading.Thread(target=self._main, name="ringfence-proxy", daemon=True)
        self.thread.start()
        self._started.wait(10)

    def _record(self, event: NetEvent) -> None:
        with self._lock:
            self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def events_since(self, index: int) -> list[NetEvent]:
        with self._lock:
            return self.events[index:]

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            try:
                if self._listener is not None:
                    self._servers.append(await self.proxy.serve(self._listener))
                for sock, port in self._forwards:
                    self._servers.append(
                        await asyncio.start_server(_forwarder(port), sock=sock, limit=CHUNK)
                    )
            finally:
                self._started.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def close(self) -> None:
        def stop() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.stop()

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        for sock in [self._listener, *(s for s, _ in self._forwards)]:
            if sock is not None:
                sock.close()


FD_CEILING = 1 << 20  # what "as many as allowed" means when the hard limit is unlimited


def raise_fd_limit() -> None:
    """Let this process hold as many descriptors as its hard limit allows. Each tunnel holds
    two sockets and, while it moves bytes, a pipe per direction: a thousand concurrent
    tunnels need several thousand descriptors, and the usual soft limit of 1,024 would refuse
    connections long before that. Only the soft limit moves (as Go's runtime does at start);
    the sandbox's commands get theirs from the runner, started before the proxy."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = FD_CEILING if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _quiet_when_out_of_fds(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio pauses accepting for a second when the process is out of descriptors, and says
    so with a traceback per attempt on the host application's stderr; the client sees its
    connection wait or fail, which is the report that counts. Everything else is logged."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
        return
    loop.default_exception_handler(context)


def _forwarder(
    port: int,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """An exposed port: the host's 127.0.0.1:``port``, and nothing else."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port, limit=CHUNK)
        except OSError:
            writer.close()
            return
        await pipe(reader, writer, up_r, up_w)
        writer.close()

    return handle


def _in_thread(ask: Callable[[str, int], str]) -> Callable[[str, int], Awaitable[str]]:
    """The host application's question (it may block on a person) off the proxy's loop."""

    async def asking(host: str, port: int) -> str:
        answer: object = await asyncio.get_running_loop().run_in_executor(None, ask, host, port)
        if answer is True:
            return "once"
        return answer if isinstance(answer, str) else "deny"

    return asking
