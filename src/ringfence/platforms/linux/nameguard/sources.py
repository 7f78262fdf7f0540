"""What a rename brings along: the file at its source, read and compared as the guard sees it
(the rules for a renamed file are the rules for a file made at its new name), and a rename
onto a file git reads by content, which puts the guard's checked copy there instead."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ringfence.platforms.linux.gitguard.fileio import put_copy, read_all
from ringfence.platforms.linux.gitguard.guard import GitGuard
from ringfence.platforms.linux.nameguard.call import Call
from ringfence.platforms.linux.nameguard.results import Refused, Reply, Resolved, Value
from ringfence.policy import gitconfig

RENAME_NOREPLACE = 1 << 0


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


def replace_checked(
    git: GitGuard,
    event: Callable[[str, str, str], None],
    names: tuple[Call, Resolved, Resolved],
    kind: tuple[str, str],
    flags: int,
) -> Reply:
    """Rename onto a config, ``.gitmodules`` or todo list: check the exact bytes, then put
    the guard's own copy of them in place.

    The command's file may have other names or open descriptors; the copy is a fresh inode
    nobody else holds, so what git later reads is exactly what was checked.
    """
    call, src, dst = names
    what, base = kind
    data, dropped = git.content.settle(read_checked_source(src), what)
    problem = git.content.config_problem(data, gitdir_path=base, kind=what)
    if problem is not None:
        hint = git.content.host_hint(data, path=dst.path, gitdir_path=base, kind=what)
        event("refused_config", dst.path, f"{problem}; {hint}" if hint else problem)
        raise Refused(dst.path, f"{what}: {problem}")
    if flags & RENAME_NOREPLACE:
        try:
            _stat(dst)
        except FileNotFoundError:
            pass
        else:
            raise OSError(errno.EEXIST, "exists")
    mode = stat.S_IMODE(_stat(src).st_mode)
    call.validate()  # as in a rename: nothing in the name of a caller that is gone
    put_copy(dst.parent_fd, dst.kernel_name.rstrip("/"), data, mode)
    if dropped:
        event("dropped_worktree", dst.path, gitconfig.WORKTREE_REFUSED)
    try:  # a rename leaves no source behind, nor any note of it
        os.unlink(src.kernel_name, dir_fd=src.parent_fd)
    except OSError:
        pass
    else:
        git.moved(src.path, None, pointer=None, is_dir=False)
    git.forget_repos()  # a config changed: what it names may have too
    if git.pending.pop(dst.path, None) is not None:  # checked now (a .gitmodules)
        git.told.forget(dst.path)
    return Value()
