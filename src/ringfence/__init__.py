"""ringfence: run an AI coding agent's commands inside boundaries the kernel enforces."""

from __future__ import annotations

from ringfence.errors import (
    ApprovalRefused,
    PolicyError,
    RingfenceError,
    SandboxError,
    UnsupportedError,
    UsageError,
)

TYPE_CHECKING = False  # not `typing`: it costs the fast path ~10 ms; mypy knows the name

if TYPE_CHECKING:
    from ringfence.policy.model import EnvPolicy, Mode, Network, Policy
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

__version__ = "0.1.0"

# The policy model and the session API are imported on first use: ``ringfence run --session``
# must not pay for them up front.
_POLICY_NAMES = ("EnvPolicy", "Mode", "Network", "Policy")
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
    if name in _POLICY_NAMES:
        from ringfence.policy import model

        return getattr(model, name)
    if name in _SESSION_NAMES:
        from ringfence import session

        return getattr(session, name)
    raise AttributeError(f"module 'ringfence' has no attribute {name!r}")


__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "ApprovalRefused",
    "CalledProcessError",
    "CompletedProcess",
    "EnvPolicy",
    "Mode",
    "Network",
    "Policy",
    "PolicyError",
    "Process",
    "RingfenceError",
    "SandboxError",
    "Session",
    "TimeoutExpired",
    "UnsupportedError",
    "UsageError",
    "__version__",
    "run",
]
