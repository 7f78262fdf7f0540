"""Whether a command runs, is asked about, or is refused: the approval decision.

Policies (``--approval``):

- ``never-ask``: everything runs, sandboxed; nobody is asked. A ``prompt`` rule cannot be
  asked about, so it refuses.
- ``on-request`` (default): everything runs sandboxed; ``prompt`` rules ask.
- ``untrusted``: only known-safe (read-only) commands and ``allow`` rules run without asking;
  everything else asks.

``forbid`` rules refuse under every policy. A shell line that cannot be parsed into plain
commands (``$(...)``, redirections, loops, ...) is asked about whenever a ``prompt`` or
``forbid`` rule exists, since those rules cannot be checked inside it. The decision covers
every simple command in a shell line (``bash -lc "ls && rm -rf ~"`` is two commands); the
strictest one wins.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ringfence.approval import safe, shell
from ringfence.approval.rules import RuleSet
from ringfence.errors import PolicyError

POLICIES = ("never-ask", "on-request", "untrusted")
RUN, ASK, REFUSE = "run", "ask", "refuse"
_ORDER = (RUN, ASK, REFUSE)


@dataclass(frozen=True)
class Decision:
    action: str  # run | ask | refuse
    reason: str
    rule: str | None = None  # where the deciding rule is ("FILE: rule N"), if one decided
    commands: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    policy: str = "on-request"

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "reason": self.reason,
            "rule": self.rule,
            "policy": self.policy,
            "commands": [list(c) for c in self.commands],
        }


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise PolicyError(f"approval policy {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


def commands_of(argv: Sequence[str]) -> tuple[list[list[str]], str | None]:
    """The simple commands ``argv`` runs (a ``bash -c`` script's commands), and why they
    cannot be listed, if so."""
    script = safe.shell_script(argv)
    if script is None:
        return [list(argv)], None
    try:
        return shell.split(script), None
    except shell.Unjudgeable as e:
        return [list(argv)], f"cannot be judged: {e}"


def decide(
    argv: Sequence[str],
    policy: str = "on-request",
    rules: RuleSet | None = None,
    where: Callable[[str], str | None] | None = None,
) -> Decision:
    """The decision for running ``argv`` (a shell line is ``["bash", "-c", LINE]``).
    ``where(name)``: why a bare program name might not find the system's program (see
    ``lookup.py``); such a command is neither known-safe nor allowed by its name."""
    check_policy(policy)
    if not argv:
        raise PolicyError("no command to decide on")
    commands, unjudged = commands_of(argv)
    ruleset = rules or RuleSet()
    verdicts = [(c, ruleset.verdict(c)) for c in commands]
    listed = tuple(tuple(c) for c in commands)

    def made(action: str, reason: str, rule: str | None = None) -> Decision:
        return Decision(action, reason, rule, listed, policy)

    worst = None
    for cmd, rule in verdicts:
        if rule is not None and (
            worst is None or _strict(rule.decision) > _strict(worst[1].decision)
        ):
            worst = (cmd, rule)
    if worst is not None and worst[1].decision == "forbid":
        return made(REFUSE, f"forbidden: {worst[1].describe()}", worst[1].source)
    if worst is not None and worst[1].decision == "prompt":
        why = f"{shlex.join(worst[0])}: {worst[1].describe()}"
        if policy == "never-ask":
            return made(REFUSE, f"needs approval ({why}), and the approval policy never asks",
                        worst[1].source)  # fmt: skip
        return made(ASK, f"a rule asks: {why}", worst[1].source)
    if unjudged and any(r.decision != "allow" for r in ruleset.rules):
        # The rules cannot be checked inside what cannot be parsed (``$(git push)``).
        why = f"{unjudged}, so the prompt and forbid rules cannot be checked inside it"
        if policy == "never-ask":
            return made(REFUSE, f"{why}; the approval policy never asks")
        return made(ASK, why)
    if policy != "untrusted":
        return made(RUN, f"{policy}: runs sandboxed without asking")
    for cmd, rule in verdicts:
        unsafe = where(cmd[0]) if where is not None else None
        if unsafe is None and rule is not None:  # an allow rule
            continue
        unsafe = unsafe or unjudged or safe.unsafe_reason(cmd)
        if unsafe is not None:
            return made(ASK, f"untrusted: {shlex.join(cmd)} is not known to be safe ({unsafe})")
    allowed = [r.source for _, r in verdicts if r is not None]
    return made(RUN, "untrusted: every command is known-safe or allowed by a rule",
                allowed[0] if allowed else None)  # fmt: skip


def _strict(decision: str) -> int:
    return ("allow", "prompt", "forbid").index(decision)
