"""ringfence: run an AI coding agent's commands inside boundaries the kernel enforces."""

from __future__ import annotations

from ringfence.errors import (
    PolicyError,
    RingfenceError,
    SandboxError,
    UnsupportedError,
    UsageError,
)
from ringfence.policy.model import EnvPolicy, Mode, Network, Policy

__version__ = "0.1.0"

# The session API is imported on first use: ``ringfence run`` must not pay for it up front.
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
    if name in _SESSION_NAMES:
        from ringfence import session

        return getattr(session, name)
    raise AttributeError(f"module 'ringfence' has no attribute {name!r}")


__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
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
