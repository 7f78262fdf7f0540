"""The filtering proxy: HTTP CONNECT, absolute-form HTTP and SOCKS5, decided on the name.

Every connection is judged by the policy's rules on the host name it asks for, **before** any
DNS lookup, so a refused name is never resolved (no exfiltration through DNS). After an allow
the host resolves the name, refuses local, private, link-local and metadata addresses unless
the policy allows local targets, and connects to the very address it checked (no rebinding
window). A refusal gets a clear answer: HTTP 403 with a body that names the host and the rule,
or the matching SOCKS5 reply. Each decision is an event for the audit log and the command's
report.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ringfence.network.addrguard import why_blocked
from ringfence.policy.netrules import Decision, NetRules

MAX_HEAD = 64 * 1024
BACKLOG = 4096  # connections queued before the proxy accepts them (the kernel may cap it)
CHUNK = 256 * 1024
Resolver = Callable[[str, int], Awaitable[list[str]]]
# Asked about a name the allowlist does not cover: "once", "session", "deny" or "never".
Asker = Callable[[str, int], Awaitable[str]]
NOT_LISTED = "not in the allowlist"


@dataclass(frozen=True)
class NetEvent:
    """One decision: ``allowed`` or not, on ``host``:``port``, by ``rule``; ``address`` is the
    address connected to (allowed) and ``protocol`` how the client asked."""

    time: float
    host: str
    port: int
    allowed: bool
    rule: str
    protocol: str
    address: str | None = None
    command: str | None = None


class Refused(Exception):
    """A connection the policy does not allow; the message says why."""


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _, _, _, _, addr in infos:
        if addr[0] not in seen:
            seen.append(str(addr[0]))
    return seen


class DomainProxy:
    """One per session. ``serve(sock)`` accepts on a listening socket the caller made (inside
    the sandbox's network namespace), so the proxy is the command's only way out."""

    def __init__(
        self,
        rules: NetRules,
        *,
        allow_local: bool = False,
        on_event: Callable[[NetEvent], None] | None = None,
        resolver: Resolver = system_resolver,
        connect_timeout: float = 30.0,
        ask: Asker | None = None,
    ) -> None:
        self.rules = rules
        self.allow_local = allow_local
        self.on_event = on_event
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.ask = ask
        self.answers: dict[tuple[str, int], bool] = {}  # "for the session" answers
        self._asking = asyncio.Lock()

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        # asyncio listens again with its own backlog (100 unless told): a burst of connections
        # beyond it would wait for the client's SYN retry (a second) instead of being queued.
        return await asyncio.start_server(self.handle, sock=sock, limit=MAX_HEAD, backlog=BACKLOG)

    # -- one client ---------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks5(reader, writer)
            else:
                await self._http(first, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _open(
        self, host: str, port: int, protocol: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Decide on the name, then resolve, check and connect to the checked address."""
        decision = self.rules.decide(host, port)
        if not decision.allowed and decision.rule == NOT_LISTED and self.ask is not None:
            decision = await self._ask(host, port)
        if not decision.allowed:
            self._event(host, port, allowed=False, rule=decision.rule, protocol=protocol)
            raise Refused(f"{host}:{port} {decision.rule}")
        try:
            addresses = await self.resolver(host, port)
        except OSError as e:
            self._event(host, port, allowed=False, rule=f"cannot resolve ({e})", protocol=protocol)
            raise Refused(f"{host}:{port} cannot be resolved") from e
        last: Exception | None = None
        for address in addresses:
            blocked = None if self.allow_local else why_blocked(address)
            if blocked is not None:
                self._event(
                    host,
                    port,
                    allowed=False,
                    rule=f"{decision.rule}, but {blocked}",
                    protocol=protocol,
                )
                raise Refused(f"{host}:{port} resolves to {blocked}")
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=CHUNK), self.connect_timeout
                )
            except (TimeoutError, OSError) as e:
                last = e
                continue
            self._event(
                host, port, allowed=True, rule=decision.rule, protocol=protocol, address=address
            )
            return conn
        self._event(
            host,
            port,
            allowed=False,
            rule=f"{decision.rule}, but no address answered",
            protocol=protocol,
        )
        raise ConnectionRefusedError(f"{host}:{port}: {last or 'no address'}")

    async def _ask(self, host: str, port: int) -> Decision:
        """A name the allowlist does not cover, with someone to ask: once, for the session,
        or no. One question at a time; a session answer is not asked again."""
        assert self.ask is not None
        async with self._asking:
            key = (host.lower().rstrip("."), port)
            if key in self.answers:
                allowed = self.answers[key]
                return Decision(allowed, "allowed for the session" if allowed else "refused")
            try:
                answer = await self.ask(host, port)
            except Exception as e:  # a failing callback must not open anything
                return Decision(False, f"not in the allowlist (asking failed: {e})")
            if answer == "session":
                self.answers[key] = True
                return Decision(True, "allowed for the session")
            if answer == "once":
                return Decision(True, "allowed once")
            if answer == "never":
                self.answers[key] = False
            return Decision(False, "refused when asked")

    def _event(
        self,
        host: str,
        port: int,
        *,
        allowed: bool,
        rule: str,
        protocol: str,
        address: str | None = None,
    ) -> None:
        if self.on_event is not None:
            self.on_event(NetEvent(time.time(), host, port, allowed, rule, protocol, address))

    # -- HTTP ---------------------------------------------------------------------------------
    async def _open_http(
        self, host: str, port: int, protocol: str, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """``_open``, with a refusal or a failure answered to the HTTP client (then None)."""
        try:
            return await self._open(host, port, protocol)
        except Refused as e:
            await _http_error(writer, 403, "Forbidden", f"ringfence: blocked {e}")
        except OSError as e:
            await _http_error(writer, 502, "Bad Gateway", f"ringfence: {e}")
        return None

    async def _http(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = first + await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _http_error(writer, 400, "Bad Request", "not an HTTP proxy request")
            return
        method, target, version = parts
        headers = [ln for ln in lines[1:] if ln]
        if method.upper() == "CONNECT":
            host, port = _split_host_port(target, None)
            if port is None:
                await _http_error(writer, 400, "Bad Request", "CONNECT needs host:port")
                return
            upstream = await self._open_http(host, port, "http-connect", writer)
            if upstream is None:
                return
            up_r, up_w = upstream
            writer.write(f"{version} 200 Connection established\r\n\r\n".encode())
            await writer.drain()
            await pipe(reader, writer, up_r, up_w)
            return
        await self._absolute((method, target, version), headers, reader, writer)

    async def _absolute(
        self,
        request_line: tuple[str, str, str],
        headers: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        method, target, version = request_line
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.hostname:
            await _http_error(
                writer, 400, "Bad Request", "only absolute http:// URLs (use CONNECT for https)"
            )
            return
        port = url.port or 80
        host_header = next(
            (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")), None
        )
        if host_header is not None:
            hh, hp = _split_host_port(host_header, 80)
            if hh.lower().rstrip(".") != url.hostname.lower().rstrip(".") or hp != port:
                self._event(
                    url.hostname,
                    port,
                    allowed=False,
                    rule="Host header does not match",
                    protocol="http",
                )
                await _http_error(
                    writer,
                    403,
                    "Forbidden",
                    f"ringfence: blocked {url.hostname}:{port}: the Host header "
                    f"({host_header}) does not match the request target",
                )
                return
        upstream = await self._open_http(url.hostname, port, "http", writer)
        if upstream is None:
            return
        up_r, up_w = upstream
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [
            h for h in headers if not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        if host_header is None:
            kept.insert(0, f"Host: {url.netloc}")
        head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
        up_w.write(head.encode("latin-1"))
        await up_w.drain()
        await pipe(reader, writer, up_r, up_w)

    # -- SOCKS5 -------------------------------------------------------------------------------
    async def _socks5(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nmethods = (await reader.readexactly(1))[0]
        methods = await reader.readexactly(nmethods)
        if 0 not in methods:  # only "no authentication"
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(b"\x05\x00")
        await writer.drain()
        ver, cmd, _, atyp = await reader.readexactly(4)
        if ver != 5:
            return
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        elif atyp == 3:
            length = (await reader.readexactly(1))[0]
            # the name as sent; the rules normalise it (and refuse what is not a host name)
            host = (await reader.readexactly(length)).decode("latin-1")
        else:
            await _socks_reply(writer, 8)  # address type not supported
            return
        port = int.from_bytes(await reader.readexactly(2), "big")
        if cmd != 1:
            await _socks_reply(writer, 7)  # only CONNECT
            return
        try:
            up_r, up_w = await self._open(host, port, "socks5")
        except Refused:
            await _socks_reply(writer, 2)  # connection not allowed by ruleset
            return
        except OSError:
            await _socks_reply(writer, 5)  # connection refused
            return
        await _socks_reply(writer, 0)
        await pipe(reader, writer, up_r, up_w)


def _split_host_port(text: str, default: int | None) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    return host, default if not port else None


async def _http_error(writer: asyncio.StreamWriter, code: int, reason: str, body: str) -> None:
    data = (body + "\n").encode()
    writer.write(
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _socks_reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def pipe(
    a_r: asyncio.StreamReader,
    a_w: asyncio.StreamWriter,
    b_r: asyncio.StreamReader,
    b_w: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done; a half-close is passed on.

    Where the kernel offers ``splice`` the bytes move socket -> pipe -> socket without ever
    entering Python; otherwise (or if the streams cannot be taken over) they are copied.
    """
    if hasattr(os, "splice"):
        a = _take_over(a_r, a_w)
        b = _take_over(b_r, b_w) if a is not None else None
        if a is not None and b is not None:
            await _splice_both(a, b)
            return
        for taken in (a, b):
            if taken is not None:  # could not take both: nothing was moved yet, give back
                taken[0].close()
                return  # (only when a transport misbehaves; the connection is dropped)
    await _copy_both(a_r, a_w, b_r, b_w)


async def _copy_both(
    a_r: asyncio.StreamReader,
    a_w: asyncio.StreamWriter,
    b_r: asyncio.StreamReader,
    b_w: asyncio.StreamWriter,
) -> None:
    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            pass

    try:
        await asyncio.gather(copy(a_r, b_w), copy(b_r, a_w))
    finally:
        b_w.close()
        with contextlib.suppress(ConnectionError, OSError):
            await b_w.wait_closed()


def _take_over(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[socket.socket, bytes] | None:
    """The stream's socket (a duplicate, non-blocking) and the bytes already read into the
    stream's buffer; the stream's transport is closed. None if it still has bytes to write."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_write_buffer_size():
        return None
    transport.pause_reading()  # type: ignore[attr-defined]
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray):
        transport.resume_reading()  # type: ignore[attr-defined]
        return None
    leftover = bytes(buffered)
    buffered.clear()
    dup = socket.socket(fileno=os.dup(sock.fileno()))
    dup.setblocking(False)
    transport.abort()  # closes the transport's descriptor; the duplicate keeps the connection
    return dup, leftover


async def _splice_both(a: tuple[socket.socket, bytes], b: tuple[socket.socket, bytes]) -> None:
    loop = asyncio.get_running_loop()
    (sa, left_a), (sb, left_b) = a, b
    ways: list[asyncio.Task[None]] = []
    try:
        if left_a:
            await loop.sock_sendall(sb, left_a)
        if left_b:
            await loop.sock_sendall(sa, left_b)
        ways = [
            asyncio.ensure_future(_splice_one(loop, sa, sb)),
            asyncio.ensure_future(_splice_one(loop, sb, sa)),
        ]
        await asyncio.gather(*ways)
    except (ConnectionError, OSError):
        pass
    finally:
        # One way failed (out of descriptors for its pipe, a reset): end the other too, and
        # let it close its pipe and stop watching the sockets before they are closed.
        for way in ways:
            way.cancel()
        if ways:
            await asyncio.gather(*ways, return_exceptions=True)
        sa.close()
        sb.close()


async def _wait(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, write: bool) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _new_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK * 4)
    return r, w


async def _splice_one(
    loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket
) -> None:
    """``src`` to ``dst`` through a kernel pipe until ``src`` ends; then half-close ``dst``.

    The pipe exists only while bytes move: it is made when ``src`` has something to read and
    closed (empty) when ``src`` has nothing more for now, so an idle tunnel holds its two
    sockets and nothing else (a thousand open tunnels would otherwise hold 6,000 descriptors)."""
    flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
    pipe: tuple[int, int] | None = None
    try:
        while True:
            if pipe is None:
                await _wait(loop, src, write=False)
                pipe = _new_pipe()
            r, w = pipe
            try:
                n = os.splice(src.fileno(), w, CHUNK * 4, flags=flags)
            except BlockingIOError:
                pipe = None  # empty: every byte read so far has been passed on
                os.close(r)
                os.close(w)
                continue
            if n == 0:
                break
            while n:
                try:
                    n -= os.splice(r, dst.fileno(), n, flags=flags)
                except BlockingIOError:
                    await _wait(loop, dst, write=True)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    except (ConnectionError, OSError):
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
    finally:
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])


SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
F_SETPIPE_SZ = 1031
