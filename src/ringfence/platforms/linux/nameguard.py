"""The name guard: stop a command from creating protected names that do not exist yet.

Read-only bind mounts protect protected paths that exist when the sandbox starts, and
Landlock cannot say "this directory except this name". So the command runs under a seccomp
filter that sends every syscall which creates, removes or renames a directory entry to a
supervisor process. The supervisor resolves the path the way the kernel would for the
command, asks :mod:`guard_rules`, and then either refuses with EACCES or performs the
operation itself and returns the result (file descriptors are injected with
SECCOMP_IOCTL_NOTIF_ADDFD). It never lets the original call continue: the path lives in the
command's memory and another thread could change it between the check and the kernel's
second read; emulation acts only on the string it read and the directory fds it pinned.

Setup, in order:

1. the command's process calls :func:`install_filter` right before exec (after Landlock) and
   hands the returned listener fd to the supervisor (``runner.hand_over_listener``: the
   supervisor takes it with pidfd_getfd, since a sendmsg would already wait for the
   supervisor), then closes it (it is O_CLOEXEC; a command holding its own listener could
   answer its own notifications);
2. the supervisor process runs ``Supervisor(listener_fd, rules).serve(stop_fd)``.

Requirements on the supervisor (checked where cheap, see ``Supervisor.__init__``): it is not
under this filter; it shares the command's mount namespace and root, and its ``/proc`` is
the procfs of its own pid namespace; it can ptrace-read the command (same user, command
dumpable, Landlock domain an ancestor of the command's or none); it runs in its own process
because it sets the process umask to the command's for each emulated creation.

Filter decisions (x86_64 and aarch64):

* a foreign architecture (i386 via int 0x80, arm32 compat) or an x32 syscall number kills the
  process (SECCOMP_RET_KILL_PROCESS): such a call is a way around a filter written for the
  native numbers, and a loud death is better than an errno a fallback path would hide;
* open/openat with O_CREAT, creat, mkdir*, mknod*, symlink*, link*, rename*, unlink*, rmdir go
  to the supervisor;
* openat2 fails with ENOSYS (its flags live in a struct BPF cannot read; libc and most
  programs fall back to openat);
* io_uring_setup fails with EPERM (io_uring operations bypass seccomp);
* connect, sendmsg, sendmmsg, and sendto with an address go to the supervisor (unix sockets
  on disk outside the writable roots are refused: see ``_connect``);
* clone with CLONE_FILES but not CLONE_THREAD fails with EPERM (every sharer of a descriptor
  table is then a thread, which ``_sendmsg`` counts);
* with ``names=False`` (no protected name, path or git rule) only the socket calls go to the
  supervisor and landlock_restrict_self is allowed;
* everything else is allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import queue
import re
import select
import signal
import socket
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ringfence.errors import SandboxError, UnsupportedError
from ringfence.platforms.linux import bpf, libc
from ringfence.platforms.linux.gitguard import (
    GitGuard,
    Unknown,
    is_dot_git,
    put_copy,
    quarantine,
    read_all,
)
from ringfence.platforms.linux.guard_rules import (
    GuardRules,
    check_canonical,
    is_ancestor_of_protected_path,
    may_hold_protected,
    protected_by,
    socket_refused,
)
from ringfence.platforms.linux.syscalls import NUMBERS

# ----------------------------------------------------------------------------- constants

AUDIT_ARCH_X86_64: Final = 0xC000003E
AUDIT_ARCH_AARCH64: Final = 0xC00000B7
X32_SYSCALL_BIT: Final = 0x40000000

PR_SET_NO_NEW_PRIVS: Final = 38
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_GET_NOTIF_SIZES: Final = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5
SECCOMP_ADDFD_FLAG_SEND: Final = 1 << 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: Final = 1

PATH_MAX: Final = 4096
XATTR_SIZE_MAX: Final = 65536
MAXSYMLINKS: Final = 40  # the kernel's limit per lookup
PROC_SUPER_MAGIC: Final = 0x9FA0
PROC_ROOT_INO: Final = 1
AT_FDCWD: Final = -100
AT_SYMLINK_FOLLOW: Final = 0x400
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200
AT_EMPTY_PATH: Final = 0x1000
RENAME_NOREPLACE: Final = 1 << 0
RENAME_EXCHANGE: Final = 1 << 1
O_ACCMODE: Final = 0o3
DEV_TTY: Final = os.makedev(5, 0)
_CREAT_FLAGS: Final = os.O_CREAT | os.O_WRONLY | os.O_TRUNC


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2


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


# ----------------------------------------------------------------------------- the filter


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


def install_filter(*, names: bool = True) -> int:
    """Set no_new_privs, install the name-guard filter, return its listener fd (O_CLOEXEC).

    Call in the command's process right before exec. Uses WAIT_KILLABLE_RECV where the
    kernel has it (5.19+): once the supervisor holds a call, only a fatal signal interrupts
    the caller, so a signal cannot make an already-emulated mkdir or open run twice.
    """
    program = build_filter(names=names)
    fprog, _keep = bpf.sock_fprog(program)
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


# ----------------------------------------------------------------------------- kernel structs


class _SeccompData(ctypes.Structure):
    _fields_ = (
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("ip", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class _Notif(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", _SeccompData),
    )


class _Resp(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


class _AddFd(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    )


class _NotifSizes(ctypes.Structure):
    _fields_ = (
        ("seccomp_notif", ctypes.c_uint16),
        ("seccomp_notif_resp", ctypes.c_uint16),
        ("seccomp_data", ctypes.c_uint16),
    )


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


IOCTL_NOTIF_RECV: Final = _ioc(_IOC_READ | _IOC_WRITE, 0, ctypes.sizeof(_Notif))
IOCTL_NOTIF_SEND: Final = _ioc(_IOC_READ | _IOC_WRITE, 1, ctypes.sizeof(_Resp))
IOCTL_NOTIF_ID_VALID: Final = _ioc(_IOC_WRITE, 2, 8)
IOCTL_NOTIF_ADDFD: Final = _ioc(_IOC_WRITE, 3, ctypes.sizeof(_AddFd))
IOCTL_NOTIF_SET_FLAGS: Final = _ioc(_IOC_WRITE, 4, 8)

_libc = ctypes.CDLL(None, use_errno=True)
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = (
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_fstatfs = _libc.fstatfs
_fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
_renameat2 = _libc.renameat2
_renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_fchownat = _libc.fchownat
_fchownat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
_bind_raw = _libc.bind
_bind_raw.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
SOCKADDR_MAX: Final = 128  # sizeof(struct sockaddr_storage)
SUN_PATH_MAX: Final = 108
SUN_ADDR_MAX: Final = 110  # sizeof(struct sockaddr_un)

_connect_raw = _libc.connect
_connect_raw.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_sendmsg_raw = _libc.sendmsg
_sendmsg_raw.restype = ctypes.c_ssize_t
_sendmsg_raw.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_getsockopt = _libc.getsockopt
_getsockopt.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_process_vm_writev.argtypes = _process_vm_readv.argtypes


class _MsgHdr(ctypes.Structure):
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


MSGHDR_SIZE: Final = ctypes.sizeof(_MsgHdr)
MMSGHDR_SIZE: Final = MSGHDR_SIZE + 8
SOL_SOCKET: Final = 1
SO_TYPE: Final = 3
SO_DOMAIN: Final = 39
SO_ERROR: Final = 4
CONNECT_TRY: Final = 0.02  # seconds a blocking connect may take in the guard's own thread
SCM_RIGHTS: Final = 1
CMSG_HDR: Final = 16  # struct cmsghdr: size_t len, int level, int type (8-byte aligned data)
MSG_DONTWAIT: Final = 0x40
MSG_NOSIGNAL: Final = 0x4000
UIO_MAXIOV: Final = 1024
# The most a sent message may carry through the guard: the kernel's own datagram limits are
# far lower (a unix datagram ~208 KiB by default, UDP 64 KiB); a stream send is cut to this
# and returns the count sent, as a send on a stream socket may.
SEND_MAX: Final = 1 << 20
CONTROL_MAX: Final = 1 << 16  # ancillary data (the kernel's optmem limit is lower)
# Calls that wait (a blocking connect or send) are finished by worker threads, so the guard
# itself never waits for a peer; at most this many at once, then EAGAIN.
WORKERS_MAX: Final = 64


def _sockopt(fd: int, option: int) -> int:
    value = ctypes.c_int(0)
    size = ctypes.c_uint32(ctypes.sizeof(value))
    _check(
        _getsockopt(fd, SOL_SOCKET, option, ctypes.byref(value), ctypes.byref(size)), "getsockopt"
    )
    return value.value


def _proc_fd_address(fd: int) -> bytes:
    """A unix address naming the socket file our O_PATH ``fd`` holds: the kernel follows the
    magic link to exactly the inode we checked (and a long path fits in sun_path this way)."""
    return socket.AF_UNIX.to_bytes(2, sys.byteorder) + f"/proc/self/fd/{fd}".encode() + b"\0"


def _send_one(sock: int, name: bytes, data: bytes, control: bytes, flags: int) -> int:
    """sendmsg(2) on our copy of the caller's socket with what we read (and checked)."""
    hdr = _MsgHdr()
    keep: list[Any] = []
    if name:
        buf = ctypes.create_string_buffer(name, len(name))
        keep.append(buf)
        hdr.name, hdr.namelen = ctypes.addressof(buf), len(name)
    body = ctypes.create_string_buffer(data, len(data)) if data else None
    iov = _IoVec(ctypes.addressof(body) if body is not None else None, len(data))
    hdr.iov, hdr.iovlen = ctypes.addressof(iov), 1
    if control:
        cbuf = ctypes.create_string_buffer(control, len(control))
        keep.append(cbuf)
        hdr.control, hdr.controllen = ctypes.addressof(cbuf), len(control)
    n = _sendmsg_raw(sock, ctypes.byref(hdr), flags)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(n)


def _connected(sock: int) -> _Reply:
    """Wait for a TCP connect already under way on ``sock``; its result, as connect gives it."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    poller.poll()
    err = _sockopt(sock, SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    return _Value()


class _Workers:
    """Threads that finish calls which may wait for a peer (a blocking connect, a send into a
    full buffer), so the guard keeps answering everyone else meanwhile. A waiting call waits
    as long as the caller would have (it ends with the guard, which ends with the command);
    at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.idle = 0
        self.count = 0

    def submit(self, job: Callable[[], None]) -> bool:
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
                self.jobs.put(job)
                return True
            if self.count >= self.limit:
                return False
            self.count += 1
        threading.Thread(target=self._loop, args=(job,), name="nameguard-wait", daemon=True).start()
        return True

    def _loop(self, job: Callable[[], None]) -> None:
        # Signals are the main thread's business: a blocking connect interrupted here would
        # leave a TCP socket half-connected.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            job()
            with self.lock:
                self.idle += 1
            job = self.jobs.get()


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Denial:
    """One refused operation, for violation reports."""

    pid: int
    syscall: str
    path: str
    rule: str
    by: str = "guard"  # the guard's own rule, or "kernel": the call we made for it was refused


_REFUSALS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class _Refused(Exception):
    def __init__(self, path: str, rule: str, by: str = "guard") -> None:
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule
        self.by = by  # "guard" (a protected name) or "socket" (a unix socket rule)


@dataclass(frozen=True)
class _Value:
    val: int = 0
    error: int = 0


@dataclass(frozen=True)
class _Fd:
    fd: int  # the supervisor's fd; closed after injection
    cloexec: bool


class _Deferred:
    """A worker thread will answer this notification (a FIFO open that may block)."""


class _Continue:
    """Let the kernel run the call itself (SECCOMP_USER_NOTIF_FLAG_CONTINUE): only where no
    change the caller can make after the check matters (see ``Supervisor._sendmsg``)."""


_DEFERRED: Final = _Deferred()
_CONTINUE: Final = _Continue()
_Reply = _Value | _Fd | _Deferred | _Continue
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1


@dataclass
class _Resolved:
    """The parent directory (pinned) and final name a path names, as the kernel would see it."""

    parent_fd: int
    name: str  # one component; "." or ".." when the path ends so
    trailing_slash: bool
    parent_path: str

    @property
    def path(self) -> str:
        if self.name in (".", ".."):
            return self.parent_path
        return self.parent_path.rstrip("/") + "/" + self.name

    @property
    def kernel_name(self) -> str:
        """The name to hand the emulating *at() call; a trailing slash keeps its meaning."""
        return self.name + "/" if self.trailing_slash else self.name


@dataclass
class _Magic:
    """A /proc magic link the path ends in; ``fd`` is an O_PATH fd of what it points to."""

    fd: int


# ----------------------------------------------------------------------------- per call


class _Call:
    """One notification: the target thread, its /proc dir, and the fds opened for it."""

    def __init__(self, sup: Supervisor, notif: _Notif) -> None:
        self.sup = sup
        self.id = int(notif.id)
        self.tid = int(notif.pid)
        self.args = tuple(int(a) for a in notif.data.args)
        self.fds: list[int] = []
        self.validated = False
        self._status: str | None = None
        self.path: str | None = None  # what the call is about, for violation reports
        if self.tid == 0:
            # The caller is in a pid namespace we cannot see into; /proc cannot name it.
            raise _Refused("?", "the command is not visible in the guard's pid namespace")
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
            local = _IoVec(ctypes.addressof(buf) + got, size)
            remote = _IoVec(start, size)
            n = _process_vm_readv(self.tid, local, 1, remote, 1, 0)
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
        local = _IoVec(ctypes.addressof(buf), size)
        remote = _IoVec(self.args[index], size)
        n = _process_vm_readv(self.tid, local, 1, remote, 1, 0)
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
        local = _IoVec(ctypes.addressof(buf), size)
        remote = _IoVec(addr, size)
        n = _process_vm_readv(self.tid, local, 1, remote, 1, 0)
        if n != size:
            raise OSError(errno.EFAULT, f"reading from pid {self.tid}")
        return buf.raw[:size]

    def validate(self) -> None:
        """After reading memory: is the notification still live (no pid reuse)?

        Then check the target sees the same filesystem as we do; if not our resolution would
        name other files than the kernel would, so refuse.
        """
        self.sup.id_valid(self.id)
        self.validated = True
        mnt = os.stat("ns/mnt", dir_fd=self.proc_fd)
        root = os.stat("root", dir_fd=self.proc_fd)
        if (mnt.st_dev, mnt.st_ino) != self.sup.mnt_ns or (
            root.st_dev,
            root.st_ino,
        ) != self.sup.root_id:
            raise _Refused("/", "the command's root or mount namespace differs from the guard's")

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
            return self.sup.root_fd
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


# ----------------------------------------------------------------------------- supervisor


class Supervisor:
    """Answers the name guard's notifications (single-threaded; FIFO opens use a thread)."""

    def __init__(
        self,
        listener_fd: int,
        rules: GuardRules,
        *,
        on_denial: Callable[[Denial], None] | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
        lock_fd: int = -1,
    ) -> None:
        self.listener_fd = listener_fd
        # flock'ed around each call: the guards of one session's commands take turns
        self.lock_fd = lock_fd
        self.on_event = on_event
        self.rules = rules
        self.git: GitGuard | None = None
        if rules.git != "off":
            self.git = GitGuard(
                roots=(*rules.writable_roots, *rules.git_roots),
                strict=rules.git == "strict",
                hooks_dirs=rules.hooks_dirs,
                global_hooks_path=rules.global_hooks_path,
                home=rules.home,
                on_event=self._event,
            )
        self.on_denial = on_denial
        arch = ARCHES.get(libc.MACHINE)
        if arch is None:
            raise UnsupportedError(f"the name guard does not support {libc.MACHINE!r}")
        self._names = {nr: name for name, nr in arch.numbers.items()}
        sizes = _NotifSizes()
        libc.syscall("seccomp", SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes))
        self._notif_buf = ctypes.create_string_buffer(
            max(int(sizes.seccomp_notif), ctypes.sizeof(_Notif))
        )
        # /proc must be the procfs of our own pid namespace, or the pid in a notification
        # would name a different process there.
        if os.readlink("/proc/self") != str(os.getpid()):
            raise SandboxError("the name guard's /proc is not its own pid namespace's procfs")
        self.proc_dev = os.stat("/proc").st_dev
        self.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
        root = os.fstat(self.root_fd)
        self.root_id = (root.st_dev, root.st_ino)
        mnt = os.stat("/proc/self/ns/mnt")
        self.mnt_ns = (mnt.st_dev, mnt.st_ino)
        try:
            with open("/proc/sys/fs/protected_symlinks") as f:
                self._protected_symlinks = f.read().strip() != "0"
        except OSError:
            self._protected_symlinks = True
        self._have_openat2 = True
        # Optional (6.6+): wake the target on the same CPU, which roughly halves the latency.
        try:
            flag = ctypes.c_uint64(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
            fcntl.ioctl(listener_fd, IOCTL_NOTIF_SET_FLAGS, flag, True)
        except OSError:
            pass
        o, m, ln, rn = self._open, self._mknod, self._link, self._rename
        fdcwd = AT_FDCWD
        self._handlers: dict[str, Callable[[_Call, str], _Reply]] = {
            "open": lambda c, s: o(
                c, s, dirfd=fdcwd, path_arg=0, flags=c.arg_uint(1), mode=c.arg_uint(2)
            ),
            "creat": lambda c, s: o(
                c, s, dirfd=fdcwd, path_arg=0, flags=_CREAT_FLAGS, mode=c.arg_uint(1)
            ),
            "openat": lambda c, s: o(
                c, s, dirfd=c.arg_int(0), path_arg=1, flags=c.arg_uint(2), mode=c.arg_uint(3)
            ),
            "mkdir": lambda c, s: self._mkdir(c, s, fdcwd, 0, c.arg_uint(1)),
            "mkdirat": lambda c, s: self._mkdir(c, s, c.arg_int(0), 1, c.arg_uint(2)),
            "mknod": lambda c, s: m(
                c, s, dirfd=fdcwd, path_arg=0, mode=c.arg_uint(1), dev=c.arg_uint(2)
            ),
            "mknodat": lambda c, s: m(
                c, s, dirfd=c.arg_int(0), path_arg=1, mode=c.arg_uint(2), dev=c.arg_uint(3)
            ),
            "symlink": lambda c, s: self._symlink(c, s, 0, fdcwd, 1),
            "symlinkat": lambda c, s: self._symlink(c, s, 0, c.arg_int(1), 2),
            "link": lambda c, s: ln(c, s, olddirfd=fdcwd, old=0, newdirfd=fdcwd, new=1, flags=0),
            "linkat": lambda c, s: ln(
                c,
                s,
                olddirfd=c.arg_int(0),
                old=1,
                newdirfd=c.arg_int(2),
                new=3,
                flags=c.arg_uint(4),
            ),
            "rename": lambda c, s: rn(c, s, olddirfd=fdcwd, old=0, newdirfd=fdcwd, new=1, flags=0),
            "renameat": lambda c, s: rn(
                c, s, olddirfd=c.arg_int(0), old=1, newdirfd=c.arg_int(2), new=3, flags=0
            ),
            "renameat2": lambda c, s: rn(
                c,
                s,
                olddirfd=c.arg_int(0),
                old=1,
                newdirfd=c.arg_int(2),
                new=3,
                flags=c.arg_uint(4),
            ),
            "unlink": lambda c, s: self._unlink(c, s, fdcwd, 0, 0),
            "unlinkat": lambda c, s: self._unlink(c, s, c.arg_int(0), 1, c.arg_uint(2)),
            "rmdir": lambda c, s: self._unlink(c, s, fdcwd, 0, AT_REMOVEDIR),
            "chmod": lambda c, s: self._chmod(c, fdcwd, 0, c.arg_uint(1), 0),
            "fchmod": lambda c, s: self._chmod(c, c.arg_int(0), None, c.arg_uint(1), 0),
            "fchmodat": lambda c, s: self._chmod(c, c.arg_int(0), 1, c.arg_uint(2), 0),
            "fchmodat2": lambda c, s: self._chmod(c, c.arg_int(0), 1, c.arg_uint(2), c.arg_uint(3)),
            "truncate": lambda c, s: self._truncate(c, 0, c.arg_long(1)),
            "chown": lambda c, s: self._chown(c, fdcwd, 0, (c.arg_uint(1), c.arg_uint(2)), 0),
            "lchown": lambda c, s: self._chown(
                c, fdcwd, 0, (c.arg_uint(1), c.arg_uint(2)), AT_SYMLINK_NOFOLLOW
            ),
            "fchown": lambda c, s: self._chown(
                c, c.arg_int(0), None, (c.arg_uint(1), c.arg_uint(2)), 0
            ),
            "fchownat": lambda c, s: self._chown(
                c, c.arg_int(0), 1, (c.arg_uint(2), c.arg_uint(3)), c.arg_uint(4)
            ),
            "setxattr": lambda c, s: self._xattr(c, 0, follow=True, value=True),
            "lsetxattr": lambda c, s: self._xattr(c, 0, follow=False, value=True),
            "fsetxattr": lambda c, s: self._xattr(c, None, follow=True, value=True),
            "removexattr": lambda c, s: self._xattr(c, 0, follow=True, value=False),
            "lremovexattr": lambda c, s: self._xattr(c, 0, follow=False, value=False),
            "fremovexattr": lambda c, s: self._xattr(c, None, follow=True, value=False),
            "bind": lambda c, s: self._bind(c),
            "connect": lambda c, s: self._connect(c),
            "sendto": lambda c, s: self._sendto(c),
            "sendmsg": lambda c, s: self._sendmsg(c, batch=False),
            "sendmmsg": lambda c, s: self._sendmsg(c, batch=True),
        }
        self._workers = _Workers(WORKERS_MAX)
        self.init_pid = os.getppid()
        # A blocking connect is tried here first, under a short timer (SIGALRM, no SA_RESTART:
        # the connect returns EINTR); only one that really waits goes to a worker thread.
        self._alarm = threading.current_thread() is threading.main_thread()
        if self._alarm:
            signal.signal(signal.SIGALRM, lambda _sig, _frame: None)

    def close(self) -> None:
        """Close the supervisor's own fds (not the listener, which the caller owns)."""
        os.close(self.root_fd)

    def finish(self) -> None:
        """Check the pointer files the command created, now that no process of it is left
        to change them (see GitGuard.finish); then say so (event ``git_finished``)."""
        unsecured = self.git.finish(quarantine) if self.git is not None else []
        # not finished unless every refused file is out of the way: the host moves them then
        self._event("git_unfinished" if unsecured else "git_finished", "/")

    # ------------------------------------------------------------------ loop

    def serve(self, stop_fd: int, control_fd: int = -1) -> None:
        """Answer notifications until ``stop_fd`` is readable or every filtered task is gone.

        ``control_fd``: where the command's init asks for :meth:`finish` (one byte ``F``) once
        every other process of the command is gone; its end of file also stops the guard.
        """
        poller = select.poll()
        poller.register(self.listener_fd, select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        if control_fd >= 0:
            poller.register(control_fd, select.POLLIN)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            hup = False
            for fd, ev in events:
                if fd == stop_fd:
                    return
                if fd == control_fd:
                    if not ev & select.POLLIN or os.read(control_fd, 16) != b"F":
                        return
                    self.finish()
                    continue
                if ev & select.POLLIN:
                    self.handle_one()
                elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    hup = True
            if hup:
                return

    def handle_one(self) -> None:
        """Receive one notification and answer it."""
        buf = self._notif_buf
        ctypes.memset(buf, 0, ctypes.sizeof(buf))  # RECV insists on a zeroed buffer
        try:
            fcntl.ioctl(self.listener_fd, IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR):  # the caller died or was signalled
                return
            raise
        notif = _Notif.from_buffer_copy(buf.raw[: ctypes.sizeof(_Notif)])
        denial: Denial | None = None
        name = self._names.get(int(notif.data.nr), f"nr {notif.data.nr}")
        call: _Call | None = None
        socket_call = name in SOCKET_SYSCALLS
        if int(notif.pid) == self.init_pid and socket_call:
            # The command's init (our parent): ringfence's own code talking to the host and to
            # us, on sockets it made; it is not dumpable, so we could not look at it anyway.
            self.respond(int(notif.id), _CONTINUE)
            return
        # Socket calls change no name (the socket file is held open while used): no need to
        # take turns with the session's other guards.
        locked = self.lock_fd >= 0 and not socket_call
        if locked:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            call = _Call(self, notif)
            handler = self._handlers.get(name)
            reply: _Reply = handler(call, name) if handler else _Value(error=errno.ENOSYS)
        except _Refused as refused:
            denial = Denial(int(notif.pid), name, refused.path, refused.rule, by=refused.by)
            reply = _Value(error=errno.EACCES)
        except OSError as exc:
            reply = _Value(error=exc.errno or errno.EIO)
            # (a socket call the kernel refused is not a boundary: the socket rule reports
            # itself, and EACCES on the way to a socket would suggest a writable root)
            if (
                exc.errno in _REFUSALS
                and call is not None
                and call.path is not None
                and not socket_call
            ):
                rule = self._kernel_rule(call.path, exc)
                denial = Denial(int(notif.pid), name, call.path, rule, by="kernel")
        except Exception:
            self.respond(int(notif.id), _Value(error=errno.EACCES))
            raise
        finally:
            if call is not None:
                call.close()
            if locked:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        if denial is not None and self.on_denial is not None:
            self.on_denial(denial)  # before the answer: the report is in before the caller goes on
            if self.git is not None and self.git.is_hook_path(denial.path):
                self._event("refused_hook", denial.path, denial.rule)
        self.respond(int(notif.id), reply)

    def respond(self, notif_id: int, reply: _Reply) -> None:
        """Send ``reply`` (thread-safe: each call uses its own buffers)."""
        if isinstance(reply, _Deferred):
            return
        if isinstance(reply, _Continue):
            resp = _Resp(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            try:
                fcntl.ioctl(self.listener_fd, IOCTL_NOTIF_SEND, resp, True)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            return
        if isinstance(reply, _Fd):
            addfd = _AddFd(
                notif_id,
                SECCOMP_ADDFD_FLAG_SEND,
                reply.fd,
                0,
                os.O_CLOEXEC if reply.cloexec else 0,
            )
            try:
                # SEND: install the fd and answer the call with its number in one step.
                fcntl.ioctl(self.listener_fd, IOCTL_NOTIF_ADDFD, addfd, True)
                return
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # the caller is gone
                reply = _Value(error=exc.errno or errno.EIO)  # e.g. EMFILE in the caller
            finally:
                os.close(addfd.srcfd)
        resp = _Resp(notif_id, reply.val, -reply.error if reply.error else 0, 0)
        try:
            fcntl.ioctl(self.listener_fd, IOCTL_NOTIF_SEND, resp, True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller is gone, nobody to answer
                raise

    def id_valid(self, notif_id: int) -> None:
        try:
            fcntl.ioctl(self.listener_fd, IOCTL_NOTIF_ID_VALID, ctypes.c_uint64(notif_id), True)
        except OSError as exc:
            raise OSError(errno.ESRCH, "the caller went away") from exc

    # ------------------------------------------------------------------ resolution

    def _fs_magic(self, fd: int) -> int:
        buf = ctypes.create_string_buffer(256)
        _check(_fstatfs(fd, buf), "fstatfs")
        return int(ctypes.c_long.from_buffer(buf).value)

    def _is_proc_root(self, fd: int) -> bool:
        st = os.fstat(fd)
        if st.st_ino != PROC_ROOT_INO or self._fs_magic(fd) != PROC_SUPER_MAGIC:
            return False
        if st.st_dev != self.proc_dev:
            # Another procfs instance may number pids differently: "self" there is not ours
            # to rewrite.
            raise _Refused("/proc", "a procfs other than the guard's own")
        return True

    def fd_path(self, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def _dir_path(self, fd: int) -> str:
        path = self.fd_path(fd)
        if os.fstat(fd).st_nlink == 0:
            raise OSError(errno.ENOENT, "directory was removed")
        try:
            check_canonical(path)
        except ValueError:
            raise _Refused(path, "a directory the guard cannot name") from None
        return path

    def _check_magic_owner(self, call: _Call, dir_fd: int) -> None:
        """Follow a /proc magic link only for the caller's own thread group.

        The supervisor may open other processes' /proc/PID/fd entries that the command may
        not (including its own); following those would make it a confused deputy.
        """
        path = self.fd_path(dir_fd)
        m = re.search(r"/(\d+)(?:/task/(\d+))?(?:/[a-z_]+)?$", path)
        if m is None:
            raise _Refused(path, "a /proc link outside a process directory")
        pid = m.group(2) or m.group(1)
        try:
            os.stat(f"task/{pid}", dir_fd=call.proc_fd)
        except FileNotFoundError:
            raise _Refused(path, "a /proc link of another process") from None

    def _check_protected_symlink(self, dir_fd: int, link: os.stat_result) -> None:
        """fs.protected_symlinks: the kernel check we would skip by reading the link ourselves."""
        if not self._protected_symlinks:
            return
        parent = os.fstat(dir_fd)
        sticky_world = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
        if sticky_world and link.st_uid not in (os.geteuid(), parent.st_uid):
            raise OSError(errno.EACCES, "protected_symlinks")

    def _fast_dirs(self, call: _Call, cur: int, comps: deque[str]) -> int | None:
        """Open all but the last component in one openat2 when no symlink is on the way."""
        if not self._have_openat2 or len(comps) < 2:
            return None
        middle = "/".join(list(comps)[:-1])
        try:
            fd = libc.openat2(
                cur, middle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, libc.RESOLVE_NO_SYMLINKS
            )
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                self._have_openat2 = False
                return None
            if exc.errno in (errno.ELOOP, errno.EXDEV, errno.EAGAIN):
                return None  # a symlink somewhere: walk component by component
            raise
        call.own(fd)
        last = comps[-1]
        comps.clear()
        comps.append(last)
        return fd

    def resolve(
        self, call: _Call, dirfd: int, path: str, *, follow_last: bool
    ) -> _Resolved | _Magic:
        """Resolve ``path`` exactly as the kernel would (see ``_resolve``); the call then
        names the absolute path, should a report need it."""
        res = self._resolve(call, dirfd, path, follow_last=follow_last)
        if isinstance(res, _Resolved) and (call.path is None or not call.path.startswith("/")
                                           or call.path == path):  # fmt: skip
            call.path = res.path
        return res

    def _resolve(
        self, call: _Call, dirfd: int, path: str, *, follow_last: bool
    ) -> _Resolved | _Magic:
        """Resolve ``path`` exactly as the kernel would for the caller.

        We walk component by component with O_PATH|O_NOFOLLOW and read symlinks ourselves,
        because letting the kernel follow them here would resolve ``/proc/self`` (and
        ``/dev/stdout`` -> ``/proc/self/fd/1``) to the supervisor. ``self`` and
        ``thread-self`` at a procfs root become the caller's ids; other symlinks inside
        procfs are magic links bound to an object, which the kernel follows correctly for
        us as long as they belong to the caller.
        """
        if path == "":
            raise OSError(errno.ENOENT, "empty path")
        cur = call.base_fd(dirfd, path)
        if path.startswith("/"):
            cur = self.root_fd
        trailing = path.endswith("/")
        comps: deque[str] = deque(c for c in path.split("/") if c)
        if not comps:
            return _Resolved(cur, ".", trailing, self._dir_path(cur))
        fast = self._fast_dirs(call, cur, comps)
        if fast is not None:
            cur = fast
        links = 0
        while comps:
            c = comps.popleft()
            last = not comps
            if c in {".", ".."}:
                if last:
                    return _Resolved(cur, c, trailing, self._dir_path(cur))
                if c == "..":
                    cur = self._dotdot(call, cur)
                continue
            if c in ("self", "thread-self") and self._is_proc_root(cur):
                links += 1
                if links > MAXSYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks")
                repl = str(call.tgid) if c == "self" else f"{call.tgid}/task/{call.tid}"
                comps.extendleft(reversed(repl.split("/")))
                continue
            if last and not follow_last:
                return _Resolved(cur, c, trailing, self._dir_path(cur))
            try:
                fd = call.own(os.open(c, os.O_PATH | os.O_NOFOLLOW, dir_fd=cur))
            except FileNotFoundError:
                if last:
                    return _Resolved(cur, c, trailing, self._dir_path(cur))
                raise
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks")
                if self._fs_magic(cur) == PROC_SUPER_MAGIC and not self._is_proc_root(cur):
                    self._check_magic_owner(call, cur)
                    target_fd = call.own(os.open(c, os.O_PATH, dir_fd=cur))
                    if last:
                        return _Magic(target_fd)
                    if not stat.S_ISDIR(os.fstat(target_fd).st_mode):
                        raise OSError(errno.ENOTDIR, "not a directory")
                    cur = target_fd
                    continue
                self._check_protected_symlink(cur, st)
                target = os.readlink("", dir_fd=fd)
                if target == "":
                    raise OSError(errno.ENOENT, "empty symlink")
                if target.startswith("/"):
                    cur = self.root_fd
                new = [x for x in target.split("/") if x]
                if last:
                    trailing = trailing or target.endswith("/")
                    if not new:
                        return _Resolved(cur, ".", trailing, self._dir_path(cur))
                comps.extendleft(reversed(new))
                continue
            if last:
                return _Resolved(cur, c, trailing, self._dir_path(cur))
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "not a directory")
            cur = fd
        raise AssertionError("unreachable")

    def _dotdot(self, call: _Call, cur: int) -> int:
        st = os.fstat(cur)
        if (st.st_dev, st.st_ino) == self.root_id:
            return cur  # ".." of the root is the root, as for the kernel
        return call.own(os.open("..", os.O_PATH | os.O_DIRECTORY, dir_fd=cur))

    # ------------------------------------------------------------------ decisions

    def _deny(self, path: str, rule: str | None) -> None:
        if rule is not None:
            raise _Refused(path, rule)

    def _git(self, path: str, ask: Callable[..., str | None], *args: Any, **kw: Any) -> None:
        """Ask the git rules (``ask(self.git, *args)``) about ``path``; a directory the guard
        cannot look into is refused (it cannot tell whether a git directory lies there)."""
        if self.git is None:
            return
        try:
            self._deny(path, ask(self.git, *args, **kw))
        except Unknown as exc:
            raise _Refused(path, f"cannot tell whether it is in a git directory ({exc})") from None

    def _kernel_rule(self, path: str, exc: OSError) -> str:
        """Which boundary a refusal the kernel gave our emulated call most likely came from."""
        inside = any(
            path == r or path.startswith(r.rstrip("/") + "/") for r in self.rules.writable_roots
        )
        if exc.errno == errno.EROFS:
            return "protected (read-only)" if inside else "outside writable roots"
        if inside:
            return f"permission denied ({os.strerror(exc.errno or errno.EACCES)})"
        return "outside writable roots"

    def _event(self, kind: str, path: str, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(kind, path, detail)

    def _lstat_type(self, res: _Resolved) -> int:
        return stat.S_IFMT(
            os.stat(res.kernel_name, dir_fd=res.parent_fd, follow_symlinks=False).st_mode
        )

    def _new_name_rule(self, path: str, kind: int) -> str | None:
        """A directory or symlink can bring names beneath it; anything else only itself."""
        if kind in (stat.S_IFDIR, stat.S_IFLNK):
            return may_hold_protected(self.rules, path)
        return protected_by(self.rules, path)

    def _removal_rule(self, path: str) -> str | None:
        return protected_by(self.rules, path) or is_ancestor_of_protected_path(self.rules, path)

    # ------------------------------------------------------------------ handlers

    def _open(
        self, call: _Call, syscall: str, *, dirfd: int, path_arg: int, flags: int, mode: int
    ) -> _Reply:
        path = call.read_path(path_arg)
        call.validate()
        # O_CREAT follows a symlink in the last component unless O_EXCL or O_NOFOLLOW.
        follow = not flags & (os.O_EXCL | os.O_NOFOLLOW)
        for _attempt in range(8):
            res = self.resolve(call, dirfd, path, follow_last=follow)
            writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC))
            if isinstance(res, _Magic):
                self._deny_existing(res.fd, writes=writes)
                return self._open_object(call, f"/proc/self/fd/{res.fd}", None, flags, mode)
            if res.name in (".", ".."):
                raise OSError(errno.EISDIR, "is a directory")
            self._deny(res.path, protected_by(self.rules, res.path))
            try:
                self._lstat_type(res)
                exists = True
            except FileNotFoundError:
                exists = False
            pointer = None
            if exists and writes:
                self._git(res.path, GitGuard.writing, res.path)
            elif not exists and flags & os.O_CREAT and self.git is not None:
                self._git(res.path, GitGuard.creating, res.path, stat.S_IFREG)
                pointer = self.git.checked_kind(res.path)
            if pointer is not None and self.git is not None:
                # noted before it exists: the init must learn of it whatever happens next
                self.git.note_pointer(res.path, pointer)  # its content is checked at the end
            os.umask(call.umask)
            # We followed the last component ourselves; O_NOFOLLOW makes sure the kernel does
            # not follow a symlink planted there since.
            extra = os.O_NOFOLLOW if follow else 0
            try:
                reply = self._open_object(call, res.kernel_name, res.parent_fd, flags | extra, mode)
            except OSError as exc:
                if exc.errno == errno.ELOOP and extra:
                    continue  # a symlink appeared after we looked: resolve again
                raise
            if pointer is not None and self.git is not None and is_dot_git(res.name):
                self.git.created_dot_git.add(res.path)
            return reply
        raise OSError(errno.ELOOP, "the path kept changing")

    def _deny_existing(self, fd: int, *, writes: bool = True) -> None:
        """Check an existing object reached through a magic link (or named by an fd) by its
        current path; ``writes``: it is about to be changed, not only opened."""
        real = self.fd_path(fd)
        if not real.startswith("/") or os.fstat(fd).st_nlink == 0:
            return  # a pipe, socket or deleted file: no name to protect
        try:
            check_canonical(real)
        except ValueError:
            raise _Refused(real, "a file the guard cannot name") from None
        self._deny(real, protected_by(self.rules, real))
        if writes:
            self._git(real, GitGuard.writing, real)

    def _open_object(
        self, call: _Call, name: str, dir_fd: int | None, flags: int, mode: int
    ) -> _Reply:
        """Open ``name`` for the caller without ever blocking the supervisor.

        ``dir_fd`` None means ``name`` is one of our /proc/self/fd links (a magic link the
        caller's path ended in), which is followed; otherwise the name is not followed.
        """
        user_nonblock = bool(flags & os.O_NONBLOCK)
        cloexec = bool(flags & os.O_CLOEXEC)
        ours = flags | os.O_NOCTTY | os.O_CLOEXEC
        try:
            probe: os.stat_result | None = os.stat(
                name, dir_fd=dir_fd, follow_symlinks=dir_fd is None
            )
        except FileNotFoundError:
            probe = None
        if probe is not None and stat.S_ISCHR(probe.st_mode) and probe.st_rdev == DEV_TTY:
            return self._open_ctty(call, ours, cloexec)
        try:
            fd = os.open(name, ours | os.O_NONBLOCK, mode & 0o7777, dir_fd=dir_fd)
        except OSError as exc:
            # A write-open of a FIFO without a reader: ENXIO now, a wait for the real call.
            fifo = probe is not None and stat.S_ISFIFO(probe.st_mode)
            if exc.errno == errno.ENXIO and fifo and not user_nonblock:
                return self._defer_fifo(call, name, dir_fd, ours, cloexec)
            raise
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == DEV_TTY:
            os.close(fd)
            return self._open_ctty(call, ours, cloexec)
        if stat.S_ISFIFO(st.st_mode) and not user_nonblock and (flags & O_ACCMODE) == os.O_RDONLY:
            os.close(fd)  # a blocking read-open waits for a writer: do that in a thread
            return self._defer_fifo(call, name, dir_fd, ours, cloexec)
        if not user_nonblock:
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        return _Fd(fd, cloexec)

    def _defer_fifo(
        self, call: _Call, name: str, dir_fd: int | None, flags: int, cloexec: bool
    ) -> _Reply:
        """Open a FIFO (which blocks until a peer opens it) in a worker thread.

        The FIFO exists, so the worker drops O_CREAT: it never creates anything, and the
        check already made applies to whatever it opens at that name. If the caller dies
        first, the thread stays blocked until someone opens the FIFO's other end.
        """
        held: list[int] = []
        if dir_fd is None:
            # ``name`` is /proc/self/fd/N with N closed when this call ends: keep a dup.
            held.append(os.dup(int(name.rsplit("/", 1)[1])))
            name = f"/proc/self/fd/{held[0]}"
        else:
            held.append(os.dup(dir_fd))
            dir_fd = held[0]
        notif_id = call.id
        wflags = flags & ~(os.O_CREAT | os.O_EXCL)

        def work() -> None:
            try:
                fd = os.open(name, wflags, dir_fd=dir_fd)
            except OSError as exc:
                self.respond(notif_id, _Value(error=exc.errno or errno.EIO))
            else:
                self.respond(notif_id, _Fd(fd, cloexec))
            finally:
                os.close(held[0])

        threading.Thread(target=work, name="nameguard-fifo", daemon=True).start()
        return _DEFERRED

    def _open_ctty(self, call: _Call, flags: int, cloexec: bool) -> _Reply:
        """``/dev/tty`` means the caller's controlling terminal, not ours."""
        stat_line = os.read(
            call.own(os.open("stat", os.O_RDONLY, dir_fd=call.proc_fd)), 4096
        ).decode("ascii", "replace")
        tty_nr = int(stat_line.rsplit(")", 1)[1].split()[4])
        if tty_nr == 0:
            raise OSError(errno.ENXIO, "no controlling terminal")
        for entry in os.listdir(call.own(os.open("fd", os.O_RDONLY, dir_fd=call.proc_fd))):
            try:
                st = os.stat(f"fd/{entry}", dir_fd=call.proc_fd)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == tty_nr:
                fd = os.open(
                    f"fd/{entry}",
                    flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW),
                    dir_fd=call.proc_fd,
                )
                return _Fd(fd, cloexec)
        raise OSError(errno.ENXIO, "controlling terminal not found among the caller's fds")

    def _mkdir(self, call: _Call, syscall: str, dirfd: int, path_arg: int, mode: int) -> _Reply:
        path = call.read_path(path_arg)
        call.validate()
        res = self.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, _Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(res.path, protected_by(self.rules, res.path))
        self._git(res.path, GitGuard.creating, res.path, stat.S_IFDIR)
        os.umask(call.umask)
        os.mkdir(res.kernel_name, mode & 0o7777, dir_fd=res.parent_fd)
        if self.git is not None and is_dot_git(res.name):
            self.git.created_dot_git.add(res.path)
        return _Value()

    def _mknod(
        self, call: _Call, syscall: str, *, dirfd: int, path_arg: int, mode: int, dev: int
    ) -> _Reply:
        path = call.read_path(path_arg)
        call.validate()
        res = self.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, _Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(res.path, protected_by(self.rules, res.path))
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        self._git(res.path, GitGuard.creating, res.path, kind)
        if self.git is not None and kind == stat.S_IFREG and self.git.checked_kind(res.path):
            raise _Refused(res.path, "a pointer file is created by open, not mknod")
        os.umask(call.umask)
        os.mknod(res.kernel_name, mode, dev, dir_fd=res.parent_fd)
        return _Value()

    def _symlink(
        self, call: _Call, syscall: str, target_arg: int, dirfd: int, path_arg: int
    ) -> _Reply:
        target = call.read_path(target_arg)
        path = call.read_path(path_arg)
        call.validate()
        if target == "":
            raise OSError(errno.ENOENT, "empty symlink target")
        res = self.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, _Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(res.path, may_hold_protected(self.rules, res.path))
        self._git(res.path, GitGuard.creating, res.path, stat.S_IFLNK, symlink=target)
        os.symlink(target, res.kernel_name, dir_fd=res.parent_fd)
        if self.git is not None and is_dot_git(res.name):
            self.git.created_dot_git.add(res.path)
        return _Value()

    def _link(
        self,
        call: _Call,
        syscall: str,
        *,
        olddirfd: int,
        old: int,
        newdirfd: int,
        new: int,
        flags: int,
    ) -> _Reply:
        old_path = call.read_path(old)
        new_path = call.read_path(new)
        call.validate()
        if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad linkat flags")
        src: _Resolved | _Magic
        if old_path == "" and flags & AT_EMPTY_PATH:
            src = _Magic(call.target_fd(olddirfd))
        else:
            src = self.resolve(
                call, olddirfd, old_path, follow_last=bool(flags & AT_SYMLINK_FOLLOW)
            )
        link_text: str | None = None
        if isinstance(src, _Magic):
            real = self.fd_path(src.fd)
            kind = stat.S_IFMT(os.fstat(src.fd).st_mode)
            if real.startswith("/") and os.fstat(src.fd).st_nlink:
                try:
                    check_canonical(real)
                except ValueError:
                    raise _Refused(real, "a file the guard cannot name") from None
                self._deny(real, protected_by(self.rules, real))
                self._deny_alias(real)
            if kind == stat.S_IFLNK:
                link_text = os.readlink(f"/proc/self/fd/{src.fd}")
        else:
            if src.name in (".", ".."):
                raise OSError(errno.EPERM, "cannot link a directory")
            self._deny(src.path, protected_by(self.rules, src.path))
            self._deny_alias(src.path)
            kind = self._lstat_type(src)
            if kind == stat.S_IFLNK:
                link_text = os.readlink(src.kernel_name, dir_fd=src.parent_fd)
        dst = self.resolve(call, newdirfd, new_path, follow_last=False)
        if isinstance(dst, _Magic) or dst.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(dst.path, self._new_name_rule(dst.path, kind))
        if self.git is not None and kind == stat.S_IFREG and self.git.checked_kind(dst.path):
            raise _Refused(dst.path, "a hard link would give a checked file a second name")
        self._git(dst.path, GitGuard.creating, dst.path, kind, symlink=link_text)
        if isinstance(src, _Magic):
            os.link(
                f"/proc/self/fd/{src.fd}",
                dst.kernel_name,
                dst_dir_fd=dst.parent_fd,
                follow_symlinks=True,
            )
        else:
            os.link(
                src.kernel_name,
                dst.kernel_name,
                src_dir_fd=src.parent_fd,
                dst_dir_fd=dst.parent_fd,
                follow_symlinks=False,
            )
        return _Value()

    def _deny_alias(self, path: str) -> None:
        """A hard link is a second name for the same file: refuse one for any file the git
        rules keep from changing (or check by content), or it could be written through the
        new name."""
        if self.git is None:
            return
        self._git(path, GitGuard.writing, path)
        if self.git.checked_kind(path) is not None:
            raise _Refused(path, "a hard link would give a checked file a second name")

    def _rename(
        self,
        call: _Call,
        syscall: str,
        *,
        olddirfd: int,
        old: int,
        newdirfd: int,
        new: int,
        flags: int,
    ) -> _Reply:
        old_path = call.read_path(old)
        new_path = call.read_path(new)
        call.validate()
        src = self.resolve(call, olddirfd, old_path, follow_last=False)
        dst = self.resolve(call, newdirfd, new_path, follow_last=False)
        for side in (src, dst):
            if isinstance(side, _Magic) or side.name in (".", ".."):
                raise OSError(errno.EBUSY, "cannot rename . or ..")
        assert isinstance(src, _Resolved) and isinstance(dst, _Resolved)
        self._deny(src.path, self._removal_rule(src.path))
        self._git(src.path, GitGuard.removing, src.path)
        kind = self._lstat_type(src)
        if kind == stat.S_IFDIR:
            self._deny(src.path, may_hold_protected(self.rules, src.path))
        self._deny(dst.path, self._new_name_rule(dst.path, kind))
        checked = self.git.content_kind(dst.path) if self.git is not None else None
        try:
            dst_kind: int | None = self._lstat_type(dst)
        except FileNotFoundError:
            dst_kind = None
        else:  # renaming onto an existing name removes it (a checked name is replaced)
            self._deny(dst.path, self._removal_rule(dst.path))
            if checked is None:
                self._git(dst.path, GitGuard.removing, dst.path, replaced=True)
        exchange = bool(flags & RENAME_EXCHANGE)
        if exchange:
            if dst_kind is None:
                raise OSError(errno.ENOENT, "nothing to exchange with")
            self._deny(src.path, self._new_name_rule(src.path, dst_kind))
        pointer = None
        if self.git is not None:
            if checked is not None:
                if exchange or kind != stat.S_IFREG:
                    raise _Refused(dst.path, "replaced only by renaming a regular file onto it")
                return self._replace_checked(src, dst, checked, flags)
            self._git(dst.path, self._rename_in, src, dst.path, kind)
            if exchange:
                assert dst_kind is not None
                self._git(src.path, self._rename_in, dst, src.path, dst_kind)
                for either in (src.path, dst.path):
                    if self.git.checked_kind(either) or self.git.content_kind(either):
                        raise _Refused(either, "a file checked by content is not exchanged")
            pointer = self.git.checked_kind(dst.path) if kind == stat.S_IFREG else None
            if pointer is not None:
                data = self._read_checked_source(src)
                self._deny(dst.path, self.git.pointer_problem(dst.path, pointer, data))
                self.git.note_pointer(dst.path, pointer)  # and again at the end
        _check(
            _renameat2(
                src.parent_fd,
                os.fsencode(src.kernel_name),
                dst.parent_fd,
                os.fsencode(dst.kernel_name),
                flags,
            ),
            "renameat2",
        )
        if self.git is not None and exchange:
            self.git.exchanged(src.path, dst.path)
        elif self.git is not None:
            self.git.moved(src.path, dst.path, pointer=pointer, is_dir=kind == stat.S_IFDIR)
        return _Value()

    @staticmethod
    def _rename_in(g: GitGuard, src: _Resolved, dst_path: str, kind: int) -> str | None:
        """The git rules for ``src`` (of file type ``kind``) appearing at ``dst_path``."""
        text = os.readlink(src.kernel_name, dir_fd=src.parent_fd) if kind == stat.S_IFLNK else None
        incoming = src.path if kind == stat.S_IFDIR else None
        return g.creating(dst_path, kind, symlink=text, incoming=incoming)

    def _read_checked_source(self, src: _Resolved) -> bytes:
        """The bytes of the regular file about to be renamed onto a checked name."""
        fd = os.open(
            src.kernel_name,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=src.parent_fd,
        )
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _Refused(src.path, "not a regular file")
            try:
                return read_all(fd)
            except OSError as exc:
                raise _Refused(src.path, str(exc)) from None
        finally:
            os.close(fd)

    def _replace_checked(
        self, src: _Resolved, dst: _Resolved, kind: tuple[str, str], flags: int
    ) -> _Reply:
        """Rename onto a config, ``.gitmodules`` or todo list: check the exact bytes, then put
        the guard's own copy of them in place.

        The command's file may have other names or open descriptors; the copy is a fresh inode
        nobody else holds, so what git later reads is exactly what was checked.
        """
        assert self.git is not None
        what, base = kind
        data = self._read_checked_source(src)
        problem = self.git.config_problem(data, gitdir_path=base, kind=what)
        if problem is not None:
            hint = self.git.host_hint(data, path=dst.path, gitdir_path=base, kind=what)
            self._event("refused_config", dst.path, f"{problem}; {hint}" if hint else problem)
            raise _Refused(dst.path, f"{what}: {problem}")
        if flags & RENAME_NOREPLACE:
            try:
                self._lstat_type(dst)
            except FileNotFoundError:
                pass
            else:
                raise OSError(errno.EEXIST, "exists")
        mode = stat.S_IMODE(
            os.stat(src.kernel_name, dir_fd=src.parent_fd, follow_symlinks=False).st_mode
        )
        put_copy(dst.parent_fd, dst.kernel_name.rstrip("/"), data, mode)
        with contextlib.suppress(OSError):  # a rename leaves no source behind
            os.unlink(src.kernel_name, dir_fd=src.parent_fd)
        self.git.forget_repos()  # a config changed: what it names may have too
        self.git.pending.pop(dst.path, None)  # checked now (a .gitmodules)
        return _Value()

    def _existing_object(self, call: _Call, dirfd: int, path_arg: int | None, flags: int) -> int:
        """An O_PATH fd of the existing object a metadata call names, checked against the
        rules by its real path. ``path_arg`` None means the call names the fd ``dirfd``."""
        if path_arg is None:
            call.validate()
            fd = call.target_fd(dirfd)
        else:
            path = call.read_path(path_arg)
            call.validate()
            if path == "" and flags & AT_EMPTY_PATH:
                fd = call.target_fd(dirfd)
            else:
                res = self.resolve(call, dirfd, path, follow_last=not flags & AT_SYMLINK_NOFOLLOW)
                if isinstance(res, _Magic):
                    fd = res.fd
                elif res.name in (".", ".."):
                    fd = call.own(os.open(".", os.O_PATH, dir_fd=res.parent_fd))
                else:
                    fd = call.own(
                        os.open(res.kernel_name, os.O_PATH | os.O_NOFOLLOW, dir_fd=res.parent_fd)
                    )
        self._deny_existing(fd)
        return fd

    def _chmod(
        self, call: _Call, dirfd: int, path_arg: int | None, mode: int, flags: int
    ) -> _Reply:
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad fchmodat2 flags")
        fd = self._existing_object(call, dirfd, path_arg, flags)
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EOPNOTSUPP, "cannot chmod a symlink")
        os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)
        return _Value()

    def _chown(
        self, call: _Call, dirfd: int, path_arg: int | None, owner: tuple[int, int], flags: int
    ) -> _Reply:
        uid, gid = owner
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad fchownat flags")
        fd = self._existing_object(call, dirfd, path_arg, flags)
        # On the O_PATH fd itself (AT_EMPTY_PATH): a symlink is changed, not followed.
        _check(_fchownat(fd, b"", uid, gid, AT_EMPTY_PATH), "fchownat")
        return _Value()

    def _xattr(self, call: _Call, path_arg: int | None, *, follow: bool, value: bool) -> _Reply:
        """setxattr/removexattr and their l/f forms: the object checked like any change."""
        if path_arg is None:
            name = call.read_path(1)
            blob = call.read_bytes(2, call.arg_uint(3)) if value else b""
            fd = self._existing_object(call, call.arg_int(0), None, 0)
        else:
            name = call.read_path(1)
            blob = call.read_bytes(2, call.arg_uint(3)) if value else b""
            nofollow = 0 if follow else AT_SYMLINK_NOFOLLOW
            fd = self._existing_object(call, AT_FDCWD, path_arg, nofollow)
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EPERM, "no extended attributes on a symlink")
        target = f"/proc/self/fd/{fd}"
        if value:
            os.setxattr(target, name, blob, call.arg_int(4))
        else:
            os.removexattr(target, name)
        return _Value()

    def _bind(self, call: _Call) -> _Reply:
        """bind(): a unix socket path is a new directory entry like any other. The call is
        performed on the caller's own socket (pidfd_getfd) with the address bytes read once."""
        length = call.arg_uint(2)
        if length > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = call.read_bytes(1, length)
        call.validate()
        sock = call.own(call.socket_fd(call.arg_int(0)))
        family = int.from_bytes(addr[:2], sys.byteorder) if len(addr) >= 2 else -1
        path = addr[2:].split(b"\0", 1)[0] if family == socket.AF_UNIX else b""
        if not path:  # not a unix path (an inet port, an abstract or autobound name)
            _check(_bind_raw(sock, addr, len(addr)), "bind")
            return _Value()
        res = self.resolve(call, AT_FDCWD, os.fsdecode(path), follow_last=False)
        if isinstance(res, _Magic) or res.name in (".", ".."):
            raise OSError(errno.EADDRINUSE, "exists")
        self._deny(res.path, may_hold_protected(self.rules, res.path))
        self._git(res.path, GitGuard.creating, res.path, stat.S_IFSOCK)
        name = os.fsencode(res.name)
        if len(name) >= SUN_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, "socket name too long")
        local = family.to_bytes(2, sys.byteorder) + name + b"\0"
        os.umask(call.umask)
        os.fchdir(res.parent_fd)  # the name is bound in the directory we pinned
        try:
            _check(_bind_raw(sock, local, len(local)), "bind")
        finally:
            os.fchdir(self.root_fd)
        return _Value()

    def _truncate(self, call: _Call, path_arg: int, length: int) -> _Reply:
        if length < 0:
            raise OSError(errno.EINVAL, "negative length")
        fd = self._existing_object(call, AT_FDCWD, path_arg, 0)
        os.truncate(f"/proc/self/fd/{fd}", length)
        return _Value()

    def _unlink(self, call: _Call, syscall: str, dirfd: int, path_arg: int, flags: int) -> _Reply:
        path = call.read_path(path_arg)
        call.validate()
        if flags & ~AT_REMOVEDIR:
            raise OSError(errno.EINVAL, "bad unlinkat flags")
        res = self.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, _Magic):
            raise OSError(errno.EPERM, "not removable")
        if res.name == ".":
            raise OSError(errno.EINVAL if flags & AT_REMOVEDIR else errno.EISDIR, ".")
        if res.name == "..":
            raise OSError(errno.ENOTEMPTY if flags & AT_REMOVEDIR else errno.EISDIR, "..")
        self._deny(res.path, self._removal_rule(res.path))
        self._git(res.path, GitGuard.removing, res.path)
        if flags & AT_REMOVEDIR:
            os.rmdir(res.kernel_name, dir_fd=res.parent_fd)
        else:
            os.unlink(res.kernel_name, dir_fd=res.parent_fd)
        if self.git is not None:
            self.git.moved(res.path, None, pointer=None, is_dir=bool(flags & AT_REMOVEDIR))
        return _Value()

    # ------------------------------------------------------------------ unix sockets on disk
    #
    # connect() to a path socket, and a send with a destination address on a datagram socket,
    # reach whatever listens at that path: through the read-only root, any host daemon whose
    # socket is not masked (a database, a build server, a container engine). Landlock up to
    # ABI 7 has no rule for this (ABI 6 scopes abstract sockets only).
    # TODO(landlock): should a Landlock ABI gain a right for resolving unix sockets by path,
    # hand the socket rules (GuardRules.socket_roots/allow_sockets) to it in plan.py and keep
    # this as the second wall.
    #
    # The guard never checks and then lets the call continue: the address is in the caller's
    # memory and the socket a number in its descriptor table, and another thread can change
    # either between our look and the kernel's. So it acts for the caller: it takes the caller's
    # socket itself (pidfd_getfd: the open file, not the number), reads the address once,
    # opens the socket file with O_PATH and no symlink left to follow, checks where that file
    # really is, and connects or sends through /proc/self/fd/N of that O_PATH fd, so what was
    # checked is what is reached. Calls on other families are performed the same way (their
    # address is not looked at), because the number could name a unix socket by the time the
    # kernel looked again. The one exception is sendmsg on anything but a unix datagram socket
    # from a single-threaded caller: nobody can change its descriptors while it waits, and the
    # address in its message means nothing to such a socket (see ``_sendmsg``).

    def _socket(self, call: _Call) -> tuple[int, int, int, bool]:
        """Our copy of the caller's socket (argument 0), its family and type (both fixed when
        the socket was made), and whether it blocks (shared with the caller's descriptor)."""
        sock = call.own(call.socket_fd(call.arg_int(0)))
        blocking = not fcntl.fcntl(sock, fcntl.F_GETFL) & os.O_NONBLOCK
        return sock, _sockopt(sock, SO_DOMAIN), _sockopt(sock, SO_TYPE), blocking

    def _peer_address(
        self, call: _Call, domain: int, stype: int, addr: bytes, *, send: bool
    ) -> bytes:
        """The address to hand the kernel for the caller: for a unix path, /proc/self/fd/N of
        the checked socket file; anything else exactly the bytes read (the kernel judges it).
        A send on a stream socket refuses an address and a seqpacket send ignores it: no path
        is looked up for them, so theirs pass unchanged."""
        family = int.from_bytes(addr[:2], sys.byteorder) if len(addr) >= 2 else -1
        if domain != socket.AF_UNIX or family != socket.AF_UNIX or len(addr) <= 2 or addr[2] == 0:
            return addr  # not a unix path: an inet address, an abstract name, or invalid
        if send and stype != socket.SOCK_DGRAM:
            return addr
        if len(addr) > SUN_ADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        path = os.fsdecode(addr[2:].split(b"\0", 1)[0])
        return _proc_fd_address(self._socket_file(call, path))

    def _socket_file(self, call: _Call, path: str) -> int:
        """An O_PATH fd of the socket file ``path`` names for the caller, checked against the
        socket rules by where it really is; raises like the kernel's connect would."""
        call.path = path
        for _attempt in range(8):
            res = self.resolve(call, AT_FDCWD, path, follow_last=True)
            if isinstance(res, _Magic):
                fd = res.fd
            else:
                try:
                    fd = call.own(
                        os.open(res.kernel_name, os.O_PATH | os.O_NOFOLLOW, dir_fd=res.parent_fd)
                    )
                except FileNotFoundError:
                    raise OSError(errno.ENOENT, "no such socket") from None
            st = os.fstat(fd)
            if not stat.S_ISLNK(st.st_mode):
                break  # (a symlink planted since we looked: resolve again)
        else:
            raise OSError(errno.ELOOP, "the path kept changing")
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ECONNREFUSED, "not a socket")
        if st.st_nlink == 0:
            raise OSError(errno.ENOENT, "the socket file was removed")
        real = self.fd_path(fd)
        call.path = real
        try:
            check_canonical(real)
        except ValueError:
            raise _Refused(real, "a socket the guard cannot name", by="socket") from None
        rule = socket_refused(self.rules, real)
        if rule is not None:
            raise _Refused(real, rule, by="socket")
        return fd

    def _defer(self, call: _Call, fds: list[int], work: Callable[[], _Reply]) -> _Reply:
        """Finish ``call`` in a worker thread (it may wait for a peer). ``fds`` (the call's
        own) now belong to the work and are closed when it ends."""
        for fd in fds:
            call.fds.remove(fd)
        notif_id = call.id

        def job() -> None:
            try:
                reply = work()
            except OSError as exc:
                reply = _Value(error=exc.errno or errno.EIO)
            except Exception:  # never leave the caller waiting
                reply = _Value(error=errno.EIO)
            finally:
                for fd in fds:
                    os.close(fd)
            self.respond(notif_id, reply)

        if not self._workers.submit(job):
            call.fds.extend(fds)
            raise OSError(errno.EAGAIN, "too many calls waiting for a peer")
        return _DEFERRED

    def _connect(self, call: _Call) -> _Reply:
        """connect(fd, addr, len), performed on the caller's socket with the address checked.

        A nonblocking socket answers at once (EINPROGRESS, EAGAIN, as the caller would see
        them: our copy shares its flags). A blocking stream connect may wait (a full backlog,
        a TCP handshake): a worker thread does it, waiting as long as the caller would.
        """
        length = call.arg_uint(2)
        if length > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = call.read_bytes(1, length)
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        target = self._peer_address(call, domain, stype, addr, send=False)
        call.path = None  # checked: a refusal from here on is the kernel's answer, not ours

        def work() -> _Reply:
            _check(_connect_raw(sock, target, len(target)), "connect")
            return _Value()

        if not blocking or stype == socket.SOCK_DGRAM:
            return work()  # answers at once (EINPROGRESS, EAGAIN: as the caller would see them)
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, CONNECT_TRY)
            try:
                return work()
            except InterruptedError:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if domain in (socket.AF_INET, socket.AF_INET6):  # the handshake is under way
                return self._defer(call, list(call.fds), lambda: _connected(sock))
        return self._defer(call, list(call.fds), work)

    def _sendto(self, call: _Call) -> _Reply:
        """sendto(fd, buf, len, flags, addr, addrlen) with an address (without one the filter
        lets it through): performed for the caller like sendmsg."""
        size = call.args[2]
        flags = call.arg_uint(3)
        alen = call.arg_uint(5)
        if alen > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = call.read_bytes(SENDTO_ADDR_ARG, alen)
        data = call.read_at(call.args[1], min(size, SEND_MAX))
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        if size > SEND_MAX and stype != socket.SOCK_STREAM:
            raise OSError(errno.EMSGSIZE, "message too long")
        name = self._peer_address(call, domain, stype, addr, send=True)
        call.path = None
        return self._send(call, sock, blocking, [(name, data, b"")], flags=flags, lens=None)

    def _sendmsg(self, call: _Call, *, batch: bool) -> _Reply:
        """sendmsg(fd, msg, flags) and sendmmsg(fd, msgs, vlen, flags).

        Unix datagram sockets (the only kind a destination address takes to a path) are always
        served by the guard: the messages are read once, each destination checked, descriptors
        passed with SCM_RIGHTS taken from the caller (pidfd_getfd), and sent from our copy of
        the socket. Any other socket is too, unless the caller is single-threaded: then no one
        can swap the descriptor under the call (clone with CLONE_FILES but not CLONE_THREAD is
        refused by the filter), and the kernel may run it itself.
        """
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        unix_dgram = domain == socket.AF_UNIX and stype == socket.SOCK_DGRAM
        if not unix_dgram and call.status("Threads") == "1":
            return _CONTINUE
        flags = call.arg_uint(3 if batch else 2)
        count = min(call.arg_uint(2), UIO_MAXIOV) if batch else 1
        if count == 0:
            return _Value()
        table = call.read_at(call.args[1], count * (MMSGHDR_SIZE if batch else MSGHDR_SIZE))
        step = MMSGHDR_SIZE if batch else MSGHDR_SIZE
        raw = [
            (
                _MsgHdr.from_buffer_copy(table, i * step),
                call.args[1] + i * step + MSGHDR_SIZE,
            )
            for i in range(count)
        ]
        read: list[tuple[bytes, bytes, bytes]] = []
        for hdr, _ in raw:
            if hdr.namelen > SOCKADDR_MAX and hdr.name:
                raise OSError(errno.EINVAL, "address too long")
            name = call.read_at(hdr.name, hdr.namelen) if hdr.name else b""
            if hdr.iovlen > UIO_MAXIOV:
                raise OSError(errno.EMSGSIZE, "too many iovecs")
            iovs = call.read_at(hdr.iov, hdr.iovlen * 16) if hdr.iovlen else b""
            chunks: list[bytes] = []
            total = 0
            for j in range(hdr.iovlen):
                base = int.from_bytes(iovs[16 * j : 16 * j + 8], sys.byteorder)
                length = int.from_bytes(iovs[16 * j + 8 : 16 * j + 16], sys.byteorder)
                take = min(length, SEND_MAX - total)
                if take < length and stype != socket.SOCK_STREAM:
                    raise OSError(errno.EMSGSIZE, "message too long")
                chunks.append(call.read_at(base, take))
                total += take
            if hdr.controllen > CONTROL_MAX:
                raise OSError(errno.ENOBUFS, "too much ancillary data")
            control = call.read_at(hdr.control, hdr.controllen) if hdr.control else b""
            read.append((name, b"".join(chunks), control))
        self.id_valid(call.id)  # what we read was the caller's memory
        msgs = [
            (
                self._peer_address(call, domain, stype, name, send=True),
                data,
                self._control(call, control) if domain == socket.AF_UNIX else control,
            )
            for name, data, control in read
        ]
        call.path = None
        lens = [where for _, where in raw] if batch else None
        return self._send(call, sock, blocking, msgs, flags=flags, lens=lens)

    def _control(self, call: _Call, control: bytes) -> bytes:
        """Ancillary data with the caller's SCM_RIGHTS descriptors replaced by our copies of
        the same open files (the receiver gets exactly what the caller passed)."""
        out = bytearray(control)
        off = 0
        while off + CMSG_HDR <= len(control):
            clen = int.from_bytes(control[off : off + 8], sys.byteorder)
            level = int.from_bytes(control[off + 8 : off + 12], sys.byteorder, signed=True)
            kind = int.from_bytes(control[off + 12 : off + 16], sys.byteorder, signed=True)
            if clen < CMSG_HDR or clen > len(control) - off:
                raise OSError(errno.EINVAL, "bad control message")
            if level == SOL_SOCKET and kind == SCM_RIGHTS:
                for pos in range(off + CMSG_HDR, off + clen - 3, 4):
                    theirs = int.from_bytes(control[pos : pos + 4], sys.byteorder, signed=True)
                    ours = call.own(call.fd_copy(theirs))
                    out[pos : pos + 4] = ours.to_bytes(4, sys.byteorder)
            off += (clen + 7) & ~7
        return bytes(out)

    def _send(
        self,
        call: _Call,
        sock: int,
        blocking: bool,
        msgs: list[tuple[bytes, bytes, bytes]],
        *,
        flags: int,
        lens: list[int] | None,
    ) -> _Reply:
        """Send ``msgs`` (name, data, control) on our copy of the socket; ``lens``: where the
        caller's msg_len fields are (sendmmsg), else the answer is the byte count.

        Sent without waiting first; if the caller's call would wait (a blocking socket, no
        MSG_DONTWAIT) and the kernel says EAGAIN, a worker thread sends the rest, waiting.
        MSG_NOSIGNAL always: a SIGPIPE the caller asked for is sent to it, not to us.
        """
        wait = blocking and not flags & MSG_DONTWAIT
        tgid, tid = call.tgid, call.tid
        sent: list[int] = []

        def finish(error: OSError | None) -> _Reply:
            if error is not None and error.errno == errno.EPIPE and not flags & MSG_NOSIGNAL:
                with contextlib.suppress(OSError):
                    libc.syscall("tgkill", tgid, tid, signal.SIGPIPE)
            if not sent:
                assert error is not None
                raise error
            if lens is None:
                return _Value(val=sent[0])
            for where, n in zip(lens, sent, strict=False):
                value = ctypes.c_uint32(n)
                local = _IoVec(ctypes.addressof(value), 4)
                remote = _IoVec(where, 4)
                _process_vm_writev(tid, local, 1, remote, 1, 0)
            return _Value(val=len(sent))

        def rest(start: int) -> _Reply:  # in a worker: the kernel may wait here
            for name, data, control in msgs[start:]:
                try:
                    sent.append(_send_one(sock, name, data, control, flags | MSG_NOSIGNAL))
                except OSError as exc:
                    return finish(exc)
            return finish(None)

        for i, (name, data, control) in enumerate(msgs):
            try:
                sent.append(
                    _send_one(sock, name, data, control, flags | MSG_DONTWAIT | MSG_NOSIGNAL)
                )
            except OSError as exc:
                if exc.errno == errno.EAGAIN and wait:
                    return self._defer(call, list(call.fds), functools.partial(rest, i))
                return finish(exc)
        return finish(None)
