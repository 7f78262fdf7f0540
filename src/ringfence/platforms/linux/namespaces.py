"""Enter the sandbox's namespaces as an unprivileged user.

One ``unshare`` makes the user namespace and, owned by it, every other namespace the plan
names; the process then maps its own uid and gid (the only mapping an unprivileged process may
write) so files keep their owners inside.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Iterable

from ringfence.errors import UnsupportedError
from ringfence.platforms.linux.libc import syscall, write_file

CLONE_FLAGS = {
    "mount": 0x00020000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "net": 0x40000000,
}
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def unshare(names: Iterable[str], uid: int, gid: int) -> None:
    """Unshare ``names`` and map ``uid``/``gid`` to themselves in the new user namespace."""
    flags = 0
    for n in names:
        flags |= CLONE_FLAGS[n]
    try:
        syscall("unshare", flags)
    except OSError as e:
        raise UnsupportedError(
            "cannot create unprivileged user namespaces on this host "
            f"({os.strerror(e.errno or 0)}). Enable them (sysctl "
            "kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, or the AppArmor "
            "userns restriction on Ubuntu), or run outside a container that forbids them; or opt "
            "in to reduced isolation (--isolation reduced), which protects less: `ringfence "
            "explain --isolation reduced` lists what. `ringfence doctor` shows what is missing"
        ) from e
    try:
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", f"{uid} {uid} 1\n")
        write_file("/proc/self/gid_map", f"{gid} {gid} 1\n")
    except OSError as e:
        raise UnsupportedError(
            f"created a user namespace but cannot map user ids in it ({e.strerror}); this "
            "happens inside another sandbox or a restricted container. ringfence will not run "
            "the command without its namespaces unless you opt in to reduced isolation "
            "(--isolation reduced), which protects less: `ringfence explain --isolation reduced` "
            "lists what; `ringfence doctor` shows what is missing"
        ) from e


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace so local servers and tests still work."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
