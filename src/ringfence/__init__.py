"""ringfence: run an AI coding agent's commands inside boundaries the kernel enforces.

This namespace is the public API: everything a caller needs to build a policy, run commands
(blocking or asyncio) and read what happened. Modules not named here are internal and may
change between releases.
"""

# Nothing is imported up front but the version (a module with no imports of its own), not
# even ``__future__`` or the exception classes: ``ringfence run --session`` imports this
# package on every call (see ringfence.entry).
from ringfence.version import __version__

TYPE_CHECKING = False  # not `typing`: it costs the fast path ~10 ms; mypy knows the name

if TYPE_CHECKING:
    from ringfence.aio import AsyncProcess, AsyncSession, arun
    from ringfence.engine.result import NetDecision, RunResult, Violation
    from ringfence.errors import (
        ApprovalRefused,
        InternalError,
        PolicyError,
        PublishError,
        RingfenceError,
        SandboxError,
        UnenforceableError,
        UnsupportedError,
        UsageError,
    )
    from ringfence.policy.model import EnvPolicy, Isolation, Limits, Mode, Network, Policy
    from ringfence.session import (
        DEVNULL,
        PIPE,
        STDOUT,
        CalledProcessError,
        CompletedProcess,
        Process,
        Session,
        TimeoutExpired,
        run,
    )

# The errors, the policy model and the session API are imported on first use:
# ``ringfence run --session`` must not pay for them up front.
_ERROR_NAMES = (
    "ApprovalRefused",
    "InternalError",
    "PolicyError",
    "PublishError",
    "RingfenceError",
    "SandboxError",
    "UnenforceableError",
    "UnsupportedError",
    "UsageError",
)
_POLICY_NAMES = ("EnvPolicy", "Isolation", "Limits", "Mode", "Network", "Policy")
_RESULT_NAMES = ("NetDecision", "RunResult", "Violation")
_AIO_NAMES = ("AsyncProcess", "AsyncSession", "arun")
_SESSION_NAMES = (
    "Session",
    "Process",
    "CompletedProcess",
    "TimeoutExpired",
    "CalledProcessError",
    "PIPE",
    "DEVNULL",
    "STDOUT",
    "run",
)


def __getattr__(name: str) -> object:
    if name in _ERROR_NAMES:
        from ringfence import errors

        return getattr(errors, name)
    if name in _POLICY_NAMES:
        from ringfence.policy import model

        return getattr(model, name)
    if name in _SESSION_NAMES:
        from ringfence import session

        return getattr(session, name)
    if name in _RESULT_NAMES:
        from ringfence.engine import result

        return getattr(result, name)
    if name in _AIO_NAMES:
        from ringfence import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'ringfence' has no attribute {name!r}")


__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "ApprovalRefused",
    "AsyncProcess",
    "AsyncSession",
    "CalledProcessError",
    "CompletedProcess",
    "EnvPolicy",
    "InternalError",
    "Isolation",
    "Limits",
    "Mode",
    "NetDecision",
    "Network",
    "Policy",
    "PolicyError",
    "Process",
    "PublishError",
    "RingfenceError",
    "RunResult",
    "SandboxError",
    "Session",
    "TimeoutExpired",
    "UnenforceableError",
    "UnsupportedError",
    "UsageError",
    "Violation",
    "__version__",
    "arun",
    "run",
]
