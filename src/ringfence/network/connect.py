"""A TCP stream through the sandbox's proxy, for programs that take a command, not a proxy.

Chiefly ssh's ``ProxyCommand`` (git over SSH): it asks the filtering proxy for ``HOST:PORT``
with HTTP CONNECT, then copies stdin to the connection and the connection to stdout. The proxy
decides, as for any other connection; a refusal is printed to stderr with the proxy's reason,
exit status 1.

The connector is self-contained source (``SOURCE``) that the sandbox runs with its own
``python3`` from an environment variable, so it works wherever ringfence itself is installed
(even in a directory the sandbox cannot see, like a virtualenv under the host's /tmp).
``python -m ringfence.network.connect HOST PORT`` runs the same code.
"""

from __future__ import annotations

import shlex

SOURCE = r"""
import os, select, socket, sys

def fail(text):
    sys.stderr.write("ringfence-connect: %s\n" % text)
    sys.exit(1)

if len(sys.argv) != 3 or not sys.argv[2].isdigit():
    sys.stderr.write("usage: ringfence-connect HOST PORT\n")
    sys.exit(2)
host, port = sys.argv[1], int(sys.argv[2])
url = os.environ.get("RINGFENCE_PROXY") or os.environ.get("HTTPS_PROXY", "")
phost, _, pport = url.split("://", 1)[-1].rstrip("/").rpartition(":")
if not phost or not pport.isdigit():
    fail("no proxy (RINGFENCE_PROXY or HTTPS_PROXY) is set")
try:
    sock = socket.create_connection((phost, int(pport)))
except OSError as e:
    fail("cannot reach the proxy: %s" % e)
sock.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host, port, host, port)).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = sock.recv(4096)
    if not chunk:
        fail("the proxy closed the connection")
    head += chunk
status, _, rest = head.partition(b"\r\n\r\n")
if status.split(b" ", 2)[1:2] != [b"200"]:
    body = rest + sock.recv(4096)
    fail(body.decode(errors="replace").strip() or status.decode(errors="replace"))
if rest:
    os.write(1, rest)
inputs = [0, sock.fileno()]
while sock.fileno() in inputs:
    ready, _, _ = select.select(inputs, [], [])
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            sock.sendall(data)
        else:
            inputs.remove(0)
            sock.shutdown(socket.SHUT_WR)
    if sock.fileno() in ready:
        data = sock.recv(65536)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
"""

ENV_NAME = "RINGFENCE_CONNECT"


def proxy_command(python: str = "python3") -> str:
    """The ``ProxyCommand`` for ssh: the sandbox's python runs ``SOURCE`` from the
    environment (``ENV_NAME``)."""
    loader = f'import os; exec(os.environ["{ENV_NAME}"])'
    return f"{python} -c {shlex.quote(loader)} %h %p"


def main() -> None:
    exec(compile(SOURCE, "ringfence-connect", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
