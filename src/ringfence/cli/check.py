"""``ringfence check``: what the approval gate would say of a command, without running it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ringfence.approval.decide import ASK, RUN
from ringfence.approval.rules import RuleSet
from ringfence.cli.flags import command_of
from ringfence.engine import resolve
from ringfence.engine.approval import ApprovalGate
from ringfence.policy import config


def cmd_check(ns: argparse.Namespace) -> int:
    """Print the approval decision for a command; exit 0 (run), 1 (ask) or 77 (refuse)."""
    argv = command_of(ns, required=True)
    settings = config.Settings()  # the user's file and the managed floor, as for run
    config.load_user(settings, os.environ, None)
    approval = resolve.approval_floor(ns.approval or settings.values.get("approval"))
    rules = ns.rules or settings.values.get("rules")
    # The gate run would build; with neither an approval policy nor a rules file run has none,
    # and check shows what the default policy alone would say (no rules file is read).
    gate = ApprovalGate.build(approval or "on-request", rules if approval or rules else RuleSet())
    assert gate is not None
    d = gate.decide(argv)
    if ns.json:
        json.dump(d.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(f"{d.action}: {d.reason}")
        if d.rule:
            print(f"rule: {d.rule}")
        for c in d.commands:
            print(f"command: {' '.join(c)}")
    return {RUN: 0, ASK: 1}.get(d.action, 77)
