"""The hardening seccomp filter on the real kernel: each probe fails the expected way.

The filter is never installed in the pytest process. Each probe runs in a forked child that
installs the filter (or, for the "layer removed" runs, does not), makes one attempt, and
reports the outcome through a pipe: ``ok`` or ``ok:<detail>``, an errno name, or the signal
that killed it. Every probe also runs without the filter and must then succeed or fail
*differently*, so a probe that the kernel refuses on its own can never pass for the filter.
Network probes talk only to a listener the test opens on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import resource
import signal
import socket
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ringfence.errors import SandboxError
from ringfence.platforms.linux import bpf, seccomp
from ringfence.platforms.linux.libc import MACHINE

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.skipif(MACHINE not in seccomp.SYSCALL_TABLES, reason=f"no table for {MACHINE}"),
]

OFFLINE = seccomp.SeccompPolicy(allow_inet=False)
ONLINE = seccomp.SeccompPolicy(allow_inet=True)
PROGRAMS = {False: seccomp.build_program(OFFLINE), True: seccomp.build_program(ONLINE)}
NR = seccomp.SYSCALL_TABLES.get(MACHINE, seccomp.SYSCALL_TABLES["x86_64"]).numbers

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

PTRACE_SEIZE = 0x4206
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_THREAD_KEYRING = -1
UFFD_USER_MODE_ONLY = 1
AT_FDCWD = -100
AF_PACKET, AF_VSOCK, AF_ALG = 17, 40, 38
IPPROTO_MPTCP = 262
ETH_P_ALL_BE = 0x0300
MARKER = b"ringfence-canary-secret"


def sys_call(nr: int, *args: int | bytes | None) -> int:
    """Raw syscall with every argument passed as a full 64-bit register."""
    conv: list[object] = []
    for a in args:
        conv.append(a if isinstance(a, bytes) or a is None else ctypes.c_ulong(a & (2**64 - 1)))
    ret = int(_syscall(ctypes.c_long(nr), *conv))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


# ----------------------------------------------------------------------------- harness


def _outcome_of_status(raw: int, report: str) -> str:
    if os.WIFSIGNALED(raw):
        return f"signal:{signal.Signals(os.WTERMSIG(raw)).name}"
    if os.WEXITSTATUS(raw) != 0 or not report:
        return f"harness-failed:{os.WEXITSTATUS(raw)}:{report}"
    return report


def run_probe(
    probe: Callable[[], str], *, filtered: bool, allow_inet: bool = False, userns: bool = False
) -> str:
    """Run ``probe`` in a forked child, under the filter when ``filtered``; its outcome."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe process: never returns into pytest
        code = 1
        try:
            os.close(rfd)
            # A KILL_PROCESS verdict dumps core by default; keep cores out of the test tree.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if userns:
                _enter_userns()
            if filtered:
                seccomp.install(PROGRAMS[allow_inet])
            try:
                report = probe()
            except OSError as exc:
                report = errno.errorcode.get(exc.errno or 0, f"errno{exc.errno}")
            os.write(wfd, report.encode())
            code = 0
        except BaseException as exc:
            os.write(wfd, f"error: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 4096):
        chunks.append(chunk)
    os.close(rfd)
    _, raw = os.waitpid(pid, 0)
    return _outcome_of_status(raw, b"".join(chunks).decode())


def _enter_userns() -> None:
    """A user namespace of our own (full capabilities in it) with its own net and mount
    namespaces: the kernel then lets the probe do what an attacker with those
    capabilities could, so only the filter stands in the way."""
    flags = seccomp.CLONE_NEWUSER | seccomp.CLONE_NEWNET | seccomp.CLONE_NEWNS
    sys_call(NR["unshare"], flags)


def _userns_available() -> bool:
    return run_probe(lambda: "ok", filtered=False, userns=True) == "ok"


USERNS = _userns_available()
needs_userns = pytest.mark.skipif(not USERNS, reason="unprivileged user namespaces disabled")


# ----------------------------------------------------------------------------- test fixtures


@dataclass
class Canary:
    """A sibling process outside the filter: the target of cross-process probes."""

    pid: int
    address: int  # where MARKER lives in its memory (and in ours: it is a fork of us)
    stop_w: int

    def status(self) -> dict[str, str]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def untouched(self) -> bool:
        st = self.status()
        return st["TracerPid"].strip() == "0" and st["State"][0] in "SR"


_MARKER_BUF = ctypes.create_string_buffer(MARKER)


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(stop_w)
            # PR_SET_PTRACER_ANY: with Yama (if built in) only ancestors could trace us.
            _libc.prctl(0x59616D61, ctypes.c_ulong(2**64 - 1), 0, 0, 0)
            os.read(stop_r, 1)
        finally:
            os._exit(0)
    os.close(stop_r)
    yield Canary(pid, ctypes.addressof(_MARKER_BUF), stop_w)
    os.close(stop_w)
    _, raw = os.waitpid(pid, 0)
    assert os.WIFEXITED(raw) and os.WEXITSTATUS(raw) == 0, "the canary was signalled"


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.setblocking(False)
        yield srv


def drain(srv: socket.socket) -> int:
    """How many connections reached the listener since the last drain."""
    n = 0
    while True:
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


# ----------------------------------------------------------------------------- probes


def _controlling_pty() -> tuple[int, int]:
    """A fresh pty that is this (probe) process's controlling terminal, in raw mode."""
    master, slave = os.openpty()
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    tty.setraw(slave)
    return master, slave


def probe_tiocsti(cmd: int) -> Callable[[], str]:
    def probe() -> str:
        _master, slave = _controlling_pty()
        char = ctypes.c_char(b"x")
        try:
            sys_call(NR["ioctl"], slave, cmd, ctypes.addressof(char))
            result = "ok"
        except OSError as exc:
            result = errno.errorcode[exc.errno or 0]
        # The oracle: was anything typed into the terminal's input queue?
        pending = int.from_bytes(fcntl.ioctl(slave, termios.FIONREAD, b"\0" * 4), "little")
        return f"{result}:queued={pending}"

    return probe


def probe_tioclinux() -> str:
    _master, slave = _controlling_pty()
    sub = ctypes.c_char(b"\x0c")  # TIOCL_GETKMSGREDIRECT-ish subcode; a pty rejects it anyway
    sys_call(NR["ioctl"], slave, seccomp.TIOCLINUX, ctypes.addressof(sub))
    return "ok"


def probe_socket(domain: int, type_: int, proto: int) -> Callable[[], str]:
    def probe() -> str:
        socket.socket(domain, type_, proto).close()
        return "ok"

    return probe


def probe_clone(flags: int) -> Callable[[], str]:
    def probe() -> str:
        # Raw clone with no new stack behaves like fork: the child returns 0 here.
        pid = sys_call(NR["clone"], flags | 17, 0, 0, 0, 0)  # | SIGCHLD
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return "ok"

    return probe


def probe_i386_int80() -> str:
    """``mov eax, 20 (getpid on i386); int 0x80; ret`` from a 64-bit process."""
    if MACHINE != "x86_64":
        return "skip"
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    got = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
    return f"ok:{'pid' if got == os.getpid() else got}"


def probe_x32_getpid() -> str:
    if MACHINE != "x86_64":
        return "skip"
    got = sys_call(seccomp.X32_SYSCALL_BIT | 39)
    return f"ok:{'pid' if got == os.getpid() else got}"


@dataclass(frozen=True)
class Probe:
    """One attempt, its outcome under the filter, and the outcomes it may have without."""

    name: str
    make: Callable[[Canary, socket.socket, Path], Callable[[], str]]
    denied: str
    without: frozenset[str]
    allow_inet: bool = False
    userns: bool = False
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


def _fixed(fn: Callable[[], str]) -> Callable[[Canary, socket.socket, Path], Callable[[], str]]:
    return lambda _c, _l, _t: fn


def _ptrace(c: Canary, _l: socket.socket, _t: Path) -> Callable[[], str]:
    def probe() -> str:
        sys_call(NR["ptrace"], PTRACE_SEIZE, c.pid, 0, 0)
        return "ok"  # exiting detaches

    return probe


def _vm_read(c: Canary, _l: socket.socket, _t: Path) -> Callable[[], str]:
    def probe() -> str:
        local = ctypes.create_string_buffer(len(MARKER))
        liov = (ctypes.c_void_p * 2)(ctypes.addressof(local), len(MARKER))
        riov = (ctypes.c_void_p * 2)(c.address, len(MARKER))
        n = sys_call(
            NR["process_vm_readv"], c.pid, ctypes.addressof(liov), 1, ctypes.addressof(riov), 1, 0
        )
        return f"ok:{local.raw[:n] == MARKER}"

    return probe


def _inet_connect(_c: Canary, srv: socket.socket, _t: Path) -> Callable[[], str]:
    port = srv.getsockname()[1]

    def probe() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"hello from the probe")
        return "ok"

    return probe


def _mount(_c: Canary, _l: socket.socket, tmp: Path) -> Callable[[], str]:
    def probe() -> str:
        ret = _libc.mount(b"none", os.fsencode(tmp), b"tmpfs", 0, None)
        if ret != 0:
            raise OSError(ctypes.get_errno(), "mount")
        return f"ok:{os.path.ismount(tmp)}"

    return probe


def _setns() -> str:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    sys_call(NR["setns"], fd, seccomp.CLONE_NEWNET)
    return "ok"


def _open_tree() -> str:
    fd = sys_call(NR["open_tree"], AT_FDCWD, b"/", 0)
    os.close(fd)
    return "ok"


def _unshare_user() -> str:
    sys_call(NR["unshare"], seccomp.CLONE_NEWUSER)
    return "ok"


def _personality_no_aslr() -> str:
    sys_call(NR["personality"], 0x0040000)  # ADDR_NO_RANDOMIZE
    return "ok"


def _clone3() -> str:
    sys_call(NR["clone3"], 0, 0)
    return "ok"


EITHER_OK = frozenset({"ok"})
x86_only = pytest.mark.skipif(MACHINE != "x86_64", reason="x86_64 only")
PROBES = [
    Probe("ptrace-sibling", _ptrace, "EPERM", EITHER_OK),
    Probe("process_vm_readv-sibling", _vm_read, "EPERM", frozenset({"ok:True"})),
    Probe(
        "keyctl",
        _fixed(lambda: str(sys_call(NR["keyctl"], KEYCTL_GET_KEYRING_ID, -1, 1) > 0)),
        "EPERM",
        frozenset({"True"}),
    ),
    # NULL params: the kernel itself answers EFAULT before creating anything.
    Probe(
        "io_uring_setup",
        _fixed(lambda: str(sys_call(NR["io_uring_setup"], 1, 0))),
        "EPERM",
        frozenset({"EFAULT"}),
    ),
    Probe("bpf", _fixed(lambda: str(sys_call(NR["bpf"], 0, 0, 8))), "EPERM", frozenset({"EFAULT"})),
    Probe(
        "perf_event_open",
        _fixed(lambda: str(sys_call(NR["perf_event_open"], 0, 0, -1, -1, 0))),
        "EPERM",
        frozenset({"EFAULT"}),
    ),
    Probe(
        "userfaultfd",
        _fixed(lambda: str(sys_call(NR["userfaultfd"], UFFD_USER_MODE_ONLY) >= 0)),
        "EPERM",
        frozenset({"True"}),
    ),
    Probe("unshare-newuser", _fixed(_unshare_user), "EPERM", EITHER_OK, marks=(needs_userns,)),
    Probe(
        "clone-newuser",
        _fixed(probe_clone(seccomp.CLONE_NEWUSER)),
        "EPERM",
        EITHER_OK,
        marks=(needs_userns,),
    ),
    Probe(
        "clone-newns",
        _fixed(probe_clone(seccomp.CLONE_NEWNS)),
        "EPERM",
        EITHER_OK,
        userns=True,
        marks=(needs_userns,),
    ),
    Probe("setns", _fixed(_setns), "EPERM", EITHER_OK, userns=True, marks=(needs_userns,)),
    Probe(
        "mount-tmpfs", _mount, "EPERM", frozenset({"ok:True"}), userns=True, marks=(needs_userns,)
    ),
    Probe("open_tree", _fixed(_open_tree), "EPERM", EITHER_OK),
    Probe("personality-no-aslr", _fixed(_personality_no_aslr), "EPERM", EITHER_OK),
    # legacy_tiocsti=0 makes the kernel answer EIO; root may inject regardless.
    Probe(
        "tiocsti",
        _fixed(probe_tiocsti(seccomp.TIOCSTI)),
        "EPERM:queued=0",
        frozenset({"ok:queued=1", "EIO:queued=0"}),
    ),
    Probe(
        "tiocsti-high-bits",
        _fixed(probe_tiocsti(0xDEADBEEF00000000 | seccomp.TIOCSTI)),
        "EPERM:queued=0",
        frozenset({"ok:queued=1", "EIO:queued=0"}),
    ),
    Probe("tioclinux", _fixed(probe_tioclinux), "EPERM", frozenset({"ENOTTY", "EINVAL"})),
    Probe(
        "af_packet",
        _fixed(probe_socket(AF_PACKET, socket.SOCK_RAW, ETH_P_ALL_BE)),
        "EPERM",
        EITHER_OK,
        allow_inet=True,
        userns=True,
        marks=(needs_userns,),
    ),
    Probe(
        "af_vsock",
        _fixed(probe_socket(AF_VSOCK, socket.SOCK_STREAM, 0)),
        "EPERM",
        frozenset({"ok", "EAFNOSUPPORT"}),
        allow_inet=True,
    ),
    Probe(
        "af_alg",
        _fixed(probe_socket(AF_ALG, socket.SOCK_SEQPACKET, 0)),
        "EPERM",
        frozenset({"ok", "EAFNOSUPPORT"}),
        allow_inet=True,
    ),
    Probe("inet-offline", _inet_connect, "EPERM", EITHER_OK),
    Probe(
        "inet6-offline",
        _fixed(probe_socket(socket.AF_INET6, socket.SOCK_DGRAM, 0)),
        "EPERM",
        frozenset({"ok", "EAFNOSUPPORT"}),
    ),
    Probe(
        "netlink-offline",
        _fixed(probe_socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
        "EPERM",
        EITHER_OK,
    ),
    Probe(
        "raw-online",
        _fixed(probe_socket(socket.AF_INET, socket.SOCK_RAW, 1)),
        "EPERM",
        EITHER_OK,
        allow_inet=True,
        userns=True,
        marks=(needs_userns,),
    ),
    Probe(
        "mptcp-online",
        _fixed(probe_socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)),
        "EPERM",
        frozenset({"ok", "ENOPROTOOPT", "EPROTONOSUPPORT"}),
        allow_inet=True,
    ),
    Probe(
        "sctp-online",
        _fixed(probe_socket(socket.AF_INET, socket.SOCK_STREAM, 132)),
        "EPERM",
        frozenset({"ok", "EPROTONOSUPPORT"}),
        allow_inet=True,
    ),
    Probe(
        "socketpair-inet",
        _fixed(lambda: str(socket.socketpair(socket.AF_INET, socket.SOCK_STREAM))),
        "EPERM",
        frozenset({"EOPNOTSUPP", "ENOTSUP"}),  # errno 95 has two names
        allow_inet=True,
    ),
    Probe("clone3", _fixed(_clone3), "ENOSYS", frozenset({"EINVAL"})),
    Probe(
        "i386-int80",
        _fixed(probe_i386_int80),
        "signal:SIGSYS",
        frozenset({"ok:pid", "signal:SIGSEGV"}),
        marks=(x86_only,),
    ),
    Probe(
        "x32-getpid",
        _fixed(probe_x32_getpid),
        "signal:SIGSYS",
        frozenset({"ok:pid", "ENOSYS"}),
        marks=(x86_only,),
    ),
]


def _params() -> list[object]:
    return [pytest.param(p, id=p.name, marks=p.marks) for p in PROBES]


@pytest.mark.parametrize("probe", _params())
def test_probe_is_refused_by_the_filter(
    probe: Probe, canary: Canary, listener: socket.socket, tmp_path: Path
) -> None:
    drain(listener)
    fn = probe.make(canary, listener, tmp_path)
    got = run_probe(fn, filtered=True, allow_inet=probe.allow_inet, userns=probe.userns)
    assert got == probe.denied
    # Oracles outside: the sibling was neither traced nor stopped, nothing connected.
    assert canary.untouched()
    assert drain(listener) == 0


@pytest.mark.parametrize("probe", _params())
def test_probe_without_the_filter_gets_through(
    probe: Probe, canary: Canary, listener: socket.socket, tmp_path: Path
) -> None:
    """The layer removed: the same attempt succeeds or fails some other way."""
    drain(listener)
    fn = probe.make(canary, listener, tmp_path)
    got = run_probe(fn, filtered=False, allow_inet=probe.allow_inet, userns=probe.userns)
    assert got in probe.without
    assert got != probe.denied
    if probe.name == "inet-offline":
        assert drain(listener) == 1
    assert canary.untouched()


# ----------------------------------------------------------------------------- still works


def _everyday() -> str:
    """What ordinary commands do, under the filter; the first failure is reported."""
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, raw = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(raw) == 7, "fork"
    assert subprocess.run(["true"], check=False).returncode == 0, "subprocess"
    out = subprocess.run(["sh", "-c", "echo $((6*7)) | cat"], capture_output=True, check=True)
    assert out.stdout == b"42\n", "shell pipeline"
    seen: list[int] = []
    th = threading.Thread(target=lambda: seen.append(1))  # pthread_create: clone3, then clone
    th.start()
    th.join()
    assert seen == [1], "thread"
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x", "socketpair"
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC).close()
    assert sys_call(NR["personality"], 0xFFFFFFFF) >= 0, "personality query"
    master, slave = os.openpty()
    termios.tcgetattr(slave)  # ioctl TCGETS
    os.write(master, b"")
    # unshare without namespace flags, e.g. a private fd table
    sys_call(NR["unshare"], 0x400)  # CLONE_FILES
    return "ok"


@pytest.mark.parametrize("allow_inet", [False, True], ids=["offline", "online"])
def test_everyday_work_still_runs(allow_inet: bool) -> None:
    assert run_probe(_everyday, filtered=True, allow_inet=allow_inet) == "ok"


def test_network_allowed_when_the_policy_says_so(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    def probe() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"hi")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        udp.sendto(b"x", ("127.0.0.1", port))  # nobody listens on UDP there: dropped
        udp.close()
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP).close()
        names = socket.if_nameindex()  # AF_NETLINK, NETLINK_ROUTE
        return f"ok:{any(name == 'lo' for _, name in names)}"

    drain(listener)
    assert run_probe(probe, filtered=True, allow_inet=True) == "ok:True"
    assert drain(listener) == 1


def test_install_sets_no_new_privs_and_filter_mode() -> None:
    def probe() -> str:
        nnp = _libc.prctl(39, 0, 0, 0, 0)  # PR_GET_NO_NEW_PRIVS
        mode = [
            line.split()[1]
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("Seccomp:")
        ]
        return f"nnp={nnp} mode={mode[0]}"

    assert run_probe(probe, filtered=True) == "nnp=1 mode=2"


def test_a_program_the_kernel_rejects_is_a_sandbox_error() -> None:
    bad = [bpf.Insn(bpf.BPF_LD | bpf.BPF_W | 0x40, 0, 0, 0), bpf.Insn(0x06, 0, 0, 0x7FFF0000)]

    def probe() -> str:
        try:
            seccomp.install(bad)  # BPF_LD|BPF_IND: seccomp's checker refuses it
        except SandboxError as exc:
            return f"SandboxError:{'ringfence bug' in str(exc)}"
        return "installed"

    assert run_probe(probe, filtered=False) == "SandboxError:True"
