"""The files waiting for the end-of-command check, held by their inodes as well as their names.

The check runs when the command's last process is gone, by name. Another command running on
the same workspace at that moment (its own sandbox, its own guard) can rename a directory on
the way so that the name leads nowhere while the check looks, and rename it back afterwards:
a todo list with an ``exec`` line would then pass as "gone again". An ``O_PATH`` descriptor
taken when the file appeared follows the file wherever it is renamed, so the check judges
what the command left, not what a name shows at one instant, and a refused file is made
harmless through the descriptor if no name for it can be moved aside.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from typing import Final

from ringfence.platforms.linux import libc
from ringfence.platforms.linux.gitguard.fileio import read_all

# Files one command may leave waiting for the check (a `git submodule update` of many
# submodules makes one .git file each); more are refused rather than held by name only.
MAX_PINS: Final = 4096
AT_FDCWD: Final = -100


class Pins:
    """O_PATH descriptors of the regular files at the names waiting for the check."""

    def __init__(self) -> None:
        self._fds: dict[str, list[int]] = {}
        self._count = 0
        self._cap = _fd_room(MAX_PINS)

    def make_room(self) -> None:
        """Raise EMFILE when no other file may wait for the check (refuse the call)."""
        if self._count >= self._cap:
            raise OSError(errno.EMFILE, f"more than {self._cap} files wait for the git check")

    def pin(self, path: str) -> None:
        """Hold the regular file now at ``path`` (nothing when there is none)."""
        try:
            fd = libc.openat2(
                AT_FDCWD,
                path,
                os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS,
            )
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise  # a file not held would be judged by name only: refuse instead
            return  # not there (yet, or gone again), or not reachable without a link
        st = os.fstat(fd)
        held = self._fds.setdefault(path, [])
        if not stat.S_ISREG(st.st_mode) or any(_same(st, h) for h in held):
            os.close(fd)
            return
        held.append(fd)
        self._count += 1

    def carry(self, src: str, dst: str | None, is_dir: bool) -> None:
        """After a rename (``dst``) or removal (None) of ``src``: the names follow."""
        prefix = src + "/"
        for p in [p for p in self._fds if p == src or (is_dir and p.startswith(prefix))]:
            fds = self._fds.pop(p)
            if dst is None:
                self._close(fds)
            else:
                self._fds.setdefault(dst + p[len(src) :], []).extend(fds)

    def elsewhere(self, path: str) -> list[tuple[int, str]]:
        """The held files noted at ``path`` that are no longer there but still exist: each
        descriptor and the name it has now."""
        out = []
        for fd in self._fds.get(path, []):
            if os.fstat(fd).st_nlink == 0:
                continue  # removed: nothing of it is left for git to read
            try:
                now = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                now = ""
            if now != path:
                out.append((fd, now))
        return out

    @staticmethod
    def read(fd: int) -> bytes:
        """The bytes of a held file (opened afresh through the descriptor)."""
        rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return read_all(rfd)
        finally:
            os.close(rfd)

    @staticmethod
    def empty(fd: int) -> None:
        """Truncate a held file that was refused and could not be moved aside."""
        wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        os.close(wfd)

    def close_all(self) -> None:
        for fds in self._fds.values():
            self._close(fds)
        self._fds.clear()

    def _close(self, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        self._count -= len(fds)


SPARE_FDS: Final = 256  # what the guard needs besides the held files


def _fd_room(want: int) -> int:
    """How many files may be held: the soft RLIMIT_NOFILE is raised (never above the hard
    one) so that ``want`` fit beside the guard's own; fewer when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + SPARE_FDS
    if hard != resource.RLIM_INFINITY:
        need = min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            soft = need
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        return want
    return max(0, min(want, soft - SPARE_FDS))


def _same(st: os.stat_result, fd: int) -> bool:
    other = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)
