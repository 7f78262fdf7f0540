"""The name guard's own line to the host, for the files left to its end-of-command check.

The guard sends its findings to the command's init (the Python runner) or pid 1 (the native
launcher), which relays them to the host. A command can slow that relay down: it may lower its
init's priority (SCHED_IDLE, a pinned CPU) and keep every CPU busy. Should the host then kill
the namespace at the deadline, the records still queued for the init die with it, and with
them the names of pointer files the host must move aside (a ``.git`` naming /etc would stay
for host git to read). So the guard also tells the host each such name itself, before the call
that puts a file there is done, on a channel only the guard holds: the session's socket (the
host's reader drains it, whatever the command does) or, natively, a pipe the launcher reads.

A call that fails or is refused after its names were told takes them back (``told`` False):
left told, the host would move aside whatever is at that name should the check not run, a
file the command may not remove (a nested repository's ``.git``).

Each name, and each taking back, is told in the order the guard made them; the host keeps
the names still told (:func:`still_told`).
"""

from __future__ import annotations

import json
import mmap
import os
import select
import socket
import time
from collections.abc import Callable, Iterable

from ringfence.errors import SandboxError

TELL_WAIT = 5.0  # seconds the guard waits for room before it gives up (and fails closed)

Tell = Callable[[str, bool], None]  # (name, told: False when taken back)


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

    def __call__(self, path: str, told: bool = True) -> None:
        cid = int.from_bytes(self.page[:8], "little")
        msg = {"id": cid, "pending" if told else "untold": path, "nfds": 0}
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
    little-endian u32 length, then ``+`` (told) or ``-`` (taken back) and the name's bytes.
    The guard is its only writer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def __call__(self, path: str, told: bool = True) -> None:
        raw = (b"+" if told else b"-") + path.encode("utf-8", "surrogateescape")
        data = memoryview(len(raw).to_bytes(4, "little") + raw)
        deadline = time.monotonic() + TELL_WAIT
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                _wait_writable(self.fd, deadline)
            except OSError as e:
                raise TellError(f"cannot tell the host: {e}") from e


def read_told(raw: bytes) -> list[tuple[str, bool]]:
    """What a :class:`PipeTell` wrote, in order (a cut-off last record is dropped)."""
    out: list[tuple[str, bool]] = []
    pos = 0
    while pos + 4 <= len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        if size < 1 or pos + 4 + size > len(raw):
            break
        record = raw[pos + 4 : pos + 4 + size]
        out.append((record[1:].decode("utf-8", "surrogateescape"), record[:1] == b"+"))
        pos += 4 + size
    return out


def still_told(events: Iterable[tuple[str, bool]]) -> set[str]:
    """The names told and not taken back since, from events in the order made."""
    names: set[str] = set()
    for name, told in events:
        if told:
            names.add(name)
        else:
            names.discard(name)
    return names


def pending_of(records: Iterable[dict[str, str]]) -> set[str]:
    """:func:`still_told` of the guard's ``git_pending``/``git_untold`` records."""
    return still_told(
        (r.get("path", ""), r.get("kind") == "git_pending")
        for r in records
        if r.get("kind") in ("git_pending", "git_untold")
    )


def new_page() -> mmap.mmap:
    """The page an init shares with its guard for the running command's id."""
    return mmap.mmap(-1, 8, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def set_command(page: mmap.mmap, cid: int) -> None:
    page[:8] = cid.to_bytes(8, "little")
