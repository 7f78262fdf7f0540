"""A WindowsPlan as text a person can check: who runs the command, which ACEs go where."""

from __future__ import annotations

from ringfence.platforms.windows.plan import WindowsInstall, WindowsPlan


def render(plan: WindowsPlan, install: WindowsInstall) -> str:
    names = {
        install.capability_sid: "capability",
        install.offline_sid: install.offline_user,
        install.online_sid: install.online_user,
    }
    lines = [f"network:    {plan.network}"]
    if not plan.sandboxed:
        lines += [f"note:       {n}" for n in plan.notes]
        return "\n".join(lines)
    lines += [
        f"user:       {plan.user} ({plan.user_sid})",
        "token:      write-restricted; restricting SIDs: "
        + ", ".join(f"{s} ({names.get(s, '?')})" for s in plan.restricting_sids)
        + " and the logon SID",
        f"writable:   {', '.join(plan.writable)}",
        f"read:       {', '.join(plan.read_roots) or '(the system, as any local user)'}",
    ]
    if plan.proxy_port is not None:
        lines.append(f"proxy:      127.0.0.1:{plan.proxy_port}")
    lines += ["", "ACEs (explicit ones outrank inherited ones; deny outranks allow):"]
    grouped: dict[tuple[str, bool, str, bool], list[str]] = {}
    for ace in plan.aces:
        grouped.setdefault((ace.path, ace.deny, ace.rights, ace.inherit), []).append(
            names.get(ace.sid, ace.sid)
        )
    for (path, deny, rights, inherit), who in grouped.items():
        scope = "tree" if inherit else "this"
        lines.append(
            f"  {'deny ' if deny else 'allow'} {rights:<12} {scope:<4} {path}  ({', '.join(who)})"
        )
    if plan.firewall:
        lines += ["", f"firewall, outbound blocks for {install.offline_user}:"]
        for rule in plan.firewall:
            ports = f" ports {rule.remote_ports}" if rule.remote_ports else ""
            lines.append(f"  {rule.protocol:<3} to {rule.remote_addresses}{ports}")
    if plan.protected_names:
        lines += ["", "protected names (existing matches get deny ACEs):"]
        lines.append("  " + " ".join(plan.protected_names))
    if plan.unenforced:
        lines += ["", "not enforced:"]
        lines += [f"  {u}" for u in plan.unenforced]
    lines += ["", *(f"note: {n}" for n in plan.notes)]
    return "\n".join(lines)
