"""The files waiting for the end-of-command check, held by their directory and inode as well
as by their names.

The check runs when the command's last process is gone. Another command running on the same
workspace at that moment (its own sandbox, its own guard) can rename a directory on the way so
that the name leads nowhere while the check looks, and rename it back afterwards: a todo list
with an ``exec`` line would then pass as "gone again". So each file is also held by ``O_PATH``
descriptors of itself and of the directory it was made in, taken when it appeared: renaming
any directory above it changes neither, so the check reads, replaces or moves aside exactly
the entry git will find, wherever its directory has gone. Replacing it with a copy there (as
the check does with a file that passes) also cuts off every descriptor another process may
still hold to it: what git reads afterwards is exactly what was judged.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ringfence.platforms.linux import libc
from ringfence.platforms.linux.gitguard.fileio import quarantine_at, read_all, writing_to

# Files one command may leave waiting for the check (a `git submodule update` of many
# submodules makes one .git file each); more are refused rather than held by name only.
MAX_PINS: Final = 4096
AT_FDCWD: Final = -100
# What the guard needs besides the held files: its own, the FIFO opens that wait (64), and
# the descriptors that socket calls waiting for a peer hold (nameguard.sockets.HELD_FDS_MAX).
SPARE_FDS: Final = 512


@dataclass(frozen=True)
class Held:
    """A file waiting for the check: the directory it was made in (which follows that
    directory through renames), its name there, and the file itself."""

    dir_fd: int
    name: str
    fd: int

    def in_place(self) -> bool:
        """Is it still the entry ``name`` of its directory (not renamed or removed itself)?"""
        try:
            there = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def path_now(self) -> str:
        """Where it is now (its directory may have been renamed), or "" if that cannot be told."""
        try:
            parent = os.readlink(f"/proc/self/fd/{self.dir_fd}")
        except OSError:
            return ""
        return f"{parent.rstrip('/')}/{self.name}" if parent.startswith("/") else ""

    def set_aside(self, quarantine: Callable[[str], str | None], now: str) -> str | None:
        """Put a refused file where git does not read it, and say where: moved aside by
        ``quarantine(now)``, else through its directory's descriptor (each checked through
        its own descriptor); else taken off its name if still there, and emptied. None when
        even that fails."""
        moves: list[Callable[[], str | None]] = [lambda: quarantine(now)] if now else []
        for move in [*moves, self._aside_here]:
            moved = move()
            if moved is not None and self.path_now_of_file() == moved:
                return f"moved to {moved}"
        where = "removed" if self.remove() else "emptied"
        try:
            self.empty()
        except OSError:
            return None
        return where

    def _aside_here(self) -> str | None:
        """Moved aside in its directory, by descriptor (if it is still at its name there)."""
        if not self.in_place():
            return None
        aside = quarantine_at(self.dir_fd, self.name)
        return None if aside is None else self.path_now_of_file()

    def path_now_of_file(self) -> str:
        """The file's own path now (after a rename of it), or "" if it cannot be told."""
        try:
            return os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            return ""

    def read(self) -> bytes:
        """Its bytes, opened afresh through the descriptor."""
        rfd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return read_all(rfd)
        finally:
            os.close(rfd)

    def empty(self) -> None:
        """Truncate it: refused, and no name of it could be moved aside."""
        flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
        os.close(writing_to(self.fd, lambda: os.open(f"/proc/self/fd/{self.fd}", flags)))

    def remove(self) -> bool:
        """Take it off its name (the entry is this file's): a descriptor held elsewhere then
        writes a file no name leads to. Whether it was removed."""
        if not self.in_place():
            return False
        try:
            writing_to(self.dir_fd, lambda: os.unlink(self.name, dir_fd=self.dir_fd))
        except OSError:
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


class Pins:
    """The held files, by the name each was noted under (carried along renames)."""

    def __init__(self) -> None:
        self._held: dict[str, list[Held]] = {}
        self._cap = _fd_room(MAX_PINS)

    def make_room(self, waiting: int) -> None:
        """Raise EMFILE when no other name may wait for the check (refuse the call before it
        is made): counted by names, so a name noted before its file exists has its room."""
        if waiting >= self._cap:
            raise OSError(errno.EMFILE, f"more than {self._cap} files wait for the git check")

    def pin(self, path: str) -> None:
        """Hold the regular file now at ``path`` (nothing when there is none)."""
        parent, _, name = path.rpartition("/")
        try:
            dir_fd = libc.openat2(
                AT_FDCWD,
                parent or "/",
                os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS,
            )
        except OSError as exc:
            _fail_closed(exc)
            return  # not there (yet, or gone again), or not reachable without a link
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            _fail_closed(exc)
            return
        held = Held(dir_fd, name, fd)
        st = os.fstat(fd)
        others = self._held.setdefault(path, [])
        gone = [h for h in others if os.fstat(h.fd).st_nlink == 0]  # replaced since: let go
        if gone:
            self._close(gone)
            others[:] = [h for h in others if h not in gone]
        if not stat.S_ISREG(st.st_mode) or any(_same(st, h.fd) for h in others):
            held.close()
            return
        others.append(held)

    def carry(self, src: str, dst: str | None, is_dir: bool) -> None:
        """After a rename (``dst``) or removal (None) of ``src``: the names follow. A file
        renamed itself is let go (the caller notes and pins it again where it went); one
        whose directory moved is still held by that directory."""
        prefix = src + "/"
        for p in [p for p in self._held if p == src or (is_dir and p.startswith(prefix))]:
            held = self._held.pop(p)
            if dst is None or (p == src and not is_dir):
                self._close(held)
            else:
                self._held.setdefault(dst + p[len(src) :], []).extend(held)

    def held(self, path: str) -> list[Held]:
        """The files noted at ``path`` that still exist."""
        return [h for h in self._held.get(path, []) if os.fstat(h.fd).st_nlink > 0]

    def close_all(self) -> None:
        for held in self._held.values():
            self._close(held)
        self._held.clear()

    def _close(self, held: list[Held]) -> None:
        for h in held:
            h.close()


def _fail_closed(exc: OSError) -> None:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        raise exc  # a file not held would be judged by name only: refuse instead


def _fd_room(want: int) -> int:
    """How many files may be held (two descriptors each): the soft RLIMIT_NOFILE is raised
    (never above the hard one) so that ``want`` fit beside the guard's own descriptors;
    fewer when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * want + SPARE_FDS
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
    return max(0, min(want, (soft - SPARE_FDS) // 2))


def _same(st: os.stat_result, fd: int) -> bool:
    other = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)
