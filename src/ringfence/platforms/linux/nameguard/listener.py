"""The supervisor's end of the filter: the seccomp notification structs and ioctls, and
:class:`Listener`, which receives notifications and answers them."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from typing import Final

from ringfence.platforms.linux import libc
from ringfence.platforms.linux.nameguard.results import Continue, Deferred, Fd, Reply, Value

SECCOMP_GET_NOTIF_SIZES: Final = 3
SECCOMP_ADDFD_FLAG_SEND: Final = 1 << 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: Final = 1
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2


class SeccompData(ctypes.Structure):
    _fields_ = (
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("ip", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class Notif(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", SeccompData),
    )


class Resp(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


class AddFd(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    )


class NotifSizes(ctypes.Structure):
    _fields_ = (
        ("seccomp_notif", ctypes.c_uint16),
        ("seccomp_notif_resp", ctypes.c_uint16),
        ("seccomp_data", ctypes.c_uint16),
    )


IOCTL_NOTIF_RECV: Final = _ioc(_IOC_READ | _IOC_WRITE, 0, ctypes.sizeof(Notif))
IOCTL_NOTIF_SEND: Final = _ioc(_IOC_READ | _IOC_WRITE, 1, ctypes.sizeof(Resp))
IOCTL_NOTIF_ID_VALID: Final = _ioc(_IOC_WRITE, 2, 8)
IOCTL_NOTIF_ADDFD: Final = _ioc(_IOC_WRITE, 3, ctypes.sizeof(AddFd))
IOCTL_NOTIF_SET_FLAGS: Final = _ioc(_IOC_WRITE, 4, 8)


class Listener:
    """The listener fd the command's filter hands over: notifications in, answers out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        sizes = NotifSizes()
        libc.syscall("seccomp", SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes))
        self._notif_buf = ctypes.create_string_buffer(
            max(int(sizes.seccomp_notif), ctypes.sizeof(Notif))
        )

    def wake_on_same_cpu(self) -> None:
        """Optional (6.6+): wake the target on the same CPU, which roughly halves the latency."""
        try:
            flag = ctypes.c_uint64(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
            fcntl.ioctl(self.fd, IOCTL_NOTIF_SET_FLAGS, flag, True)
        except OSError:
            pass

    def receive(self) -> Notif | None:
        """The next notification; None when its caller died or was signalled meanwhile."""
        buf = self._notif_buf
        ctypes.memset(buf, 0, ctypes.sizeof(buf))  # RECV insists on a zeroed buffer
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR):  # the caller died or was signalled
                return None
            raise
        return Notif.from_buffer_copy(buf.raw[: ctypes.sizeof(Notif)])

    def respond(self, notif_id: int, reply: Reply) -> None:
        """Send ``reply`` (thread-safe: each call uses its own buffers)."""
        if isinstance(reply, Deferred):
            return
        if isinstance(reply, Continue):
            resp = Resp(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            try:
                fcntl.ioctl(self.fd, IOCTL_NOTIF_SEND, resp, True)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            return
        if isinstance(reply, Fd):
            addfd = AddFd(
                notif_id,
                SECCOMP_ADDFD_FLAG_SEND,
                reply.fd,
                0,
                os.O_CLOEXEC if reply.cloexec else 0,
            )
            try:
                # SEND: install the fd and answer the call with its number in one step.
                fcntl.ioctl(self.fd, IOCTL_NOTIF_ADDFD, addfd, True)
                return
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # the caller is gone
                reply = Value(error=exc.errno or errno.EIO)  # e.g. EMFILE in the caller
            finally:
                os.close(addfd.srcfd)
        resp = Resp(notif_id, reply.val, -reply.error if reply.error else 0, 0)
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_SEND, resp, True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller is gone, nobody to answer
                raise

    def id_valid(self, notif_id: int) -> None:
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_ID_VALID, ctypes.c_uint64(notif_id), True)
        except OSError as exc:
            raise OSError(errno.ESRCH, "the caller went away") from exc
