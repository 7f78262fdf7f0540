"""The host side of one session runner: start it, send it commands, read its replies on a
thread of its own, and hand each reply to the command it belongs to. See
``platforms/linux/sandbox_side.py`` for the sandbox side."""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ringfence import stdfds
from ringfence.errors import (
    PolicyError,
    SandboxError,
    UnsupportedError,
)
from ringfence.platforms.linux import protocol
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import gitdir

if TYPE_CHECKING:
    from ringfence.audit import AuditLog
    from ringfence.network.dns_stub import DnsStub
    from ringfence.network.proxy import NetEvent
    from ringfence.network.publish import PublishedPorts
    from ringfence.network.service import ProxyService
    from ringfence.platforms.linux.cgroups import RunCgroup


START_TIMEOUT = 30.0
# Inits kept for the next commands: the runner's prepared ones plus those that served a
# command and can serve another (concurrent commands each leave one).
MAX_READY_INITS = 4

RUNNER_MODULE = "ringfence.platforms.linux.sandbox_side"
# The runner's first lines: ringfence alone is taken from the directory this process found
# it in (which may hold any other package, or a module named like an optional one of the
# standard library's); the rest of the runner's imports come from the standard library.
RUNNER_BOOT = (
    "import sys, importlib.machinery as m, importlib.util as u; "
    "s = m.PathFinder.find_spec('ringfence', [sys.argv[1]]); "
    "r = sys.modules['ringfence'] = u.module_from_spec(s); s.loader.exec_module(r); "
    f"from {RUNNER_MODULE} import main; main(int(sys.argv[2]))"
)


def runner_argv(fd: int) -> list[str]:
    """How a session's runner is started: isolated (``-I``).

    It runs as you, outside every boundary, before any of them exists, usually from inside the
    workspace the sandbox may write. ``python -m`` would import a module planted in the working
    directory before ringfence's own (``pickle.py``, a ``ringfence/`` package), and the
    environment's ``PYTHONPATH`` (say ``src`` of the project) may name a directory the command
    can write: either way the sandbox's command would run code as you, unconfined, the next
    time a session starts. ``-I`` takes neither the working directory nor any ``PYTHON*``
    variable, ``-S`` no site-packages (their ``.pth`` files run code), and the base
    interpreter itself reads no virtualenv's ``pyvenv.cfg`` (which names the standard
    library): the runner gets the standard library, and ringfence (kept read-only in the
    sandbox: hostfacts.own_code_paths) from the directory it was imported from, nothing else
    of that directory, and starts in ``/``, as the native launcher starts the name guard."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return [python, "-I", "-S", "-c", RUNNER_BOOT, here, str(fd)]


@dataclass
class Pending:
    """One command as the reader thread sees it."""

    id: int
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    master: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    # Called (from the reader thread) once ``started`` is set, by its start or its end.
    on_started: list[Callable[[], None]] = field(default_factory=list)
    # The prepared init that took the command straight from the host (its pid and socket):
    # given the next command too if it says it can, and nothing signalled this one.
    init: tuple[int, socket.socket] | None = None
    signalled: bool = False
    # Files its guard left for the end-of-command check, told by the guard itself as they
    # came (guard_tell): moved aside if that check did not finish, or was never reported.
    pending_checks: set[str] = field(default_factory=set)
    reports_parts: list[Any] = field(default_factory=list)  # findings ahead of the end report

    def finish(self, report: dict[str, Any]) -> None:
        if self.done.is_set():
            return
        if self.reports_parts:
            report = {**report, "reports": [*self.reports_parts, *(report.get("reports") or [])]}
        self.report = report
        self.done.set()
        self.set_started()
        for cb in self.callbacks:
            cb()

    def set_started(self) -> None:
        self.started.set()
        for cb in self.on_started:
            cb()


class Connection:
    """One runner: its socket, its process, its reader thread and the commands in flight."""

    def __init__(
        self,
        plan: LinuxPlan,
        *,
        fork: bool,
        ask: Callable[[str, int], str] | None = None,
        audit: AuditLog | None = None,
        plan_source: str = "compiled",
    ) -> None:
        stdfds.reserve()  # before this connection opens anything (stdfds.py)
        self.plan = plan
        self.plan_source = plan_source
        self.ask = ask
        self.audit = audit
        self.session_id = os.urandom(6).hex()
        self._audit_failed = False
        self.lock = threading.Lock()
        # Held from handing a command to an init until the runner is told which init took it:
        # an init reused at once by another thread is then claimed in the order it was used.
        self.hand_lock = threading.Lock()
        self.pending: dict[int, Pending] = {}
        self.ready_inits: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.next_id = 1
        self.dead: str | None = None
        self.cgroup: RunCgroup | None = None
        self.tmpdir = _reduced_tmpdir() if plan.isolation == "reduced" else None
        self.ready = threading.Event()
        self.closing = False
        self.proxy: ProxyService | None = None
        self.resolver: DnsStub | None = None  # the sandbox's resolver (network/dns_stub.py)
        self.start_error: dict[str, Any] | None = None
        self.published: PublishedPorts | None = None
        self.state_lock: int | None = None
        self._take_host_resources()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        try:
            self._make_cgroup()
            self.runner_pid, self._proc = self._spawn(theirs, fork=fork)
        except BaseException:
            ours.close()
            self._cleanup()
            raise
        finally:
            theirs.close()
        self.reader = threading.Thread(target=self._read, name="ringfence-session", daemon=True)
        self.reader.start()
        try:
            self._go(single=fork)
        except OSError as e:
            self.close()
            raise SandboxError(f"cannot start the sandbox runner: {e}") from e
        if not self.ready.wait(START_TIMEOUT) or self.start_error is not None:
            err = self.start_error or {"error": "the sandbox runner did not start in time"}
            self.close()
            kind = {"UnsupportedError": UnsupportedError, "PolicyError": PolicyError}.get(
                str(err.get("kind")), SandboxError
            )
            raise kind(str(err.get("error")))

    def _go(self, *, single: bool) -> None:
        """The runner's go-ahead, once it is in the cgroups it does not join itself."""
        tasks: list[str] = []
        if self.cgroup is not None:
            self.cgroup.join(self.runner_pid)
            tasks = self.cgroup.tasks_files()  # v1: the runner joins these (cgroups.join_self)
        protocol.send(self.sock, {"id": 0, "op": "go", "single": single, "tasks": tasks})

    def _take_host_resources(self) -> None:
        """What the host holds before the sandbox exists. Published ports are bound first: a
        taken port is an error, and nothing runs. A shared lock on the workspace's state while
        this runner lives: `ringfence clean` leaves a /tmp layer alone that an overlay of ours
        still has mounted."""
        if self.plan.publish:
            from ringfence.network.publish import PublishedPorts

            self.published = PublishedPorts(self.plan.publish)
        if self.plan.state_dir is not None:
            from ringfence.policy.statedirs import hold

            self.state_lock = hold(self.plan.state_dir)

    def _make_cgroup(self) -> None:
        if not self.plan.cgroup_limits:
            return
        from ringfence.platforms.linux.cgroups import RunCgroup

        try:
            self.cgroup = RunCgroup.create(self.plan.cgroup_sites, dict(self.plan.cgroup_limits))
        except OSError as e:
            raise SandboxError(str(e)) from e

    def _spawn(
        self, theirs: socket.socket, *, fork: bool
    ) -> tuple[int, subprocess.Popen[bytes] | None]:
        if fork:  # the CLI: a small single-threaded process, no second interpreter start
            from ringfence.platforms.linux import prefork

            waiting = prefork.take()  # forked early by a one-shot run (prefork.py)
            if waiting is not None:
                try:
                    return waiting.hand_over(self.plan, theirs, self.tmpdir), None
                except (OSError, ValueError):  # too large a plan for one message, say
                    waiting.reap()  # and fork here, as without it
            pid = os.fork()
            if pid == 0:
                from ringfence.platforms.linux import sandbox_side

                self.sock.close()
                if self.published is not None:
                    self.published.close_in_child()
                sandbox_side.session_main(self.plan, theirs, self.tmpdir)
            return pid, None
        import pickle

        proc = subprocess.Popen(
            runner_argv(theirs.fileno()),
            cwd="/",
            stdin=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,  # the caller's terminal signals are the session's to relay
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(pickle.dumps((self.plan, self.tmpdir)))
            proc.stdin.close()
        except OSError as e:
            proc.kill()
            proc.wait()
            raise SandboxError(f"cannot start the sandbox runner: {e}") from e
        return proc.pid, proc

    def _read(self) -> None:
        why = "the sandbox runner ended unexpectedly"
        try:
            while True:
                try:
                    got = protocol.recv(self.sock)
                except protocol.ProtocolError:
                    continue
                if got is None:
                    break
                msg, fds = got
                self._dispatch(msg, fds)
        except OSError as e:
            why = f"the connection to the sandbox runner failed: {e}"
        if self.closing:
            why = "the session was closed while the command ran"
        self._fail_all(why)

    def _dispatch(self, msg: dict[str, Any], fds: list[int]) -> None:
        cid = msg.get("id")
        if cid == 0 and "resolver" in msg:
            self._start_resolver(fds)
            return
        if cid == 0 and "init" in msg:  # a prepared init the host may hand a command to
            if fds:
                with self.lock:
                    self.ready_inits.append((int(msg["init"]), socket.socket(fileno=fds.pop(0))))
            for fd in fds:
                os.close(fd)
            return
        if cid == 0:
            if "error" in msg:
                self.start_error = msg
            elif fds:
                self._start_network(fds)
                fds = []
            self.ready.set()
            for fd in fds:
                os.close(fd)
            return
        with self.lock:
            p = self.pending.get(cid) if isinstance(cid, int) else None
        if p is None or p.done.is_set():
            for fd in fds:
                os.close(fd)
            return
        if self._progress(p, msg, fds):
            return
        for fd in fds:
            os.close(fd)
        with self.lock:
            self.pending.pop(p.id, None)
            self._keep_init(p, msg)
        p.finish(msg)

    def _progress(self, p: Pending, msg: dict[str, Any], fds: list[int]) -> bool:
        """A message about a command still running (True), not its end report."""
        if "started" in msg:
            p.pid = int(msg["started"])
            p.master = fds[0] if fds else None
            p.set_started()
            return True
        if "reports_part" in msg:  # findings too many for the end report's one message
            for fd in fds:
                os.close(fd)
            if isinstance(msg["reports_part"], list):
                p.reports_parts.extend(msg["reports_part"])
            return True
        if "pending" in msg or "untold" in msg:  # from the guard itself (guard_tell.py)
            for fd in fds:
                os.close(fd)
            with self.lock:
                if "pending" in msg:  # a file waiting for the guard's end check
                    p.pending_checks.add(str(msg["pending"]))
                else:  # the call it was for failed: nothing of it is there
                    p.pending_checks.discard(str(msg["untold"]))
            return True
        return False

    def _keep_init(self, p: Pending, report: dict[str, Any]) -> None:
        """``p``'s command has ended (the lock held): its init takes the next command first
        (it is warm), if it said it can and the host never signalled or killed the command
        (a signal the runner passes on late would reach the next command). Otherwise the
        init is let go: it exits when its socket closes."""
        if p.init is None:
            return
        init, p.init = p.init, None
        if (
            report.get("reusable") is True
            and not p.signalled
            and not self.closing
            and self.dead is None
            and len(self.ready_inits) < MAX_READY_INITS
        ):
            self.ready_inits.appendleft(init)
        else:
            init[1].close()

    def audit_command(self, **fields: Any) -> None:
        """One command's record (``audit.command_record``'s fields, session and policy added)."""
        if self.audit is None:
            return
        from ringfence import audit

        record = audit.command_record(
            session=self.session_id,
            policy_digest=self.policy_digest,
            plan=self.plan_source,
            **fields,
        )
        self._audit_write(record)

    def audit_network(self, event: NetEvent) -> None:
        if self.audit is not None:
            from ringfence import audit

            self._audit_write(audit.network_record(self.session_id, event))

    def _audit_write(self, record: dict[str, Any]) -> None:
        assert self.audit is not None
        try:
            self.audit.write(record)
        except OSError as e:
            if not self._audit_failed:  # say it once; the command's result is not lost
                self._audit_failed = True
                print(
                    f"ringfence: cannot write the audit log {self.audit.path}: {e}", file=sys.stderr
                )

    @functools.cached_property
    def policy_digest(self) -> str:
        """Of the plan, once per session (it does not change)."""
        return plan_digest(self.plan)

    def _start_network(self, fds: list[int]) -> None:
        """Serve the sockets the runner made in the sandbox's network namespace: the proxy's
        (with an allowlist) first, then one per exposed host port."""
        from ringfence.network.service import ProxyService
        from ringfence.policy.netrules import NetRules

        socks = [socket.socket(fileno=fd) for fd in fds]
        if self.published is not None and socks:  # the sandbox's socket maker comes last
            self.published.start(socks.pop())
        if not socks:
            return
        listener = socks.pop(0) if self.plan.proxy_port else None
        rules = NetRules.parse(self.plan.allow_domains, self.plan.deny_domains)
        self.proxy = ProxyService(
            listener,
            rules,
            allow_local=self.plan.allow_local_targets,
            forwards=list(zip(socks, self.plan.expose_ports, strict=True)),
            ask=self.ask,
            on_event=self.audit_network,
        )

    def _start_resolver(self, fds: list[int]) -> None:
        """Answer the lookups made in the sandbox's network namespace (its port 53 sockets)."""
        from ringfence.network.dns_stub import DnsStub

        socks = [socket.socket(fileno=fd) for fd in fds]
        if self.resolver is not None:  # only ever one: a second set is not ours to serve
            for s in socks:
                s.close()
            return
        from ringfence.network import offline

        plan = self.plan
        # Only names a report would list take a place in the log: a flood of others (local
        # names) cannot push a command's refused lookups out of it.
        keep = offline.reportable(plan.network, plan.allow_domains, plan.deny_domains)
        self.resolver = DnsStub(socks, keep=keep)

    def tried_offline(self, mark: int, reports: list[dict[str, str]]) -> list[dict[str, Any]]:
        """What a command tried to reach that its sandbox's network could not: the names
        looked up since ``mark`` (the resolver's) and the addresses its guard ``reports``
        found unreachable, as violation records (network/offline.py)."""
        names, lost = self.resolver.names.since(mark) if self.resolver else ([], False)
        return tried_offline(self.plan, reports, names, lost)

    def _fail_all(self, why: str) -> None:
        status = ""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=5)
                status = f" (exit status {code})"
        with self.lock:
            self.dead = why + status
            pending = list(self.pending.values())
            self.pending.clear()
            for p in pending:
                if p.init is not None:
                    p.init[1].close()
                    p.init = None
        for p in pending:
            p.finish({"error": self.dead, "kind": "SandboxError", "runner_died": True})
        self.ready.set()

    def submit(self, msg: dict[str, Any], fds: Sequence[int]) -> Pending:
        with self.lock:
            if self.dead is not None:
                raise SandboxError(self.dead)
            cid = self.next_id
            self.next_id += 1
            p = Pending(cid)
            self.pending[cid] = p
        try:
            if not self._hand_to_init(p, msg, fds):
                protocol.send(self.sock, {**msg, "id": cid}, fds)
        except (OSError, protocol.ProtocolError) as e:
            with self.lock:
                self.pending.pop(cid, None)
            if isinstance(e, protocol.ProtocolError):
                raise PolicyError(f"command too large to send: {e}") from e
            raise SandboxError(f"the sandbox runner is gone: {e}") from e
        return p

    def _hand_to_init(self, p: Pending, msg: dict[str, Any], fds: Sequence[int]) -> bool:
        """Give the command straight to a prepared init (one message hop fewer), then tell the
        runner which init took it. Not for the caller's terminal: that needs a fresh init with
        a Landlock rule of its own, which only the runner makes. The init's socket is kept
        with the command (before the send: the report may come back at once)."""
        if any(os.isatty(fd) for fd in fds):
            return False
        with self.hand_lock:
            with self.lock:
                if not self.ready_inits:
                    return False
                p.init = self.ready_inits.popleft()
                pid, init = p.init
            try:
                protocol.send(init, {**msg, "id": p.id}, fds)
            except OSError:
                with self.lock:  # it died unused: the runner takes the command instead
                    p.init = None
                init.close()
                return False
            protocol.send(self.sock, {"op": "claimed", "id": p.id, "init": pid})
        return True

    def control(self, cid: int, op: str, sig: int = 0) -> None:
        """Signal or kill a command that has not ended (one that has is left alone: its init
        may already serve another). The lock orders the mark against the report's arrival:
        either the report comes after it (its init then serves no other command, so the
        signal cannot reach a later one), or the command has ended and nothing is sent."""
        with self.lock:
            p = self.pending.get(cid)
            if p is None or p.done.is_set():
                return
            p.signalled = True
        with contextlib.suppress(OSError):  # not under the lock: the reader needs it to go on
            protocol.send(self.sock, {"op": op, "id": cid, "sig": sig})

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.runner_pid, 0)
        if self.reader.is_alive() and self.reader is not threading.current_thread():
            self.reader.join(timeout=10)
        self.sock.close()
        self._cleanup()

    def _cleanup(self) -> None:
        with self.lock:
            while self.ready_inits:
                self.ready_inits.popleft()[1].close()
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.resolver is not None:
            self.resolver.close()
            self.resolver = None
        if self.published is not None:
            self.published.close()
            self.published = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self.tmpdir is not None:
            import shutil

            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        if self.state_lock is not None:
            os.close(self.state_lock)
            self.state_lock = None

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup is not None else 0


def _reduced_tmpdir() -> str:
    """Reduced isolation's private TMPDIR (imported here: tempfile costs a one-shot run)."""
    import tempfile

    return tempfile.mkdtemp(prefix="ringfence-tmp-")


def move_aside(plan: LinuxPlan, paths: list[str]) -> list[dict[str, Any]]:
    """Files whose content the guard was to check at the end of the command (pointers, todo
    lists, .gitmodules), when it could not: moved aside unread, never trusted. Only paths in
    the plan's roots, reached without following a symlink."""
    from ringfence.platforms.linux.gitguard.fileio import quarantine

    roots = (*plan.guard_roots, *plan.guard_git_roots)
    out: list[dict[str, Any]] = []
    for named in paths:
        if not isinstance(named, str):
            continue
        path, within = _on_host(plan, named, roots)
        if path is None or not gitdir.inside(path, within) or path in within:
            continue
        try:
            mode = os.lstat(path).st_mode
        except (OSError, ValueError):
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            continue  # every file the check waits for is one of these (a directory there is
            # not the command's: a nested repository's .git moved in after its file went)
        moved = quarantine(path)
        detail = "not checked (the name guard did not finish)"
        out.append(
            {
                "kind": "refused_pointer",
                "path": path,
                "detail": f"{detail}; moved to {moved}" if moved else f"{detail}; NOT moved",
            }
        )
    return out


def _on_host(
    plan: LinuxPlan, path: str, roots: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """Where the host finds a file the sandbox names ``path``, and the roots it must lie in:
    the same path and the plan's roots, but for the sandbox's /tmp, the /tmp layer's upper
    directory in ringfence's cache (the only place such a file can have been written)."""
    if not gitdir.inside(path, plan.guard_git_private_roots):
        return path, roots
    for op in plan.mounts:
        if op.kind.value != "overlay" or op.source is None or not gitdir.inside(path, (op.target,)):
            continue
        upper = os.path.join(op.source, "upper")
        return upper + path[len(op.target) :], (upper,)
    return None, ()


def start_error(report: dict[str, Any], argv: list[str]) -> Exception:
    if "exec_error" in report:
        code = int(report["exec_error"])
        exc_type = FileNotFoundError if code == 2 else PermissionError if code == 13 else OSError
        return exc_type(code, os.strerror(code), argv[0])
    kind = {"UnsupportedError": UnsupportedError, "PolicyError": PolicyError}.get(
        str(report.get("kind")), SandboxError
    )
    return kind(str(report.get("error", "the command could not start in the sandbox")))


def plan_digest(plan: LinuxPlan) -> str:
    """The audit log's ``policy`` of a plan: its digest, with the environment's names only
    (values never reach the log) and without the working directory."""
    from ringfence import audit

    data = plan.to_dict()
    data["env"] = sorted(data["env"])
    data.pop("cwd", None)
    return audit.digest(data)


def tried_offline(
    plan: LinuxPlan, reports: list[dict[str, str]], names: list[str], lost: bool
) -> list[dict[str, Any]]:
    """What a command tried to reach that its sandbox's network could not: the ``names`` its
    resolver was asked (``lost``: more than were kept) and the addresses its guard
    ``reports`` found unreachable, as violation records (network/offline.py)."""
    if not names and not any(r.get("kind") == "unreachable" for r in reports):
        return []  # the common case: nothing tried
    from ringfence.network import offline

    out = offline.connect_records(reports)
    out += offline.name_records(names, plan.network, plan.allow_domains, plan.deny_domains)
    if lost and out and out[-1].get("kind") != "more":
        out.append({"kind": "more"})
    return out


def end_findings(
    plan: LinuxPlan,
    reports: list[dict[str, Any]],
    unchecked: list[str],
    others: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """What a command's end report means for the person (a session's command, a native
    run): what it made (the guard's git findings, and the files left ``unchecked``, moved
    aside here: fail closed), what was refused (the guard's, and ``others``: the proxy's
    denials, what was tried offline) and the widenings that would have allowed it."""
    created = [r for r in reports if r.get("kind") in gitdir.REPORT_KINDS]
    if unchecked:  # the guard could not finish: fail closed from here
        created += move_aside(plan, unchecked)
    violations = [r for r in reports if r.get("kind") in ("filesystem", "more")] + others
    widened: list[dict[str, Any]] = []
    if violations:  # off the common path: most commands are refused nothing
        from ringfence.escalation import reported, widenings

        violations = reported(plan, violations)
        widened = widenings(plan, violations)
    return created, violations, widened
