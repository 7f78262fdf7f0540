"""Reading, replacing and moving aside the files git reads, never through a symlink: the
exact bytes a check judged are what ends up in place."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import stat
from collections.abc import Callable
from typing import Final, TypeVar

from ringfence.platforms.linux import libc

MAX_CONTENT_BYTES: Final = 1 << 20  # gitconfig.MAX_CONFIG_BYTES (imported only when needed)
AT_FDCWD: Final = -100
T = TypeVar("T")
RENAME_NOREPLACE: Final = 1


def quarantine(path: str) -> str | None:
    """Move a refused file aside (``NAME.ringfence-refused[-N]``), never over anything, its
    content kept for the user to read; no symlink is followed on the way (the host calls this
    too, with full rights, when the guard could not finish). The new name, or None."""
    parent, name = posixpath.split(path)
    try:
        dfd = libc.openat2(
            AT_FDCWD, parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, libc.RESOLVE_NO_SYMLINKS
        )
    except OSError:
        return None
    try:
        new = quarantine_at(dfd, name)
        return None if new is None else f"{parent}/{new}"
    finally:
        os.close(dfd)


def let_us_write(fd: int) -> None:
    """Give the owner write (and search) permission on the file or directory ``fd`` (an
    O_PATH descriptor): a command can take its own away (``chmod 0555``) so that the guard,
    running as the same user, could not move, replace or empty what it refused. The owner
    may always change the mode; the command's other bits stay as they are."""
    st = os.fstat(fd)
    extra = stat.S_IWUSR | (stat.S_IXUSR if stat.S_ISDIR(st.st_mode) else 0)
    if stat.S_IMODE(st.st_mode) & extra != extra:
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode) | extra)


def writing_to(fd: int, action: Callable[[], T]) -> T:
    """``action()``; refused for permission, once more after :func:`let_us_write`."""
    try:
        return action()
    except PermissionError:
        let_us_write(fd)
        return action()


def quarantine_at(dfd: int, name: str) -> str | None:
    """:func:`quarantine` of ``name`` in the directory ``dfd``: its new name, or None. The
    plain names first (a person finds them), then ones nobody can have taken in advance."""
    plain = [f"{name}.ringfence-refused" + (f"-{n}" if n else "") for n in range(100)]
    unguessable = [f"{name}.ringfence-refused-{os.urandom(8).hex()}" for _ in range(4)]
    for new in [*plain, *unguessable]:
        try:
            rename = (dfd, os.fsencode(name), dfd, os.fsencode(new), RENAME_NOREPLACE)
            writing_to(dfd, functools.partial(libc.syscall, "renameat2", *rename))
        except FileExistsError:
            continue
        except OSError:
            return None
        return new
    return None


def read_regular(path: str) -> bytes:
    """The bytes of the regular file at ``path`` (no symlink followed anywhere on the way);
    FileNotFoundError when it is not there, OSError when it is not a plain file."""
    fd = libc.openat2(
        AT_FDCWD,
        path,
        os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC,
        libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS,
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return read_all(fd)
    finally:
        os.close(fd)


def put_copy(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Atomically make ``name`` in ``dir_fd`` a fresh file holding exactly ``data``: the
    guard's own inode, which no process of the command holds open."""
    tmp = f".ringfence-{os.urandom(8).hex()}.tmp"
    fd = writing_to(dir_fd, lambda: os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
        dir_fd=dir_fd,
    ))  # fmt: skip
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode & 0o777)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def replace_with_copy(path: str, data: bytes) -> None:
    """:func:`put_copy` at ``path``, reached without following any symlink."""
    parent, name = posixpath.split(path)
    dfd = libc.openat2(
        AT_FDCWD, parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, libc.RESOLVE_NO_SYMLINKS
    )
    try:
        mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
        put_copy(dfd, name, data, mode)
    finally:
        os.close(dfd)


def read_all(fd: int) -> bytes:
    """All of a file, refusing one too long to be a config or pointer (EFBIG)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_CONTENT_BYTES:
            raise OSError(errno.EFBIG, f"longer than {MAX_CONTENT_BYTES} bytes")
        chunks.append(chunk)
