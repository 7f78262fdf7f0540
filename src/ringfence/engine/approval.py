"""The approval gate: whether a command may run, decided in one place for every front end.

``--approval`` (or the API's ``approval=``) chooses a policy; rules files add per-command
verdicts; the managed ceiling may raise the policy (never lower it). A command the policy
would ask about goes to an approver (the person at the terminal, the MCP client's elicitation,
a callback); with no one to ask it is refused. The refusal text is made here, once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the approval modules are imported only when a gate exists: a plain
    # ``ringfence run`` must not pay for the rules parser
    from ringfence.approval.decide import Decision
    from ringfence.approval.rules import RuleSet
    from ringfence.engine.result import RunResult

Approver = Callable[["Decision"], "bool | None"]
Where = Callable[[str], "str | None"]  # why a bare program name may not be the system's


def where_of(plan: Any, env: Mapping[str, str] | None = None) -> Where:
    """For a command of ``plan`` run with ``env`` (None: the plan's own): whether its
    ``PATH`` may find a program a command put there (``approval/lookup.py``), in the places
    the plan lets commands write (``writable_places``)."""
    from ringfence.approval import lookup

    places = getattr(plan, "writable_places", None)
    writable = places() if callable(places) else ()
    path_var = (plan.env if env is None else env).get("PATH")
    return lookup.checker(path_var, writable)


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: ``granted`` or not, the decision behind it (its reason says who
    declined, or that no one could be asked), and the audit record of who allowed it."""

    granted: bool
    decision: Decision
    record: dict[str, Any]

    @property
    def message(self) -> str:
        return f"refused: {self.decision.reason}"


@dataclass
class ApprovalGate:
    policy: str
    rules: RuleSet
    approver: Approver | None = None

    @classmethod
    def build(
        cls,
        policy: str | None,
        rules: RuleSet | str | os.PathLike[str] | None = None,
        approver: Approver | None = None,
    ) -> ApprovalGate | None:
        """The gate for ``policy`` and ``rules`` (a RuleSet, a rules file, or None for the
        user's own rules file); None when neither asks for an approval step. A rules file
        alone means the default policy, on-request."""
        if policy is None and rules is None:
            return None
        from ringfence.approval import decide as decide_mod
        from ringfence.approval import rules as rules_mod

        checked = decide_mod.check_policy(policy or "on-request")
        if not isinstance(rules, rules_mod.RuleSet):
            path = os.path.expanduser(os.fspath(rules)) if rules is not None else None
            rules = rules_mod.load(path)
        return cls(checked, rules, approver)

    def decide(self, argv: Sequence[str], where: Where | None = None) -> Decision:
        """What the policy and rules say of ``argv``, without asking anyone. ``where``: see
        :func:`where_of` (without it a bare name is judged by its name alone)."""
        from ringfence.approval.decide import decide

        return decide(list(argv), self.policy, self.rules, where)

    def check(self, argv: Sequence[str], where: Where | None = None) -> Verdict:
        """Decide, and ask the approver when the decision is to ask."""
        from ringfence.approval.decide import ASK, RUN

        d = self.decide(argv, where)
        by = "policy" if d.rule is None else "rule"
        ok = d.action == RUN
        if d.action == ASK:
            answer = self.approver(d) if self.approver is not None else None
            ok = bool(answer)
            if answer is None:  # no approver, or it could not ask anyone
                by = "nobody (no one to ask)"
                d = dataclasses.replace(d, reason=f"{d.reason}; there is no one to ask")
            else:
                by = "approver"
                if not ok:
                    d = dataclasses.replace(d, reason=f"declined when asked: {d.reason}")
        record = {"policy": self.policy, "action": d.action, "by": by, "rule": d.rule,
                  "granted": ok}  # fmt: skip
        return Verdict(ok, d, record)


# What a git that runs without asking (``untrusted``: its subcommand is read-only) must not
# take from a repository it discovers: a bare repository's layout can be committed as plain
# files (``embedded/{HEAD,config,objects,refs}``), and ``git -C embedded status`` would run
# its config's ``core.fsmonitor`` (or pager, external diff, textconv). Only a repository that
# is named explicitly is used then; the workspace's own ``.git/config`` is checked already.
READ_ONLY_GIT = (("safe.bareRepository", "explicit"), ("core.fsmonitor", "false"))


def read_only_git_env(decision: Decision, env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` with :data:`READ_ONLY_GIT` added (``GIT_CONFIG_COUNT``, after any the caller
    set) when ``decision`` runs a git command without anyone having been asked; else None."""
    from ringfence.approval.decide import RUN

    if decision.action != RUN or decision.policy != "untrusted" or decision.rule is not None:
        return None
    if not any(c and os.path.basename(c[0]) == "git" for c in decision.commands):
        return None
    out = dict(env)
    try:
        start = int(out.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        start = 0
    for i, (key, value) in enumerate(READ_ONLY_GIT, start):
        out[f"GIT_CONFIG_KEY_{i}"] = key
        out[f"GIT_CONFIG_VALUE_{i}"] = value
    out["GIT_CONFIG_COUNT"] = str(start + len(READ_ONLY_GIT))
    return out


def gate_or_refusal(
    gate: ApprovalGate | None, argv: Sequence[str]
) -> tuple[dict[str, Any] | None, RunResult | None]:
    """For a backend that runs the command itself (no Session takes the step): the audit
    record of who allowed ``argv``, or the result of its refusal (exit 77, nothing ran)."""
    from ringfence.display import printable
    from ringfence.engine.result import APPROVAL_REFUSED, EXIT_REFUSED, RunResult

    if gate is None:
        return None, None
    verdict = gate.check(argv)
    if verdict.granted:
        return verdict.record, None
    refused = RunResult(
        EXIT_REFUSED,
        message=printable(verdict.message),
        error_kind=APPROVAL_REFUSED,
        approval=verdict.record,
    )
    return verdict.record, refused
