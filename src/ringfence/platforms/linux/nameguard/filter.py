"""The name guard's seccomp filter: which calls go to the supervisor, which fail, which
kill (the decisions are listed in the package's documentation, ``nameguard/__init__.py``).

:func:`build_filter` is pure (tested with ``bpf.evaluate``); :func:`install_filter` runs in
the command's process right before exec.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from typing import Final

from ringfence.errors import SandboxError, UnsupportedError
from ringfence.platforms.linux import bpf, libc
from ringfence.platforms.linux.syscalls import NUMBERS

AUDIT_ARCH_X86_64: Final = 0xC000003E
AUDIT_ARCH_AARCH64: Final = 0xC00000B7
X32_SYSCALL_BIT: Final = 0x40000000

PR_SET_NO_NEW_PRIVS: Final = 38
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5


@dataclass(frozen=True)
class ArchInfo:
    """What the filter needs to know about one architecture."""

    audit_arch: int
    deny_x32: bool
    numbers: dict[str, int]


# Syscalls that always go to the supervisor, and open-like ones that go only with O_CREAT
# (value: index of the flags argument).
NOTIFY_ALWAYS: Final = (
    "creat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    # Changes to an existing file that would disable or arm a nested repository's hook
    # (chmod -x of a secret-scanning pre-commit, truncating it). fd-based fchmod counts too:
    # it works on a file opened read-only. ftruncate needs a file opened for writing, which
    # was already checked.
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "truncate",
    # Every other way to change an existing entry's metadata, and bind(), which creates a
    # socket file (its address is a pointer the filter cannot read, so every bind comes).
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "bind",
    # Unix sockets on disk outside the writable roots (see ``_connect``): connect, and sends
    # that carry a destination address (sendto with one; sendmsg/sendmmsg keep it in a struct
    # the filter cannot read, so every one comes).
    "connect",
    "sendmsg",
    "sendmmsg",
)
# sendto: to the supervisor only with a destination address (argument 4 not NULL); a send
# on a connected socket (the common case: send(2) is sendto with NULL) stays in the kernel.
SENDTO_ADDR_ARG: Final = 4
SOCKET_SYSCALLS: Final = frozenset({"connect", "sendto", "sendmsg", "sendmmsg"})
# Newer forms whose arguments live in a struct: ENOSYS, and libc falls back to the old ones.
ENOSYS_CALLS: Final = ("openat2", "setxattrat", "removexattrat")
NOTIFY_IF_CREAT: Final = {"open": 1, "openat": 2}
# Opens that can create or change a file: with these flags an open goes to the supervisor
# (an existing protected file in a nested repository has no read-only mount to stop a write).
WRITE_OPEN_FLAGS: Final = os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC
O_TMPFILE_BIT: Final = 0o20000000  # __O_TMPFILE, the same on x86_64 and aarch64


# Every syscall the filter names: the notified ones, plus those answered without the supervisor.
GUARD_SYSCALLS: Final = (
    *NOTIFY_ALWAYS,
    *NOTIFY_IF_CREAT,
    *ENOSYS_CALLS,
    "sendto",
    "clone",
    "io_uring_setup",
    "landlock_restrict_self",
)
# clone(2) flags: a process sharing another's file descriptor table without being one of its
# threads is refused, so /proc/PID/status "Threads:" tells the guard whether anyone else can
# change the caller's descriptors while it waits (see ``_sendmsg``). No libc or runtime
# makes such processes (threads use CLONE_THREAD, vfork and posix_spawn do not share files).
CLONE_FILES: Final = 0x00000400
CLONE_THREAD: Final = 0x00010000


def _arch(machine: str, audit_arch: int, deny_x32: bool) -> ArchInfo:
    table = NUMBERS[machine]  # one table for the project: syscalls.py
    return ArchInfo(audit_arch, deny_x32, {n: table[n] for n in GUARD_SYSCALLS if n in table})


ARCHES: Final[dict[str, ArchInfo]] = {
    "x86_64": _arch("x86_64", AUDIT_ARCH_X86_64, True),
    "aarch64": _arch("aarch64", AUDIT_ARCH_AARCH64, False),
}


def build_filter(machine: str = libc.MACHINE, *, names: bool = True) -> list[bpf.Insn]:
    """The name-guard seccomp program for ``machine`` (pure; tested with bpf.evaluate).

    ``names`` False: the guard has no protected name, path or git rule to keep, only the unix
    socket rule, so only socket calls go to it and a nested Landlock domain is allowed (see
    SECURITY.md: the socket calls the guard performs then carry the outer domain's rights)."""
    arch = ARCHES.get(machine)
    if arch is None:
        raise UnsupportedError(
            f"the name guard has no syscall table for {machine!r}; it supports x86_64 and aarch64"
        )
    nums = arch.numbers
    b = bpf.Builder()
    b.load_arch().jeq(arch.audit_arch, None, "kill")
    b.load_nr()
    if arch.deny_x32:
        b.jge(X32_SYSCALL_BIT, "kill")
    b.jeq(nums["io_uring_setup"], "eperm")
    if names:
        # The supervisor performs allowed calls with its own Landlock rights: a stricter domain
        # the command nests for its own children would be bypassed for those calls, so nesting
        # one is refused (the inner sandbox fails closed instead of running weaker).
        b.jeq(nums["landlock_restrict_self"], "eperm")
        for name in ENOSYS_CALLS:
            if name in nums:
                b.jeq(nums[name], "enosys")
        for name in NOTIFY_IF_CREAT:
            if name in nums:
                b.jeq(nums[name], f"creat_arg_{NOTIFY_IF_CREAT[name]}")
    for name in NOTIFY_ALWAYS:
        if name in nums and (names or name in SOCKET_SYSCALLS):
            b.jeq(nums[name], "notify")
    b.jeq(nums["sendto"], "sendto_addr")
    b.jeq(nums["clone"], "clone_files")
    b.ret(bpf.SECCOMP_RET_ALLOW)
    # A pointer is 64 bits: either half non-zero means an address was given.
    b.label("sendto_addr").load_arg(SENDTO_ADDR_ARG).jeq(0, None, "notify")
    b.load_arg(SENDTO_ADDR_ARG, high=True).jeq(0, "allow", "notify")
    # clone(unsigned long flags, ...): CLONE_FILES and CLONE_THREAD are in the low word.
    b.label("clone_files").load_arg(0).jset(CLONE_THREAD, "allow")
    b.jset(CLONE_FILES, "eperm")
    b.ret(bpf.SECCOMP_RET_ALLOW)
    for index in sorted(set(NOTIFY_IF_CREAT.values())) if names else ():
        # Flags are an int: only the low half of the 64-bit argument counts.
        # O_TMPFILE makes a nameless file (a name comes only through linkat, which is
        # checked); the kernel refuses O_TMPFILE together with O_CREAT.
        b.label(f"creat_arg_{index}").load_arg(index).jset(O_TMPFILE_BIT, "allow")
        b.jset(WRITE_OPEN_FLAGS, "notify")
        b.ret(bpf.SECCOMP_RET_ALLOW)
    b.label("allow").ret(bpf.SECCOMP_RET_ALLOW)
    b.label("notify").ret(bpf.SECCOMP_RET_USER_NOTIF)
    b.label("eperm").ret(bpf.ret_errno(errno.EPERM))
    b.label("enosys").ret(bpf.ret_errno(errno.ENOSYS))
    b.label("kill").ret(bpf.SECCOMP_RET_KILL_PROCESS)
    return b.build()


def prepare_filter(names: bool = True) -> bpf.Encoded:
    """``build_filter(names=names)`` for this machine, encoded for :func:`install_filter`
    (a session's runner does it once for all its commands)."""
    return bpf.encoded(build_filter(names=names))


def install_filter(*, names: bool = True, program: bpf.Encoded | None = None) -> int:
    """Set no_new_privs, install the name-guard filter, return its listener fd (O_CLOEXEC).

    Call in the command's process right before exec. Uses WAIT_KILLABLE_RECV where the
    kernel has it (5.19+): once the supervisor holds a call, only a fatal signal interrupts
    the caller, so a signal cannot make an already-emulated mkdir or open run twice.
    ``program``: :func:`prepare_filter` of the same ``names``, made ahead of time.
    """
    fprog, _keep = program if program is not None else bpf.encoded(build_filter(names=names))
    try:
        libc.syscall("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except OSError as exc:
        raise SandboxError(f"cannot set no_new_privs: {exc}") from exc
    base = SECCOMP_FILTER_FLAG_NEW_LISTENER
    for flags in (base | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, base):
        try:
            return libc.syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
        except OSError as exc:
            if exc.errno == errno.EINVAL and flags != base:
                continue
            if exc.errno in (errno.EINVAL, errno.ENOSYS):
                raise UnsupportedError(
                    "this kernel has no seccomp user notification (Linux 5.0+ needed); "
                    "the name guard cannot run"
                ) from exc
            raise SandboxError(f"cannot install the name-guard filter: {exc}") from exc
    raise AssertionError("unreachable")
