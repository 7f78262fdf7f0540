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

__all__ = [
    "EnvPolicy",
    "Mode",
    "Network",
    "Policy",
    "PolicyError",
    "RingfenceError",
    "SandboxError",
    "UnsupportedError",
    "UsageError",
    "__version__",
]
