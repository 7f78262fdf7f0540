"""Escalation that narrows: from what the boundary refused to the smallest widening that would
have allowed it.

A command that fails at the boundary gets, with its violations, a list of widenings: "make
this one directory writable", "allow this host and port". The host can show them, ask, and run
the command again with exactly that widening (:func:`widen`). Nothing here ever proposes
full access, switching the network on, or lifting a protected path: protected paths and deny
rules are the user's decisions, and running without a sandbox is never the next step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ringfence.errors import PolicyError
from ringfence.platforms.linux.guard_rules import SOCKET_OUTSIDE
from ringfence.platforms.linux.plan import LinuxPlan
from ringfence.policy.model import Network, Policy

OUTSIDE = "outside writable roots"
NOT_LISTED = "not in the allowlist"  # the proxy's rule for a host no entry covers


def relabel(plan: LinuxPlan, violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name the deny-read rule for refused writes under a deny-read path: the guard only sees
    that the kernel refused the call; the plan knows the path was masked on purpose."""
    masked = [
        (m.target, m.why.removeprefix("deny-read: "))
        for m in plan.mounts
        if m.kind == "mask" and m.why.startswith("deny-read")
    ]
    out = []
    for v in violations:
        labelled = v
        if v.get("kind") == "filesystem":
            path = str(v.get("path", ""))
            for target, shown in masked:
                if path == target or path.startswith(target.rstrip("/") + "/"):
                    labelled = {**v, "rule": f"deny_read: {shown}"}
                    break
        out.append(labelled)
    return out


def widenings(plan: LinuxPlan, violations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The smallest widenings that would have allowed ``violations`` under ``plan``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for v in violations:
        if v.get("kind") == "filesystem" and v.get("rule") == OUTSIDE:
            root = smallest_root(str(v["path"]))
            if root is not None and plan.mode == "workspace-write" and not _too_wide(plan, root):
                out.setdefault(
                    ("writable_root", root),
                    {"kind": "writable_root", "path": root, "flag": f"--writable {root}",
                     "because": f"{v['op']} {v['path']}"},
                )  # fmt: skip
        elif v.get("kind") == "filesystem" and v.get("rule") == SOCKET_OUTSIDE:
            # One socket, where it really is: the narrowest grant there is (a directory of
            # sockets is never proposed).
            sock = str(v["path"])
            out.setdefault(
                ("allow_socket", sock),
                {"kind": "allow_socket", "path": sock, "flag": f"--allow-socket {sock}",
                 "because": f"{v['op']} {sock}"},
            )  # fmt: skip
        elif v.get("kind") == "network" and str(v.get("rule", "")).startswith(NOT_LISTED):
            entry = f"{v['host']}:{v['port']}"
            out.setdefault(
                ("allow_domain", entry),
                {"kind": "allow_domain", "entry": entry, "flag": f"--allow-domain {entry}",
                 "because": f"connect {entry}"},
            )  # fmt: skip
    return list(out.values())


def _too_wide(plan: LinuxPlan, root: str) -> bool:
    """Never suggest the home directory, or a directory holding a writable root (the
    workspace's parent, ``/home``): either would open far more than the one refused write, and
    the home directory holds what runs later with full rights (rc files, autostart, hooks)."""
    home = plan.env.get("HOME") or os.environ.get("HOME")
    if home and os.path.normpath(home) == root:
        return True
    return any(r == root or r.startswith(root.rstrip("/") + "/") for r in plan.guard_roots)


def smallest_root(path: str) -> str | None:
    """The directory that, made writable, allows a write to ``path``: the nearest existing
    directory at or above it (the file's own directory when it exists). None for ``/``."""
    cur = os.path.dirname(os.path.normpath(path)) if not os.path.isdir(path) else path
    while cur not in ("", "/") and not os.path.isdir(cur):
        cur = os.path.dirname(cur)
    return None if cur in ("", "/") else cur


def widen(policy: Policy, chosen: Iterable[Mapping[str, Any]]) -> Policy:
    """``policy`` with exactly the ``chosen`` widenings added (and validated again)."""
    roots = list(policy.writable_roots)
    domains = list(policy.allow_domains)
    sockets = list(policy.allow_sockets)
    for w in chosen:
        if w.get("kind") == "writable_root":
            if w["path"] not in roots:
                roots.append(str(w["path"]))
        elif w.get("kind") == "allow_socket":
            if w["path"] not in sockets:
                sockets.append(str(w["path"]))
        elif w.get("kind") == "allow_domain":
            if policy.effective_network is not Network.ALLOWLIST:
                raise PolicyError("an allow_domain widening needs --network allowlist")
            if w["entry"] not in domains:
                domains.append(str(w["entry"]))
        else:
            raise PolicyError(f"not a widening ringfence knows: {dict(w)!r}")
    return dataclasses.replace(
        policy,
        writable_roots=tuple(roots),
        allow_domains=tuple(domains),
        allow_sockets=tuple(sockets),
    ).validate()


@dataclasses.dataclass(frozen=True)
class WideningRequest:
    """What an approver is asked under ``on-request``: run again with exactly these."""

    widenings: tuple[dict[str, Any], ...]
    argv: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        flags = " ".join(str(w["flag"]) for w in self.widenings)
        causes = "; ".join(str(w["because"]) for w in self.widenings)
        return f"the command was refused ({causes}); run it again with {flags}?"


def ask_to_widen(
    policy: Policy,
    widenings: Iterable[Mapping[str, Any]],
    approver: Any,
    argv: Iterable[str] = (),
) -> Policy | None:
    """The ``on-request`` step: ask ``approver(WideningRequest)`` whether to run again with
    exactly ``widenings``; the widened policy if it said yes, None otherwise (or if there is
    nothing to widen). Never anything wider than what was asked."""
    chosen = tuple(dict(w) for w in widenings)
    if not chosen:
        return None
    if not approver(WideningRequest(chosen, tuple(argv))):
        return None
    return widen(policy, chosen)
