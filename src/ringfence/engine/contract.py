"""What every platform backend offers the engine, and how a run is asked for."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ringfence.engine.approval import ApprovalGate
    from ringfence.engine.result import RunResult
    from ringfence.policy.model import Policy


@dataclass(frozen=True)
class RunOptions:
    """How to run, beyond the policy: ``tty`` gives the command a terminal of its own;
    ``ask`` asks the person at the terminal about names the allowlist does not cover;
    ``gate`` is the approval step (None: none)."""

    timeout: float | None = None
    tty: bool = False
    ask: bool = False
    audit: bool = True
    gate: ApprovalGate | None = None
    # the plan came from the plan cache (oneshot.py): the audit record says "plan": "cached"
    plan_cached: bool = False


class Backend(Protocol):
    name: str

    def facts(self, policy: Policy, cwd: str, options: RunOptions) -> Any: ...

    def compile(self, policy: Policy, facts: Any, cwd: str) -> Any: ...

    def run(self, plan: Any, argv: list[str], options: RunOptions) -> RunResult: ...

    def close(self) -> None: ...


class PlanKeeper(Protocol):
    """Records a compile and keeps its plan (the plan cache, ``ringfence.oneshot.Keeper``)."""

    def recording(self) -> AbstractContextManager[None]: ...

    def keep(self, plan: Any, options: RunOptions, argv: list[str]) -> None: ...
