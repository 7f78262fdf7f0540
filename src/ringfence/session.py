"""Warm sessions: build the boundary once, then run many commands in it, like ``subprocess``.

The host side never forks a command: it sends argv/env/cwd to the runner over a unix socket
and hands over the caller's stdio descriptors (SCM_RIGHTS), so output goes straight from the
command to wherever the caller pointed it. A reader thread takes the runner's replies; the
caller's thread waits on its own command. See ``platforms/linux/sandbox_side.py`` for the
sandbox side.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ringfence.completed import (
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    CompletedProcess,
    StdSpec,
    TimeoutExpired,
    completed,
    decode,
    run_stdio,
)
from ringfence.connection import Connection, Pending, end_findings, start_error
from ringfence.errors import (
    ApprovalRefused,
    SandboxError,
    UnsupportedError,
    UsageError,
)
from ringfence.policy.model import Policy
from ringfence.popen_args import PopenArgs
from ringfence.popen_args import check as check_popen_args
from ringfence.stdio import Drain, PtyFile, communicate, stdio_fds, terminal_size, wrap_text
from ringfence.unwatched import finish_later, in_thread

if TYPE_CHECKING:
    from ringfence.audit import AuditLog
    from ringfence.engine.approval import ApprovalGate, Verdict
    from ringfence.network.proxy import NetEvent

DEFAULT_OUTPUT_LIMIT = 4 << 20  # captured bytes kept per stream; the rest is drained


class Process:
    """A running sandboxed command, like ``subprocess.Popen`` (made by ``Session.spawn``).

    ``pid`` is the command's process id as the command itself sees it (it has its own pid
    namespace). ``kill()`` ends its whole process tree; ``send_signal`` reaches its process
    group. With ``pty=True``, ``stdin`` and ``stdout`` are the terminal's master side and
    ``set_winsize`` resizes it.
    """

    def __init__(
        self,
        conn: Connection,
        pending: Pending,
        args: Any,
        stdio: Sequence[IO[bytes] | None],
        started_at: float,
        *,
        marks: tuple[int, int, int] | None = None,
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
        # Where the session's counters stood before the command was sent: what came after
        # is the command's (marks_of).
        self._oom_before, self._net_from, self._names_from = marks or marks_of(conn)
        self.memory_limit_hit = False
        self.network_events: list[NetEvent] = []
        self._text: tuple[str, str] | None = None
        self.approval: dict[str, Any] | None = None
        self.violations: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.widenings: list[dict[str, Any]] = []
        self._tty: PtyFile | None = None
        if pending.master is not None:
            tty = PtyFile(pending.master, "r+b")  # EOF at the command's exit, as a pipe's
            self.stdin = self.stdout = self._tty = tty

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
        unchecked = list(report.get("unchecked") or [])
        ended = "exit" in report or ("signal" in report and not report.get("killed"))
        if unchecked or not ended:
            # the end check did not finish, or the init never said (killed, or lost): every
            # file the guard told the host of (guard_tell; the report names a few)
            unchecked += sorted(self._pending.pending_checks - set(unchecked))
        denied = [
            {"kind": "network", "host": e.host, "port": e.port, "rule": e.rule}
            for e in self.network_events
            if not e.allowed
        ]
        denied += self._conn.tried_offline(self._names_from, reports)
        self.created, self.violations, self.widenings = end_findings(
            self._conn.plan, reports, unchecked, denied
        )
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
            widenings=self.widenings,
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
        if self._tty is None:
            raise UsageError("set_winsize needs a command started with pty=True")
        if self._tty.closed:  # pty_fd's number may be another file's by now
            raise UsageError("the command's terminal is closed (communicate() or close())")
        fcntl.ioctl(self._tty.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def communicate(
        self, input: bytes | str | None = None, timeout: float | None = None
    ) -> tuple[Any, Any]:
        if isinstance(input, str):
            input = input.encode(self._text[0] if self._text else "utf-8")
        out, err, _, _ = communicate(self, input, timeout, None)
        if self._text is None:
            return out, err
        return decode(out, True, *self._text), decode(err, True, *self._text)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in {self.stdin, self.stdout, self.stderr} - {None}:
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        if self.returncode is None:
            self.wait()


def marks_of(conn: Connection) -> tuple[int, int, int]:
    """The session's OOM kills, proxy events and offline name lookups so far."""
    return (
        conn.oom_kills() if conn.cgroup is not None else 0,
        len(conn.proxy.events) if conn.proxy is not None else 0,
        conn.resolver.names.mark() if conn.resolver is not None else 0,
    )


@dataclass
class _Sent:
    """A command sent to the sandbox, not yet known to have started."""

    conn: Connection
    pending: Pending
    args: Any
    seen: list[str]
    cwd: str
    ours: list[IO[bytes] | None]
    started_at: float
    approval: dict[str, Any] | None
    marks: tuple[int, int, int]


class Session:
    """A sandbox built once, for many commands: ``with Session(workspace=repo) as s:
    s.run([...])``.

    The policy is resolved as ``ringfence run`` resolves it (see docs/api.md): without a
    ``policy``, the user's config file (and ``profile``), then the workspace's
    ``.ringfence.toml`` (which may only tighten), then the managed ceiling; a ``Policy`` takes
    the place of the user's config and the CLI's flags, under the same project file and
    ceiling. ``config=False`` reads neither config file (the managed ceiling binds always).
    ``close()`` is idempotent and ends every command still running. If the runner dies, the
    commands in flight fail with :class:`SandboxError` and the next call starts a new runner.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        workspace: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        config: bool = True,
        cwd: str | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        on_network_request: Callable[[str, int], str] | None = None,
        audit: bool | str = True,
        approval: str | None = None,
        rules: Any = None,
        approver: Callable[[Any], bool | None] | None = None,
        _plan: Any = None,
        _gate: Any = None,
        _fork: bool = False,
        _plan_source: str = "compiled",
    ) -> None:
        """``approval`` (a policy name) and ``rules`` (a RuleSet or a rules file) put an
        approval step before each command; ``approver`` is asked when it says to ask. The
        config files and the managed ceiling bind these as they bind the CLI. ``_plan`` and
        ``_gate`` are for ringfence's own front ends, which resolved them already."""
        self.policy: Policy | None = None  # the effective policy (None: given a plan)
        if _plan is None:
            from ringfence.engine import resolve

            resolved = resolve.resolve(
                resolve.PolicyRequest(
                    workspace=os.fspath(workspace) if workspace is not None else None,
                    profile=profile,
                    policy=policy,
                    user_config=config,
                    project_config=config,
                    approval=approval,
                    audit=bool(audit),
                )
            )
            self.policy = resolved.policy
            approval = resolved.approval
            if rules is None and resolved.rules is not None:
                rules = resolved.rules
        elif _gate is None:  # the plan was compiled under the ceiling; the approval floor binds
            from ringfence.engine.resolve import approval_floor

            approval = approval_floor(approval)
        if _gate is False:  # ringfence's own front end decided: no approval step
            _gate = None
        elif _gate is None:
            from ringfence.engine.approval import ApprovalGate

            _gate = ApprovalGate.build(approval, rules, approver)
        self.gate: ApprovalGate | None = _gate or None
        plan = _plan
        if plan is None:
            assert self.policy is not None
            from ringfence.engine.platform import require_linux
            from ringfence.platforms.linux import prepare

            require_linux()
            plan = prepare.plan(self.policy, cwd or self.policy.workspace)
        if not plan.sandboxed:
            raise UnsupportedError(
                "a Session runs commands inside a sandbox; full-access mode has none (use "
                "subprocess directly, or ringfence run --mode full-access)"
            )
        self.plan = plan
        from ringfence import importpaths

        if _plan is None:  # the API
            importpaths.warn_if_writable(plan.writable_places())
        else:  # ringfence's own front ends
            importpaths.tell_front_end(plan.writable_places())
        self.output_limit = output_limit
        self.on_network_request = on_network_request
        self.audit: AuditLog | None = None
        if audit:
            from ringfence.audit import AuditLog

            self.audit = AuditLog(audit if isinstance(audit, str) else None)
        self._fork = _fork
        self._plan_source = _plan_source  # "cached": from the plan cache (the audit says so)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._closed = False

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> Session:
        self._connection()
        return self

    def _connection(self) -> Connection:
        with self._lock:
            if self._closed:
                raise SandboxError("this session is closed")
            if self._conn is not None and self._conn.dead is not None:
                old, self._conn = self._conn, None
                old.close()
            if self._conn is None:
                self._conn = Connection(
                    self.plan,
                    fork=self._fork,
                    ask=self.on_network_request,
                    audit=self.audit,
                    plan_source=self._plan_source,
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
        stdin: StdSpec = None,
        stdout: StdSpec = None,
        stderr: StdSpec = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        pty: bool | tuple[int, int] = False,
        executable: str | os.PathLike[str] | None = None,
        pass_fds: Collection[int] = (),
        umask: int = -1,
        bufsize: int = 0,
        universal_newlines: bool | None = None,
        start_new_session: bool = True,
        close_fds: bool = True,
    ) -> Process:
        """Start a command, like ``subprocess.Popen``: stdio may be None (inherit the
        caller's), PIPE, DEVNULL, STDOUT (stderr only), a file object or an fd. The other
        ``Popen`` arguments are checked by :mod:`ringfence.popen_args` (those a sandboxed
        command cannot have are refused, saying why)."""
        extra = check_popen_args(
            executable=executable, pass_fds=pass_fds, umask=umask, bufsize=bufsize, text=text,
            universal_newlines=universal_newlines, start_new_session=start_new_session,
            close_fds=close_fds,
        )  # fmt: skip
        return self._spawn(
            args, stdio=(stdin, stdout, stderr), cwd=cwd, env=env, shell=shell, pty=pty,
            extra=extra, decoding=(encoding, errors),
        )  # fmt: skip

    def _spawn(
        self,
        args: str | Sequence[str],
        *,
        stdio: tuple[StdSpec, StdSpec, StdSpec],
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        shell: bool,
        pty: bool | tuple[int, int],
        extra: PopenArgs,
        decoding: tuple[str | None, str | None],
    ) -> Process:
        sent = self._submit(args, stdio=stdio, cwd=cwd, env=env, shell=shell, pty=pty, extra=extra)
        sent.pending.started.wait()
        return self._spawned(sent, extra, decoding)

    def _submit(
        self,
        args: str | Sequence[str],
        *,
        stdio: tuple[StdSpec, StdSpec, StdSpec],
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        shell: bool,
        pty: bool | tuple[int, int],
        extra: PopenArgs,
    ) -> _Sent:
        """The first half of a start: judge the command and send it (no waiting on the
        sandbox, so asyncio can do it on its loop: ``aio_process``)."""
        argv = _argv(args, shell)
        # What the approval step judges and the audit log records is the program that runs:
        # with ``executable``, not what ``args[0]`` claims (``ls`` running /bin/rm).
        seen = [extra.executable, *argv[1:]] if extra.executable is not None else argv
        conn = self._connection()
        command_env = self._env(env)
        verdict = self._approve(conn, seen, cwd, command_env)
        approval = verdict.record if verdict is not None else None
        if verdict is not None:
            from ringfence.engine.approval import read_only_git_env

            git_env = read_only_git_env(
                verdict.decision, command_env if command_env is not None else self.plan.env
            )
            command_env = git_env if git_env is not None else command_env
        msg: dict[str, Any] = {
            "op": "run",
            "argv": argv,
            "env": command_env,
            "cwd": os.fspath(cwd) if cwd is not None else None,
            "pty": None,
            **extra.fields(),
        }
        to_close: list[int] = []
        ours: list[IO[bytes] | None] = [None, None, None]
        fds: list[int] = []
        if pty:
            size = pty if isinstance(pty, tuple) else terminal_size()
            msg["pty"] = [size[0], size[1]]
        else:
            fds, ours, to_close = stdio_fds(*stdio, bufsize=extra.bufsize)
        started_at = time.monotonic()
        marks = marks_of(conn)
        try:
            pending = conn.submit(msg, [*fds, *extra.pass_fds])
        except BaseException:
            for f in ours:
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        cwd_seen = msg["cwd"] or self.plan.cwd
        return _Sent(conn, pending, args, seen, cwd_seen, ours, started_at, approval, marks)

    def _spawned(
        self, sent: _Sent, extra: PopenArgs, decoding: tuple[str | None, str | None]
    ) -> Process:
        """The second half, once the runner said the command started (or could not)."""
        pending, conn = sent.pending, sent.conn
        if pending.done.is_set() and "started" not in pending.report and pending.pid is None:
            for f in sent.ours:
                if f is not None:
                    f.close()
            err = start_error(pending.report, sent.seen)
            conn.audit_command(
                argv=sent.seen,
                cwd=sent.cwd,
                returncode=None,
                duration=time.monotonic() - sent.started_at,
                error=str(err),
            )
            raise err
        proc = Process(conn, pending, sent.args, sent.ours, sent.started_at, marks=sent.marks)
        proc.argv, proc.cwd = sent.seen, sent.cwd
        proc.approval = sent.approval
        encoding, errors = decoding
        if extra.text or encoding or errors:
            wrap_text(proc, encoding or "utf-8", errors or "replace", extra.bufsize == 1)
        return proc

    def _finish_unwatched(self, sent: _Sent) -> None:
        """A command whose caller stopped waiting (a cancelled task): once it has ended, its
        end is judged and audited as any other's (files left for the guard's check moved
        aside), in a thread of its own."""

        def finish() -> None:
            sent.pending.done.wait()
            with contextlib.suppress(Exception):
                self._spawned(sent, PopenArgs(), (None, None)).wait()

        in_thread(finish)

    def _sends_at_once(self) -> bool:
        """Whether :meth:`_submit` cannot block: the runner is up and no approver (which may
        ask a person) is consulted."""
        conn = self._conn
        return conn is not None and conn.dead is None and not self._closed and self.gate is None

    def run(
        self,
        args: str | Sequence[str],
        *,
        stdin: StdSpec = None,
        input: bytes | str | None = None,
        stdout: StdSpec = None,
        stderr: StdSpec = None,
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
        executable: str | os.PathLike[str] | None = None,
        pass_fds: Collection[int] = (),
        umask: int = -1,
        bufsize: int = 0,
        universal_newlines: bool | None = None,
        start_new_session: bool = True,
        close_fds: bool = True,
    ) -> CompletedProcess:
        """Run a command to completion, like ``subprocess.run``.

        Captured output keeps ``output_limit`` bytes per stream (the session's default is a
        few MiB) and drains the rest so the command never blocks; the result says so. On a
        timeout the command's whole tree is killed and :class:`TimeoutExpired` is raised.
        """
        extra = check_popen_args(
            executable=executable, pass_fds=pass_fds, umask=umask, bufsize=bufsize, text=text,
            universal_newlines=universal_newlines, start_new_session=start_new_session,
            close_fds=close_fds,
        )  # fmt: skip
        text = extra.text
        stdin, stdout, stderr = run_stdio(input, stdin, stdout, stderr, capture_output)
        binary = PopenArgs(extra.executable, extra.umask, extra.pass_fds)  # run decodes itself
        proc = self._spawn(
            args, stdio=(stdin, stdout, stderr), cwd=cwd, env=env, shell=shell, pty=False,
            extra=binary, decoding=(None, None),
        )  # fmt: skip
        limit = self.output_limit if output_limit is None else output_limit
        drain = Drain(proc, input, limit)
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
                decode(out, text, encoding, errors),
                decode(err, text, encoding, errors),
            ) from e
        except BaseException:
            proc.kill()
            try:
                proc.wait(5)
            except BaseException:  # its init may take longer to end it: its end still counts
                finish_later(proc)
            drain.sel.close()
            raise
        out, err, trunc_out, trunc_err = drain.result()
        return completed(proc, (out, err), (trunc_out, trunc_err), (text, encoding, errors), check)

    async def arun(self, args: str | Sequence[str], **kwargs: Any) -> CompletedProcess:
        """``run`` for asyncio (``ringfence.aio.AsyncSession`` is the whole API in asyncio)."""
        from ringfence import aio_process

        return await aio_process.run(self, args, **kwargs)

    async def aspawn(self, args: str | Sequence[str], **kwargs: Any) -> Any:
        """``spawn`` for asyncio, with ``asyncio.subprocess``-style streams."""
        from ringfence import aio_process

        return await aio_process.spawn(self, args, **kwargs)

    def _approve(
        self,
        conn: Connection,
        argv: list[str],
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None = None,
    ) -> Verdict | None:
        """Apply the approval gate: None when there is none, else its verdict (whose record
        says who allowed it). A refusal is audited and raised as :class:`ApprovalRefused`;
        nothing runs. ``env``: the command's own (None: the plan's), whose PATH decides which
        program a name finds."""
        if self.gate is None:
            return None
        from ringfence.engine.approval import where_of

        verdict = self.gate.check(argv, where_of(self.plan, env))
        if not verdict.granted:
            conn.audit_command(
                argv=argv,
                cwd=os.fspath(cwd) if cwd is not None else self.plan.cwd,
                returncode=None,
                duration=0.0,
                error=verdict.message,
                approval=verdict.record,
            )
            raise ApprovalRefused(verdict.decision)
        return verdict

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        marks = {k: v for k, v in self.plan.env.items() if k.startswith("RINGFENCE_")}
        out = {str(k): str(v) for k, v in env.items()}
        out.update(marks)
        out.setdefault("TMPDIR", self.plan.env.get("TMPDIR", "/tmp"))
        return out


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


def run(
    args: str | Sequence[str],
    *,
    policy: Policy | None = None,
    workspace: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    config: bool = True,
    **kwargs: Any,
) -> CompletedProcess:
    """One command in a one-command session: ``ringfence.run(["make", "test"],
    workspace=...)``; the policy is resolved as :class:`Session` resolves it."""
    with Session(policy, workspace=workspace, profile=profile, config=config) as s:
        return s.run(args, **kwargs)


__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "CompletedProcess",
    "Process",
    "Session",
    "TimeoutExpired",
    "run",
]
