"""``ringfence doctor``: what this kernel can enforce, and whether this policy runs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ringfence.cli.flags import resolve_flags
from ringfence.engine import backends
from ringfence.errors import PolicyError, UnsupportedError


def cmd_doctor(ns: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ringfence.platforms.linux import layers, probe

    report = probe.probe()
    plan, refusal = None, None
    try:
        resolved = resolve_flags(ns)
        policy, cwd = resolved.policy, resolved.cwd
        plan = backends.linux_plan(policy, cwd)
    except (UnsupportedError, PolicyError) as e:
        refusal = str(e)  # doctor reports the host even where this policy cannot run
    rows = layers.layers(report, plan, refusal, uid=os.getuid())
    if ns.json:
        out = report.to_dict()
        out["layers"] = [asdict(r) for r in rows]
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(probe.render(report))
        print()
        print(layers.render(rows))
    return 0 if report.default_policy_ok else 1
