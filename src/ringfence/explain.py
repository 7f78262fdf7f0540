"""Render a plan as text a person can check: what is writable, protected, hidden, and why."""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Sequence

from ringfence.platforms.linux import landlock, seccomp
from ringfence.platforms.linux.mountops import MountKind
from ringfence.platforms.linux.plan_model import LinuxPlan


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=96, initial_indent=indent, subsequent_indent=indent)


def _cgroup_lines(plan: LinuxPlan) -> list[str]:
    where = {c: (v, p) for c, v, p in plan.cgroup_sites}
    out = []
    for controller, limit in plan.cgroup_limits:
        version, parent = where[controller]
        shown = f"{limit // (1 << 20)} MiB" if controller == "memory" else str(limit)
        out.append(f"  {controller}: {shown}, in a new cgroup (v{version}) under {parent}")
    if out:
        out.insert(0, "cgroup limits, for the whole sandbox:")
    else:
        out.append("cgroup limits: none" + (f" ({plan.cgroup_note})" if plan.cgroup_note else ""))
    return ["", *out]


def render(plan: LinuxPlan, argv: Sequence[str] = ()) -> str:
    lines: list[str] = []
    if argv:
        lines.append(f"command:    {shlex.join(argv)}")
    lines.append(f"mode:       {plan.mode}")
    lines.append(f"network:    {plan.network}")
    lines.append(f"cwd:        {plan.cwd}")
    if not plan.sandboxed:
        lines.extend(f"note:       {n}" for n in plan.notes)
        return "\n".join(lines)
    lines.append(f"isolation:  {plan.isolation}")
    lines.append(f"namespaces: {', '.join(plan.namespaces) or '(none)'}")
    if plan.mounts:
        lines.append("")
        lines.append("mounts, in the order they are made:")
    for op in plan.mounts:
        what: str = op.kind
        if op.kind is MountKind.BIND:
            what = "bind ro" if op.readonly else "bind rw"
        elif op.kind is MountKind.FILE:
            what = "file ro"
        why = f"{op.why} -> {op.source}" if op.kind is MountKind.SYMLINK else op.why
        lines.append(f"  {what:<10} {op.target:<40} {why}")
    if plan.landlock is not None:
        lines.append("")
        lines.append(
            f"Landlock ABI {plan.landlock.abi}, handling: "
            + " ".join(landlock.access_names(plan.landlock.handled_fs))
        )
        for rule in plan.landlock.rules:
            lines.append(f"  {rule.path:<40} {' '.join(landlock.access_names(rule.access))}")
    if plan.rlimits or plan.userns_limits:
        lines.append("")
        lines.append(
            "limits: "
            + (", ".join(f"RLIMIT_{n}={v}" for n, v in plan.rlimits) or "none beyond the caller's")
        )
        lines.extend(
            _wrap(
                "in the sandbox's user namespace: "
                + ", ".join(f"{n}={v}" for n, v in plan.userns_limits),
                "  ",
            )
        )
    lines.extend(_cgroup_lines(plan))
    if plan.seccomp is not None:
        lines.append("")
        nets = "unix, tcp/udp, netlink route"
        if "net" in plan.namespaces:
            nets += " (inside the sandbox's own, empty network namespace)"
        if not plan.seccomp.allow_inet:
            nets = "unix only"
        lines.append(f"seccomp: {len(seccomp.DENIED)} system calls denied (EPERM):")
        lines.extend(_wrap(" ".join(name for name, _ in seccomp.DENIED), "    "))
        lines.append(
            "  also denied: new namespaces (unshare/clone flags, setns), clone3 (ENOSYS), "
            "TIOCSTI/TIOCLINUX, personality changes, foreign architectures (killed)"
        )
        lines.append(f"  socket families allowed: {nets}")
    lines.append("")
    state = "on" if plan.guard_enabled else "off"
    if plan.guard_enabled and not (plan.guard_names or plan.guard_paths or plan.guard_git != "off"):
        # the filter sends it socket calls alone: opens, links and metadata go to the kernel
        state = (
            "on, for unix sockets only (no protected names; writes through hard links unchecked)"
        )
    lines.append(f"name guard (seccomp user notification): {state}")
    if plan.guard_names:
        lines.append("  protected names, at any depth under a writable root:")
        lines.extend(_wrap(" ".join(plan.guard_names), "    "))
    if plan.guard_paths:
        lines.append("  protected paths: " + " ".join(plan.guard_paths))
    if plan.guard_git == "allowlist":
        lines.append("  git directories (any with HEAD + objects/ + refs/):")
        lines.extend(
            _wrap(
                "only git's own data is writable; config and .gitmodules change by checked keys; "
                "hooks and info/ are read-only; pointer files are checked at the end",
                "    ",
            )
        )
    elif plan.guard_git == "strict":
        lines.append("  git directories: read-only (strict_git)")
    if plan.guard_git_roots:
        lines.append("  git directories writable for git only: " + " ".join(plan.guard_git_roots))
    if plan.guard_git_private_roots:
        lines.append(
            "  git directories in the private /tmp (its layer lasts on the host): governed too"
        )
    if plan.guard_hooks_dirs:
        lines.append("  core.hooksPath directories: " + " ".join(plan.guard_hooks_dirs))
    if plan.socket_roots:
        lines.append("  unix sockets on disk (connect, and sends with an address):")
        lines.extend(
            _wrap(
                "reachable only beneath "
                + " ".join(plan.socket_roots)
                + (" and at " + " ".join(plan.allow_sockets) if plan.allow_sockets else "")
                + "; any other is refused (EACCES); allow one with --allow-socket PATH",
                "    ",
            )
        )
    if plan.scrubbed_env:
        lines.append("")
        lines.append("environment variables removed: " + " ".join(plan.scrubbed_env))
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
