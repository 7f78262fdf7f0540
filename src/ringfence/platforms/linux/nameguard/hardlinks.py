"""Files with other names (hard links) in the writable roots.

A regular file may have names outside the writable roots too: uv and pnpm install a
project's packages as hard links to their caches' files (and so to every other environment
built from them), ccache's ``hard_link`` mode links objects into the build, ``cp -al`` and a
local ``git clone`` share files. Landlock and the read-only mounts judge a write by the name
it goes through, so writing such a file through its name in the workspace changed the
others too: a command could put code into a package that every other project, or the host's
own tools, would run. The sandbox cannot make such links itself (a link across mounts fails),
so the ones it meets were there before.

The guard already performs every write-open and every change of mode, owner, attributes or
length for the command. A change to a file with more than one name is refused, except an open
that truncates the file anyway: a new file then takes the name (with the old one's mode), and
the other names keep the old content. What is checked is the file the call reaches, by its
descriptor, so a link put in place after the guard looked is caught too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ringfence.platforms.linux.nameguard.results import Fd, Refused, Reply, Resolved

O_ACCMODE: Final = 0o3
HARD_LINKED: Final = (
    "a file with other names (hard links), which may lie outside the writable roots: "
    "write a new file and rename it over this one, or open it with O_TRUNC"
)


def linked(st: os.stat_result) -> bool:
    """Whether a change to this object would reach other names of it."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


@dataclass(frozen=True)
class WriteOpen:
    """How the guard opens a file the command opens."""

    flags: int
    mode: int
    replace: bool = False  # a new file takes the name (the old one had other names)
    truncate: bool = False  # truncate once the file opened is known to have one name
    checks: bool = False  # the open writes: what it reaches must have one name


def plan_open(
    res: Resolved, flags: int, mode: int, *, exists: bool, checked: Callable[[str], bool]
) -> WriteOpen:
    """The open of ``res``. One that writes is refused on a file with other names, unless
    it truncates it anyway (and git does not check its content: ``checked``): then a new
    file takes the name. ``O_TRUNC`` is left to :func:`settle`, once the descriptor shows one
    name: a link put at the name after this look must not be truncated for its other names.
    """
    writes = flags & (O_ACCMODE | os.O_TRUNC) and not flags & os.O_PATH
    if not writes or flags & os.O_DIRECTORY or (flags & os.O_CREAT and flags & os.O_EXCL):
        return WriteOpen(flags, mode)  # writes nothing, or fails as it is (ENOTDIR, EEXIST)
    truncate = bool(flags & os.O_TRUNC)
    plain = WriteOpen(flags & ~os.O_TRUNC, mode, truncate=truncate, checks=True)
    if not exists:
        return plain
    st = os.stat(res.kernel_name, dir_fd=res.parent_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "is a directory")  # as the kernel says for a write
    if not linked(st):
        return plain
    if not truncate or flags & O_ACCMODE == os.O_RDONLY or checked(res.path):
        raise Refused(res.path, HARD_LINKED)
    return WriteOpen(flags | os.O_CREAT | os.O_EXCL, stat.S_IMODE(st.st_mode), replace=True)


def settle(fd: int, how: WriteOpen) -> bool:
    """After the open: whether ``fd`` is what was planned (False: a file with other names
    took the name since; open again). Sets a replacement's mode, truncates as asked."""
    if how.replace:
        os.fchmod(fd, how.mode)  # the old file's mode, not the umask's
        return True
    if not how.checks:
        return True
    st = os.fstat(fd)
    if linked(st):
        return False
    if how.truncate and stat.S_ISREG(st.st_mode):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & O_ACCMODE == os.O_RDONLY:
            w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(w, 0)
            finally:
                os.close(w)
        else:
            os.ftruncate(fd, 0)
    return True


def settled(reply: Reply, how: WriteOpen) -> bool:
    """:func:`settle` on an open's descriptor, which is closed unless it is given."""
    if not isinstance(reply, Fd):
        return True
    try:
        if settle(reply.fd, how):
            return True
    except BaseException:
        os.close(reply.fd)
        raise
    os.close(reply.fd)
    return False
