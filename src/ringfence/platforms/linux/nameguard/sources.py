"""What a rename brings along: the file at its source, read and compared as the guard sees it
(the rules for a renamed file are the rules for a file made at its new name)."""

from __future__ import annotations

import os
import stat

from ringfence.platforms.linux.gitguard.fileio import read_all
from ringfence.platforms.linux.gitguard.guard import GitGuard
from ringfence.platforms.linux.nameguard.results import Refused, Resolved


def rename_in(g: GitGuard, src: Resolved, dst_path: str, kind: int) -> str | None:
    """The git rules for ``src`` (of file type ``kind``) appearing at ``dst_path``."""
    text = os.readlink(src.kernel_name, dir_fd=src.parent_fd) if kind == stat.S_IFLNK else None
    incoming = src.path if kind == stat.S_IFDIR else None
    return g.creating(dst_path, kind, symlink=text, incoming=incoming)


def read_checked_source(src: Resolved) -> bytes:
    """The bytes of the regular file about to be renamed onto a checked name."""
    fd = os.open(
        src.kernel_name,
        os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
        dir_fd=src.parent_fd,
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused(src.path, "not a regular file")
        try:
            return read_all(fd)
        except OSError as exc:
            raise Refused(src.path, str(exc)) from None
    finally:
        os.close(fd)


def _stat(res: Resolved) -> os.stat_result:
    return os.stat(res.kernel_name, dir_fd=res.parent_fd, follow_symlinks=False)


def same_file(a: Resolved, b: Resolved) -> bool:
    """Are ``a`` and ``b`` names of one file (hard links)?"""
    sa, sb = _stat(a), _stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def links(res: Resolved) -> int:
    return _stat(res).st_nlink
