"""For ``ringfence doctor``: each layer, whether this host has it, and whether the policy uses it.

Pure: it reads a probe Report and the plan the policy compiles to (or the refusal), so the
answer matches what ``ringfence run`` would really do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.platforms.linux.probe import Report


@dataclass(frozen=True)
class Layer:
    name: str
    available: bool
    used: bool
    note: str


def _ok(report: Report, check: str) -> bool:
    return any(c.name == check and c.ok for c in report.checks)


def layers(report: Report, plan: LinuxPlan | None, refusal: str | None, *, uid: int) -> list[Layer]:
    """Rows for the table; ``plan`` is None when the policy cannot be enforced (``refusal``)."""
    ns_ok = _ok(report, "user namespaces") and _ok(report, "new mount API")
    if plan is None:
        why = refusal or "the policy cannot be enforced here"
        return [Layer("sandbox", False, False, f"refused: {why}")]
    if not plan.sandboxed:
        return [Layer("sandbox", True, False, "full-access: no layer is used")]
    if plan.isolation == "reduced":
        return _reduced_layers(report, plan)
    ll = plan.landlock
    scoped = bool(ll and ll.scoped)
    rows = [
        Layer(
            "namespaces",
            ns_ok,
            True,
            ", ".join(plan.namespaces)
            + ("" if "net" in plan.namespaces else " (network on: the host's network)"),
        ),
        Layer(
            "read-only view",
            ns_ok and _ok(report, "fresh /proc"),
            True,
            f"{len(plan.mounts)} mount steps: read-only root, per-workspace /tmp layer, "
            "private /dev/shm, minimal /dev, fresh /proc, protected and masked paths",
        ),
        Layer(
            "Landlock filesystem",
            ll is not None,
            ll is not None,
            f"ABI {ll.abi}, every right handled" if ll else "missing",
        ),
        Layer(
            "Landlock scopes",
            scoped,
            scoped,
            "signals and abstract unix sockets confined to the sandbox"
            if scoped
            else "needs Landlock ABI 6 (Linux 6.12)",
        ),
        Layer(
            "seccomp hardening",
            plan.seccomp is not None,
            plan.seccomp is not None,
            "denied calls fail with EPERM; foreign architectures are killed",
        ),
        Layer(
            "name guard",
            _ok(report, "seccomp user notification (name guard)"),
            plan.guard_enabled,
            "protected names at any depth under writable roots"
            if plan.guard_enabled
            else "off: no protected names or paths in this policy",
        ),
        Layer(
            "network proxy",
            ns_ok,
            plan.proxy_port is not None,
            f"the only way out: 127.0.0.1:{plan.proxy_port}, {len(plan.allow_domains)} allowed "
            f"and {len(plan.deny_domains)} denied names"
            if plan.proxy_port is not None
            else f"not used (network {plan.network})",
        ),
        _process_layer(plan, uid),
        _memory_layer(plan),
        Layer(
            "reduced isolation",
            ll is not None and plan.seccomp is not None,
            False,
            "opt-in (--isolation reduced) for hosts without user namespaces; protects less",
        ),
    ]
    return rows


def _process_layer(plan: LinuxPlan, uid: int) -> Layer:
    nproc = dict(plan.rlimits).get("NPROC")
    cg = dict(plan.cgroup_limits).get("pids")
    has_cg = any(c == "pids" for c, _, _ in plan.cgroup_sites)
    if cg is not None:
        return Layer("process limit", True, True, f"pids cgroup: at most {cg} processes")
    if nproc is None:
        return Layer("process limit", has_cg, False, "lifted by the policy")
    if uid == 0:
        return Layer(
            "process limit",
            False,
            False,
            f"not binding: the kernel exempts root from RLIMIT_NPROC and there is no pids "
            f"cgroup ({plan.cgroup_note})",
        )
    return Layer("process limit", True, True, f"RLIMIT_NPROC={nproc} inside the user namespace")


def _memory_layer(plan: LinuxPlan) -> Layer:
    limit = dict(plan.cgroup_limits).get("memory")
    has_cg = any(c == "memory" for c, _, _ in plan.cgroup_sites)
    if limit is not None:
        return Layer("memory limit", True, True, f"memory cgroup: {limit // (1 << 20)} MiB")
    if has_cg:
        return Layer("memory limit", True, False, "not set (--limit memory=2g)")
    return Layer("memory limit", False, False, f"no writable memory cgroup: {plan.cgroup_note}")


def _reduced_layers(report: Report, plan: LinuxPlan) -> list[Layer]:
    ll = plan.landlock
    rows = [
        Layer("reduced isolation", True, True, "Landlock + seccomp + process rules, opted in"),
        _memory_layer(plan),
        Layer("namespaces", _ok(report, "user namespaces"), False, "not used in reduced mode"),
        Layer(
            "Landlock filesystem",
            ll is not None,
            ll is not None,
            "writes only in writable roots and a private TMPDIR",
        ),
        Layer(
            "Landlock network",
            bool(ll and ll.handled_net),
            bool(ll and ll.handled_net),
            "TCP bind/connect refused (network off)" if ll and ll.handled_net else "not used",
        ),
        Layer(
            "Landlock scopes",
            bool(ll and ll.scoped),
            bool(ll and ll.scoped),
            "signals and abstract sockets confined" if ll and ll.scoped else "needs ABI 6",
        ),
        Layer(
            "seccomp hardening",
            plan.seccomp is not None,
            plan.seccomp is not None,
            "inet sockets allowed"
            if plan.seccomp and plan.seccomp.allow_inet
            else "inet sockets refused",
        ),
    ]
    rows.extend(Layer("gap", False, False, note) for note in plan.notes if "NOT" in note)
    return rows


def render(rows: list[Layer]) -> str:
    lines = ["layers for this policy:"]
    for r in rows:
        avail = "available" if r.available else "missing  "
        used = "used    " if r.used else "not used"
        lines.append(f"  {r.name:<20} {avail}  {used}  {r.note}")
    return "\n".join(lines)
