"""The end of a native one-shot run that needs more than its exit status: reported and
audited as the Python runner reports and audits it.

``native_oneshot`` handles a clean end itself. Anything else (the name guard refused or found
something, files waited for its check and did not get it, names were looked up with the
network off, the memory cap killed a process, the command did not start, the deadline came,
the sandbox could not be built) comes here, with the plan read back from the native entry
itself (never from the Python entry beside it, which may be pruned or replaced), and goes
through the same steps as a command of a session (``session.Process._finish``) and of
``ringfence run`` (``process.outcome_of``): files left unchecked are moved aside (fail
closed), refusals become violations with their widenings, names become what was tried.
"""

from __future__ import annotations

import errno
import os
import sys
from types import SimpleNamespace
from typing import Any

from ringfence import process
from ringfence.audit import AuditLog, command_record, default_path
from ringfence.connection import end_findings, move_aside, tried_offline
from ringfence.display import report
from ringfence.engine.result import EXIT_INTERNAL, EXIT_TIMEOUT, RunResult
from ringfence.plancache import native_entry
from ringfence.platforms.linux import native
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.gitdir import describe_finding


def finish(got: tuple[Any, ...], command: list[str], data: bytes) -> int:
    """The exit status of a native run that did not end cleanly, reported and audited;
    ``data``: its native entry (which holds the plan)."""
    kind, value, detail, info = got
    ended = native.ended(got)
    text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    plan, options = native_entry.plan_of(data)
    if not isinstance(plan, LinuxPlan):
        raise ValueError("a native entry holds a Linux plan")
    if kind in ("error", "unsupported"):  # as a sandbox that could not start, or that failed
        # after its command had started: fail closed all the same, and say so
        moved = move_aside(plan, list(ended.unchecked)) if ended.unchecked else []
        lines = [text, *(describe_finding(r) for r in moved)]
        err = "UnsupportedError" if kind == "unsupported" else "SandboxError"
        result = RunResult(EXIT_INTERNAL, message="\n".join(lines), error_kind=err)
        report(result)
        return result.returncode
    audit = AuditLog(default_path()) if options.get("audit") is not False else None
    if kind in ("exec_error", "cwd_error"):
        return _not_started(plan, (kind, value, text), command, audit, info)
    proc = _findings(plan, ended, info)
    if kind == "timeout":
        proc.returncode = -9
        proc.timed_out = True
        timeout = options.get("timeout")
        result = RunResult(EXIT_TIMEOUT, timed_out=True, message=f"timed out after {timeout:g} s")
    else:
        proc.returncode = value if kind == "exit" else -value
        result = process.outcome_of(proc, SimpleNamespace(plan=plan))  # type: ignore[arg-type]
    if audit is not None:
        _write(audit, plan, command, proc, None)
    report(result)
    return result.returncode


def _findings(plan: LinuxPlan, ended: native.Ended, info: dict[str, Any]) -> SimpleNamespace:
    """What ``session.Process._finish`` makes of an init's end report, for ``outcome_of``."""
    reports = [dict(r) for r in ended.reports]
    tried = tried_offline(plan, reports, list(ended.names), ended.names_lost)
    created, violations, widened = end_findings(plan, reports, list(ended.unchecked), tried)
    return SimpleNamespace(
        returncode=None,
        duration=float(info.get("duration", 0.0)),
        violations=violations,
        network_events=[],
        created=created,
        widenings=widened,
        approval=None,
        memory_limit_hit=ended.oom_kills > 0,
        timed_out=False,
    )


def _not_started(
    plan: LinuxPlan,
    how: tuple[str, int, str],
    command: list[str],
    audit: AuditLog | None,
    info: dict[str, Any],
) -> int:
    """The command did not start (``how``: the kind, errno and text the launcher gave)."""
    kind, code, text = how
    if kind == "exec_error":
        err = OSError(code, os.strerror(code), command[0])
        if code in (errno.ENOENT, errno.EACCES):
            err = (FileNotFoundError if code == errno.ENOENT else PermissionError)(
                code, os.strerror(code), command[0]
            )
        result = process.exec_failure(command[0], code)
    else:
        err = OSError(code, text)
        result = RunResult(EXIT_INTERNAL, message=text, error_kind="SandboxError")
    if audit is not None:
        proc = SimpleNamespace(returncode=None, duration=float(info.get("duration", 0.0)))
        _write(audit, plan, command, proc, str(err) if kind == "exec_error" else text)
    report(result)
    return result.returncode


def _write(
    audit: AuditLog, plan: LinuxPlan, command: list[str], proc: Any, error: str | None
) -> None:
    from ringfence.connection import plan_digest

    record = command_record(
        session=os.urandom(6).hex(),
        argv=command,
        cwd=plan.cwd,
        policy_digest=plan_digest(plan),
        returncode=proc.returncode,
        duration=proc.duration,
        timed_out=getattr(proc, "timed_out", False),
        error=error,
        filesystem=[v for v in getattr(proc, "violations", []) if v.get("kind") == "filesystem"],
        created=getattr(proc, "created", []),
        widenings=getattr(proc, "widenings", []),
        plan="cached",
    )
    try:
        audit.write(record)
    except OSError as e:
        print(f"ringfence: cannot write the audit log {audit.path}: {e}", file=sys.stderr)
