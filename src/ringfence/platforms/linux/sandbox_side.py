"""The sandbox side of a session: the boundary is built once, then each command is one fork.

  host ── spawn ──► outer: join the cgroup, unshare user+mount+pid+ipc+uts(+net), map ids
                      └─ fork ──► runner (pid 1): build the view, pivot_root, lo up, build the
                                  seccomp program and the Landlock ruleset, then serve
                                    └─ per command, fork ──► init (pid 1 of a new pid
                                       namespace, with its own /proc)
                                         └─ fork ──► command: setsid, stdio, limits, Landlock
                                            (its own domain), guard, caps, seccomp, exec

The runner is small and single-threaded; the host never forks commands. Each command lives in
its own pid namespace, so ending its init (when the command exits, or on a timeout) ends every
process it started however it detached, and commands cannot see or signal one another. The
runner's only tie to the host is the session socket: when the host goes away (closes it, or
dies) the runner exits and the kernel ends the whole sandbox.

Reduced isolation has no namespaces: the runner is the host's child, each init is a child
subreaper that kills what its command left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ringfence.errors import RingfenceError, SandboxError
from ringfence.forwarded import FORWARDED
from ringfence.platforms.linux import (
    caps,
    landlock,
    mounts,
    namespaces,
    netside,
    popen_extras,
    protocol,
    reaper,
    seccomp,
    spawn,
    steps,
)
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.nameguard.filter import install_filter, prepare_filter
from ringfence.platforms.linux.plan_model import LinuxPlan

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
PR_SET_CHILD_SUBREAPER = 36
_HANDLED = (*FORWARDED, signal.SIGCHLD, signal.SIGPIPE)
KILL_TREE = 255  # on the control pipe: end the command's whole tree (reduced isolation)
SCOPE_ABI = 6  # Landlock's signal scoping
PREPARE_DELAY = 0.02  # seconds after a command starts before its successor's init is made
PREPARED = 2  # inits kept ready once a session runs more than one command
IDLE_AFTER = 0.005  # seconds a prepared init waits for its request before it warms up
# Live per-command namespaces allowed in the sandbox's user namespace: the runner makes one
# pid and one mount namespace per command. Commands themselves cannot make any (no
# capabilities, and the seccomp filter), and every other kind stays capped at 0.
MAX_COMMANDS = 1024
WARM_UP_EXEC = "/proc/self/fdinfo/ringfence-warm-up"  # can never exist: exec fails ENOENT


@dataclass
class _Command:
    id: int
    init_pid: int
    ctl_w: int


def session_main(plan: LinuxPlan, sock: socket.socket, tmpdir: str | None) -> NoReturn:
    """The runner process: never returns. Waits for the host's go-ahead (sent once the host
    has put this process in the session's cgroup), then builds the boundary."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        got = protocol.recv(sock)
        if got is None:
            os._exit(0)
        # One command and done (``ringfence run``): no init prepared ahead of a request.
        single = got[0].get("single") is True
        if not plan.namespaces:
            _reduced_serve(plan, sock, tmpdir, single)
        namespaces.unshare(plan.namespaces, plan.uid, plan.gid)
        pid = os.fork()
        if pid == 0:
            _pid1_main(plan, sock, single)
        sock.close()
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    except BaseException as e:
        _fatal(sock, e)


def _fatal(sock: socket.socket, e: BaseException) -> NoReturn:
    kind = type(e).__name__ if isinstance(e, RingfenceError) else "SandboxError"
    try:
        protocol.send(sock, {"id": 0, "error": str(e) or repr(e), "kind": kind})
    except OSError:
        pass
    os._exit(125)


def _pid1_main(plan: LinuxPlan, sock: socket.socket, single: bool) -> NoReturn:
    try:
        steps.die_with_parent()
        root = mounts.build_view(plan.mounts)
        mounts.pivot_into(root)
        if "net" in plan.namespaces:
            namespaces.loopback_up()
        # The proxy's socket first, then one per exposed host port, all served by the host.
        ports = ([plan.proxy_port] if plan.proxy_port else []) + list(plan.expose_ports)
        listeners = [netside.proxy_listener(p) for p in ports]
        netside.hand_over_resolver(plan, sock)
        steps.cap_userns_quotas(_session_quotas(plan.userns_limits))
        syscall("prctl", steps.PR_SET_DUMPABLE, 0, 0, 0, 0)
        listeners += netside.start_publish_maker(plan)  # --publish: handed over last
        _Server(plan, sock, namespaced=True, single=single).serve(listeners)
    except BaseException as e:
        _fatal(sock, e)


def _session_quotas(limits: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    room = {"max_pid_namespaces", "max_mnt_namespaces"}
    return [(n, MAX_COMMANDS if n in room else v) for n, v in limits]


def _reduced_serve(
    plan: LinuxPlan, sock: socket.socket, tmpdir: str | None, single: bool
) -> NoReturn:
    syscall("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    syscall("prctl", steps.PR_SET_DUMPABLE, 0, 0, 0, 0)
    if tmpdir is not None and plan.landlock is not None:
        import dataclasses

        rules = dataclasses.replace(
            plan.landlock,
            rules=(*plan.landlock.rules, landlock.PathRule(tmpdir, plan.landlock.handled_fs)),
        )
        plan = dataclasses.replace(plan, landlock=rules, env={**plan.env, "TMPDIR": tmpdir})
    try:
        _Server(plan, sock, namespaced=False, single=single).serve()
    finally:
        reaper.kill_descendants()


class _Server:
    """pid 1's loop: requests from the host, and the end of each command's init."""

    def __init__(
        self, plan: LinuxPlan, sock: socket.socket, *, namespaced: bool, single: bool = False
    ) -> None:
        self.plan = plan
        self.sock = sock
        self.namespaced = namespaced
        # A one-command session: each request gets an init made for it (no warm-up, none
        # prepared for a next request that will not come).
        self.single = single
        self.commands: dict[int, _Command] = {}  # by init pid
        self.by_id: dict[int, _Command] = {}
        self.idle: dict[int, _Init] = {}  # prepared inits not yet given a command
        self.zygote_due: float | None = None
        self.started = 0  # commands given an init so far
        self.guard_sock: socket.socket | None = None  # in a command's init: the guard's reports
        self.guard_pid = 0
        # Filters and guard rules made once: every command's init and guard uses them as made.
        self.program = seccomp.prepare(plan.seccomp) if plan.seccomp is not None else None
        self.guard_rules = steps.guard_rules_of(plan) if plan.guard_enabled else None
        self.guard_names = bool(plan.guard_names or plan.guard_paths or plan.guard_git != "off")
        self.guard_program = prepare_filter(self.guard_names) if plan.guard_enabled else None
        self.ruleset_fd = (
            landlock.create_ruleset(plan.landlock) if plan.landlock is not None else -1
        )
        self.own_pidns = (
            os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if namespaced else -1
        )
        # The name guards of the session's commands take turns on this (each through an open
        # file description of its own, so flock excludes them from one another): a check one
        # guard makes cannot be undone by a change another guard performs meanwhile.
        self.guard_lock = os.memfd_create("ringfence-guard-lock", os.MFD_CLOEXEC)
        # A domain nested in the command's own, which it enters after its guard has started:
        # with signal scoping the command then cannot signal (kill, stop) its guard, which
        # stays in the outer domain (and can still read the command's memory).
        self.guard_scope_fd = -1
        if plan.guard_enabled and plan.landlock is not None and plan.landlock.abi >= SCOPE_ABI:
            # REFER handled and granted everywhere: a Landlock layer that does not handle it
            # refuses every link or rename into another directory (EXDEV), which the outer
            # domain alone decides (the guard, when it has names, performs those calls itself).
            refer = landlock.ACCESS_FS["REFER"]
            self.guard_scope_fd = landlock.create_ruleset(
                landlock.LandlockRuleset(
                    plan.landlock.abi,
                    refer,
                    (landlock.PathRule("/", refer),),
                    scoped=landlock.SCOPE["SIGNAL"] | landlock.SCOPE["ABSTRACT_UNIX_SOCKET"],
                )
            )
        if namespaced:
            # Once for every init and guard forked from here. The runner keeps the capabilities
            # it holds (each init still mounts its /proc) and never executes anything.
            caps.drop_bounding()
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)

    def serve(self, listeners: Sequence[socket.socket] = ()) -> NoReturn:
        # Every command forks from here: keep the garbage collector from touching (and so
        # copying) every object in each child.
        gc.freeze()
        gc.disable()
        protocol.send(self.sock, {"id": 0, "ready": True}, [ls.fileno() for ls in listeners])
        for ls in listeners:
            ls.close()  # the host serves them now; no init may hold one
        if not self.single:
            self._prepare_next()
        sock_fd = self.sock.fileno()
        while True:
            wait = None
            if self.zygote_due is not None:
                wait = max(0.0, self.zygote_due - time.monotonic())
            try:
                ready, _, _ = select.select([sock_fd, self.wake_r], [], [], wait)
            except InterruptedError:
                continue
            if self.zygote_due is not None and time.monotonic() >= self.zygote_due:
                self._prepare_next()
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
                self._reap()
            if sock_fd in ready:
                try:
                    got = protocol.recv(self.sock)
                except protocol.ProtocolError:
                    continue
                except OSError:
                    got = None
                if got is None:  # the host is gone: so is the sandbox
                    os._exit(0)
                msg, fds = got
                try:
                    self._handle(msg, fds)
                finally:
                    for fd in fds:
                        os.close(fd)

    def _send(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
        try:
            protocol.send(self.sock, msg, fds)
        except OSError:
            os._exit(0)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        cid = msg.get("id")
        if not isinstance(cid, int):
            return
        if op == "run":
            self._start(cid, msg, fds)
        elif op == "claimed":
            self._claimed(cid, msg.get("init"))
        elif op in ("signal", "kill") and cid in self.by_id:
            cmd = self.by_id[cid]
            if op == "kill" and self.namespaced:
                _kill(cmd.init_pid, signal.SIGKILL)  # the kernel ends its pid namespace
                return
            sig = KILL_TREE if op == "kill" else int(msg.get("sig", signal.SIGTERM))
            try:
                os.write(cmd.ctl_w, bytes([sig & 0xFF]))
            except OSError:
                pass

    def _start(self, cid: int, msg: dict[str, Any], fds: list[int]) -> None:
        try:
            spec = _Spec.from_message(self.plan, msg)
        except (TypeError, ValueError) as e:
            self._send({"id": cid, "error": f"bad request: {e}"})
            return
        if len(fds) != spec.nfds:
            self._send({"id": cid, "error": "bad request: wrong number of stdio descriptors"})
            return
        if self.single or any(os.isatty(fd) for fd in fds):
            # The caller's own terminal needs a Landlock rule of its own: a fresh init.
            self._register(cid, self._fork_init((cid, spec, fds)))
            return
        # The host had no prepared init at hand (or this is its first request): one is made now.
        init = self._fork_init(None)
        if init is None:
            self._send({"id": cid, "error": "cannot start the command: fork failed"})
            return
        self.idle.pop(init.pid, None)
        try:
            protocol.send(init.zsock, {**msg, "id": cid}, fds)
        except OSError as e:
            self._send({"id": cid, "error": f"cannot start the command: {e}"})
        for fd in fds:  # before the next fork: no other process may hold this command's stdio
            os.close(fd)
        fds.clear()
        self._register(cid, init)
        self._schedule_next()

    def _claimed(self, cid: int, pid: object) -> None:
        """The host gave command ``cid`` straight to the prepared init ``pid``."""
        init = self.idle.pop(pid, None) if isinstance(pid, int) else None
        if init is None:
            self._send({"id": cid, "error": "the command's init ended before it could start"})
            return
        self._register(cid, init)
        self._schedule_next()

    def _schedule_next(self) -> None:
        # The next command's init: prepared once this command has had the CPU to start (when
        # its init exits, or shortly after), not while it execs.
        if self.zygote_due is None:
            self.zygote_due = time.monotonic() + PREPARE_DELAY

    def _prepare_next(self) -> None:
        """Top up the prepared inits and hand the host a way to give each a command directly:
        one until a second command came (a one-shot ``ringfence run`` needs no more), then
        ``PREPARED``, so a command sent right after another finds one made meanwhile."""
        self.zygote_due = None
        want = PREPARED if self.started > 1 else 1
        while len(self.idle) < want:
            init = self._fork_init(None)
            if init is None:
                return
            self._send({"id": 0, "init": init.pid}, [init.zsock.fileno()])

    def _register(self, cid: int, init: _Init | None) -> None:
        if init is None:
            self._send({"id": cid, "error": "cannot start the command: fork failed"})
            return
        self.started += 1
        init.zsock.close()
        cmd = _Command(cid, init.pid, init.ctl_w)
        self.commands[init.pid] = cmd
        self.by_id[cid] = cmd

    def _fork_init(self, preset: _Preset | None) -> _Init | None:
        """A per-command init with every layer applied, waiting for its command (or, with
        ``preset``, starting it at once)."""
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            if self.namespaced:
                syscall("unshare", CLONE_NEWPID)
            pid = os.fork()
        except OSError:
            for fd in (ctl_r, ctl_w):
                os.close(fd)
            ours.close()
            theirs.close()
            if self.namespaced:
                with contextlib.suppress(OSError):
                    syscall("setns", self.own_pidns, CLONE_NEWPID)
            return None
        if pid == 0:
            os.close(ctl_w)
            ours.close()
            _init_main(self, theirs, ctl_r, preset)
        if self.namespaced:
            syscall("setns", self.own_pidns, CLONE_NEWPID)  # later forks: ours again
        os.close(ctl_r)
        theirs.close()
        init = _Init(pid, ours, ctl_w)
        if preset is None:
            self.idle[pid] = init
        return init

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            idle = self.idle.pop(pid, None)
            if idle is not None:  # a prepared init that died unused
                os.close(idle.ctl_w)
                idle.zsock.close()
            cmd = self.commands.pop(pid, None)
            if cmd is None:
                continue
            self.by_id.pop(cmd.id, None)
            os.close(cmd.ctl_w)
            if self.zygote_due is not None:
                self._prepare_next()
            if os.WIFSIGNALED(status):  # killed before it could report (a timeout's kill)
                self._send({"id": cmd.id, "signal": os.WTERMSIG(status), "killed": True})
            elif os.WEXITSTATUS(status) != 0:
                self._send({"id": cmd.id, "error": "the command's init process failed"})


@dataclass
class _Init:
    pid: int
    zsock: socket.socket
    ctl_w: int


@dataclass(frozen=True)
class _Spec:
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
    def from_message(cls, plan: LinuxPlan, msg: dict[str, Any]) -> _Spec:
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


_Preset = tuple[int, _Spec, list[int]]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _init_main(srv: _Server, zsock: socket.socket, ctl_r: int, preset: _Preset | None) -> NoReturn:
    """A command's init: its own /proc (or, reduced, a subreaper), then every per-command layer
    on itself (its own Landlock domain, the guard, no capabilities, seccomp), then the command,
    spawned with vfork+exec so it costs no second copy of this process. It relays the host's
    signals to the command's process group and reports how the command ended."""
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
            _, spec, stdio = preset
        else:
            # Only if no request comes within a few ms (back to back, it would wait for this
            # ~1 ms of CPU; the guard then builds its supervisor only if the command asks).
            if not select.select([zsock], [], [], IDLE_AFTER)[0]:
                steps.guard_get_ready(srv.guard_sock)  # there is time: the guard too
                with contextlib.suppress(Exception):
                    _warm_up(srv)
            got = protocol.recv(zsock)
            if got is None:
                os._exit(0)
            msg, stdio = got
            cid = int(msg["id"])
            spec = _Spec.from_message(srv.plan, msg)
        zsock.close()
        if failed is not None:
            raise failed
        _run(srv, cid, spec, stdio, ctl_r, ptmx=ptmx)
    except BaseException as e:
        kind = type(e).__name__ if isinstance(e, RingfenceError) else "SandboxError"
        if cid:
            with contextlib.suppress(OSError):
                protocol.send(sock, {"id": cid, "error": str(e) or repr(e), "kind": kind})
        if not srv.namespaced:
            reaper.kill_descendants()
        os._exit(0 if cid else 1)


def _warm_up(srv: _Server) -> None:
    """Walk the request path once before the request comes.

    This init is a fresh fork of the runner: the first time it runs any code, every page whose
    objects it touches (reference counts, allocator arenas) is copied. Measured on the 2-vCPU
    VM: ~170 page faults and 1.3-1.7 ms from request to "started" without this, ~30 and
    0.6-0.8 ms with it. Decoding a sample request and going through the spawn up to an exec
    that fails moves the rest off the command's critical path (it costs a vfork per command).
    """
    sample = {"op": "run", "id": 1, "argv": ["true"], "env": dict(srv.plan.env), "cwd": None}
    spec = _Spec.from_message(srv.plan, json.loads(json.dumps(sample)))
    json.dumps({"id": 1, "started": 2, "nfds": 0})
    # The spawn's own path, up to an exec that fails at once: a vfork and no new program. No
    # new fd is opened for it: the name guard's filter is on this process already, and refuses
    # it the write-capable opens the guard cannot check in its own parent.
    spawn.warm_up(WARM_UP_EXEC, spec.env)


def _prepare_init(srv: _Server, preset: _Preset | None) -> int:
    """Everything before the command is known; returns a pty master to use or close."""
    signal.set_wakeup_fd(-1)
    os.close(srv.wake_r)
    for fd in [c.ctl_w for c in srv.by_id.values()] + [i.ctl_w for i in srv.idle.values()]:
        os.close(fd)  # other commands' control pipes are not ours to hold
    for idle in srv.idle.values():
        idle.zsock.close()
    for sig in _HANDLED:
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
    guard_sock, srv.guard_pid = (
        steps.start_guard(plan, srv.guard_lock, srv.guard_rules, bounding_cleared=srv.namespaced)
        if plan.guard_enabled
        else (None, 0)
    )
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
    srv: _Server, cid: int, spec: _Spec, stdio: list[int], ctl_r: int, *, ptmx: int
) -> NoReturn:
    sock = srv.sock
    master = -1
    if len(stdio) != spec.nfds:
        raise SandboxError("bad request: wrong number of descriptors")
    split = len(stdio) - len(spec.pass_fds)
    stdio, staged = stdio[:split], popen_extras.stage(stdio[split:], spec.pass_fds)
    if spec.pty is not None:
        if ptmx < 0:
            raise SandboxError("no pseudo-terminal available in the sandbox")
        master, slave = _openpty(ptmx)
        _set_winsize(master, *spec.pty)
        stdio = [slave, slave, slave]
    elif ptmx >= 0:
        os.close(ptmx)
    try:
        child = spawn.start(
            spec.argv, executable=spec.executable, env=spec.env, cwd=spec.cwd, stdio=stdio,
            umask=spec.umask, pass_fds=spec.pass_fds,
            child_step=staged.child_step(_ctty if master >= 0 else None),
        )  # fmt: skip
    except OSError as e:
        if isinstance(e, spawn.CwdError) or (
            e.filename == spec.cwd and e.filename != (spec.executable or spec.argv[0])
        ):
            report: dict[str, Any] = {"error": f"chdir {spec.cwd}: {e.strerror}"}
        else:
            report = {"exec_error": e.errno}
        protocol.send(sock, {"id": cid, **report})
        os._exit(0)
    for fd in {*stdio}:
        os.close(fd)
    staged.close()  # the command holds them now: the caller sees EOF when it lets go
    protocol.send(sock, {"id": cid, "started": child}, [master] if master >= 0 else [])
    if master >= 0:
        os.close(master)
    reports: list[dict[str, str]] = []
    guard = srv.guard_sock
    status = _relay(child, ctl_r, guard, reports)
    if not srv.namespaced:
        reaper.kill_descendants()
    end: dict[str, Any] = {"id": cid}
    if os.WIFSIGNALED(status):
        end["signal"] = os.WTERMSIG(status)
    else:
        end["exit"] = os.WEXITSTATUS(status)
    reports.extend(steps.guard_reports(srv.guard_sock))
    pending = sorted({r.get("path", "") for r in reports if r.get("kind") == "git_pending"})
    if pending and not (
        srv.guard_sock is not None and _finish_guard(srv.guard_sock, srv.guard_pid, reports)
    ):
        end["unchecked"] = pending  # the host moves them aside
    reports = [r for r in reports if r.get("kind") not in steps.CONTROL]
    if reports:
        end["reports"] = reports
    _report_and_exit(srv, end)


def _report_and_exit(srv: _Server, end: dict[str, Any]) -> NoReturn:
    steps.end_leftovers(srv.namespaced, srv.guard_pid)
    protocol.send(srv.sock, end)
    steps.exit_after_report()


FINISH_TIMEOUT = 10.0  # seconds the guard may take to check the pointer files at the end


def _finish_guard(guard: socket.socket, guard_pid: int, reports: list[dict[str, str]]) -> bool:
    """The command created files whose content only counts once nothing can change it any
    more (a ``.git`` file, ``commondir``, ``.gitmodules``, a todo list): end every other
    process of the command (they could still hold the files open for writing), then have the
    guard check them and move refused ones aside. Only the guard and this init are left in the
    pid namespace when it looks. False when that did not happen: the host then moves every
    such file aside itself (fail closed)."""
    deadline = time.monotonic() + FINISH_TIMEOUT
    if not steps.end_others(guard_pid, FINISH_TIMEOUT):
        return False
    guard.setblocking(True)
    guard.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        guard.send(b"F")
        while True:
            data = guard.recv(65536)
            if not data:
                return False  # the guard is gone: it did not finish
            record = json.loads(data)
            if not isinstance(record, dict):
                continue
            if record.get("kind") == "git_finished":
                return True
            if record.get("kind") == "git_unfinished":
                return False
            reports.append({str(k): str(v) for k, v in record.items()})
    except (OSError, ValueError):
        return False


def _relay(
    child: int, ctl_r: int, guard: socket.socket | None, reports: list[dict[str, str]]
) -> int:
    """Wait for the command, reaping orphans, and pass on the host's signals; collect the
    name guard's findings as they come (so a flood never fills the socket)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    status: int | None = None
    while status is None:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == child:
                status = st
        if status is not None:
            break
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
            data = os.read(ctl_r, 64)
            if not data:  # the runner is gone: so are we
                os._exit(0)
            for sig in data:
                if sig == KILL_TREE:
                    _kill(child, signal.SIGKILL)
                    reaper.kill_descendants(reap=False)
                else:
                    steps.forward(child, sig)
    return status


def main() -> NoReturn:
    """Entry point when the host spawns the runner (``python -m``): the plan arrives pickled on
    stdin from the host that started us (same user, trusted); the session socket's fd number
    is the first argument."""
    import pickle

    fd = int(sys.argv[1])
    data = sys.stdin.buffer.read()
    plan, tmpdir = pickle.loads(data)  # from our own parent, over a private pipe
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    session_main(plan, sock, tmpdir)


if __name__ == "__main__":
    main()
