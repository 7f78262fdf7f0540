"""Platform backends behind one interface, and the one place that picks among them.

A backend turns a policy into the platform's plan and runs commands under it, in three calls
(see ``contract.Backend``): ``facts`` (what this host looks like now), ``compile`` (a pure
function of policy and facts; it refuses what the platform cannot enforce), ``run``. A
backend object serves one command: ``close`` releases what ``facts`` took (a proxy's port, a
temporary directory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ringfence.engine.contract import Backend, PlanKeeper, RunOptions
from ringfence.engine.platform import PLATFORMS, host_platform, require_linux
from ringfence.errors import UnsupportedError

if TYPE_CHECKING:
    from ringfence.engine.result import RunResult
    from ringfence.platforms.linux.plan_model import LinuxPlan
    from ringfence.policy.model import Policy

__all__ = ["PLATFORMS", "Backend", "RunOptions", "host_platform", "linux_plan", "run", "select"]


def select(platform: str | None = None, **kwargs: Any) -> Backend:
    """A fresh backend for ``platform`` (default: this host's). ``kwargs`` reach the
    backend's constructor (tests give stand-ins for the enforcer there, never the
    environment)."""
    name = platform or host_platform()
    if name == "linux":
        from ringfence.platforms.linux.backend import LinuxBackend

        return LinuxBackend(**kwargs)
    if name == "macos":
        from ringfence.platforms.macos.backend import MacBackend

        return MacBackend(**kwargs)
    if name == "windows":
        from ringfence.platforms.windows.backend import WindowsBackend

        return WindowsBackend(**kwargs)
    raise UnsupportedError(f"ringfence has no backend for {name}; see docs/platforms.md")


def linux_plan(policy: Policy, cwd: str) -> LinuxPlan:
    """The Linux plan for ``policy`` on this host: what the session API, ``explain``, the
    MCP server and the session server run under (Linux-only so far)."""
    require_linux()
    from ringfence.platforms.linux import prepare

    return prepare.plan(policy, cwd)


def run(
    policy: Policy,
    cwd: str,
    argv: list[str],
    options: RunOptions,
    backend: Backend,
    *,
    keeper: PlanKeeper | None = None,
) -> RunResult:
    """facts -> compile -> run on ``backend``, which is closed afterwards. The result
    carries ``argv``, and a duration (the whole run's when the backend had none: a timeout,
    a refusal). ``keeper``: the plan cache's recorder of this compile (oneshot.py)."""
    from ringfence import trace

    try:
        if keeper is not None and backend.name == "linux":
            with keeper.recording():
                facts = backend.facts(policy, cwd, options)
                plan = backend.compile(policy, facts, cwd)
            keeper.keep(plan, options, argv)
        else:
            facts = backend.facts(policy, cwd, options)
            trace.step(f"{backend.name}: host facts")
            plan = backend.compile(policy, facts, cwd)
        trace.step(f"{backend.name}: compiled the plan")
        return run_plan(plan, argv, options, backend)
    finally:
        backend.close()
        trace.step(f"{backend.name}: closed")


def run_plan(plan: Any, argv: list[str], options: RunOptions, backend: Backend) -> RunResult:
    """Run a compiled ``plan`` (``run``'s last step; a cached one-shot run's only one): the
    result carries ``argv``, and a duration (the whole run's when the backend had none)."""
    import dataclasses
    import time

    started = time.monotonic()
    result = backend.run(plan, argv, options)
    duration = time.monotonic() - started if result.duration is None else result.duration
    return dataclasses.replace(result, argv=tuple(argv), duration=duration)
