"""One notification's caller: its arguments, its memory, its descriptors and its /proc
entry, and the fds the guard opens while answering it."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ringfence.platforms.linux import libc
from ringfence.platforms.linux.nameguard.ffi import IoVec, process_vm_readv
from ringfence.platforms.linux.nameguard.listener import Listener, Notif
from ringfence.platforms.linux.nameguard.results import Refused, Reply

PATH_MAX: Final = 4096
XATTR_SIZE_MAX: Final = 65536
AT_FDCWD: Final = -100


@dataclass(frozen=True)
class GuardView:
    """Where the guard stands: its root (an O_PATH fd, and the root's identity) and its mount
    namespace. A caller must share both, or a path would name other files for it."""

    root_fd: int
    root_id: tuple[int, int]
    mnt_ns: tuple[int, int]


class Call:
    """One notification: the target thread, its /proc dir, and the fds opened for it."""

    def __init__(self, listener: Listener, view: GuardView, notif: Notif) -> None:
        self.listener = listener
        self.view = view
        self.id = int(notif.id)
        self.tid = int(notif.pid)
        self.args = tuple(int(a) for a in notif.data.args)
        self.fds: list[int] = []
        self.validated = False
        self._status: str | None = None
        self.path: str | None = None  # what the call is about, for violation reports
        if self.tid == 0:
            # The caller is in a pid namespace we cannot see into; /proc cannot name it.
            raise Refused("?", "the command is not visible in the guard's pid namespace")
        # Pin the target's /proc directory first: everything later goes through it, and the
        # ID_VALID check after reading memory proves it (and the memory) belong to the caller.
        self.proc_fd = self.own(os.open(f"/proc/{self.tid}", os.O_PATH | os.O_DIRECTORY))

    def own(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def arg_int(self, index: int) -> int:
        value = self.args[index] & 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value

    def arg_uint(self, index: int) -> int:
        return self.args[index] & 0xFFFFFFFF

    def arg_long(self, index: int) -> int:
        """A signed 64-bit argument (off_t)."""
        value = self.args[index] & 0xFFFFFFFFFFFFFFFF
        return value - (1 << 64) if value & (1 << 63) else value

    def read_path(self, index: int) -> str:
        """The NUL-terminated string argument ``index`` from the target's memory."""
        if self.validated:
            raise AssertionError("read the target's memory before validating the call")
        addr = self.args[index]
        if addr == 0:
            raise OSError(errno.EFAULT, "NULL path")
        buf = ctypes.create_string_buffer(PATH_MAX)
        got = 0
        while got < PATH_MAX:
            start = addr + got
            size = min(PATH_MAX - got, 4096 - (start % 4096))
            local = IoVec(ctypes.addressof(buf) + got, size)
            remote = IoVec(start, size)
            n = process_vm_readv(self.tid, local, 1, remote, 1, 0)
            if n <= 0:
                err = ctypes.get_errno() if n < 0 else errno.EFAULT
                raise OSError(err, f"reading the path from pid {self.tid}")
            chunk = buf.raw[got : got + n]
            nul = chunk.find(b"\0")
            if nul >= 0:
                text = os.fsdecode(buf.raw[: got + nul])
                if self.path is None:
                    self.path = text
                return text
            got += n
        raise OSError(errno.ENAMETOOLONG, "path longer than PATH_MAX")

    def read_bytes(self, index: int, size: int) -> bytes:
        """``size`` bytes at the pointer in argument ``index`` (an address, an xattr value)."""
        if self.validated:
            raise AssertionError("read the target's memory before validating the call")
        if size > XATTR_SIZE_MAX:
            raise OSError(errno.E2BIG, "too large")
        if size == 0:
            return b""
        buf = ctypes.create_string_buffer(size)
        local = IoVec(ctypes.addressof(buf), size)
        remote = IoVec(self.args[index], size)
        n = process_vm_readv(self.tid, local, 1, remote, 1, 0)
        if n != size:
            raise OSError(ctypes.get_errno() or errno.EFAULT, f"reading from pid {self.tid}")
        return buf.raw[:size]

    def fd_copy(self, fd_number: int) -> int:
        """Our own copy of the caller's file descriptor ``fd_number`` (pidfd_getfd): the same
        open file, whatever the caller does with the number afterwards."""
        if fd_number < 0:
            raise OSError(errno.EBADF, "bad fd")
        try:  # the caller is usually its process's main thread: no /proc read for the tgid
            pidfd = os.pidfd_open(self.tid)
        except OSError as exc:
            # Another thread: older kernels say EINVAL, newer ones ENOENT (it is no process).
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            pidfd = os.pidfd_open(self.tgid)
        try:
            return libc.syscall("pidfd_getfd", pidfd, fd_number, 0)
        except OSError as exc:
            raise OSError(
                errno.EBADF if exc.errno == errno.EBADF else exc.errno, "bad fd"
            ) from None
        finally:
            os.close(pidfd)

    def socket_fd(self, fd_number: int) -> int:
        """Our own copy of the caller's socket ``fd_number``."""
        fd = self.fd_copy(fd_number)
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ENOTSOCK, "not a socket")
        return fd

    def read_at(self, addr: int, size: int) -> bytes:
        """``size`` bytes at ``addr`` in the caller's memory. The caller of this method proves
        the memory was the caller's with ``Supervisor.id_valid`` afterwards."""
        if size == 0:
            return b""
        buf = ctypes.create_string_buffer(size)
        local = IoVec(ctypes.addressof(buf), size)
        remote = IoVec(addr, size)
        n = process_vm_readv(self.tid, local, 1, remote, 1, 0)
        if n != size:
            raise OSError(errno.EFAULT, f"reading from pid {self.tid}")
        return buf.raw[:size]

    def validate(self) -> None:
        """After reading memory: is the notification still live (no pid reuse)?

        Then check the target sees the same filesystem as we do; if not our resolution would
        name other files than the kernel would, so refuse.
        """
        self.listener.id_valid(self.id)
        self.validated = True
        mnt = os.stat("ns/mnt", dir_fd=self.proc_fd)
        root = os.stat("root", dir_fd=self.proc_fd)
        if (mnt.st_dev, mnt.st_ino) != self.view.mnt_ns or (
            root.st_dev,
            root.st_ino,
        ) != self.view.root_id:
            raise Refused("/", "the command's root or mount namespace differs from the guard's")

    def status(self, key: str) -> str:
        """One field of /proc/TID/status (read once per call)."""
        if self._status is None:
            fd = os.open("status", os.O_RDONLY, dir_fd=self.proc_fd)
            try:
                self._status = os.read(fd, 16384).decode("ascii", "replace")
            finally:
                os.close(fd)
        m = re.search(rf"^{key}:\s*(\S+)", self._status, re.MULTILINE)
        if m is None:
            raise OSError(errno.ENOSYS, f"/proc/PID/status has no {key}")
        return m.group(1)

    @property
    def tgid(self) -> int:
        return int(self.status("Tgid"))

    @property
    def umask(self) -> int:
        return int(self.status("Umask"), 8)

    def base_fd(self, dirfd: int, path: str) -> int:
        """Where a relative ``path`` starts: the target's cwd or its directory fd ``dirfd``."""
        if not self.validated:
            raise AssertionError("validate the call before resolving paths")
        if path.startswith("/"):
            return self.view.root_fd
        if dirfd == AT_FDCWD:
            return self.own(os.open("cwd", os.O_PATH | os.O_DIRECTORY, dir_fd=self.proc_fd))
        fd = self.target_fd(dirfd)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTDIR, "dirfd is not a directory")
        return fd

    def target_fd(self, fd_number: int) -> int:
        """An O_PATH fd for what the target's fd ``fd_number`` refers to."""
        if fd_number < 0:
            raise OSError(errno.EBADF, "bad fd")
        try:
            return self.own(os.open(f"fd/{fd_number}", os.O_PATH, dir_fd=self.proc_fd))
        except FileNotFoundError:
            raise OSError(errno.EBADF, "bad fd") from None


# A syscall's handler: performs the call (named by the second argument) for the caller.
Handler = Callable[[Call, str], Reply]
