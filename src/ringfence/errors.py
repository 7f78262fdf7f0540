"""The one exception tree of ringfence.

Each class names the situation the user is in, so a caller can catch exactly the case it can
handle: a bad policy is the caller's to fix, an unsupported kernel is the host's, and a sandbox
failure is ours to report.
"""

from __future__ import annotations


class RingfenceError(Exception):
    """Base of every error ringfence raises on purpose."""


class PolicyError(RingfenceError, ValueError):
    """The policy (flags, config or API arguments) is invalid; nothing was run.

    The message names the offending value and what would be accepted instead.
    """


class UsageError(PolicyError):
    """The command line is malformed (unknown flag, missing command); nothing was run."""


class UnsupportedError(RingfenceError):
    """The kernel cannot enforce a layer the policy needs, so ringfence refuses to run.

    ringfence fails closed: it never runs a command with less confinement than asked for.
    The message names the missing layer and what the user can do about it.
    """


class SandboxError(RingfenceError):
    """Building the sandbox or running the command inside it failed for a reason of ours."""


class ApprovalRefused(RingfenceError):
    """The approval policy, a rule or the person asked refused the command; nothing ran.

    ``decision`` (a :class:`ringfence.approval.decide.Decision`) says what decided and why.
    """

    def __init__(self, decision: object) -> None:
        self.decision = decision
        reason = getattr(decision, "reason", str(decision))
        super().__init__(f"refused: {reason}")
