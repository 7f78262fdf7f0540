"""Inside the sandbox, for ``--publish``: make sockets of the sandbox's network namespace.

A connection to a published port arrives on the host (network/publish.py). To reach the server
inside, the host needs a socket of the sandbox's own network namespace: a socket belongs to
the namespace it was created in, whoever connects it later. This loop, in a process the runner
forks before any command exists, makes such sockets on request and hands them to the host over
a private socketpair (SCM_RIGHTS); the host connects each one to the sandbox's 127.0.0.1:PORT
(or [::1]:PORT) and relays the bytes itself.

So nothing inside relays anything: no byte of any connection passes through this process, it
never connects, listens or reads from a network socket, and its only input is the host's end
of the socketpair. Commands cannot reach it: it lives in the runner's pid namespace (each
command has its own), is not dumpable and holds no capability. Everything is imported at the
top: it runs in the sandbox's view of the filesystem.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

REQUEST_V4 = b"4"  # an unconnected TCP socket for 127.0.0.1
REQUEST_V6 = b"6"  # the same for ::1
MADE = b"+"  # the reply that carries the socket
FAILED = b"-"  # the reply without one (out of descriptors, no IPv6, unknown request)
_FAMILIES = {REQUEST_V4: socket.AF_INET, REQUEST_V6: socket.AF_INET6}


def serve(conn: socket.socket) -> NoReturn:
    """The maker process's life: requests until the host closes its end, then exit."""
    make_sockets(conn)
    os._exit(0)


def make_sockets(conn: socket.socket) -> None:
    """One socket per request until the host closes its end (or the sandbox ends)."""
    while True:
        try:
            request = conn.recv(16)
        except InterruptedError:
            continue
        except OSError:
            break
        if not request:
            break
        family = _FAMILIES.get(request)
        try:
            made = (
                socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) if family else None
            )
        except OSError:
            made = None
        try:
            if made is None:
                conn.send(FAILED)
            else:
                socket.send_fds(conn, [MADE], [made.fileno()])
        except OSError:
            break
        finally:
            if made is not None:
                made.close()
