"""Platform backends behind one interface, and the one place that picks among them.

A backend turns a policy into the platform's plan and runs commands under it, in three calls:
``facts`` (what this host looks like now), ``compile`` (a pure function of policy and facts;
it refuses what the platform cannot enforce), ``run``. A backend object serves one command:
``close`` releases what ``facts`` took (a proxy's port, a temporary directory).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ringfence.errors import UnsupportedError

if TYPE_CHECKING:
    from ringfence.engine.approval import ApprovalGate
    from ringfence.engine.result import RunResult
    from ringfence.platforms.linux.plan import LinuxPlan
    from ringfence.policy.model import Policy

PLATFORMS = ("linux", "macos", "windows")


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


class Backend(Protocol):
    name: str

    def facts(self, policy: Policy, cwd: str, options: RunOptions) -> Any: ...

    def compile(self, policy: Policy, facts: Any, cwd: str) -> Any: ...

    def run(self, plan: Any, argv: list[str], options: RunOptions) -> RunResult: ...

    def close(self) -> None: ...


def host_platform() -> str:
    """ "linux", "macos", "windows", or the raw ``sys.platform`` of a host with no backend."""
    return {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)


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
    name = host_platform()
    if name == "windows":
        raise UnsupportedError(
            "this is the Linux plan; on Windows, `ringfence explain --platform windows` shows "
            "what would be enforced and `ringfence run` runs a command (never yet run on "
            "Windows: docs/platforms.md)"
        )
    if name != "linux":
        raise UnsupportedError(
            f"this command is Linux-only so far ({sys.platform}); see docs/platforms.md"
        )
    from ringfence.platforms.linux.backend import LinuxBackend

    backend = LinuxBackend()
    return backend.compile(policy, backend.facts(policy, cwd, RunOptions()), cwd)


def run(
    policy: Policy, cwd: str, argv: list[str], options: RunOptions, backend: Backend
) -> RunResult:
    """facts -> compile -> run on ``backend``, which is closed afterwards."""
    try:
        facts = backend.facts(policy, cwd, options)
        plan = backend.compile(policy, facts, cwd)
        return backend.run(plan, argv, options)
    finally:
        backend.close()
