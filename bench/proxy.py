"""What the filtering proxy costs: throughput, connection set-up, and many tunnels at once.

    .venv/bin/python bench/proxy.py [--mib 256] [--tunnels 1000] [--runs 20]

Everything stays on 127.0.0.1. Baselines are measured in the same run: the same download or
handshake straight to the local server. The proxy is ringfence's own ``DomainProxy`` with local
targets allowed (it refuses loopback otherwise); the sandboxed row runs the client inside a
``Session`` with ``network=allowlist``, so its only way out is that proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import textwrap
import threading
import time

from ringfence import Network, Policy, Session
from ringfence.network.proxy import DomainProxy
from ringfence.policy.netrules import NetRules

CHUNK = 1 << 20


def _serve_bytes(total: int) -> tuple[socket.socket, int]:
    """A server that sends ``total`` bytes to every connection, then closes it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    payload = b"\0" * CHUNK

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=send, args=(conn,), daemon=True).start()

    def send(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)  # the request line
            left = total
            while left > 0:
                n = conn.send(payload[: min(left, CHUNK)])
                left -= n

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _start_proxy(allow: list[str]) -> tuple[int, asyncio.AbstractEventLoop]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    loop = asyncio.new_event_loop()
    proxy = DomainProxy(NetRules.parse(allow), allow_local=True)
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(proxy.serve(lsock))
        ready.set()
        loop.run_forever()

    threading.Thread(target=main, daemon=True).start()
    ready.wait()
    return lsock.getsockname()[1], loop


CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    proxy, port, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    t0 = time.perf_counter()
    if proxy:
        s = socket.create_connection(("127.0.0.1", proxy))
        s.sendall(f"CONNECT localhost:{port} HTTP/1.1\\r\\n\\r\\n".encode())
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
    else:
        s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET\\r\\n")
    got = 0
    buf = bytearray(1 << 20)
    while got < total:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
    print(got, time.perf_counter() - t0)
    """
)


def _download(proxy: int, port: int, total: int) -> float:
    out = _run_client([sys.executable, "-c", CLIENT, str(proxy), str(port), str(total)])
    got, seconds = out.split()
    assert int(got) == total, (got, total)
    return float(seconds)


def _run_client(argv: list[str]) -> str:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _handshake_ms(proxy: int, port: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        if proxy:
            s = socket.create_connection(("127.0.0.1", proxy))
            s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
        else:
            s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET\r\n")
        s.recv(1)  # the first byte of the answer
        times.append((time.perf_counter() - t0) * 1000)
        s.close()
    return statistics.median(times)


async def _tunnels(proxy: int, port: int, count: int) -> tuple[int, float]:
    async def one() -> bool:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", proxy)
            w.write(f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return False
            w.write(b"GET\r\n")
            await w.drain()
            data = await r.readexactly(1024)
            w.close()
            return len(data) == 1024
        except (OSError, asyncio.IncompleteReadError):
            return False

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)))
    return results.count(False), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--tunnels", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    total = args.mib << 20
    big, big_port = _serve_bytes(total)
    small, small_port = _serve_bytes(1024)
    proxy_port, _ = _start_proxy([f"localhost:{big_port}", f"localhost:{small_port}"])

    direct = min(_download(0, big_port, total) for _ in range(3))
    proxied = min(_download(proxy_port, big_port, total) for _ in range(3))
    rows = [
        (
            f"{args.mib} MiB download, direct on loopback",
            f"{args.mib / direct:8.0f} MiB/s",
            "1.00x",
        ),
        (
            f"{args.mib} MiB download through the proxy",
            f"{args.mib / proxied:8.0f} MiB/s",
            f"{direct / proxied:.2f}x",  # time ratio inverted: throughput proxied / direct
        ),
    ]
    ws = tempfile.mkdtemp(prefix="ringfence-bench-proxy-", dir="/var/tmp")
    try:
        policy = Policy(
            workspace=ws,
            network=Network.ALLOWLIST,
            allow_domains=(f"localhost:{big_port}",),
            allow_local_targets=True,
        )
        with Session(policy) as s:
            best = float("inf")
            for _ in range(3):
                r = s.run(
                    ["python3", "-c", CLIENT, "3128", str(big_port), str(total)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                best = min(best, float(r.stdout.split()[1]))
        rows.append(
            (
                f"{args.mib} MiB download from inside the sandbox",
                f"{args.mib / best:8.0f} MiB/s",
                f"{direct / best:.2f}x",
            )
        )
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    hs_direct = _handshake_ms(0, small_port, args.runs)
    hs_proxy = _handshake_ms(proxy_port, small_port, args.runs)
    rows.append(("connect + first byte, direct", f"{hs_direct:8.2f} ms", "1.00x"))
    rows.append(
        (
            "connect + first byte, through the proxy",
            f"{hs_proxy:8.2f} ms",
            f"{hs_proxy / hs_direct:.2f}x",
        )
    )
    errors, seconds = asyncio.run(_tunnels(proxy_port, small_port, args.tunnels))
    rows.append((f"{args.tunnels} concurrent tunnels", f"{seconds:8.2f} s", f"{errors} errors"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  vs baseline")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio}")
    print("(throughput ratios: proxied / direct, target >= 0.8; set-up: proxied / direct time)")
    big.close()
    small.close()


if __name__ == "__main__":
    main()
