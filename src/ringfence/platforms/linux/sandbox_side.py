"""The sandbox side of a session: the boundary is built once, then each command is one fork.

  host ── spawn ──► outer: join the cgroup, unshare user+mount+pid+ipc+uts(+net), map ids
                      └─ fork ──► runner (pid 1): build the view, pivot_root, lo up, build the
                                  seccomp program and the Landlock ruleset, then serve
                                    └─ ahead of requests, fork ──► init (pid 1 of a new pid
                                       namespace, with its own /proc; ``command_init``)
                                         └─ spawn ──► command: setsid, stdio, limits, Landlock
                                            (its own domain), guard, caps, seccomp, exec

The runner is small and single-threaded; the host never forks commands. Each command lives in
a pid namespace that no other running command shares, so ending its init (on a timeout, or
when the host kills it) ends every process it started however it detached, and commands
cannot see or signal one another. An init whose command has ended and left nothing behind
may serve the session's next command (``command_init._reusable``). The runner's only tie to
the host is the session socket: when the host goes away (closes it, or dies) the runner exits
and the kernel ends the whole sandbox.

Reduced isolation has no namespaces: the runner is the host's child, each init is a child
subreaper that kills what its command left behind (and serves one command only)."""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import select
import signal
import socket
import sys
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
    protocol,
    reaper,
    seccomp,
    steps,
)
from ringfence.platforms.linux.command_init import (
    KILL_TREE,
    PR_SET_CHILD_SUBREAPER,
    Preset,
    Spec,
    init_main,
    kill_quietly,
)
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.nameguard.filter import prepare_filter
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import statedirs

CLONE_NEWPID = 0x20000000
SCOPE_ABI = 6  # Landlock's signal scoping
PREPARE_DELAY = 0.02  # seconds after a command starts before its successor's init is made
PREPARED = 2  # inits kept ready once a session runs more than one command
# Live per-command namespaces allowed in the sandbox's user namespace: the runner makes one
# pid and one mount namespace per command. Commands themselves cannot make any (no
# capabilities, and the seccomp filter), and every other kind stays capped at 0.
MAX_COMMANDS = 1024
# Seconds an init asked to end its command's tree has to report before it is killed with its
# pid namespace: its leftovers' wait (steps.LEFTOVER_WAIT) and its guard's end-of-command
# check (command_init.FINISH_TIMEOUT), and a margin.
KILL_GRACE = 20.0


@dataclass
class _Command:
    id: int
    init_pid: int
    ctl_w: int


def session_main(plan: LinuxPlan, sock: socket.socket, tmpdir: str | None) -> NoReturn:
    """The runner process: never returns. Waits for the host's go-ahead (sent once the host
    has put this process in the session's v2 cgroups), joins its v1 cgroups itself before it
    starts anything (``cgroups.join_self``), then builds the boundary."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        got = protocol.recv(sock)
        if got is None:
            os._exit(0)
        _join_cgroups(got[0].get("tasks"))
        # One command and done (``ringfence run``): no init prepared ahead of a request.
        single = got[0].get("single") is True
        # opened while the user's own view is ours (pid 1 builds the sandbox's)
        lock = (
            statedirs.open_guard_lock(plan.state_dir)
            if plan.guard_enabled and plan.state_dir
            else None
        )
        if not plan.namespaces:
            _reduced_serve(plan, sock, tmpdir, single, lock)
        namespaces.unshare(plan.namespaces, plan.uid, plan.gid)
        pid = os.fork()
        if pid == 0:
            _pid1_main(plan, sock, single, lock)
        sock.close()
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    except BaseException as e:
        _fatal(sock, e)


def _join_cgroups(tasks: object) -> None:
    if not tasks:
        return
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SandboxError("the host's go-ahead named its cgroups wrongly")
    from ringfence.platforms.linux.cgroups import join_self

    try:
        join_self(tasks)
    except OSError as e:
        raise SandboxError(f"cannot start the sandbox runner: {e}") from e


def _fatal(sock: socket.socket, e: BaseException) -> NoReturn:
    kind = type(e).__name__ if isinstance(e, RingfenceError) else "SandboxError"
    try:
        protocol.send(sock, {"id": 0, "error": str(e) or repr(e), "kind": kind})
    except OSError:
        pass
    os._exit(125)


def _pid1_main(
    plan: LinuxPlan, sock: socket.socket, single: bool, guard_lock: int | None
) -> NoReturn:
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
        _Server(plan, sock, namespaced=True, single=single, guard_lock=guard_lock).serve(listeners)
    except BaseException as e:
        _fatal(sock, e)


def _session_quotas(limits: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    room = {"max_pid_namespaces", "max_mnt_namespaces"}
    return [(n, MAX_COMMANDS if n in room else v) for n, v in limits]


def _reduced_serve(
    plan: LinuxPlan, sock: socket.socket, tmpdir: str | None, single: bool, lock: int | None
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
        _Server(plan, sock, namespaced=False, single=single, guard_lock=lock).serve()
    finally:
        reaper.kill_descendants()


class _Server:
    """pid 1's loop: requests from the host, and the end of each command's init."""

    def __init__(
        self,
        plan: LinuxPlan,
        sock: socket.socket,
        *,
        namespaced: bool,
        single: bool = False,
        guard_lock: int | None = None,
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
        self.kill_due: dict[int, float] = {}  # init pid -> when it is killed outright
        self.started = 0  # commands given an init so far
        self.guard_sock: socket.socket | None = None  # in a command's init: the guard's reports
        self.guard_pid = 0
        self.cid_page: mmap.mmap | None = None  # in a command's init: shared with its guard
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
        # The name guards take turns on this (each through an open file description of its
        # own, so flock excludes them from one another): a check one guard makes cannot be
        # undone by a change another guard performs meanwhile. The user's lock when there is
        # one (statedirs.open_guard_lock: the guards of all sandboxes), else the session's.
        self.guard_lock = (
            guard_lock
            if guard_lock is not None
            else os.memfd_create("ringfence-guard-lock", os.MFD_CLOEXEC)
        )
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
            dues = [d for d in (self.zygote_due, *self.kill_due.values()) if d is not None]
            if dues:
                wait = max(0.0, min(dues) - time.monotonic())
            try:
                ready, _, _ = select.select([sock_fd, self.wake_r], [], [], wait)
            except InterruptedError:
                continue
            if self.zygote_due is not None and time.monotonic() >= self.zygote_due:
                self._prepare_next()
            for init_pid, due in list(self.kill_due.items()):
                if time.monotonic() >= due:
                    del self.kill_due[init_pid]
                    self._kill_outright(init_pid)
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
                    self._end()
                msg, fds = got
                try:
                    self._handle(msg, fds)
                finally:
                    for fd in fds:
                        os.close(fd)

    def _end(self) -> NoReturn:
        """Every init ended and reaped before this runner exits (which would end them all
        anyway): what they and their commands used is then counted in this process's
        children's times, and so in the host's, as when each init ended with its command."""
        inits = [*self.commands, *self.idle]
        for pid in inits:
            kill_quietly(pid, signal.SIGKILL)
        for pid in inits:  # only these: the --publish socket maker ends with this process
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)

    def _kill_outright(self, init_pid: int) -> None:
        """An init that did not end its command's tree in time (it may be starved: its
        command shares its uid, and may have lowered its priority and pinned it to a busy
        CPU): it and every process of its tree are killed from here, each in its own right,
        so none waits for the init to run (the kernel's end of its pid namespace would)."""
        for _ in range(3):  # again: what forked while the last round killed
            if self.namespaced:
                tree = reaper.in_pid_namespace_of(init_pid)
            else:
                tree = reaper.descendants(init_pid)
            kill_quietly(init_pid, signal.SIGKILL)
            for pid in tree:
                kill_quietly(pid, signal.SIGKILL)
            if not tree:
                break

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
                # The init ends the command's whole tree and still has its guard check what
                # the command made (a timeout must not skip the end-of-command check); if it
                # has not reported by the deadline, it goes, and its pid namespace with it.
                self.kill_due.setdefault(cmd.init_pid, time.monotonic() + KILL_GRACE)
            sig = KILL_TREE if op == "kill" else int(msg.get("sig", signal.SIGTERM))
            if op == "signal" and not 1 <= sig < signal.NSIG:
                return  # never a byte the init reads as KILL_TREE
            if op == "kill" and not self.namespaced:
                self.kill_due.setdefault(cmd.init_pid, time.monotonic() + KILL_GRACE)
            try:
                os.write(cmd.ctl_w, bytes([sig & 0xFF]))
            except OSError:
                pass

    def _start(self, cid: int, msg: dict[str, Any], fds: list[int]) -> None:
        try:
            spec = Spec.from_message(self.plan, msg)
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
        """The host gave command ``cid`` straight to the prepared init ``pid``: one never used,
        or one whose previous command has ended and which said it can serve another (the host
        gives such an init nothing more once it has signalled or killed its command, so no
        signal meant for that command can reach this one)."""
        used = self.commands.get(pid) if isinstance(pid, int) else None
        if used is not None:
            self.by_id.pop(used.id, None)
            used.id = cid
            self.by_id[cid] = used
            return
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

    def _fork_init(self, preset: Preset | None) -> _Init | None:
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
            init_main(self, theirs, ctl_r, preset)
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
            self.kill_due.pop(pid, None)
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


def main(fd: int) -> NoReturn:
    """Entry point when the host spawns the runner (``connection.runner_argv``): the plan
    arrives pickled on stdin from the host that started us (same user, trusted); ``fd`` is the
    session socket's."""
    import pickle

    data = sys.stdin.buffer.read()
    plan, tmpdir = pickle.loads(data)  # from our own parent, over a private pipe
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    session_main(plan, sock, tmpdir)


if __name__ == "__main__":
    main(int(sys.argv[1]))
