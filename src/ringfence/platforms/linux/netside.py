"""Sockets of the sandbox's own network namespace, made by the sandbox side and handed to the
host, which serves them: the filtering proxy's and exposed ports' listeners, the resolver's
sockets, and the process that makes sockets for ``--publish``. Nothing here relays a byte.

Runs inside the sandbox: every import at the top (see nameguard's rule).
"""

from __future__ import annotations

import gc
import os
import socket

from ringfence.network import dns_stub, publish_maker
from ringfence.platforms.linux import caps, protocol
from ringfence.platforms.linux.plan_model import LinuxPlan


def proxy_listener(port: int) -> socket.socket:
    """A socket made here in the sandbox's own network namespace and handed to the host, which
    serves it (the filtering proxy, an exposed port): no helper process inside, nothing on any
    disk."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def hand_over_resolver(plan: LinuxPlan, sock: socket.socket) -> None:
    """The sandbox's resolver sockets (dns_stub.resolver_sockets), made here in its network
    namespace and handed to the host, which answers every lookup at once and keeps the names.
    Before "ready": the host serves them before any command starts."""
    if "net" not in plan.namespaces:
        return
    socks = dns_stub.resolver_sockets()
    if socks:
        protocol.send(sock, {"id": 0, "resolver": True}, [s.fileno() for s in socks])
    for s in socks:
        s.close()


def start_publish_maker(plan: LinuxPlan) -> list[socket.socket]:
    """With ``--publish``: fork the process that makes sockets of this network namespace for
    the host's relay (network/publish_maker.py) and return the host's end of its socketpair.
    Forked before the server's own state exists; it keeps no descriptor but its own end and
    no capability."""
    if not plan.publish:
        return []
    host_end, own_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        try:
            gc.disable()  # no finalizer may close a number that a closed object once held
            fd = own_end.fileno()
            os.closerange(0, fd)
            os.closerange(fd + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 16))
            caps.drop_all()
            publish_maker.serve(own_end)
        finally:
            os._exit(1)
    own_end.close()
    return [host_end]
