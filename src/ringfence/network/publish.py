"""The host side of ``--publish``: a server inside the sandbox, reachable from the host.

  host program ──► 127.0.0.1:HOST_PORT (and [::1]) ── this relay ──► 127.0.0.1:PORT inside
                   listening on the host's loopback      │
                                                         └─ a socket of the sandbox's network
                                                            namespace, made inside on request
                                                            (publish_maker.py)

The host ports are bound before the sandbox is built, so a taken port is a clear error
(``PublishError``) and nothing runs. Once the sandbox is up, each connection the host accepts
gets a fresh socket from the sandbox's socket maker, which this side connects to 127.0.0.1:PORT
inside (or [::1]:PORT when nothing listens on IPv4) and relays both ways (``proxy.pipe``:
bounded buffers, half-closes passed on), on an asyncio loop in a thread of its own.

What the sandboxed command can do with this path: accept the connections host programs make
to the published ports, and nothing else. The relay only ever connects to PORT on the
sandbox's own loopback, only for a connection the host accepted, and never to anything on the
host; the listeners are on the host's loopback only; at most ``MAX_CONNECTIONS`` are relayed
at once (more wait in the kernel's backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Sequence

from ringfence.errors import PublishError
from ringfence.network.proxy import CHUNK, pipe
from ringfence.network.publish_maker import FAILED, MADE, REQUEST_V4, REQUEST_V6

MAX_CONNECTIONS = 64  # relayed at once, all published ports together (each holds ~6 fds)
BACKLOG = 128
MAKER_TIMEOUT = 5.0  # seconds for the sandbox to hand over a socket
CONNECT_TIMEOUT = 10.0  # seconds for the server inside to accept a connection
_LOOPBACKS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
_INSIDE = ((REQUEST_V4, socket.AF_INET, "127.0.0.1"), (REQUEST_V6, socket.AF_INET6, "::1"))


def _spec(host_port: int, port: int) -> str:
    return str(port) if host_port == port else f"{host_port}:{port}"


def bind_loopback(host_port: int, port: int) -> list[socket.socket]:
    """Listening sockets on the host's 127.0.0.1:``host_port`` and, where the host has IPv6,
    [::1]:``host_port``; ``PublishError`` when either is taken or not ours to take."""
    made: list[socket.socket] = []
    try:
        for family, address in _LOOPBACKS:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            except OSError:
                if family == socket.AF_INET6:
                    continue  # no IPv6 on this host: 127.0.0.1 alone
                raise
            made.append(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, host_port))
            except OSError as e:
                if family == socket.AF_INET6 and e.errno in (
                    errno.EADDRNOTAVAIL,
                    errno.EAFNOSUPPORT,
                ):
                    made.pop().close()  # the host's loopback has no ::1
                    continue
                raise PublishError(_bind_error(host_port, port, address, e), host_port) from e
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _bind_error(host_port: int, port: int, address: str, e: OSError) -> str:
    shown = f"[{address}]" if ":" in address else address
    where = f"the host's {shown}:{host_port}"
    head = f"--publish {_spec(host_port, port)}: "
    if e.errno == errno.EADDRINUSE:
        return (
            f"{head}{where} is in use by another program; nothing was run. Publish on another "
            f"host port: --publish HOST_PORT:{port}"
        )
    if e.errno == errno.EACCES:
        return (
            f"{head}{where} is a privileged port (below 1024), which this user may not listen "
            f"on; nothing was run. Publish on a port from 1024 up: --publish HOST_PORT:{port}"
        )
    return f"{head}cannot listen on {where}: {e.strerror}; nothing was run"


class PublishedPorts:
    """The host listeners of one sandbox's published ports and, once ``start`` is given the
    sandbox's socket maker, the relay that serves them. ``close`` ends both."""

    def __init__(self, pairs: Sequence[tuple[int, int]]) -> None:
        self.listeners: list[tuple[socket.socket, int]] = []
        self._maker: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        try:
            for host_port, port in pairs:
                self.listeners.extend((s, port) for s in bind_loopback(host_port, port))
        except BaseException:
            self.close()
            raise

    def close_in_child(self) -> None:
        """In a process forked from this one (the runner): it must not hold the host's
        listeners, nor could it serve them."""
        for sock, _ in self.listeners:
            sock.close()

    def start(self, maker: socket.socket) -> None:
        """Serve the listeners, reaching the sandbox through ``maker`` (the host's end of the
        socket maker's socketpair)."""
        self._maker = maker
        maker.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="ringfence-publish", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        assert self._loop is not None and self._maker is not None
        asyncio.set_event_loop(self._loop)
        relay = _Relay(self._maker)
        for sock, port in self.listeners:
            self._loop.create_task(relay.accept(sock, port))
        self._loop.run_forever()
        left = asyncio.all_tasks(self._loop)  # cancelled by close: let them close their sockets
        if left:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.wait(left, timeout=1))
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:

            def stop() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_soon(loop.stop)  # after the cancelled tasks had their turn

            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(stop)
            thread.join(10)
        self._loop = self._thread = None
        for sock, _ in self.listeners:
            sock.close()
        self.listeners = []
        if self._maker is not None:
            self._maker.close()
            self._maker = None


class _Relay:
    """The connections in flight, on the publish thread's loop."""

    def __init__(self, maker: socket.socket) -> None:
        self.maker = maker
        self.maker_lock = asyncio.Lock()
        self.maker_gone = False
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.room = asyncio.Event()  # set whenever a slot comes free
        self.tasks: set[asyncio.Task[None]] = set()

    async def accept(self, listener: socket.socket, port: int) -> None:
        """Take connections while a slot is free; beyond that they wait in the kernel's
        backlog. Every listener waits for room before it accepts, and each accepted connection
        takes its slot before it is relayed: at most ``MAX_CONNECTIONS`` relayed, plus at
        most one accepted and waiting per listener."""
        loop = asyncio.get_running_loop()
        while True:
            while self.slots.locked():
                self.room.clear()
                await self.room.wait()
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError:  # out of descriptors and the like: back off, keep serving
                await asyncio.sleep(0.1)
                continue
            try:
                await self.slots.acquire()
            except BaseException:
                client.close()
                raise
            task = loop.create_task(self._serve(client, port))
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()
        self.room.set()

    async def _serve(self, client: socket.socket, port: int) -> None:
        inner: socket.socket | None = None
        writers: list[asyncio.StreamWriter] = []
        try:
            inner = await self._connect_inside(port)
            if inner is None:
                return  # nothing listens inside (or the sandbox is gone): the client sees EOF
            a_r, a_w = await asyncio.open_connection(sock=client, limit=CHUNK)
            writers.append(a_w)
            b_r, b_w = await asyncio.open_connection(sock=inner, limit=CHUNK)
            writers.append(b_w)
            await pipe(a_r, a_w, b_r, b_w)
        except OSError:
            pass
        finally:
            for w in writers:
                w.close()
            if not writers:
                client.close()
            if inner is not None and len(writers) < 2:
                inner.close()

    async def _connect_inside(self, port: int) -> socket.socket | None:
        """A socket of the sandbox's namespace connected to 127.0.0.1:``port`` there, or to
        [::1]:``port`` when nothing listens on IPv4 (a server bound to "localhost" may have
        chosen ::1); None when neither answers."""
        loop = asyncio.get_running_loop()
        for request, family, address in _INSIDE:
            sock = await self._inner_socket(request, family)
            if sock is None:
                return None
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(sock, (address, port))
            except ConnectionRefusedError:
                sock.close()
                continue
            except (OSError, TimeoutError):
                sock.close()
                return None
            except BaseException:
                sock.close()
                raise
            return sock
        return None

    async def _inner_socket(self, request: bytes, family: int) -> socket.socket | None:
        """A fresh, unconnected TCP socket of ``family`` from the sandbox's socket maker;
        None if it has none to give. Anything but exactly that is refused (fail closed)."""
        if self.maker_gone:
            return None
        async with self.maker_lock:
            try:
                async with asyncio.timeout(MAKER_TIMEOUT):
                    self.maker.send(request)
                    await _readable(self.maker)
                    msg, fds, _, _ = socket.recv_fds(self.maker, 16, 1, socket.MSG_CMSG_CLOEXEC)
            except (OSError, TimeoutError):
                self.maker_gone = True
                return None
        if not msg:
            self.maker_gone = True
        socks = [socket.socket(fileno=fd) for fd in fds]
        if msg == MADE and len(socks) == 1 and _fresh_tcp(socks[0], family):
            socks[0].setblocking(False)
            return socks[0]
        for s in socks:
            s.close()
        if msg not in (MADE, FAILED):
            self.maker_gone = True  # not the protocol: trust nothing more from it
        return None


def _fresh_tcp(sock: socket.socket, family: int) -> bool:
    """A TCP socket of ``family``, not yet connected nor listening: what the maker makes."""
    if sock.family != family or sock.type != socket.SOCK_STREAM:
        return False
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return False
    try:
        sock.getpeername()
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
