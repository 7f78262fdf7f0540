"""The one result type of a command, whatever platform or front end ran it.

The exit status follows the shell's conventions so that wrapping a command in ``ringfence run``
changes nothing a script relies on: the command's own status; 128+N when a signal N ended it;
124 on timeout; 126/127 when it is not executable / not found; 125 when ringfence itself
failed; 77 when the approval step refused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXIT_REFUSED = 77  # sysexits' EX_NOPERM: the approval policy, a rule or a person said no
EXIT_TIMEOUT = 124
EXIT_INTERNAL = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


@dataclass(frozen=True)
class Violation:
    """One thing the boundary refused: ``kind`` is "filesystem" or "network"; ``op`` what
    was tried (write, create, read, connect, ...), ``path`` where, ``rule`` which rule."""

    kind: str
    op: str = ""
    path: str = ""
    rule: str = ""

    @classmethod
    def from_record(cls, v: Mapping[str, Any]) -> Violation:
        return cls(
            str(v.get("kind", "")),
            str(v.get("op", "")),
            str(v.get("path", "")),
            str(v.get("rule", "")),
        )


@dataclass(frozen=True)
class NetDecision:
    """What the filtering proxy decided about one connection."""

    host: str
    port: int
    allowed: bool
    rule: str


@dataclass(frozen=True)
class RunResult:
    """How a command ended, and what ringfence saw while it ran.

    ``message`` is ringfence's own explanation for the person (one line per fact, each line
    escaped on its own); ``error_kind`` names the exception class when ringfence itself
    failed ("UnsupportedError": the kernel cannot enforce the policy; "SandboxError").
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


def from_status(status: int) -> RunResult:
    """A result from a wait status as ``subprocess`` reports it (negative: the signal)."""
    return RunResult(128 - status, signal=-status) if status < 0 else RunResult(status)
