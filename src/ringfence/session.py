"""Warm sessions: build the boundary once, then run many commands in it, like ``subprocess``.

The host side never forks a command: it sends argv/env/cwd to the runner over a unix socket
and hands over the caller's stdio descriptors (SCM_RIGHTS), so output goes straight from the
command to wherever the caller pointed it. A reader thread takes the runner's replies; the
caller's thread waits on its own command. See ``platforms/linux/session_runner.py`` for the
sandbox side.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ringfence.errors import (
    ApprovalRefused,
    PolicyError,
    SandboxError,
    UnsupportedError,
    UsageError,
)
from ringfence.platforms.linux import protocol
from ringfence.platforms.linux.plan import LinuxPlan
from ringfence.policy import gitdir
from ringfence.policy.model import Policy

if TYPE_CHECKING:
    from ringfence.audit import AuditLog
    from ringfence.network.proxy import NetEvent
    from ringfence.network.service import ProxyService
    from ringfence.platforms.linux.cgroups import RunCgroup

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
DEFAULT_OUTPUT_LIMIT = 4 << 20  # captured bytes kept per stream; the rest is drained
_START_TIMEOUT = 30.0
_RUNNER_MODULE = "ringfence.platforms.linux.session_runner"


class TimeoutExpired(subprocess.TimeoutExpired):
    """A command ran past its timeout; its whole process tree was killed (not the session)."""


class CalledProcessError(subprocess.CalledProcessError):
    """``check=True`` and the command failed."""


@dataclass
class CompletedProcess(subprocess.CompletedProcess[Any]):
    """``subprocess.CompletedProcess`` plus what ringfence knows about the run."""

    args: Any
    returncode: int
    stdout: Any = None
    stderr: Any = None
    duration: float = 0.0
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    memory_limit_hit: bool = False
    # network = allowlist: the proxy's decisions while the command ran (with commands running
    # at once in one session, theirs may be among them)
    network_events: list[NetEvent] = field(default_factory=list)
    # What the boundary refused: {"kind": "filesystem", "op", "path", "rule"} from the name
    # guard, {"kind": "network", "host", "port", "rule"} from the proxy; {"kind": "more"} when
    # the guard stopped counting (refused writes of shells to their history files are left
    # out: see escalation.quiet). And what the command made that a person should know of:
    # ``created``: the git section of the report, never crowded out by refusals:
    # {"kind": "new_repository" | "refused_repository" | "refused_config" |
    # "refused_pointer", "path", "detail"?} and {"kind": "more_git"}.
    violations: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    # The smallest widenings of the policy that would have allowed what was refused.
    widenings: list[dict[str, Any]] = field(default_factory=list)

    def check_returncode(self) -> None:
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


@dataclass
class _Pending:
    """One command as the reader thread sees it."""

    id: int
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    master: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def finish(self, report: dict[str, Any]) -> None:
        if self.done.is_set():
            return
        self.report = report
        self.started.set()
        self.done.set()
        for cb in self.callbacks:
            cb()


class _Connection:
    """One runner: its socket, its process, its reader thread and the commands in flight."""

    def __init__(
        self,
        plan: LinuxPlan,
        *,
        fork: bool,
        ask: Callable[[str, int], str] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.plan = plan
        self.ask = ask
        self.audit = audit
        self.session_id = os.urandom(6).hex()
        self._audit_failed = False
        self.lock = threading.Lock()
        self.pending: dict[int, _Pending] = {}
        self.ready_inits: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.next_id = 1
        self.dead: str | None = None
        self.cgroup: RunCgroup | None = None
        self.tmpdir = (
            tempfile.mkdtemp(prefix="ringfence-tmp-") if plan.isolation == "reduced" else None
        )
        self.ready = threading.Event()
        self.closing = False
        self.proxy: ProxyService | None = None
        self.start_error: dict[str, Any] | None = None
        # A shared lock on the workspace's state while this runner lives: `ringfence clean`
        # leaves a /tmp layer alone that an overlay of ours still has mounted.
        self.state_lock: int | None = None
        if plan.state_dir is not None:
            from ringfence.policy.statedirs import hold

            self.state_lock = hold(plan.state_dir)
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
            if self.cgroup is not None:
                self.cgroup.join(self.runner_pid)
            protocol.send(self.sock, {"id": 0, "op": "go"})
        except OSError as e:
            self.close()
            raise SandboxError(f"cannot start the sandbox runner: {e}") from e
        if not self.ready.wait(_START_TIMEOUT) or self.start_error is not None:
            err = self.start_error or {"error": "the sandbox runner did not start in time"}
            self.close()
            kind = {"UnsupportedError": UnsupportedError, "PolicyError": PolicyError}.get(
                str(err.get("kind")), SandboxError
            )
            raise kind(str(err.get("error")))

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
            pid = os.fork()
            if pid == 0:
                from ringfence.platforms.linux import session_runner

                self.sock.close()
                session_runner.session_main(self.plan, theirs, self.tmpdir)
            return pid, None
        import pickle

        # The runner imports ringfence from wherever this process found it.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", _RUNNER_MODULE, str(theirs.fileno())],
            env=env,
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
        if "started" in msg:
            p.pid = int(msg["started"])
            p.master = fds[0] if fds else None
            p.started.set()
            return
        for fd in fds:
            os.close(fd)
        with self.lock:
            self.pending.pop(p.id, None)
        p.finish(msg)

    def audit_command(self, **fields: Any) -> None:
        """One command's record (``audit.command_record``'s fields, session and policy added)."""
        if self.audit is None:
            return
        from ringfence import audit

        record = audit.command_record(
            session=self.session_id, policy_digest=self.policy_digest, **fields
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
        from ringfence import audit

        data = self.plan.to_dict()
        data["env"] = sorted(data["env"])  # names only: values never reach the log
        data.pop("cwd", None)
        return audit.digest(data)

    def _start_network(self, fds: list[int]) -> None:
        """Serve the sockets the runner made in the sandbox's network namespace: the proxy's
        (with an allowlist) first, then one per exposed host port."""
        from ringfence.network.service import ProxyService
        from ringfence.policy.netrules import NetRules

        socks = [socket.socket(fileno=fd) for fd in fds]
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
            p.finish({"error": self.dead, "kind": "SandboxError", "runner_died": True})
        self.ready.set()

    def submit(self, msg: dict[str, Any], fds: Sequence[int]) -> _Pending:
        with self.lock:
            if self.dead is not None:
                raise SandboxError(self.dead)
            cid = self.next_id
            self.next_id += 1
            p = _Pending(cid)
            self.pending[cid] = p
        try:
            if not self._hand_to_init(cid, msg, fds):
                protocol.send(self.sock, {**msg, "id": cid}, fds)
        except (OSError, protocol.ProtocolError) as e:
            with self.lock:
                self.pending.pop(cid, None)
            if isinstance(e, protocol.ProtocolError):
                raise PolicyError(f"command too large to send: {e}") from e
            raise SandboxError(f"the sandbox runner is gone: {e}") from e
        return p

    def _hand_to_init(self, cid: int, msg: dict[str, Any], fds: Sequence[int]) -> bool:
        """Give the command straight to a prepared init (one message hop fewer), then tell the
        runner which init took it. Not for the caller's terminal: that needs a fresh init with
        a Landlock rule of its own, which only the runner makes."""
        if any(os.isatty(fd) for fd in fds):
            return False
        with self.lock:
            if not self.ready_inits:
                return False
            pid, init = self.ready_inits.popleft()
        try:
            with init:
                protocol.send(init, {**msg, "id": cid}, fds)
        except OSError:
            return False  # it died unused: the runner takes the command instead
        protocol.send(self.sock, {"op": "claimed", "id": cid, "init": pid})
        return True

    def control(self, cid: int, op: str, sig: int = 0) -> None:
        with contextlib.suppress(OSError):
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
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        if self.state_lock is not None:
            os.close(self.state_lock)
            self.state_lock = None

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup is not None else 0


_StdSpec = int | IO[Any] | None


class Process:
    """A running sandboxed command, like ``subprocess.Popen`` (made by ``Session.spawn``).

    ``pid`` is the command's process id as the command itself sees it (it has its own pid
    namespace). ``kill()`` ends its whole process tree; ``send_signal`` reaches its process
    group. With ``pty=True``, ``stdin`` and ``stdout`` are the terminal's master side and
    ``set_winsize`` resizes it.
    """

    def __init__(
        self,
        conn: _Connection,
        pending: _Pending,
        args: Any,
        stdio: Sequence[IO[bytes] | None],
        started_at: float,
    ) -> None:
        stdin, stdout, stderr = stdio
        self._conn = conn
        self._pending = pending
        self.args = args
        self.argv: list[str] = []
        self.cwd: str | None = None
        self.stdin: IO[Any] | None = stdin
        self.stdout: IO[Any] | None = stdout
        self.stderr: IO[Any] | None = stderr
        self.returncode: int | None = None
        self.started_at = started_at
        self.duration: float | None = None
        self.timed_out = False
        self.pty_fd: int | None = pending.master
        self._oom_before = conn.oom_kills() if conn.cgroup is not None else 0
        self.memory_limit_hit = False
        self.network_events: list[NetEvent] = []
        self._net_from = len(conn.proxy.events) if conn.proxy is not None else 0
        self._text: tuple[str, str] | None = None
        self.approval: dict[str, Any] | None = None
        self.violations: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.widenings: list[dict[str, Any]] = []
        if pending.master is not None:
            tty = open(pending.master, "r+b", buffering=0)  # noqa: SIM115 - owned by the handle
            self.stdin = self.stdout = tty

    @property
    def pid(self) -> int:
        return self._pending.pid or 0

    @property
    def id(self) -> int:
        """The command's id within its session."""
        return self._pending.id

    def poll(self) -> int | None:
        if self.returncode is None and self._pending.done.is_set():
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._pending.done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        self._finish()
        assert self.returncode is not None
        return self.returncode

    def _finish(self) -> None:
        if self.returncode is not None:
            return
        report = self._pending.report
        self.duration = time.monotonic() - self.started_at
        if self._conn.cgroup is not None:
            self.memory_limit_hit = self._conn.oom_kills() > self._oom_before
        if self._conn.proxy is not None:
            self.network_events = self._conn.proxy.events_since(self._net_from)
        error = None
        reports = report.get("reports") or []
        self.created = [r for r in reports if r.get("kind") in gitdir.REPORT_KINDS]
        if report.get("unchecked"):  # the guard could not finish: fail closed from here
            self.created += _move_aside(self._conn.plan, report["unchecked"])
        self.violations = [r for r in reports if r.get("kind") in ("filesystem", "more")]
        self.violations += [
            {"kind": "network", "host": e.host, "port": e.port, "rule": e.rule}
            for e in self.network_events
            if not e.allowed
        ]
        if self.violations:  # off the common path: most commands are refused nothing
            from ringfence.escalation import reported, widenings

            self.violations = reported(self._conn.plan, self.violations)
            self.widenings = widenings(self._conn.plan, self.violations)
        if "exit" in report:
            self.returncode = int(report["exit"])
        elif "signal" in report:
            self.returncode = -int(report["signal"])
        else:
            self.returncode = -signal.SIGKILL
            error = str(report.get("error", "the command failed in the sandbox"))
        self._conn.audit_command(
            argv=self.argv,
            cwd=self.cwd,
            returncode=self.returncode,
            duration=self.duration,
            timed_out=self.timed_out,
            network=self.network_events,
            error=error,
            approval=self.approval,
            filesystem=[v for v in self.violations if v.get("kind") == "filesystem"],
            created=self.created,
        )
        if error is not None:
            raise SandboxError(error)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and not self._pending.done.is_set():
            self._conn.control(self._pending.id, "signal", int(sig))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """End the command's whole process tree at once."""
        if self.returncode is None and not self._pending.done.is_set():
            self._conn.control(self._pending.id, "kill")

    def set_winsize(self, rows: int, cols: int) -> None:
        """Resize the command's terminal (``pty=True``); it gets SIGWINCH."""
        if self.pty_fd is None:
            raise UsageError("set_winsize needs a command started with pty=True")
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.pty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def communicate(
        self, input: bytes | str | None = None, timeout: float | None = None
    ) -> tuple[Any, Any]:
        if isinstance(input, str):
            input = input.encode(self._text[0] if self._text else "utf-8")
        out, err, _, _ = _communicate(self, input, timeout, None)
        if self._text is None:
            return out, err
        return _decode(out, True, *self._text), _decode(err, True, *self._text)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in {self.stdin, self.stdout, self.stderr} - {None}:
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        if self.returncode is None:
            self.wait()


class Session:
    """A sandbox built once, for many commands: ``with Session(policy) as s: s.run([...])``.

    ``close()`` is idempotent and ends every command still running. If the runner dies, the
    commands in flight fail with :class:`SandboxError` and the next call starts a new runner.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        cwd: str | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        on_network_request: Callable[[str, int], str] | None = None,
        audit: bool | str = True,
        plan: LinuxPlan | None = None,
        approval: str | None = None,
        rules: Any = None,
        approver: Callable[[Any], bool | None] | None = None,
        _fork: bool = False,
    ) -> None:
        from ringfence.policy import config

        ceiling = config.load_ceiling()  # the managed file binds the API too
        self.approval = None
        if ceiling is not None:
            approval = ceiling.approval(approval)
        if approval is not None:
            from ringfence.approval import decide
            from ringfence.approval import rules as rules_mod

            self.approval = decide.check_policy(approval)
            if rules is None or isinstance(rules, (str, os.PathLike)):
                rules = rules_mod.load(rules)
        self.rules = rules
        self.approver = approver
        if plan is None:
            from ringfence.platforms.linux import hostfacts, landlock
            from ringfence.platforms.linux.plan import compile_linux

            policy = _with_default_workspace(policy if policy is not None else Policy())
            if ceiling is not None:
                policy = ceiling.check(policy, audit=bool(audit))
            abi = landlock.abi_version() if policy.sandboxed else 0
            facts = hostfacts.gather(policy, env=os.environ, landlock_abi=abi)
            plan = compile_linux(policy, facts, cwd=cwd or policy.workspace)
        if not plan.sandboxed:
            raise UnsupportedError(
                "a Session runs commands inside a sandbox; full-access mode has none (use "
                "subprocess directly, or ringfence run --mode full-access)"
            )
        self.plan = plan
        self.output_limit = output_limit
        self.on_network_request = on_network_request
        self.audit: AuditLog | None = None
        if audit:
            from ringfence.audit import AuditLog

            self.audit = AuditLog(audit if isinstance(audit, str) else None)
        self._fork = _fork
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._closed = False

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> Session:
        self._connection()
        return self

    def _connection(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise SandboxError("this session is closed")
            if self._conn is not None and self._conn.dead is not None:
                old, self._conn = self._conn, None
                old.close()
            if self._conn is None:
                self._conn = _Connection(
                    self.plan, fork=self._fork, ask=self.on_network_request, audit=self.audit
                )
            return self._conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------
    def spawn(
        self,
        args: str | Sequence[str],
        *,
        stdin: _StdSpec = None,
        stdout: _StdSpec = None,
        stderr: _StdSpec = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        pty: bool | tuple[int, int] = False,
    ) -> Process:
        """Start a command, like ``subprocess.Popen``: stdio may be None (inherit the
        caller's), PIPE, DEVNULL, STDOUT (stderr only), a file object or an fd."""
        argv = _argv(args, shell)
        conn = self._connection()
        approval = self._approve(conn, argv, cwd)
        msg: dict[str, Any] = {
            "op": "run",
            "argv": argv,
            "env": self._env(env),
            "cwd": os.fspath(cwd) if cwd is not None else None,
            "pty": None,
        }
        to_close: list[int] = []
        ours: list[IO[bytes] | None] = [None, None, None]
        fds: list[int] = []
        if pty:
            size = pty if isinstance(pty, tuple) else _terminal_size()
            msg["pty"] = [size[0], size[1]]
        else:
            fds, ours, to_close = _stdio(stdin, stdout, stderr)
        started_at = time.monotonic()
        try:
            pending = conn.submit(msg, fds)
        except BaseException:
            for f in ours:
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        pending.started.wait()
        report = pending.report
        if pending.done.is_set() and "started" not in report and pending.pid is None:
            for f in ours:
                if f is not None:
                    f.close()
            err = _start_error(report, argv)
            conn.audit_command(
                argv=argv,
                cwd=msg["cwd"] or self.plan.cwd,
                returncode=None,
                duration=time.monotonic() - started_at,
                error=str(err),
            )
            raise err
        proc = Process(conn, pending, args, ours, started_at)
        proc.argv, proc.cwd = argv, msg["cwd"] or self.plan.cwd
        proc.approval = approval
        if text or encoding or errors:
            _wrap_text(proc, encoding or "utf-8", errors or "replace")
        return proc

    def run(
        self,
        args: str | Sequence[str],
        *,
        stdin: _StdSpec = None,
        input: bytes | str | None = None,
        stdout: _StdSpec = None,
        stderr: _StdSpec = None,
        capture_output: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = False,
        shell: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        output_limit: int | None = None,
    ) -> CompletedProcess:
        """Run a command to completion, like ``subprocess.run``.

        Captured output keeps ``output_limit`` bytes per stream (the session's default is a
        few MiB) and drains the rest so the command never blocks; the result says so. On a
        timeout the command's whole tree is killed and :class:`TimeoutExpired` is raised.
        """
        stdin, stdout, stderr = _run_stdio(input, stdin, stdout, stderr, capture_output)
        proc = self.spawn(
            args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, shell=shell
        )
        limit = self.output_limit if output_limit is None else output_limit
        drain = _Drain(proc, input, limit)
        try:
            drain.run(timeout)
        except subprocess.TimeoutExpired as e:
            proc.timed_out = True
            proc.kill()  # the command's whole tree, not the session
            drain.abandon_input()
            drain.run(None)
            out, err, _, _ = drain.result()
            raise TimeoutExpired(
                proc.args,
                timeout or 0.0,
                _decode(out, text, encoding, errors),
                _decode(err, text, encoding, errors),
            ) from e
        except BaseException:
            proc.kill()
            with contextlib.suppress(BaseException):
                proc.wait(5)
            drain.sel.close()
            raise
        out, err, trunc_out, trunc_err = drain.result()
        return _completed(proc, (out, err), (trunc_out, trunc_err), (text, encoding, errors), check)

    async def arun(self, args: str | Sequence[str], **kwargs: Any) -> CompletedProcess:
        """``run`` for asyncio (see ``ringfence.aio``)."""
        from ringfence import aio

        return await aio.run(self, args, **kwargs)

    async def aspawn(self, args: str | Sequence[str], **kwargs: Any) -> Any:
        """``spawn`` for asyncio, with ``asyncio.subprocess``-style streams."""
        from ringfence import aio

        return await aio.spawn(self, args, **kwargs)

    def _approve(
        self, conn: _Connection, argv: list[str], cwd: str | os.PathLike[str] | None
    ) -> dict[str, Any] | None:
        """Apply the approval policy: None when none is set, else the record of who allowed
        it. A refusal is audited and raised as :class:`ApprovalRefused`; nothing runs."""
        if self.approval is None:
            return None
        from ringfence.approval.decide import ASK, RUN, decide

        d = decide(argv, self.approval, self.rules)
        by = "policy" if d.rule is None else "rule"
        ok = d.action == RUN
        if d.action == ASK:
            import dataclasses

            answer = self.approver(d) if self.approver is not None else None
            ok = bool(answer)
            if answer is None:  # no approver, or it could not ask anyone
                by = "nobody (no one to ask)"
                d = dataclasses.replace(d, reason=f"{d.reason}; there is no one to ask")
            else:
                by = "approver"
                if not ok:
                    d = dataclasses.replace(d, reason=f"declined when asked: {d.reason}")
        record = {"policy": self.approval, "action": d.action, "by": by, "rule": d.rule,
                  "granted": ok}  # fmt: skip
        if not ok:
            conn.audit_command(
                argv=argv,
                cwd=os.fspath(cwd) if cwd is not None else self.plan.cwd,
                returncode=None,
                duration=0.0,
                error=f"refused: {d.reason}",
                approval=record,
            )
            raise ApprovalRefused(d)
        return record

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        marks = {k: v for k, v in self.plan.env.items() if k.startswith("RINGFENCE_")}
        out = {str(k): str(v) for k, v in env.items()}
        out.update(marks)
        out.setdefault("TMPDIR", self.plan.env.get("TMPDIR", "/tmp"))
        return out


def _run_stdio(
    input: bytes | str | None,
    stdin: _StdSpec,
    stdout: _StdSpec,
    stderr: _StdSpec,
    capture_output: bool,
) -> tuple[_StdSpec, _StdSpec, _StdSpec]:
    """``run``'s stdio, as ``subprocess.run`` derives it from ``input`` and ``capture_output``."""
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = PIPE
    return stdin, stdout, stderr


def _completed(
    proc: Process,
    output: tuple[bytes | None, bytes | None],
    truncated: tuple[bool, bool],
    decoding: tuple[bool, str | None, str | None],
    check: bool,
) -> CompletedProcess:
    """The result of a finished ``run``/``arun``; raises CalledProcessError with ``check``."""
    result = CompletedProcess(
        proc.args,
        proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        _decode(output[0], *decoding),
        _decode(output[1], *decoding),
        duration=proc.duration or 0.0,
        stdout_truncated=truncated[0],
        stderr_truncated=truncated[1],
        memory_limit_hit=proc.memory_limit_hit,
        network_events=proc.network_events,
        violations=proc.violations,
        created=proc.created,
        widenings=proc.widenings,
    )
    if check:
        result.check_returncode()
    return result


def _move_aside(plan: LinuxPlan, paths: list[str]) -> list[dict[str, Any]]:
    """Files whose content the guard was to check at the end of the command (pointers, todo
    lists, .gitmodules), when it could not: moved aside unread, never trusted. Only paths in
    the plan's roots, reached without following a symlink."""
    from ringfence.platforms.linux.gitguard.fileio import quarantine

    roots = (*plan.guard_roots, *plan.guard_git_roots)
    out: list[dict[str, Any]] = []
    for path in paths:
        if not isinstance(path, str) or not gitdir.inside(path, roots) or path in roots:
            continue
        if not os.path.lexists(path):
            continue
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


def _with_default_workspace(policy: Policy) -> Policy:
    if policy.workspace:
        return policy
    from dataclasses import replace

    from ringfence.policy.paths import default_workspace

    return replace(policy, workspace=default_workspace(os.getcwd(), os.environ.get("HOME")))


def _argv(args: str | Sequence[str], shell: bool) -> list[str]:
    if shell:
        if not isinstance(args, str):
            args = " ".join(args)
        return ["/bin/sh", "-c", args]
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    argv = [os.fsdecode(a) for a in args]
    if not argv:
        raise ValueError("args is empty: give the command to run")
    return argv


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1)
        return size.lines, size.columns
    except (OSError, ValueError):
        return 24, 80


def _stdio(
    stdin: _StdSpec, stdout: _StdSpec, stderr: _StdSpec
) -> tuple[list[int], list[IO[bytes] | None], list[int]]:
    """The three fds to hand over, the caller's ends of new pipes, and fds to close after."""
    fds: list[int] = []
    ours: list[IO[bytes] | None] = [None, None, None]
    to_close: list[int] = []
    devnull = -1
    try:
        for i, spec in enumerate((stdin, stdout, stderr)):
            if spec is None:
                fds.append(i)
            elif spec == PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                if i == 0:
                    fds.append(r)
                    to_close.append(r)
                    ours[0] = open(w, "wb", buffering=0)  # noqa: SIM115
                else:
                    fds.append(w)
                    to_close.append(w)
                    ours[i] = open(r, "rb", buffering=0)  # noqa: SIM115
            elif spec == DEVNULL:
                if devnull < 0:
                    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                    to_close.append(devnull)
                fds.append(devnull)
            elif spec == STDOUT:
                if i != 2:
                    raise ValueError("STDOUT is only for stderr")
                fds.append(fds[1])
            elif isinstance(spec, int):
                fds.append(spec)
            else:
                fds.append(spec.fileno())
    except BaseException:
        for fd in to_close:
            os.close(fd)
        for f in ours:
            if f is not None:
                f.close()
        raise
    return fds, ours, to_close


def _start_error(report: dict[str, Any], argv: list[str]) -> Exception:
    if "exec_error" in report:
        code = int(report["exec_error"])
        exc_type = FileNotFoundError if code == 2 else PermissionError if code == 13 else OSError
        return exc_type(code, os.strerror(code), argv[0])
    kind = {"UnsupportedError": UnsupportedError, "PolicyError": PolicyError}.get(
        str(report.get("kind")), SandboxError
    )
    return kind(str(report.get("error", "the command could not start in the sandbox")))


def _wrap_text(proc: Process, encoding: str, errors: str) -> None:
    if proc.pty_fd is not None:
        return
    proc._text = (encoding, errors)
    if proc.stdin is not None:
        proc.stdin = io.TextIOWrapper(
            proc.stdin,
            encoding=encoding,
            errors=errors,
            write_through=True,
        )
    if proc.stdout is not None:
        proc.stdout = io.TextIOWrapper(proc.stdout, encoding=encoding, errors=errors)
    if proc.stderr is not None:
        proc.stderr = io.TextIOWrapper(proc.stderr, encoding=encoding, errors=errors)


def _decode(data: bytes | None, text: bool, encoding: str | None, errors: str | None) -> Any:
    if data is None or not (text or encoding or errors):
        return data
    return data.decode(encoding or "utf-8", errors or "replace")


class _Drain:
    """Feed stdin, drain stdout/stderr (keeping ``limit`` bytes each), then wait.

    One selector in the caller's thread, like ``subprocess``: past the limit the bytes are read
    and dropped, so a command flooding its output never blocks on a full pipe. The state
    survives a timeout, so the output read before it is kept.
    """

    def __init__(self, proc: Process, input: bytes | str | None, limit: int | None) -> None:
        self.proc = proc
        self.limit = limit
        self.sel = selectors.DefaultSelector()
        self.bufs: dict[int, bytearray] = {}
        self.trunc: dict[int, bool] = {}
        self.fd_of: dict[int, int] = {}  # id(stream) -> fd
        for f in (proc.stdout, proc.stderr):
            if f is not None and not f.closed and f is not proc.stdin:
                fd = f.fileno()
                os.set_blocking(fd, False)
                self.sel.register(fd, selectors.EVENT_READ)
                self.bufs[fd] = bytearray()
                self.trunc[fd] = False
                self.fd_of[id(f)] = fd
        self.pending_in = memoryview(input.encode() if isinstance(input, str) else input or b"")
        if proc.stdin is not None and not proc.stdin.closed:
            if self.pending_in:
                fd = proc.stdin.fileno()
                os.set_blocking(fd, False)
                self.sel.register(fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()

    def run(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise subprocess.TimeoutExpired(self.proc.args, timeout or 0.0)
            for key, _ in self.sel.select(wait):
                if key.events & selectors.EVENT_WRITE:
                    self._write(int(key.fd))
                else:
                    self._read(int(key.fd))
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.proc.wait(wait)

    def _write(self, fd: int) -> None:
        try:
            n = os.write(fd, self.pending_in[:65536])
            self.pending_in = self.pending_in[n:]
        except BrokenPipeError:
            self.pending_in = self.pending_in[:0]
        except BlockingIOError:
            return
        if not self.pending_in:
            self.sel.unregister(fd)
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.sel.unregister(fd)
            return
        buf = self.bufs[fd]
        room = len(chunk) if self.limit is None else self.limit - len(buf)
        if room >= len(chunk):
            buf += chunk
        else:
            if room > 0:
                buf += chunk[:room]
            self.trunc[fd] = True

    def abandon_input(self) -> None:
        """After a kill: stop feeding stdin, keep draining what is left."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(stdin.fileno())
            stdin.close()

    def result(self) -> tuple[bytes | None, bytes | None, bool, bool]:
        self.sel.close()
        out: list[bytes | None] = []
        trunc: list[bool] = []
        for f in (self.proc.stdout, self.proc.stderr):
            fd = self.fd_of.get(id(f)) if f is not None else None
            if fd is None:
                out.append(None)
                trunc.append(False)
                continue
            out.append(bytes(self.bufs[fd]))
            trunc.append(self.trunc[fd])
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        return out[0], out[1], trunc[0], trunc[1]


def _communicate(
    proc: Process, input: bytes | str | None, timeout: float | None, limit: int | None
) -> tuple[bytes | None, bytes | None, bool, bool]:
    drain = _Drain(proc, input, limit)
    try:
        drain.run(timeout)
    except subprocess.TimeoutExpired:
        drain.sel.close()
        raise
    return drain.result()


def run(
    args: str | Sequence[str], *, policy: Policy | None = None, **kwargs: Any
) -> CompletedProcess:
    """One command in a one-command session: ``ringfence.run(["make", "test"], policy=...)``."""
    with Session(policy) as s:
        return s.run(args, **kwargs)
