"""A command's init: pid 1 of the command's own pid namespace, with every layer on.

The session runner (``sandbox_side``) forks inits ahead of the requests. Each takes its own
mount namespace and /proc, its own Landlock domain, starts the name guard beside it, drops its
capabilities and installs the seccomp filters, then waits for a request. It starts the command
(``spawn``), relays the host's signals, and once the command has ended ends whatever it left
running and reports how it ended.

Then, when nothing of that command can reach the next one, it serves the session's next
command itself instead of exiting (see :func:`_reusable` and :func:`_finish`): forking and
tearing down an init and its guard per command was most of a warm command's CPU
(docs/performance.md). It exits instead after a command that had a terminal, ran under a CPU
limit, was signalled or killed by the host, left something it could not end, changed how the
init is scheduled, or whose guard could not start afresh.

Runs inside the sandbox: ringfence modules are imported at top level.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from ringfence.errors import RingfenceError, SandboxError
from ringfence.forwarded import FORWARDED
from ringfence.platforms.linux import (
    caps,
    guard_tell,
    landlock,
    mounts,
    popen_extras,
    protocol,
    reaper,
    seccomp,
    spawn,
    steps,
)
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.nameguard.filter import install_filter
from ringfence.platforms.linux.plan_model import LinuxPlan

if TYPE_CHECKING:
    from ringfence.platforms.linux.sandbox_side import _Server

CLONE_NEWNS = 0x00020000
PR_SET_CHILD_SUBREAPER = 36
HANDLED = (*FORWARDED, signal.SIGCHLD, signal.SIGPIPE)
KILL_TREE = 255  # on the control pipe: end the command's whole tree, then report as usual
IDLE_AFTER = 0.005  # seconds a prepared init waits for its request before it warms up
WARM_UP_EXEC = "/proc/self/fdinfo/ringfence-warm-up"  # can never exist: exec fails ENOENT


@dataclass(frozen=True)
class Spec:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    pty: tuple[int, int] | None
    executable: str | None = None  # the program, when not argv[0] (Popen's executable=)
    umask: int = -1  # -1: unchanged
    pass_fds: tuple[int, ...] = ()  # the numbers the extra descriptors get in the command

    @property
    def nfds(self) -> int:
        """How many descriptors the request carries: stdio (none with a pty), then pass_fds."""
        return (0 if self.pty else 3) + len(self.pass_fds)

    @classmethod
    def from_message(cls, plan: LinuxPlan, msg: dict[str, Any]) -> Spec:
        argv = msg.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a non-empty list of strings")
        env = msg.get("env")
        if env is None:
            env = dict(plan.env)
        elif not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("env must map strings to strings")
        cwd = msg.get("cwd") or plan.cwd
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a string")
        pty = msg.get("pty")
        size = (int(pty[0]), int(pty[1])) if pty else None
        return cls(argv, env, cwd, size, *popen_extras.request_fields(msg))


Preset = tuple[int, Spec, list[int]]


def kill_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def init_main(srv: _Server, zsock: socket.socket, ctl_r: int, preset: Preset | None) -> NoReturn:
    """A command's init: its own /proc (or, reduced, a subreaper), then every per-command layer
    on itself (its own Landlock domain, the guard, no capabilities, seccomp), then the command,
    spawned with vfork+exec so it costs no second copy of this process. It relays the host's
    signals to the command's process group and reports how the command ended. An init made
    for a request that came first (``preset``: a terminal, or a one-command session) serves
    that one; one prepared ahead serves requests on ``zsock`` while :func:`_reusable`."""
    sock = srv.sock
    cid = preset[0] if preset else 0
    try:
        ptmx = -1
        failed: BaseException | None = None
        try:
            ptmx = _prepare_init(srv, preset)
        except BaseException as e:  # reported to the command that comes for this init
            failed = e
        if preset is not None:
            zsock.close()
            if failed is not None:
                raise failed
            _run(srv, cid, preset[1], preset[2], ctl_r, ptmx=ptmx, baseline=None)
            steps.exit_after_report()
        sched = steps.sched_state()  # how this init is scheduled: a command may change it
        warm = False
        while True:
            # Only if no request comes within a few ms (back to back, it would wait for this
            # ~1 ms of CPU; the guard then builds its supervisor only if the command asks).
            if not select.select([zsock], [], [], IDLE_AFTER)[0]:
                steps.guard_get_ready(srv.guard_sock)  # there is time: the guard too
                if not warm:
                    warm = True
                    with contextlib.suppress(Exception):
                        _warm_up(srv)
            got = protocol.recv(zsock)
            if got is None:  # the host let this init go
                os._exit(0)
            msg, stdio = got
            cid = int(msg["id"])
            if failed is not None:
                raise failed
            spec = Spec.from_message(srv.plan, msg)
            baseline = sched if _reusable(srv, spec) else None
            ptmx = _run(srv, cid, spec, stdio, ctl_r, ptmx=ptmx, baseline=baseline)
            cid = 0  # reported: an error from here on is no command's
    except BaseException as e:
        kind = type(e).__name__ if isinstance(e, RingfenceError) else "SandboxError"
        if cid:
            with contextlib.suppress(OSError):
                protocol.send(sock, {"id": cid, "error": str(e) or repr(e), "kind": kind})
        if not srv.namespaced:
            reaper.kill_descendants()
        os._exit(0 if cid else 1)


def _reusable(srv: _Server, spec: Spec) -> bool:
    """May this init serve another command after ``spec``'s (if it also ends cleanly)?

    Only in its own pid namespace, where ending the command's leftovers is certain (kill(-1)
    from pid 1, then waiting until only this init and its guard are left). Not after a
    terminal (the pty master was this init's one), nor under a CPU limit (``RLIMIT_CPU``
    counts this init's own time, which grows with each command). What the next command must
    not inherit is set per request (cwd, umask, environment, signal dispositions and mask,
    descriptors); the guard starts afresh behind a barrier (``steps.guard_reset``). Whether
    the command then ended cleanly (nothing left, the guard fresh, the init's scheduling as
    it was) is for :func:`_finish` to say."""
    if not srv.namespaced or spec.pty is not None:
        return False
    return all(name != "CPU" for name, _ in srv.plan.rlimits)


def _warm_up(srv: _Server) -> None:
    """Walk the request path once before the request comes.

    This init is a fresh fork of the runner: the first time it runs any code, every page whose
    objects it touches (reference counts, allocator arenas) is copied. Measured on the 2-vCPU
    VM: ~170 page faults and 1.3-1.7 ms from request to "started" without this, ~30 and
    0.6-0.8 ms with it. Decoding a sample request and going through the spawn up to an exec
    that fails moves the rest off the command's critical path (it costs a vfork per command).
    """
    sample = {"op": "run", "id": 1, "argv": ["true"], "env": dict(srv.plan.env), "cwd": None}
    spec = Spec.from_message(srv.plan, json.loads(json.dumps(sample)))
    json.dumps({"id": 1, "started": 2, "nfds": 0})
    # The spawn's own path, up to an exec that fails at once: a vfork and no new program. No
    # new fd is opened for it: the name guard's filter is on this process already, and refuses
    # it the write-capable opens the guard cannot check in its own parent.
    spawn.warm_up(WARM_UP_EXEC, spec.env)


def _prepare_init(srv: _Server, preset: Preset | None) -> int:
    """Everything before the command is known; returns a pty master to use or close."""
    signal.set_wakeup_fd(-1)
    os.close(srv.wake_r)
    for fd in [c.ctl_w for c in srv.by_id.values()] + [i.ctl_w for i in srv.idle.values()]:
        os.close(fd)  # other commands' control pipes are not ours to hold
    for idle in srv.idle.values():
        idle.zsock.close()
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    if srv.namespaced:
        syscall("unshare", CLONE_NEWNS)
        mounts.mount_proc("/proc")
    else:
        syscall("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # A terminal for the command, should it ask for one: opened before the layers (the name
    # guard would take over the open), made usable only if asked (TIOCGPTPEER).
    try:
        ptmx = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        ptmx = -1
    _apply_layers(srv, preset[2] if preset else [])
    return ptmx


def _apply_layers(srv: _Server, stdio: list[int]) -> None:
    """Everything the command will run under, applied to its init (which the command's tree
    inherits): keyring, limits, Landlock, the name guard, capabilities, seccomp."""
    plan = srv.plan
    steps.new_session_keyring()
    steps.set_rlimits(plan.rlimits)
    if plan.landlock is not None:
        ttys = [fd for fd in stdio if os.isatty(fd)]
        if ttys:
            landlock.restrict_self(_with_terminals(plan.landlock, ttys))
        else:
            landlock.restrict_with(srv.ruleset_fd)
        os.close(srv.ruleset_fd)
    if plan.guard_enabled:
        srv.cid_page = guard_tell.new_page()
        guard_sock, srv.guard_pid = steps.start_guard(
            plan,
            srv.guard_lock,
            srv.guard_rules,
            bounding_cleared=srv.namespaced,
            host=(srv.sock.fileno(), srv.cid_page),
        )
    else:
        guard_sock, srv.guard_pid = None, 0
    if srv.guard_scope_fd >= 0:
        landlock.restrict_with(srv.guard_scope_fd)
        os.close(srv.guard_scope_fd)
    caps.drop_all(unprivileged_ok=not srv.namespaced, bounding=False)
    if srv.program is not None:
        seccomp.install(srv.program)
    if guard_sock is not None:
        listener = install_filter(names=srv.guard_names, program=srv.guard_program)
        steps.hand_over_listener(guard_sock, listener)
        os.close(listener)
        srv.guard_sock = guard_sock  # the guard's findings come back on it


def _with_terminals(ruleset: landlock.LandlockRuleset, fds: list[int]) -> landlock.LandlockRuleset:
    """Let the command reopen the caller's terminal it was handed (``> /dev/stdout`` on a tty):
    it lives on the host's devpts, outside the sandbox's view; a rule on exactly that device."""
    import dataclasses

    extra = [
        landlock.PathRule(f"/proc/self/fd/{fd}", landlock.DEVICE_ACCESS, required=False)
        for fd in fds
    ]
    return dataclasses.replace(ruleset, rules=(*ruleset.rules, *extra))


TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def _openpty(master: int) -> tuple[int, int]:
    """The pty pair of ``master`` (on the sandbox's own devpts). The slave comes from the
    master itself (TIOCGPTPEER): no path lookup, no chown to the tty group that glibc's
    openpty tries."""
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, int(slave)


def _ctty() -> None:
    """In the command's child, before exec: the pty becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run(
    srv: _Server,
    cid: int,
    spec: Spec,
    stdio: list[int],
    ctl_r: int,
    *,
    ptmx: int,
    baseline: tuple[object, ...] | None,
) -> int:
    """Run one command and report how it ended. Returns (the pty master, still unused) only
    when this init is to serve another command; otherwise it exits. ``baseline``: how this
    init was scheduled when it was made, if it may serve another command (else None)."""
    reuse = baseline is not None
    master = -1
    if srv.cid_page is not None:  # whose command the guard's calls are from now (guard_tell)
        guard_tell.set_command(srv.cid_page, cid)
    if len(stdio) != spec.nfds:
        raise SandboxError("bad request: wrong number of descriptors")
    if spec.pty is not None:
        if ptmx < 0:
            raise SandboxError("no pseudo-terminal available in the sandbox")
        master, slave = _openpty(ptmx)
        ptmx = -1
        _set_winsize(master, *spec.pty)
        stdio = [slave, slave, slave, *stdio]
    elif ptmx >= 0 and not reuse:
        os.close(ptmx)
        ptmx = -1
    child = _start(spec, stdio, master)
    if reuse:
        os.chdir("/")  # where the runner left it: the next request's cwd is its own
    if isinstance(child, dict):  # it did not start: nothing of it to end
        protocol.send(srv.sock, {"id": cid, **child, **({"reusable": True} if reuse else {})})
    else:
        protocol.send(srv.sock, {"id": cid, "started": child}, [master] if master >= 0 else [])
        if master >= 0:
            os.close(master)
        ended = _relay(child, ctl_r, srv.guard_sock, namespaced=srv.namespaced)
        reuse = _finish(srv, cid, ended, baseline=baseline)
    if not reuse:
        steps.exit_after_report()
    return ptmx


def _start(spec: Spec, fds: list[int], master: int) -> int | dict[str, Any]:
    """Spawn the command on its descriptors (stdio, then ``pass_fds``), closed here once it
    holds them (the caller sees EOF when it lets go); its pid, or the report of why not."""
    split = len(fds) - len(spec.pass_fds)
    stdio, staged = fds[:split], popen_extras.stage(fds[split:], spec.pass_fds)
    try:
        return spawn.start(
            spec.argv, executable=spec.executable, env=spec.env, cwd=spec.cwd, stdio=stdio,
            umask=spec.umask, pass_fds=spec.pass_fds,
            child_step=staged.child_step(_ctty if master >= 0 else None),
        )  # fmt: skip
    except OSError as e:
        if master >= 0:
            os.close(master)
        if isinstance(e, spawn.CwdError) or (
            e.filename == spec.cwd and e.filename != (spec.executable or spec.argv[0])
        ):
            return {"error": f"chdir {spec.cwd}: {e.strerror}"}
        return {"exec_error": e.errno}
    finally:
        for fd in {*stdio}:
            os.close(fd)
        staged.close()


def _finish(
    srv: _Server,
    cid: int,
    ended: tuple[int, list[dict[str, str]]],
    *,
    baseline: tuple[object, ...] | None,
) -> bool:
    """The command has exited: end what it left running, have the guard finish with it, and
    send the report. True if this init may serve another command (the report says so)."""
    status, reports = ended
    end: dict[str, Any] = {"id": cid}
    if os.WIFSIGNALED(status):
        end["signal"] = os.WTERMSIG(status)
    else:
        end["exit"] = os.WEXITSTATUS(status)
    if not srv.namespaced:
        reaper.kill_descendants()
    # Nothing of the command may still run when the guard's findings are counted (a leftover
    # could still create a pointer file) nor when the report goes.
    gone = steps.end_leftovers(srv.namespaced, srv.guard_pid)
    reports.extend(steps.guard_reports(srv.guard_sock))
    fresh = srv.guard_sock is None
    if srv.guard_sock is not None and gone:
        # The guard has answered all it will for this command; it checks the pointer files
        # the command made and starts afresh for the next one.
        got = steps.guard_reset(srv.guard_sock, FINISH_TIMEOUT)
        fresh = got is not None and got[1]
        reports.extend(got[0] if got is not None else [])
    pending = sorted(guard_tell.pending_of(reports))
    if pending and not any(r.get("kind") == "git_finished" for r in reports):
        # The host moves them aside (fail closed). It has them all from the guard itself
        # (guard_tell): the first few here say so, and keep the report small.
        end["unchecked"] = _first(pending, UNCHECKED_BYTES)
    reports = [r for r in reports if r.get("kind") not in steps.CONTROL]
    if reports:
        end["reports"] = reports
    reuse = (
        baseline is not None
        and gone
        and fresh
        and "unchecked" not in end
        and steps.sched_state() == baseline
    )
    if reuse:
        end["reusable"] = True
    _send_end(srv.sock, end)
    return reuse


FINISH_TIMEOUT = 10.0  # seconds the guard may take to check the pointer files at the end
UNCHECKED_BYTES = 32 << 10  # of names left unchecked in the end report (the host has all)
REPORTS_PART = 60 << 10  # bytes of findings per message: one message must fit the socket


def _first(names: list[str], limit: int) -> list[str]:
    """The first of ``names`` whose JSON fits ``limit`` bytes (at least one)."""
    out: list[str] = []
    size = 0
    for name in names:
        size += len(json.dumps(name)) + 1
        if out and size > limit:
            break
        out.append(name)
    return out


def _send_end(sock: socket.socket, end: dict[str, Any]) -> None:
    """The end report; its findings ahead of it in parts (``reports_part``) when they would
    not fit one message (each finding is clipped, but a path of control bytes escapes to
    six times its length, and there may be 300)."""
    reports = end.pop("reports", [])
    part: list[dict[str, str]] = []
    size = 0
    for record in reports:
        n = len(json.dumps(record)) + 1
        if part and size + n > REPORTS_PART:
            protocol.send(sock, {"id": end["id"], "reports_part": part})
            part, size = [], 0
        part.append(record)
        size += n
    if part:
        end["reports"] = part
    protocol.send(sock, end)


def _relay(
    child: int,
    ctl_r: int,
    guard: socket.socket | None,
    *,
    namespaced: bool,
) -> tuple[int, list[dict[str, str]]]:
    """Wait for the command, reaping orphans, and pass on the host's signals; collect the
    name guard's findings as they come (so a flood never fills the socket; the guard tells
    the host itself of each file that waits for the end check, see guard_tell). Returns the
    command's wait status and those findings."""
    reports: list[dict[str, str]] = []
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    try:
        while (status := _reap(child)) is None:
            watched = [wake_r, ctl_r] if guard is None else [wake_r, ctl_r, guard.fileno()]
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if guard is not None and guard.fileno() in ready:
                got = steps.guard_reports(guard)
                reports.extend(got)
                if not got:  # the guard closed its end: nothing more from it
                    guard = None
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            if ctl_r in ready:
                _pass_on(child, os.read(ctl_r, 64), namespaced=namespaced)
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
    return status, reports


def _reap(child: int) -> int | None:
    """Reap every child that has ended (orphans of the command included); ``child``'s wait
    status once it has."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = st


def _pass_on(child: int, data: bytes, *, namespaced: bool) -> None:
    """The host's signals for the command, from the runner's control pipe. KILL_TREE: the
    command now; in its own pid namespace the rest goes once it is reaped (``_finish``: all
    but the guard, which this init may not signal), without one, every descendant now."""
    if not data:  # the runner is gone: so are we
        os._exit(0)
    for sig in data:
        if sig == KILL_TREE:
            kill_quietly(child, signal.SIGKILL)
            if not namespaced:
                reaper.kill_descendants(reap=False)
        else:
            steps.forward(child, sig)
