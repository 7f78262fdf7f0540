"""The one result type of a command, whatever platform or front end ran it, and its record.

The exit status follows the shell's conventions so that wrapping a command in ``ringfence run``
changes nothing a script relies on: the command's own status; 128+N when a signal N ended it;
124 on timeout; 126/127 when it is not executable / not found; 125 when ringfence itself
failed; 77 when the approval step refused it.

``RunResult.to_dict`` is the machine-readable record of a run (schema: docs/report.md):
``ringfence run --report`` writes it, and the audit log's command record is the same object
with the log's own keys added (audit.command_record). Fields added later (a resolver's
decisions, say) extend it; a consumer ignores keys it does not know, and ``version`` changes
only when a key changes meaning or goes away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXIT_REFUSED = 77  # sysexits' EX_NOPERM: the approval policy, a rule or a person said no
EXIT_TIMEOUT = 124
EXIT_INTERNAL = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

REPORT_VERSION = 1  # of RunResult.to_dict's shape; see docs/report.md

# error_kind values that are not ringfence failing: the command did not start, or was refused
APPROVAL_REFUSED = "ApprovalRefused"
EXEC_FAILED = "ExecFailed"


@dataclass(frozen=True)
class Violation:
    """One thing the boundary refused: ``kind`` is "filesystem" or "network"; ``op`` what
    was tried (write, create, read, connect, ...), ``path`` where (filesystem), ``host`` and
    ``port`` where (network), ``rule`` which rule."""

    kind: str
    op: str = ""
    path: str = ""
    rule: str = ""
    host: str = ""
    port: int | None = None

    @classmethod
    def from_record(cls, v: Mapping[str, Any]) -> Violation:
        port = v.get("port")
        return cls(
            str(v.get("kind", "")),
            str(v.get("op", "")),
            str(v.get("path", "")),
            str(v.get("rule", "")),
            str(v.get("host", "")),
            int(port) if isinstance(port, int) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The keys that apply to this kind (empty ones left out), as the Python API's
        ``CompletedProcess.violations`` holds them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None)}


@dataclass(frozen=True)
class NetDecision:
    """What the filtering proxy decided about one connection: ``address`` is where an
    allowed one went, ``protocol`` how the client asked (CONNECT, HTTP, SOCKS, ...)."""

    host: str
    port: int
    allowed: bool
    rule: str
    address: str | None = None
    protocol: str | None = None

    @classmethod
    def from_event(cls, e: Any) -> NetDecision:
        """From the proxy's ``NetEvent`` (or anything with its attributes)."""
        return cls(
            str(e.host),
            int(e.port),
            bool(e.allowed),
            str(e.rule),
            getattr(e, "address", None),
            getattr(e, "protocol", None),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunResult:
    """How a command ended, and what ringfence saw while it ran.

    ``message`` is ringfence's own explanation for the person (one line per fact, each line
    escaped on its own); ``error_kind`` says why the command did not run to its end
    ("UnsupportedError": the kernel cannot enforce the policy; "SandboxError": ringfence
    failed; "ApprovalRefused": the approval step said no; "ExecFailed": not found or not
    executable). ``widenings`` are the smallest policy changes that would have allowed what
    was refused ({"kind", "flag", "because", "path" | "entry"}); ``approval`` is the gate's
    record of who allowed the command (None: no approval step).
    """

    returncode: int
    timed_out: bool = False
    signal: int | None = None
    message: str | None = None
    error_kind: str | None = None
    duration: float | None = None
    violations: tuple[Violation, ...] = ()
    network: tuple[NetDecision, ...] = ()
    created: tuple[Mapping[str, Any], ...] = field(default=())
    widenings: tuple[Mapping[str, Any], ...] = ()
    approval: Mapping[str, Any] | None = None
    argv: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """One word for how it ended: exited, signaled, timed_out, refused (by the approval
        step), not_started (not found or not executable), error (ringfence failed)."""
        if self.error_kind == APPROVAL_REFUSED:
            return "refused"
        if self.error_kind == EXEC_FAILED:
            return "not_started"
        if self.error_kind is not None:
            return "error"
        if self.timed_out:
            return "timed_out"
        return "signaled" if self.signal is not None else "exited"

    def to_dict(self) -> dict[str, Any]:
        """The run's record (docs/report.md): plain JSON types only. Network decisions are
        grouped: one entry per distinct decision, with how many times it was made."""
        network: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        for d in self.network:
            entry = d.to_dict()
            key = tuple(sorted(entry.items()))
            network.setdefault(key, {**entry, "count": 0})["count"] += 1
        return {
            "version": REPORT_VERSION,
            "argv": list(self.argv),
            "outcome": self.outcome,
            "exit": self.returncode,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "duration": None if self.duration is None else round(self.duration, 4),
            "error": self.error_kind
            if self.error_kind not in (None, APPROVAL_REFUSED, EXEC_FAILED)
            else None,
            "violations": [v.to_dict() for v in self.violations],
            "network": list(network.values()),
            "created": [dict(c) for c in self.created],
            "widenings": [dict(w) for w in self.widenings],
            "approval": dict(self.approval) if self.approval is not None else None,
            "messages": self.message.split("\n") if self.message else [],
        }


def from_status(status: int) -> RunResult:
    """A result from a wait status as ``subprocess`` reports it (negative: the signal)."""
    return RunResult(128 - status, signal=-status) if status < 0 else RunResult(status)
