"""Prefix rules: ``allow``, ``prompt`` or ``forbid`` commands that start with given words.

A rules file (TOML, default ``$XDG_CONFIG_HOME/ringfence/rules.toml``)::

    [[rule]]
    prefix = ["git", ["push", "pull"]]   # each element: a word, or a list of alternatives
    decision = "prompt"                  # allow | prompt | forbid
    why = "talks to the remote"
    match = ["git push origin main", ["git", "pull"]]   # must match (checked at load)
    not_match = ["git status"]                          # must not match (checked at load)

A ``prompt`` or ``forbid`` rule also matches the equivalent spellings of its prefix: options
as a set (``rm -fr``, ``rm -r -f``, ``rm --recursive --force`` for ``rm -rf``), the command by
its name (``/bin/rm``), git's global options skipped (``git -C . push``); see forms.py. An
``allow`` rule matches only as written.

Where several rules match, the strictest wins (forbid > prompt > allow). Every rule's examples
are checked when the file loads, so a rule that does not say what its author meant is an
error, not a silent gap. The workspace's own ``.ringfence.toml`` cannot add rules: it comes
with the repository and is not trusted to approve anything.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringfence.approval import forms
from ringfence.errors import PolicyError

DECISIONS = ("allow", "prompt", "forbid")  # in order of strictness
_KEYS = {"prefix", "decision", "why", "match", "not_match"}


class RulesError(PolicyError):
    """The rules file is malformed or a rule's examples contradict it; nothing was run."""


@dataclass(frozen=True)
class Rule:
    prefix: tuple[frozenset[str], ...]
    decision: str
    why: str = ""
    source: str = ""  # "FILE: rule N", for messages and the audit log

    def matches(self, argv: Sequence[str]) -> bool:
        """As written; and, for a rule that refuses or asks, in any equivalent spelling
        (``rm -fr`` for ``rm -rf``, ``git -C . push`` for ``git push``: see forms.py). An
        allow rule matches only as written: an equivalent spelling may carry more."""
        if len(argv) >= len(self.prefix) and all(
            word in allowed for word, allowed in zip(argv, self.prefix, strict=False)
        ):
            return True
        return self.decision != "allow" and forms.prefix_matches(self.prefix, argv)

    def describe(self) -> str:
        words = [
            next(iter(a)) if len(a) == 1 else "{" + "|".join(sorted(a)) + "}" for a in self.prefix
        ]
        return f"{self.decision} {' '.join(words)}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    path: str | None = None

    def verdict(self, argv: Sequence[str]) -> Rule | None:
        """The strictest rule matching ``argv``, or None."""
        found = [r for r in self.rules if r.matches(argv)]
        if not found:
            return None
        return max(found, key=lambda r: DECISIONS.index(r.decision))


def default_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/"), ".config")
    return Path(base) / "ringfence" / "rules.toml"


def load(path: str | os.PathLike[str] | None = None, *, required: bool = False) -> RuleSet:
    """The rules in ``path`` (default: the user's rules file, if there is one)."""
    p = Path(path) if path is not None else default_path()
    try:
        text = p.read_text()
    except FileNotFoundError:
        if required or path is not None:
            raise RulesError(f"{p}: no such rules file") from None
        return RuleSet()
    except OSError as e:
        raise RulesError(f"{p}: cannot read: {e.strerror}") from None
    return parse(text, str(p))


def parse(text: str, source: str = "<rules>") -> RuleSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{source}: {e}") from None
    extra = set(data) - {"rule"}
    if extra:
        raise RulesError(f"{source}: unknown table or key {sorted(extra)[0]!r} (only [[rule]])")
    raw = data.get("rule", [])
    if not isinstance(raw, list):
        raise RulesError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    return RuleSet(tuple(_rule(r, f"{source}: rule {i}") for i, r in enumerate(raw, 1)), source)


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    prefix = raw.get("prefix")
    if not isinstance(prefix, list) or not prefix:
        raise RulesError(f"{where}: prefix must be a non-empty list of words")
    words: list[frozenset[str]] = []
    for w in prefix:
        alts = w if isinstance(w, list) else [w]
        if not alts or not all(isinstance(a, str) and a for a in alts):
            raise RulesError(f"{where}: prefix elements are words or non-empty lists of words")
        words.append(frozenset(alts))
    decision = raw.get("decision")
    if decision not in DECISIONS:
        raise RulesError(f"{where}: decision must be one of {', '.join(DECISIONS)}")
    why = raw.get("why", "")
    if not isinstance(why, str):
        raise RulesError(f"{where}: why must be a string")
    rule = Rule(tuple(words), decision, why, where)
    for key, expected in (("match", True), ("not_match", False)):
        examples = raw.get(key, [])
        if not isinstance(examples, list):
            raise RulesError(f"{where}: {key} must be a list of examples")
        for ex in examples:
            argv = _example(ex, where, key)
            if rule.matches(argv) is not expected:
                verb = "does not match" if expected else "matches"
                raise RulesError(
                    f"{where}: the example {shlex.join(argv)!r} in {key} {verb} the rule "
                    f"({rule.describe()}); fix the prefix or the example"
                )
    return rule


def _example(ex: Any, where: str, key: str) -> list[str]:
    if isinstance(ex, str):
        try:
            argv = shlex.split(ex)
        except ValueError as e:
            raise RulesError(f"{where}: {key} example {ex!r}: {e}") from None
    elif isinstance(ex, list) and all(isinstance(a, str) for a in ex):
        argv = list(ex)
    else:
        raise RulesError(f"{where}: {key} examples are strings or lists of words")
    if not argv:
        raise RulesError(f"{where}: an empty {key} example")
    return argv
