"""The audit log: one JSON object per line, one record per command and per network decision.

``$XDG_STATE_HOME/ringfence/audit.jsonl`` (default ``~/.local/state/ringfence``), private to
the user. Each record is a single ``write`` to a file opened with O_APPEND, under an exclusive
lock that also serialises rotation, so concurrent writers never interleave and a rotation never
loses a record. A writer killed mid-write can leave at most a torn last line: the reader skips
lines that are not complete JSON. No environment value is ever written, and argv is redacted
of strings that look like credentials.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ringfence import auditfile
from ringfence.auditfile import iso_utc
from ringfence.digest import sha256_hex

if TYPE_CHECKING:
    import datetime as _dt

MAX_BYTES = auditfile.MAX_BYTES
KEEP = auditfile.KEEP

_SECRET_ARG = re.compile(
    r"(?i)(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r")"
)
_SECRET_KV = re.compile(
    r"(?i)((?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|auth)[^=:\s]*[=:])"
    r"([^\s&]+)"
)
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
REDACTED = "[REDACTED]"


def redact(arg: str) -> str:
    """``arg`` with token-like strings, ``key=secret`` values and URL credentials replaced."""
    out = _SECRET_ARG.sub(REDACTED, arg)
    out = _SECRET_KV.sub(lambda m: m.group(1) + REDACTED, out)
    out = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", out)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, out)


def default_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "ringfence", "audit.jsonl")


def digest(data: Mapping[str, Any]) -> str:
    """A short, stable digest of a policy's plan (environment values excluded by the caller)."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + sha256_hex(text.encode())[:16]


def now() -> str:
    return iso_utc(time.time())


class AuditLog:
    def __init__(self, path: str | None = None, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path or default_path()
        self.max_bytes = max_bytes

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record, atomically; rotate first when the file is full."""
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        auditfile.append(self.path, line, self.max_bytes)

    def records(self, *, since: _dt.datetime | str | None = None) -> Iterator[dict[str, Any]]:
        """Every complete record, oldest first (rotated files included); torn lines skipped.
        ``since``: only records at or after it (a time, or text for :func:`parse_time`)."""
        start = parse_time(since) if isinstance(since, str) else since
        paths = [f"{self.path}.{i}" for i in range(KEEP, 0, -1)] + [self.path]
        for path in paths:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            with f:
                for raw in f:
                    record = _parse(raw)
                    if record is not None and (start is None or _at_or_after(record, start)):
                        yield record


_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """``audit --since``: an ISO 8601 date or time (UTC unless it names its offset), a span
    ago (``90s``, ``15m``, ``1h``, ``2d``, ``1w``), ``today`` or ``yesterday`` (from local
    midnight), or ``now``. Anything else is an error, never a silent "everything"."""
    import datetime as _dt

    from ringfence.errors import UsageError

    now = now or _dt.datetime.now(_dt.UTC)
    word = text.strip().lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        local = now.astimezone()
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - _dt.timedelta(days=1 if word == "yesterday" else 0)
    if m := _AGO.fullmatch(word):
        return now - _dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give an ISO 8601 time (2025-01-31, 2025-01-31T09:00Z), a span "
            "ago (90s, 15m, 1h, 2d, 1w), today, yesterday or now"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)


def _at_or_after(record: Mapping[str, Any], start: _dt.datetime) -> bool:
    import datetime as _dt

    try:
        when = _dt.datetime.fromisoformat(str(record.get("time", "")))
    except ValueError:
        return False  # a record without a readable time is not "since" anything
    return (when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)) >= start


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None  # a writer died mid-line
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def command_record(
    *,
    session: str,
    argv: Sequence[str],
    cwd: str | None,
    policy_digest: str,
    returncode: int | None,
    duration: float | None,
    timed_out: bool = False,
    network: Sequence[Any] = (),
    error: str | None = None,
    approval: Any = None,
    filesystem: Sequence[dict[str, Any]] = (),
    created: Sequence[dict[str, Any]] = (),
    widenings: Sequence[dict[str, Any]] = (),
    plan: str = "compiled",
) -> dict[str, Any]:
    """One command's record: the run's record (``RunResult.to_dict``, the same object
    ``ringfence run --report`` writes, docs/report.md) plus the log's own keys ``type``,
    ``time``, ``session``, ``cwd``, ``policy`` and ``plan`` (``"cached"`` when a one-shot run
    took its plan from the plan cache, else ``"compiled"``), with argv and paths redacted.

    ``returncode`` is as ``subprocess`` reports it (negative: the signal; None: it never
    started); ``network`` the proxy's events while it ran; ``error`` why it failed to run
    (with an ``approval`` record that did not grant it: the approval step refused it)."""
    from ringfence.engine import result as res

    refused = isinstance(approval, Mapping) and approval.get("granted") is False
    status, sig, kind = returncode, None, None
    if refused:
        status, kind = res.EXIT_REFUSED, res.APPROVAL_REFUSED
    elif error:
        status, kind = res.EXIT_INTERNAL, "SandboxError"
    elif timed_out:
        status = res.EXIT_TIMEOUT
    elif returncode is not None and returncode < 0:
        status, sig = 128 - returncode, -returncode
    denied = [
        res.Violation("network", rule=e.rule, host=e.host, port=e.port)
        for e in network
        if not e.allowed
    ]
    run = res.RunResult(
        status if status is not None else res.EXIT_INTERNAL,
        timed_out=timed_out,
        signal=sig,
        message=error,
        error_kind=kind,
        duration=duration,
        violations=tuple(res.Violation.from_record(v) for v in filesystem) + tuple(denied),
        network=tuple(res.NetDecision.from_event(e) for e in network),
        created=tuple(created),
        widenings=tuple(widenings),
        approval=approval if isinstance(approval, Mapping) else None,
        argv=tuple(argv),
    ).to_dict()
    run["argv"] = [redact(a) for a in argv]
    for key in ("violations", "created", "widenings", "network"):
        run[key] = [_redacted(item) for item in run[key]]
    run["messages"] = [redact(m) for m in run["messages"]]
    return {"type": "command", "time": now(), "session": session, "cwd": cwd,
            "policy": policy_digest, "plan": plan, **run}  # fmt: skip


def _redacted(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with its string values redacted (a path can hold a token)."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in item.items()}


def network_record(session: str, event: Any) -> dict[str, Any]:
    return {
        "type": "network",
        "time": iso_utc(event.time),
        "session": session,
        "host": event.host,
        "port": event.port,
        "allowed": event.allowed,
        "rule": event.rule,
        "address": event.address,
        "protocol": event.protocol,
    }


def widening_record(
    *, server: str, kind: str, value: str, reason: str, decision: str, detail: str = ""
) -> dict[str, Any]:
    """A widening an agent asked for mid-session (``ringfence mcp``'s request_widening) and
    what became of it: ``granted`` (by the person), ``declined``, ``refused`` (by the rules
    or the managed ceiling, nobody asked) or ``unasked`` (no one could be asked)."""
    record: dict[str, Any] = {
        "type": "widening",
        "time": now(),
        "server": server,
        "kind": kind,
        "value": redact(value),
        "reason": redact(reason[:500]),
        "decision": decision,
    }
    if detail:
        record["detail"] = redact(detail)
    return record


def format_record(record: Mapping[str, Any]) -> str:
    """One line a person can scan; ``--json`` gives the record itself."""
    when = str(record.get("time", "?"))
    session = str(record.get("session", "?"))
    if record.get("type") == "network":
        verdict = "allowed" if record.get("allowed") else "BLOCKED"
        return (
            f"{when} {session} network {verdict} {record.get('host')}:{record.get('port')} "
            f"({record.get('rule')})"
        )
    if record.get("type") == "widening":
        detail = f" ({record['detail']})" if record.get("detail") else ""
        return (
            f"{when} mcp:{record.get('server')} widening {record.get('kind')} "
            f"{record.get('value')!r} -> {record.get('decision')}{detail}"
        )
    argv = " ".join(str(a) for a in record.get("argv", []))
    if "version" in record:  # the run's record (docs/report.md)
        messages = record.get("messages") or []
        status = f"exit {record.get('exit')}"
        if record.get("outcome") not in (None, "exited"):
            status += f", {record.get('outcome')}"
        if record.get("outcome") in ("refused", "error") and messages:
            status += f": {messages[0]}"
        violations = record.get("violations") or []
        blocked = [v for v in violations if isinstance(v, dict) and v.get("kind") == "network"]
        refused = len(violations) - len(blocked)
    else:  # a record written before the run's record had a version
        status = record.get("error") or f"exit {record.get('exit')}"
        if record.get("timed_out"):
            status += ", timed out"
        blocked = record.get("violations", {}).get("network") or []
        refused = 0
    extra = f", blocked {len(blocked)}" if blocked else ""
    extra += f", refused {refused}" if refused else ""
    return f"{when} {session} command {argv!r} -> {status} in {record.get('duration')} s{extra}"
