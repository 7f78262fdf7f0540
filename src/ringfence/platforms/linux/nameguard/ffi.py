"""The libc functions and structs the name guard calls through ctypes, where ``os`` has
no wrapper (or none that takes what the guard holds: raw address bytes, an O_PATH fd)."""

from __future__ import annotations

import ctypes
import os
from typing import Final


class IoVec(ctypes.Structure):
    """``struct iovec``."""

    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    """``struct msghdr`` (64-bit: 56 bytes); ``struct mmsghdr`` adds ``msg_len`` and padding."""

    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


_libc = ctypes.CDLL(None, use_errno=True)
process_vm_readv = _libc.process_vm_readv
process_vm_readv.restype = ctypes.c_ssize_t
process_vm_readv.argtypes = (
    ctypes.c_int,
    ctypes.POINTER(IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
)
fstatfs = _libc.fstatfs
fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
renameat2 = _libc.renameat2
renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
fchownat = _libc.fchownat
fchownat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
bind_raw = _libc.bind
bind_raw.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
connect_raw = _libc.connect
connect_raw.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
sendmsg_raw = _libc.sendmsg
sendmsg_raw.restype = ctypes.c_ssize_t
sendmsg_raw.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
getsockopt = _libc.getsockopt
getsockopt.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
process_vm_writev = _libc.process_vm_writev
process_vm_writev.restype = ctypes.c_ssize_t
process_vm_writev.argtypes = process_vm_readv.argtypes


SOCKADDR_MAX: Final = 128  # sizeof(struct sockaddr_storage)
SUN_PATH_MAX: Final = 108
SUN_ADDR_MAX: Final = 110  # sizeof(struct sockaddr_un)


def check(ret: int, what: str) -> int:
    """``ret`` of a libc call, or its errno raised as OSError when it failed (-1)."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret
