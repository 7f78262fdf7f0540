"""Thin ctypes access to the Linux system calls the standard library does not wrap.

Every wrapper raises ``OSError`` with the real errno, so callers handle kernel refusals the same
way they handle ``os`` functions. Syscall numbers are per architecture; only the architectures
listed in ``_SYSCALLS`` are supported, and an unknown one is refused rather than guessed.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

MACHINE = os.uname().machine

# Numbers from the kernel's unistd tables (x86_64: arch/x86/entry/syscalls/syscall_64.tbl;
# aarch64 uses the generic table include/uapi/asm-generic/unistd.h).
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "pivot_root": 155,
        "unshare": 272,
        "prctl": 157,
        "seccomp": 317,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "openat2": 437,
        "mount_setattr": 442,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "close_range": 436,
        "capset": 126,
        "keyctl": 250,
        "sethostname": 170,
    },
    "aarch64": {
        "pivot_root": 41,
        "unshare": 97,
        "prctl": 167,
        "seccomp": 277,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "openat2": 437,
        "mount_setattr": 442,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "close_range": 436,
        "capset": 91,
        "keyctl": 219,
        "sethostname": 161,
    },
}


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
