"""The host side of one Linux command: start the runner, forward signals, time out, and map
how it ended to a :class:`~ringfence.engine.result.RunResult` (exit statuses: see there)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ringfence import trace
from ringfence.engine.result import (
    APPROVAL_REFUSED,
    EXEC_FAILED,
    EXIT_INTERNAL,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    NetDecision,
    RunResult,
    Violation,
)
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import gitdir

if TYPE_CHECKING:
    from ringfence.engine.approval import ApprovalGate
    from ringfence.session import Process, Session


def exec_failure(argv0: str, err: int) -> RunResult:
    """126/127 with the shell's wording, for a command that could not be started."""
    if err == errno.ENOENT:
        return RunResult(
            EXIT_NOT_FOUND, message=f"{argv0}: command not found", error_kind=EXEC_FAILED
        )
    return RunResult(
        EXIT_NOT_EXECUTABLE,
        message=f"{argv0}: cannot execute: {os.strerror(err)}",
        error_kind=EXEC_FAILED,
    )


def run_sandboxed(
    plan: LinuxPlan,
    argv: Sequence[str],
    timeout: float | None,
    *,
    tty: bool = False,
    ask: Callable[[str, int], str] | None = None,
    audit: bool = True,
    gate: ApprovalGate | None = None,
    plan_source: str = "compiled",
) -> RunResult:
    """Run ``argv`` under ``plan`` in a one-command session; blocks until the sandbox is gone.

    The CLI's runner is forked (this process is small and single-threaded), not spawned, to
    save an interpreter start. ``tty``: the command gets a terminal of its own, relayed to
    ours.
    """
    from ringfence.errors import RingfenceError, UnsupportedError
    from ringfence.session import Session

    try:
        session = Session(
            _plan=plan,
            on_network_request=ask,
            audit=audit,
            _gate=gate if gate is not None else False,  # resolved by the front end
            _fork=True,
            _plan_source=plan_source,
        ).start()
    except UnsupportedError as e:
        return RunResult(EXIT_INTERNAL, message=str(e), error_kind="UnsupportedError")
    except RingfenceError as e:
        return RunResult(EXIT_INTERNAL, message=str(e), error_kind="SandboxError")
    trace.step("the sandbox is up")
    try:
        return _run_one(session, argv, timeout, tty)
    finally:
        trace.step("the command ended")
        session.close()


def _run_one(session: Session, argv: Sequence[str], timeout: float | None, tty: bool) -> RunResult:
    proc = spawn_or_outcome(session, argv, pty=tty)
    if isinstance(proc, RunResult):
        return proc
    from ringfence.forwarded import FORWARDED  # the signals that are the command's

    previous = {sig: signal.signal(sig, lambda s, _f: proc.send_signal(s)) for sig in FORWARDED}
    try:
        if tty:
            from ringfence import terminal

            try:
                terminal.relay(proc, timeout)
            except subprocess.TimeoutExpired:
                return _timed_out(proc, timeout)
        return wait_outcome(proc, session, timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def spawn_or_outcome(session: Session, argv: Sequence[str], **kw: Any) -> Process | RunResult:
    """Start ``argv`` in ``session``, or the exit status of why it could not start (refused
    by the approval step, not found or not executable, the sandbox failed)."""
    from ringfence.errors import ApprovalRefused, RingfenceError

    try:
        return session.spawn(list(argv), **kw)
    except ApprovalRefused as e:
        return RunResult(EXIT_REFUSED, message=str(e), error_kind=APPROVAL_REFUSED)
    except OSError as e:
        return exec_failure(argv[0], e.errno or errno.EACCES)
    except RingfenceError as e:
        return RunResult(EXIT_INTERNAL, message=str(e), error_kind="SandboxError")


def wait_outcome(proc: Process, session: Session, timeout: float | None) -> RunResult:
    """Wait for ``proc``; on a timeout end its whole tree. Its exit status and explanation."""
    from ringfence.errors import RingfenceError

    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return _timed_out(proc, timeout)
    except RingfenceError as e:
        return RunResult(EXIT_INTERNAL, message=str(e), error_kind="SandboxError")
    return outcome_of(proc, session)


def _timed_out(proc: Process, timeout: float | None) -> RunResult:
    """End a command that outlived its timeout: its whole tree."""
    from ringfence.errors import RingfenceError

    proc.timed_out = True
    proc.kill()
    with contextlib.suppress(RingfenceError):
        proc.wait()
    return RunResult(EXIT_TIMEOUT, timed_out=True, message=f"timed out after {timeout or 0:g} s")


def outcome_of(proc: Process, session: Session) -> RunResult:
    """The exit status and ringfence's explanation for a command that has ended: what the
    boundary refused, what it made that a person should know of, and the smallest widening
    that would have allowed it (one line each)."""
    rc = proc.returncode
    assert rc is not None
    outcome = RunResult(
        128 - rc if rc < 0 else rc,
        signal=-rc if rc < 0 else None,
        duration=proc.duration,
        violations=tuple(
            Violation.from_record(v) for v in proc.violations if v.get("kind") != "more"
        ),
        network=tuple(NetDecision.from_event(e) for e in proc.network_events),
        created=tuple(proc.created),
        widenings=tuple(proc.widenings),
        approval=proc.approval,
    )
    lines: list[str] = []
    files = [v for v in proc.violations if v.get("kind") == "filesystem"]
    if files:
        more = len(files) > 5 or any(v.get("kind") == "more" for v in proc.violations)
        shown = ", ".join(f"{v['op']} {v['path']} ({v['rule']})" for v in files[:5])
        lines.append("refused " + shown + (" and more" if more else ""))
    blocked = [e for e in proc.network_events if not e.allowed]
    if blocked:
        hosts = {f"{e.host}:{e.port} ({e.rule})": None for e in blocked}
        more_hosts = f" and {len(hosts) - 5} more" if len(hosts) > 5 else ""
        lines.append("blocked " + ", ".join(list(hosts)[:5]) + more_hosts)
    if any(v.get("kind") == "network" and v.get("op") for v in proc.violations):
        from ringfence.network.offline import tried_line

        tried = tried_line(proc.violations)
        if tried is not None:
            lines.append(tried)
    lines.extend(gitdir.describe_finding(c) for c in proc.created)
    if proc.widenings:
        from ringfence.escalation import to_allow_text

        lines.append("to allow it: " + to_allow_text(proc.widenings))
    if proc.memory_limit_hit:
        limit = dict(session.plan.cgroup_limits).get("memory", 0)
        lines.insert(
            0,
            f"the memory limit ({limit // (1 << 20)} MiB) was reached: the kernel killed a "
            "process of the command",
        )
    if lines:
        # Each line escaped on its own: a path is the command's to choose, and a newline in
        # it must not start a line that looks like ringfence's ("to allow it: ...").
        from ringfence.display import printable

        outcome = replace(outcome, message="\n".join(printable(line) for line in lines))
    return outcome


def run_unconfined(
    argv: Sequence[str], env: dict[str, str], cwd: str, timeout: float | None
) -> RunResult:
    """full-access mode: no boundary at all, as the user explicitly asked."""
    try:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd)
    except FileNotFoundError:
        return exec_failure(argv[0], errno.ENOENT)
    except PermissionError as e:
        return exec_failure(argv[0], e.errno or errno.EACCES)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return RunResult(EXIT_TIMEOUT, timed_out=True, message=f"timed out after {timeout:g} s")
    except KeyboardInterrupt:
        rc = proc.wait()
    if rc < 0:
        return RunResult(128 - rc, signal=-rc)
    return RunResult(rc)
