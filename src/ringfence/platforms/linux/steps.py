"""Steps the sandbox side takes, shared by the session runner and each command's init.

See ``sandbox_side.py`` for the order they run in. Each is small and says why it is there.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from ringfence.errors import SandboxError
from ringfence.platforms.linux import (
    caps,
    guard_rules,
    guard_tell,
)
from ringfence.platforms.linux.libc import syscall, write_file
from ringfence.platforms.linux.nameguard.results import Denial
from ringfence.platforms.linux.nameguard.supervisor import Supervisor
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import gitdir

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def die_with_parent() -> None:
    syscall("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def forward(child: int, sig: int) -> None:
    try:
        os.killpg(child, sig)
    except ProcessLookupError:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass


def cap_userns_quotas(limits: Sequence[tuple[str, int]]) -> None:
    """Cap, inside the sandbox's user namespace, kernel objects charged to the user across
    the namespace boundary (pid 1 holds CAP_SYS_RESOURCE there; this /proc is ours)."""
    for name, value in limits:
        with contextlib.suppress(FileNotFoundError):  # an older kernel without this quota
            write_file(f"/proc/sys/user/{name}", f"{value}\n")


def set_rlimits(limits: Sequence[tuple[str, int]]) -> None:
    """Lower (never raise: that needs privilege the command should not have) each limit."""
    for name, wanted in limits:
        which = getattr(resource, f"RLIMIT_{name}")
        _, hard = resource.getrlimit(which)
        # CPU: SIGXCPU at the limit (which a program may catch to save its work), SIGKILL a
        # second later; the others are hard at the limit.
        want_hard = wanted + 1 if name == "CPU" else wanted
        if hard != resource.RLIM_INFINITY:
            want_hard = min(want_hard, hard)
        resource.setrlimit(which, (min(wanted, want_hard), want_hard))


KEYCTL_JOIN_SESSION_KEYRING = 1


def new_session_keyring() -> None:
    """Leave the user's session keyring (kernel-held credentials) for an empty one.

    Best effort: a kernel without keyrings, or a user at the key quota, keeps the old one; the
    command still cannot use it once the hardening filter denies the keyring calls.
    """
    with contextlib.suppress(OSError):
        syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, None, 0, 0, 0)


def start_guard(
    plan: LinuxPlan,
    lock_fd: int = -1,
    rules: guard_rules.GuardRules | None = None,
    *,
    bounding_cleared: bool = False,
    host: tuple[int, mmap.mmap] | None = None,
) -> tuple[socket.socket, int]:
    """Start the name guard's supervisor; return the socket to hand it the listener on (and
    to read its findings from), and its pid. ``rules``: :func:`guard_rules_of` the plan,
    made once by a session's runner for all its commands; ``bounding_cleared``: this
    process's capability bounding set is empty already. ``host``: the session's socket and the
    page the init keeps its command's id in, for the guard's own line to the host
    (``guard_tell``).

    Called by a command's init after Landlock, so the supervisor lives in the command's own
    domain (its emulated file operations meet the same second wall, and Landlock lets it read
    the command's memory), and before the filters, so it is not filtered itself. It is the
    init's child, a sibling of the command, never the command's.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _supervisor_main(plan, theirs, lock_fd, rules, bounding_cleared, host=host)
    theirs.close()
    return ours, pid


def hand_over_listener(sock: socket.socket, listener: int) -> None:
    """Give the guard the listener of the filter just installed on this process (the init).

    Not with SCM_RIGHTS: sendmsg now goes to the guard, which cannot answer before it has the
    listener. The guard takes it itself (pidfd_getfd) once told its number by a plain send
    (sendto without an address, which the filter lets through), and says when it has it. This
    process is made dumpable for that moment only (nothing else runs in it yet; the commands of
    the session cannot reach it: ptrace, pidfd_getfd and process_vm_* are refused them)."""
    was = syscall("prctl", PR_GET_DUMPABLE, 0, 0, 0, 0)
    syscall("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        sock.send(b"L%d" % listener)
        if sock.recv(16) != b"K":
            raise SandboxError("the name guard did not take its listener")
    finally:
        syscall("prctl", PR_SET_DUMPABLE, was, 0, 0, 0)


def take_listener(sock: socket.socket, pid: int) -> int | None:
    """The guard's side of :func:`hand_over_listener` (``pid``: the process handing it over);
    None if that process failed before it had one."""
    data = sock.recv(16)
    if not data.startswith(b"L"):
        return None
    pidfd = os.pidfd_open(pid)
    try:
        fd = syscall("pidfd_getfd", pidfd, int(data[1:]), 0)
    finally:
        os.close(pidfd)
    sock.send(b"K")
    return fd


MAX_REPORTS = 100  # per command: what the guard refused
MAX_GIT_REPORTS = 200  # per command, counted apart: new repositories, refused configs/pointers
MAX_REPORT_PATH = 512  # characters of a path kept in a report: 100 of them fit one message
MAX_REPORT_DETAIL = 1024
# Findings about git that the user must always see: a flood of cheap refusals cannot push
# them out of the report (they have a budget of their own, and the init drains the socket
# while the command runs).
GIT_FINDINGS = gitdir.REPORT_KINDS
# Between the guard and the command's init: pointer files wait for a check at the end, the
# check is done, and the guard has started afresh for the next command (or could not).
CONTROL = frozenset(
    {"git_pending", "git_untold", "git_finished", "git_unfinished", "guard_reset", "guard_stale"}
)
CONTROL_WAIT = 5.0  # seconds


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:  # the command picks path lengths
        return text
    keep = limit // 2  # both ends: the start says where, the end what
    return text[:keep] + "..." + text[-keep:]


class _Reporter:
    """Sends the guard's findings to the command's init, which adds them to the exit report.

    Never blocks the guard (and so the command): the socket is non-blocking and repeats are
    sent once. Refusals stop at ``MAX_REPORTS`` (then a marker that there were more); git
    findings have a budget of their own, and refusals stop early enough to leave the socket
    room for them.
    """

    def __init__(self, sock: socket.socket, tell: guard_tell.Tell | None = None) -> None:
        self.sock = sock
        self.tell = tell
        self.seen: set[tuple[str, ...]] = set()
        self.counts = {"refusal": 0, "git": 0}
        self.more = {"refusal": False, "git": False}

    def send(self, record: dict[str, str]) -> None:
        if record.get("kind") in CONTROL:  # for the init, not the user: never dropped, never cut
            kind = record.get("kind")
            if kind in ("git_pending", "git_untold") and self.tell is not None:
                self.tell(record.get("path", ""), kind == "git_pending")  # the host first
            _send_surely(self.sock, json.dumps(record).encode())
            return
        record = {
            k: _clip(v, MAX_REPORT_DETAIL if k == "detail" else MAX_REPORT_PATH)
            for k, v in record.items()
        }
        budget = "git" if record.get("kind") in GIT_FINDINGS else "refusal"
        key = tuple(record.values())
        if key in self.seen or self.more[budget]:
            return
        limit = MAX_GIT_REPORTS if budget == "git" else MAX_REPORTS
        if self.counts[budget] >= limit:
            self.more[budget] = True
            record = {"kind": "more"} if budget == "refusal" else {"kind": "more_git"}
        self.seen.add(key)
        self.counts[budget] += 1
        try:
            self.sock.send(json.dumps(record).encode())
        except OSError:
            self.more[budget] = True  # a full socket or a gone init: say no more

    def denial(self, d: Denial) -> None:
        rule = f"protected: {d.rule}" if d.by == "guard" else d.rule  # "socket": as it is
        self.send({"kind": "filesystem", "op": d.syscall, "path": d.path, "rule": rule})

    def event(self, kind: str, path: str, detail: str = "") -> None:
        record = {"kind": kind, "path": path}
        if detail:
            record["detail"] = detail
        self.send(record)


def _send_surely(sock: socket.socket, data: bytes) -> None:
    """Wait (a bounded time) for room: the init drains the socket while the command runs, and
    without a control record it would not know the pointer files to check, nor that the guard
    is ready for another command."""
    deadline = time.monotonic() + CONTROL_WAIT
    while True:
        try:
            sock.send(data)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError("the command's init stopped reading the guard") from None
            select.select([], [sock], [], left)


def guard_reset(sock: socket.socket, timeout: float) -> tuple[list[dict[str, str]], bool] | None:
    """A command's init, once nothing of its command is left: have the guard finish with that
    command and start afresh. Returns the findings that came before the guard's answer (every
    one the guard made for the command: it answers calls one at a time, and none is left to
    ask), and whether it started afresh; None when it did not answer (gone, or too slow).

    The guard checks the pointer files the command created first (``git_finished`` or
    ``git_unfinished`` among the findings), then drops what it learnt from this command: its
    report budget and repeats, and its supervisor with the git rules' state, unless the
    command made no call it answered (then there is nothing to drop)."""
    deadline = time.monotonic() + timeout
    out: list[dict[str, str]] = []
    sock.setblocking(True)
    try:
        sock.settimeout(timeout)
        sock.send(RESET)
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                return None  # the guard is gone
            record = _record(data)
            if record is None:
                continue
            kind = record.get("kind")
            if kind in ("guard_reset", "guard_stale"):
                return out, kind == "guard_reset"
            out.append(record)
    except OSError:
        return None


def _record(data: bytes) -> dict[str, str] | None:
    """One finding of the guard as the init keeps it (strings only), or None if it is none."""
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else None


def guard_reports(sock: socket.socket | None) -> list[dict[str, str]]:
    """What the guard sent for this command (read by its init once the command has ended)."""
    out: list[dict[str, str]] = []
    if sock is None:
        return out
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, OSError):
            return out
        if not data:
            return out
        record = _record(data)
        if record is not None:
            out.append(record)


def guard_rules_of(plan: LinuxPlan) -> guard_rules.GuardRules:
    """The name guard's rules for ``plan`` (pure: the same for every command of a session).

    ``allow_sockets`` as the plan names them; the supervisor adds where they lead (see
    :func:`_resolved_sockets`)."""
    return guard_rules.GuardRules(
        writable_roots=plan.guard_roots,
        protected_paths=plan.guard_paths,
        protected_names=plan.guard_names,
        git=plan.guard_git,
        git_roots=plan.guard_git_roots,
        git_private_roots=plan.guard_git_private_roots,
        hooks_dirs=plan.guard_hooks_dirs,
        global_hooks_path=plan.guard_global_hooks_path,
        home=plan.guard_home,
        socket_roots=plan.socket_roots,
        dot_dirs=plan.guard_dot_dirs,
        allow_sockets=plan.allow_sockets,
    )


def _resolved_sockets(rules: guard_rules.GuardRules) -> guard_rules.GuardRules:
    """An allowed socket named through a link in its directories (/var/run/x.sock with
    /var/run -> /run) is reached at its real place; resolved by each command's guard, in the
    sandbox's own view, before it answers anything."""
    if not rules.allow_sockets:
        return rules
    import dataclasses  # (already loaded: the plan is a dataclass)

    real = (os.path.realpath(p) for p in rules.allow_sockets)
    both = tuple(dict.fromkeys((*rules.allow_sockets, *real)))
    return dataclasses.replace(rules, allow_sockets=both)


BUILD = b"B"  # from the command's init: build the supervisor now, there is time
RESET = b"R"  # from the command's init: its command is over, finish and start afresh


def guard_get_ready(sock: socket.socket | None) -> None:
    """From a command's init waiting for its request: have its guard build its supervisor
    now (see :func:`_asked`)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.send(BUILD)


IOPRIO_WHO_PROCESS = 1
SCHED_ATTR_SIZE = 56  # struct sched_attr up to util_max (SCHED_ATTR_SIZE_VER1)


def sched_state() -> tuple[object, ...]:
    """How this process is scheduled: the kernel's whole ``sched_attr`` (policy, flags, nice,
    priority, the time slice, utilisation clamps; as bytes, so fields a later kernel adds
    count too), its CPUs and its I/O priority. A command can change these for its init
    (sched_setattr, setpriority, sched_setaffinity and ioprio_set take the pid of a process of
    the same user), and every command that init starts after would inherit them: a changed
    init serves no other."""
    attr = ctypes.create_string_buffer(SCHED_ATTR_SIZE)
    try:
        syscall("sched_getattr", 0, attr, SCHED_ATTR_SIZE, 0)
        raw = attr.raw
    except OSError:
        raw = b""
    try:
        io = syscall("ioprio_get", IOPRIO_WHO_PROCESS, 0)
    except OSError:
        io = -1
    return (raw, os.getpriority(os.PRIO_PROCESS, 0), frozenset(os.sched_getaffinity(0)), io)


LEFTOVER_WAIT = 5.0  # seconds a command's leftovers may take to die before its report goes


def end_leftovers(namespaced: bool, guard_pid: int) -> bool:
    """A command's init, its command reaped: what the command left running ends now, and is
    gone before the guard's findings are counted (a leftover could still create a file the
    guard must check) and before the exit report goes (SIGKILL lets a system call in progress
    finish first: a large write lands after it). In the command's own pid namespace that is
    every process but this init and its guard; reduced isolation's init has ended its
    descendants already. False if some are still there after ``LEFTOVER_WAIT``."""
    if not namespaced:
        return True
    try:
        os.kill(-1, signal.SIGKILL)  # pid 1 of the namespace: never itself
    except OSError:  # nothing else here (ESRCH), or only the guard (EPERM: out of scope)
        return True
    return end_others(guard_pid, LEFTOVER_WAIT)


def end_others(guard_pid: int, timeout: float) -> bool:
    """In a command's own pid namespace (this init is pid 1, /proc is the namespace's own):
    kill every process but this init and ``guard_pid`` and reap them, until none is left.
    False if some are still there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    me = os.getpid()
    while True:
        others = [
            int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) not in (me, guard_pid)
        ]
        if not others:
            return True
        if time.monotonic() >= deadline:
            return False
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        time.sleep(0.0005)


def exit_after_report() -> NoReturn:
    """A command's init, once its exit report is sent. Its exit tears down its memory and the
    pid namespace (a few hundred microseconds of CPU), which must not delay the host taking
    the report (often woken on this CPU: a unix socket wakes its reader as a hand-off). At
    SCHED_IDLE it runs once the host's threads have had the CPU (measured on the 2-vCPU VM,
    20 ms apart: 2.5 -> 2.1-2.3 ms per `Session.run(["true"])`). One way only: an
    unprivileged process cannot raise its priority again, and this one only exits."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    os.sched_yield()
    os._exit(0)


def _asked(listener: int, control: socket.socket) -> bool:
    """Wait until the guard has something to do: a call to answer, or a message from the
    command's init (:data:`BUILD`, or its end-of-run request); False when the command's tree
    (or its init) is gone first.

    Building the supervisor costs ~1 ms of CPU. An init prepared ahead of its request asks
    for it while it waits (see ``command_init.init_main``), off the command's path. One
    whose request was already there (commands back to back) does not: many commands make no
    call the guard answers (a read-only one, ``true``), and for those it is never built.
    The calls that come first wait in the kernel, unanswered, until it is ready."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(control.fileno(), select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        ended = False
        for fd, ev in events:
            if fd == listener and ev & select.POLLIN:
                return True
            if fd == control.fileno() and ev & select.POLLIN:
                try:
                    data = control.recv(16, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                if data != RESET:
                    if data == BUILD:
                        control.recv(16)
                    return bool(data)  # anything else is the serve loop's to read
                # nothing answered, so nothing to forget: ready as it is
                control.recv(16)
                _send_surely(control, b'{"kind": "guard_reset"}')
            elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                ended = True
        if ended:
            return False


def _supervisor_main(
    plan: LinuxPlan,
    sock: socket.socket,
    lock_fd: int,
    rules: guard_rules.GuardRules | None,
    bounding_cleared: bool,
    *,
    host: tuple[int, mmap.mmap] | None,
) -> NoReturn:
    code = 0
    try:
        os.setsid()  # out of the command's process group: its signals are not ours
        if lock_fd >= 0:  # an open file description of our own: flock excludes the others
            lock_fd = os.open(f"/proc/self/fd/{lock_fd}", os.O_RDONLY | os.O_CLOEXEC)
        caps.keep_only(caps.CAP_SYS_PTRACE, bounding=not bounding_cleared)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        low = 3
        host_fd = host[0] if host is not None else -1
        for keep in sorted({sock.fileno(), lock_fd, host_fd} - {-1}):  # close all but these
            os.closerange(low, keep)
            low = keep + 1
        os.closerange(low, 0x7FFFFFFF)
        listener = take_listener(sock, os.getppid())
        if listener is None:
            os._exit(0)  # the command failed before installing the filter
        tell = guard_tell.SessionTell(host[0], host[1]) if host is not None else None
        serve_commands(
            sock, listener, lock_fd, rules if rules is not None else guard_rules_of(plan), tell
        )
    except BaseException as e:  # the listener closes with us: guarded calls then fail closed
        os.write(2, f"ringfence: name guard failed: {e}\n".encode())
        code = 1
    os._exit(code)


def serve_commands(
    sock: socket.socket,
    listener: int,
    lock_fd: int,
    rules: guard_rules.GuardRules,
    tell: guard_tell.Tell | None = None,
) -> None:
    """Answer the calls of the init's commands, one command after another: after each, on the
    init's :data:`RESET`, a supervisor that answered anything is dropped with all it learnt
    (the git rules' state, repeats, the report budget) and the next is built when needed, from
    the rules and the file system as they are then. One with a call still waiting in a thread
    (a blocking connect, a FIFO's open) cannot be dropped: the init then serves no other
    command (``guard_stale``)."""
    stop_r, _stop_w = os.pipe()  # never written: serve until the filtered tree is gone
    supervisor: Supervisor | None = None
    while True:
        if supervisor is None:
            if not _asked(listener, sock):
                return  # the init's tree is gone
            sock.setblocking(False)
            reporter = _Reporter(sock, tell)
            supervisor = Supervisor(
                listener,
                _resolved_sockets(rules),
                on_denial=reporter.denial,
                on_event=reporter.event,
                lock_fd=lock_fd,
            )
        if not supervisor.serve(stop_r, control_fd=sock.fileno()):
            return
        if supervisor.used and threading.active_count() > 1:
            reporter.send({"kind": "guard_stale"})
            continue
        if supervisor.used:
            supervisor.close()
            supervisor = None
        reporter.send({"kind": "guard_reset"})
