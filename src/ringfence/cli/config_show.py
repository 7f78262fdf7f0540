"""``ringfence config show``: the effective policy and where each value came from."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ringfence.cli.flags import resolve_flags
from ringfence.policy.model import Policy


def cmd_config_show(ns: argparse.Namespace) -> int:
    resolved = resolve_flags(ns)
    policy, cwd, settings, ceiling = (
        resolved.policy,
        resolved.cwd,
        resolved.settings,
        resolved.ceiling,
    )
    rows = []
    for f in dataclasses.fields(Policy):
        value = getattr(policy, f.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        elif isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "value"):
            value = value.value
        source = settings.sources.get(f.name, "default")
        if f.name == "workspace":
            source = "flag" if ns.workspace else "current directory"
        if f.name == "network" and policy.network is None:  # what the run will have
            value = policy.effective_network.value
            source = f"default for {policy.mode.value}"
        if (
            ceiling is not None
            and f.name in ("protected", "deny_read")
            and (set(getattr(ceiling, f.name)) & set(getattr(policy, f.name)))
        ):
            source += f" + managed {ceiling.path}"
        rows.append({"key": f.name, "value": value, "source": source})
    for key, value in zip(("approval", "rules"), (resolved.approval, resolved.rules), strict=True):
        rows.append({"key": key, "value": value, "source": settings.sources.get(key, "default")})
    if ns.json:
        out = {"cwd": cwd, "managed": ceiling.path if ceiling else None, "policy": rows}
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
        return 0
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        print(f"{r['key']:<{width}}  {json.dumps(r['value'], default=str)}  ({r['source']})")
    print(f"managed ceiling: {ceiling.path if ceiling else 'none'}")
    return 0
