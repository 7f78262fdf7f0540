"""The name guard's own line to the host, for the files left to its end-of-command check.

The guard sends its findings to the command's init (the Python runner) or pid 1 (the native
launcher), which relays them to the host. A command can slow that relay down: it may lower its
init's priority (SCHED_IDLE, a pinned CPU) and keep every CPU busy. Should the host then kill
the namespace at the deadline, the records still queued for the init die with it, and with
them the names of pointer files the host must move aside (a ``.git`` naming /etc would stay
for host git to read). So the guard also tells the host each such name itself, before the call
that puts a file there is done, on a channel only the guard holds: the session's socket (the
host's reader drains it, whatever the command does) or, natively, a pipe the launcher reads.

A name told but never used (the call then failed) only widens what the host moves aside when
the check could not run; the check itself looks at what is there.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import socket
import time
from collections.abc import Callable

from ringfence.errors import SandboxError

TELL_WAIT = 5.0  # seconds the guard waits for room before it gives up (and fails closed)

Tell = Callable[[str], None]


class TellError(SandboxError):
    """The host could not be told (gone, or not reading): the guard must not go on (the call
    that asked is refused, and every guarded call after it fails)."""


def _wait_writable(fd: int, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TellError("the host stopped reading the name guard")
    select.select([], [fd], [], left)


class SessionTell:
    """Python runner: a message on the session's socket as the init would send it. The command's
    id is in ``page`` (shared with the init, which writes it before each command starts)."""

    def __init__(self, sock_fd: int, page: mmap.mmap) -> None:
        # A socket object on the same file description, without changing its flags (the init
        # sends on it in blocking mode): each send here says MSG_DONTWAIT itself.
        self.sock = socket.socket(fileno=sock_fd)
        self.page = page

    def __call__(self, path: str) -> None:
        cid = int.from_bytes(self.page[:8], "little")
        msg = {"id": cid, "pending": path, "nfds": 0}
        data = json.dumps(msg, separators=(",", ":")).encode()
        deadline = time.monotonic() + TELL_WAIT
        while True:
            try:
                self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                return
            except BlockingIOError:
                _wait_writable(self.sock.fileno(), deadline)
            except OSError as e:
                raise TellError(f"cannot tell the host: {e}") from e


class PipeTell:
    """Native launcher: each name on a pipe the host reads (``launcher/module.c``), as a
    little-endian u32 length and the name's bytes. The guard is its only writer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def __call__(self, path: str) -> None:
        raw = path.encode("utf-8", "surrogateescape")
        data = memoryview(len(raw).to_bytes(4, "little") + raw)
        deadline = time.monotonic() + TELL_WAIT
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                _wait_writable(self.fd, deadline)
            except OSError as e:
                raise TellError(f"cannot tell the host: {e}") from e


def read_told(raw: bytes) -> list[str]:
    """The names a :class:`PipeTell` wrote (a cut-off last one is dropped)."""
    out: list[str] = []
    pos = 0
    while pos + 4 <= len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        if pos + 4 + size > len(raw):
            break
        out.append(raw[pos + 4 : pos + 4 + size].decode("utf-8", "surrogateescape"))
        pos += 4 + size
    return out


def new_page() -> mmap.mmap:
    """The page an init shares with its guard for the running command's id."""
    return mmap.mmap(-1, 8, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def set_command(page: mmap.mmap, cid: int) -> None:
    page[:8] = cid.to_bytes(8, "little")
