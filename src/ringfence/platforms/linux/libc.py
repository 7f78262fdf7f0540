"""Thin ctypes access to the Linux system calls the standard library does not wrap.

Every wrapper raises ``OSError`` with the real errno, so callers handle kernel refusals the same
way they handle ``os`` functions. Syscall numbers are per architecture; only the architectures
listed in ``syscalls.NUMBERS`` are supported, and an unknown one is refused rather than guessed.
"""

from __future__ import annotations

import ctypes
import os

from ringfence.platforms.linux.syscalls import NUMBERS

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

MACHINE = os.uname().machine

_SYSCALLS = NUMBERS


def syscall_number(name: str) -> int:
    """The number of syscall ``name`` on this machine; KeyError on an unknown architecture."""
    return _SYSCALLS[MACHINE][name]


def syscall(name: str, *args: object) -> int:
    """Call syscall ``name``; raise OSError(errno) when the kernel returns -1."""
    ret = int(_syscall(ctypes.c_long(syscall_number(name)), *args))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def libc_call(name: str, *args: object) -> int:
    """Call libc function ``name``; raise OSError(errno) when it returns -1."""
    fn = getattr(_libc, name)
    ret = int(fn(*args))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class OpenHow(ctypes.Structure):
    """``struct open_how`` for openat2(2)."""

    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open with path-resolution restrictions (no symlinks, stay in a root...)."""
    how = OpenHow(flags, mode, resolve)
    return syscall(
        "openat2", dirfd, os.fsencode(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )


def write_file(path: str, text: str) -> None:
    """One unbuffered ``write`` to a kernel interface file (/proc, cgroupfs), which takes a
    whole value per write call."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
