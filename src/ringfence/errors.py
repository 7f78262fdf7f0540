"""The one exception tree of ringfence.

Each class names the situation the user is in, so a caller can catch exactly the case it can
handle: a bad policy is the caller's to fix, an unsupported kernel is the host's, and a sandbox
failure is ours to report::

    RingfenceError                  catch-all for what ringfence raises on purpose
    ├── PolicyError (ValueError)    the policy, flags or config are invalid; nothing ran (exit 2)
    │   ├── UsageError              the command line is malformed
    │   ├── ConfigError             a config, project or managed file is wrong (policy.config)
    │   └── RulesError              an approval rules file is wrong (approval.rules)
    ├── UnsupportedError            this host cannot enforce what the policy asks (exit 125)
    │   └── UnenforceableError      this platform's backend has no way to enforce a setting
    ├── SandboxError                building the sandbox or running in it failed (exit 125)
    │   ├── PublishError            a host port to publish on cannot be had (in use, privileged)
    │   └── InternalError           a bug of ringfence's own: please report it
    └── ApprovalRefused             the approval step refused the command; nothing ran (exit 77)
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


class UnenforceableError(UnsupportedError):
    """The platform's backend has no way to enforce ``setting``, so its compiler refuses the
    policy rather than run with less (a library caller gets the same refusal as the CLI)."""

    def __init__(self, setting: str, platform: str, why: str = "") -> None:
        self.setting = setting
        self.platform = platform
        super().__init__(
            f"{setting} is not available on {platform} yet" + (f": {why}" if why else "")
        )


class SandboxError(RingfenceError):
    """Building the sandbox or running the command inside it failed for a reason of ours."""


class PublishError(SandboxError):
    """A host port that ``--publish`` asks for cannot be listened on (another program has it,
    or it is below 1024); the sandbox was not built and nothing ran. It is the host's state,
    not a bad policy: the same policy runs once the port is free (exit 125, as a container
    whose port is taken). ``host_port`` is the port, so a caller can pick another."""

    def __init__(self, message: str, host_port: int = 0) -> None:
        self.host_port = host_port
        super().__init__(message)


class InternalError(SandboxError):
    """An invariant of ringfence's own broke (a plan that should not exist, a message that
    should not arrive): a bug to report, never the user's doing."""


class ApprovalRefused(RingfenceError):
    """The approval policy, a rule or the person asked refused the command; nothing ran.

    ``decision`` (a :class:`ringfence.approval.decide.Decision`) says what decided and why.
    """

    def __init__(self, decision: object) -> None:
        self.decision = decision
        reason = getattr(decision, "reason", str(decision))
        super().__init__(f"refused: {reason}")


def cli_outcome(e: RingfenceError) -> tuple[str, int]:
    """The line the ``ringfence`` command prints for ``e`` and its exit status (the tree
    above): one mapping for every front end of the command (the CLI, a cached one-shot run)."""
    if isinstance(e, UnsupportedError):
        return f"ringfence: cannot enforce the policy: {e}", 125
    if isinstance(e, PolicyError):
        return f"ringfence: {e}", 2
    return f"ringfence: {e}", 125
