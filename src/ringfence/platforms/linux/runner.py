"""The sandbox side: namespaces, pid 1 and the command's last steps before exec.

Set-up runs as an ordered list of phases a reader can follow top to bottom:

  host (ringfence) ── fork ──► outer: unshare user+mount+pid+ipc+uts(+net), map ids
                                  └─ fork ──► pid 1: build the view, pivot_root, lo up
                                                └─ fork ──► command: setsid, close fds, drop
                                                    capabilities, Landlock, (guard), exec

pid 1 forwards signals to the command, reaps orphans, and reports the command's status to the
host over a pipe; when the command ends pid 1 exits and the kernel kills everything left in
the pid namespace, however it was detached. Each process dies with its parent
(PR_SET_PDEATHSIG), so a SIGKILLed ``ringfence`` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import select
import signal
import socket
import stat
from collections.abc import Sequence
from typing import Any, NoReturn

from ringfence.errors import RingfenceError, SandboxError
from ringfence.platforms.linux import (
    bpf,
    caps,
    guard_rules,
    landlock,
    mounts,
    nameguard,
    namespaces,
    seccomp,
)
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.plan import LinuxPlan

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)


def _report(fd: int, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _die_with_parent() -> None:
    syscall("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def outer_main(plan: LinuxPlan, argv: Sequence[str], report_fd: int, host_pid: int) -> NoReturn:
    """Runs in the host's forked child; never returns."""
    try:
        die_with_host(host_pid)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        namespaces.unshare(plan.namespaces, plan.uid, plan.gid)
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(life_w)
            pid1_main(plan, argv, report_fd, life_r)
        os.close(life_r)
        os.close(report_fd)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    except BaseException as e:  # report, never unwind into the host's code
        _report_error(report_fd, e)
        os._exit(125)


def fail_early(report_fd: int, message: str) -> NoReturn:
    """For the host's forked child before the runner proper starts: report and leave."""
    _report_error(report_fd, SandboxError(message))
    os._exit(125)


def _report_error(fd: int, e: BaseException) -> None:
    kind = type(e).__name__ if isinstance(e, RingfenceError) else "SandboxError"
    try:
        _report(fd, {"error": str(e) or repr(e), "kind": kind})
    except OSError:
        pass


def pid1_main(plan: LinuxPlan, argv: Sequence[str], report_fd: int, life_fd: int) -> NoReturn:
    try:
        _die_with_parent()
        if select.select([life_fd], [], [], 0)[0]:  # EOF: the outer process is already gone
            os._exit(125)
        root = mounts.build_view(plan.mounts)
        mounts.pivot_into(root)
        if "net" in plan.namespaces:
            namespaces.loopback_up()
        _cap_userns_quotas(plan.userns_limits)
        syscall("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
        failure, status = run_command(plan, argv)
        report_status(report_fd, failure, status)
        os._exit(0)
    except BaseException as e:
        _report_error(report_fd, e)
        os._exit(125)


def die_with_host(host_pid: int) -> None:
    """First steps of the host's forked child: die with the host (and leave at once if it is
    already gone), and lead a process group the host's signal forwarding can address."""
    _die_with_parent()
    if os.getppid() != host_pid:
        os._exit(125)
    os.setpgid(0, 0)


def run_command(plan: LinuxPlan, argv: Sequence[str]) -> tuple[bytes, int]:
    """Fork the command, forward signals to it, wait for it (reaping orphans meanwhile).

    Returns the set-up/exec failure the command reported (empty when it ran) and its wait
    status. The seccomp program is built here, once, before the fork.
    """
    program = seccomp.build_program(plan.seccomp) if plan.seccomp is not None else None
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(err_r)
        _command_main(plan, argv, err_w, program)
    os.close(err_w)
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: _forward(child, s))
    failure = b""
    while chunk := os.read(err_r, 4096):
        failure += chunk
    os.close(err_r)
    return failure, _wait_for(child)


def report_status(report_fd: int, failure: bytes, status: int) -> None:
    """Tell the host how the command ended: its exec/set-up failure, a signal, or a status."""
    if failure:
        _report(report_fd, json.loads(failure.decode()))
    elif os.WIFSIGNALED(status):
        _report(report_fd, {"signal": os.WTERMSIG(status)})
    else:
        _report(report_fd, {"exit": os.WEXITSTATUS(status)})


def _forward(child: int, sig: int) -> None:
    try:
        os.killpg(child, sig)
    except ProcessLookupError:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass


def _wait_for(child: int) -> int:
    """Reap everything (pid 1 inherits orphans) until the command itself has ended."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            return status


def _with_inherited_terminals(ruleset: landlock.LandlockRuleset) -> landlock.LandlockRuleset:
    """Let the command reopen the terminal it was handed (``> /dev/stdout`` on a tty).

    The caller's terminal lives on the host's devpts, outside the sandbox's view, so Landlock
    would refuse reopening it through ``/proc/self/fd``. A rule on exactly that device inode
    allows it; regular files and pipes handed over as stdio get no such rule.
    """
    extra = []
    for fd in (0, 1, 2):
        try:
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                extra.append(
                    landlock.PathRule(f"/proc/self/fd/{fd}", landlock.DEVICE_ACCESS, required=False)
                )
        except OSError:
            continue
    if not extra:
        return ruleset
    return dataclasses.replace(ruleset, rules=(*ruleset.rules, *extra))


def _cap_userns_quotas(limits: Sequence[tuple[str, int]]) -> None:
    """Cap, inside the sandbox's user namespace, kernel objects charged to the user across
    the namespace boundary (pid 1 holds CAP_SYS_RESOURCE there; this /proc is ours)."""
    for name, value in limits:
        try:
            fd = os.open(f"/proc/sys/user/{name}", os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # an older kernel without this quota
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)


def _set_rlimits(limits: Sequence[tuple[str, int]]) -> None:
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


def _new_session_keyring() -> None:
    """Leave the user's session keyring (kernel-held credentials) for an empty one.

    Best effort: a kernel without keyrings, or a user at the key quota, keeps the old one; the
    command still cannot use it once the hardening filter denies the keyring calls.
    """
    with contextlib.suppress(OSError):
        syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, None, 0, 0, 0)


def _start_guard(plan: LinuxPlan) -> socket.socket:
    """Start the name guard's supervisor; return the socket to hand it the listener on.

    The supervisor is forked here, after Landlock, so it lives in the command's own domain
    (its emulated file operations meet the same second wall, and Landlock lets it read the
    command's memory), and before the filter, so it is not filtered itself. A double fork makes
    pid 1 its parent: the command must not see an extra child it never started.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    middle = os.fork()
    if middle == 0:
        ours.close()
        if os.fork() == 0:
            _supervisor_main(plan, theirs)
        os._exit(0)
    theirs.close()
    os.waitpid(middle, 0)
    return ours


def _supervisor_main(plan: LinuxPlan, sock: socket.socket) -> NoReturn:
    code = 0
    try:
        os.setsid()  # out of the command's process group: its signals are not ours
        caps.keep_only(caps.CAP_SYS_PTRACE)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 0x7FFFFFFF)
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        sock.close()
        if not fds:
            os._exit(0)  # the command failed before installing the filter
        stop_r, _stop_w = os.pipe()  # never written: serve until the filtered tree is gone
        rules = guard_rules.GuardRules(
            writable_roots=plan.guard_roots,
            protected_paths=plan.guard_paths,
            protected_names=plan.guard_names,
            new_repo_names=plan.guard_new_repo_names,
        )
        supervisor = nameguard.Supervisor(fds[0], rules)
        supervisor.serve(stop_r)
    except BaseException as e:  # the listener closes with us: guarded calls then fail closed
        os.write(2, f"ringfence: name guard failed: {e}\n".encode())
        code = 1
    os._exit(code)


def _command_main(
    plan: LinuxPlan, argv: Sequence[str], err_fd: int, program: Sequence[bpf.Insn] | None
) -> NoReturn:
    step = "prepare"
    try:
        for sig in range(1, signal.NSIG):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        step = "setsid"
        os.setsid()  # no controlling terminal: TIOCSTI cannot reach the user's
        _new_session_keyring()
        step = "resource limits"
        _set_rlimits(plan.rlimits)
        step = f"chdir {plan.cwd}"
        os.chdir(plan.cwd)
        step = "close file descriptors"
        os.closerange(3, err_fd)
        os.closerange(err_fd + 1, 0x7FFFFFFF)
        step = "Landlock"
        if plan.landlock is not None:
            landlock.restrict_self(_with_inherited_terminals(plan.landlock))
        guard_sock = None
        if plan.guard_enabled:
            step = "start the name guard"
            guard_sock = _start_guard(plan)
        step = "drop capabilities"
        caps.drop_all(unprivileged_ok=not plan.namespaces)
        if program is not None:
            step = "install the seccomp filter"
            seccomp.install(program)
        if guard_sock is not None:
            step = "install the name guard"
            listener = nameguard.install_filter()
            socket.send_fds(guard_sock, [b"L"], [listener])
            os.close(listener)
            guard_sock.close()
        step = "exec"
        os.execvpe(argv[0], list(argv), dict(plan.env))
    except OSError as e:
        msg: dict[str, Any] = {"exec_error" if step == "exec" else "error": e.errno, "step": step}
        if step != "exec":
            msg = {"error": f"{step}: {e.strerror or e}", "kind": "SandboxError"}
        _report(err_fd, msg)
    except BaseException as e:
        _report_error(err_fd, e)
    os._exit(127)
