"""The filtering proxy against real sockets on 127.0.0.1 (no other address is ever contacted).

Names resolve through a recording resolver, so each test can check that a refused name was
never looked up, and which address was connected to.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ringfence.network import proxy as proxy_mod
from ringfence.network import service
from ringfence.network.proxy import DomainProxy, NetEvent
from ringfence.policy.netrules import NetRules

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Resolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return self.table[host]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _http_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"seen:" + head.split(b"\r\n")[0] + b"|" + head
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


@asynccontextmanager
async def _setup(
    allow: list[str],
    deny: list[str] = (),  # type: ignore[assignment]
    *,
    upstream: Handler = _echo,
    allow_local: bool = True,
    names: tuple[str, ...] = ("allowed.test", "other.test"),
) -> AsyncIterator[tuple[int, int, Resolver, list[NetEvent]]]:
    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    resolver = Resolver({n: ["127.0.0.1"] for n in names})
    events: list[NetEvent] = []
    rules = NetRules.parse(
        allow=[a.replace("PORT", str(up_port)) for a in allow],
        deny=[d.replace("PORT", str(up_port)) for d in deny],
    )
    proxy = DomainProxy(rules, allow_local=allow_local, on_event=events.append, resolver=resolver)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    server = await proxy.serve(lsock)
    try:
        yield lsock.getsockname()[1], up_port, resolver, events
    finally:
        server.close()
        up.close()


async def _connect(
    proxy_port: int, host: str, port: int
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", proxy_port)
    w.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    return head, r, w


def test_connect_to_an_allowed_name_tunnels_bytes() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, _, events):
            head, r, w = await _connect(pport, "allowed.test", up_port)
            assert head.startswith(b"HTTP/1.1 200")
            w.write(b"ping" * 10000)
            await w.drain()
            got = await r.readexactly(40000)
            assert got == b"ping" * 10000
            w.close()
            assert events[-1].allowed and events[-1].address == "127.0.0.1"
            assert events[-1].rule == f"allowed by 'allowed.test:{up_port}'"

    asyncio.run(main())


def test_a_refused_name_is_never_resolved_and_the_403_says_why() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, resolver, events):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(f"CONNECT other.test:{up_port} HTTP/1.1\r\n\r\n".encode())
            await w.drain()
            reply = await r.read()
            assert reply.startswith(b"HTTP/1.1 403 Forbidden")
            assert f"blocked other.test:{up_port} not in the allowlist".encode() in reply
            assert resolver.asked == []  # decided on the name alone
            assert not events[-1].allowed and events[-1].protocol == "http-connect"

    asyncio.run(main())


def test_an_allowed_name_that_resolves_to_loopback_is_refused() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"], allow_local=False) as (pport, up_port, _, ev):
            head, r, _w = await _connect(pport, "allowed.test", up_port)
            assert head.startswith(b"HTTP/1.1 403")
            assert b"127.0.0.1 is loopback" in head + await r.read()
            assert "127.0.0.1 is loopback" in ev[-1].rule

    asyncio.run(main())


def test_deny_wins_and_wildcards_skip_the_apex() -> None:
    async def main() -> None:
        names = ("a.allowed.test", "allowed.test", "bad.allowed.test")
        async with _setup(["*.allowed.test:PORT"], ["bad.allowed.test"], names=names) as (
            pport,
            up_port,
            resolver,
            _,
        ):
            for host, ok in (("a.allowed.test", True), ("allowed.test", False)):
                head, _r, w = await _connect(pport, host, up_port)
                assert head.startswith(b"HTTP/1.1 200" if ok else b"HTTP/1.1 403"), host
                w.close()
            _, _, _ = await _connect(pport, "bad.allowed.test", up_port)
            assert "bad.allowed.test" not in resolver.asked

    asyncio.run(main())


def test_absolute_form_http_is_forwarded_in_origin_form() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"], upstream=_http_origin) as (pport, up_port, *_):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(
                f"GET http://allowed.test:{up_port}/simple/x?y=1 HTTP/1.1\r\n"
                f"Host: allowed.test:{up_port}\r\nProxy-Authorization: secret\r\n\r\n".encode()
            )
            await w.drain()
            reply = await r.read()
            assert reply.startswith(b"HTTP/1.1 200 OK")
            assert b"seen:GET /simple/x?y=1 HTTP/1.1|" in reply
            assert b"Proxy-Authorization" not in reply

    asyncio.run(main())


def test_a_host_header_that_does_not_match_the_target_is_refused() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"], upstream=_http_origin) as (
            pport,
            up_port,
            resolver,
            _,
        ):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(
                f"GET http://allowed.test:{up_port}/ HTTP/1.1\r\nHost: other.test\r\n\r\n".encode()
            )
            await w.drain()
            reply = await r.read()
            assert reply.startswith(b"HTTP/1.1 403")
            assert b"Host header" in reply
            assert resolver.asked == []

    asyncio.run(main())


def _socks_request(host: str, port: int) -> bytes:
    name = host.encode()
    greeting = b"\x05\x01\x00"
    return greeting + b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")


def test_socks5_with_remote_names() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, resolver, _):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(_socks_request("allowed.test", up_port))
            await w.drain()
            assert await r.readexactly(2) == b"\x05\x00"
            reply = await r.readexactly(10)
            assert reply[1] == 0
            w.write(b"hello")
            await w.drain()
            assert await r.readexactly(5) == b"hello"
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(_socks_request("other.test", up_port))
            await w.drain()
            assert await r.readexactly(2) == b"\x05\x00"
            assert (await r.readexactly(10))[1] == 2  # not allowed by ruleset
            assert resolver.asked == ["allowed.test"]

    asyncio.run(main())


def test_garbage_gets_a_400_not_a_crash() -> None:
    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, *_):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(b"HELLO\r\n\r\n")
            await w.drain()
            assert (await r.read()).startswith(b"HTTP/1.1 400")
            head, _r, w2 = await _connect(pport, "allowed.test", up_port)  # still serving
            assert head.startswith(b"HTTP/1.1 200")
            w2.close()

    asyncio.run(main())


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_tunnels_hold_their_sockets_and_no_pipes() -> None:
    """A pipe per direction exists only while bytes move: 50 open, idle tunnels hold 4
    descriptors each here (client, the proxy's two sockets, the echo server's), not 8."""

    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, _, _events):
            before = _fds()
            conns = []
            for i in range(50):
                head, r, w = await _connect(pport, "allowed.test", up_port)
                assert head.startswith(b"HTTP/1.1 200")
                w.write(b"x%d" % i * 1000)
                await w.drain()
                assert await r.readexactly(len(b"x%d" % i * 1000)) == b"x%d" % i * 1000
                conns.append(w)
            await asyncio.sleep(0.1)
            assert _fds() - before <= 4 * 50
            for w in conns:
                w.close()

    asyncio.run(main())


def test_a_way_that_fails_ends_the_tunnel_and_leaks_nothing(monkeypatch: Any) -> None:
    """Out of descriptors for one direction's pipe: the other direction is ended too, both
    sockets are closed (the client sees the end), and nothing is left open."""
    made = 0
    real = proxy_mod._new_pipe

    def failing() -> tuple[int, int]:
        nonlocal made
        made += 1
        if made == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real()

    monkeypatch.setattr(proxy_mod, "_new_pipe", failing)

    async def main() -> None:
        async with _setup(["allowed.test:PORT"]) as (pport, up_port, _, _events):
            before = _fds()
            head, r, w = await _connect(pport, "allowed.test", up_port)
            assert head.startswith(b"HTTP/1.1 200")
            w.write(b"hello")
            await w.drain()
            assert await asyncio.wait_for(r.read(), 5) == b""  # ended, not hung
            w.close()
            await w.wait_closed()
            for _ in range(50):
                if _fds() <= before:
                    break
                await asyncio.sleep(0.02)
            assert _fds() <= before
            assert [t for t in asyncio.all_tasks() if "splice" in repr(t)] == []

    asyncio.run(main())


def test_a_proxy_raises_the_soft_descriptor_limit() -> None:
    code = (
        "import resource; from ringfence.network.service import raise_fd_limit\n"
        "s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, h), h))\n"
        "raise_fd_limit(); print(resource.getrlimit(resource.RLIMIT_NOFILE) == (h, h) or h)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("True", str(resource.RLIM_INFINITY)), out


def test_out_of_descriptors_is_not_a_traceback_on_stderr(caplog: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        service._quiet_when_out_of_fds(
            loop, {"message": "accept", "exception": OSError(errno.EMFILE, "Too many")}
        )
        assert caplog.records == []
        service._quiet_when_out_of_fds(loop, {"message": "other", "exception": ValueError("x")})
        assert any("other" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()
