"""``python -m ringfence.network.connect HOST PORT``: a TCP stream through the sandbox's proxy.

For programs that take a command instead of a proxy setting, chiefly ssh's ``ProxyCommand``
(git over SSH): it asks the filtering proxy for ``HOST:PORT`` with HTTP CONNECT and then
copies stdin to the connection and the connection to stdout. The proxy decides, as for any
other connection; a refusal is printed to stderr with the proxy's reason, exit status 1.
"""

from __future__ import annotations

import os
import select
import socket
import sys

BUFFER = 1 << 16


def _proxy_address() -> tuple[str, int]:
    url = os.environ.get("RINGFENCE_PROXY") or os.environ.get("HTTPS_PROXY", "")
    hostport = url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit("ringfence-connect: no proxy (RINGFENCE_PROXY or HTTPS_PROXY) is set")
    return host, int(port)


def _tunnel(host: str, port: int) -> socket.socket:
    sock = socket.create_connection(_proxy_address())
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("ringfence-connect: the proxy closed the connection")
        head += chunk
    status, _, rest = head.partition(b"\r\n\r\n")
    if status.split(b" ", 2)[1:2] != [b"200"]:
        body = rest + sock.recv(4096)
        reason = body.decode(errors="replace").strip() or status.decode(errors="replace")
        raise SystemExit(f"ringfence-connect: {reason}")
    if rest:
        os.write(1, rest)
    return sock


def _relay(sock: socket.socket) -> None:
    inputs = [0, sock.fileno()]
    while sock.fileno() in inputs:
        ready, _, _ = select.select(inputs, [], [])
        if 0 in ready:
            data = os.read(0, BUFFER)
            if data:
                sock.sendall(data)
            else:
                inputs.remove(0)
                sock.shutdown(socket.SHUT_WR)
        if sock.fileno() in ready:
            data = sock.recv(BUFFER)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m ringfence.network.connect HOST PORT", file=sys.stderr)
        return 2
    try:
        sock = _tunnel(args[0], int(args[1]))
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ringfence-connect: cannot reach the proxy: {e}", file=sys.stderr)
        return 1
    with sock:
        _relay(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
