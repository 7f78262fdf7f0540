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
import pwd
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ringfence.display import printable
from ringfence.errors import PolicyError
from ringfence.network import offline
from ringfence.platforms.linux.guard_rules import SOCKET_OUTSIDE
from ringfence.platforms.linux.mountops import MountKind
from ringfence.policy import defaults, semantics
from ringfence.policy.model import Mode, Network, Policy

if TYPE_CHECKING:  # the macOS runner uses quiet() too, without the Linux backend
    from ringfence.platforms.linux.plan_model import LinuxPlan

OUTSIDE = "outside writable roots"
# The host's name services reached through unix sockets (systemd-resolved's varlink socket,
# nscd): refused like any socket outside the roots, never proposed, since allowing one would
# let the command resolve names (and so send data out) with the network off.
RESOLVER_SOCKETS = frozenset(
    {
        "/run/systemd/resolve/io.systemd.Resolve",
        "/run/systemd/resolve/io.systemd.Resolve.Monitor",
        "/run/nscd/socket",
        "/var/run/nscd/socket",
    }
)
NOT_LISTED = "not in the allowlist"  # the proxy's rule for a host no entry covers

# Never proposed as a writable root, nor anything beneath them: the system's own directories
# (the sandbox rebuilds /proc, /sys and /dev; the rest is configuration, programs and service
# state that runs or is read later with more rights than the command's).
SYSTEM_DIRS: tuple[str, ...] = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/run",
    "/var/run",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/cache",
    "/var/mail",
    "/snap",
    "/nix",
)
# Never proposed themselves (a directory beneath them may be): shared by every user and every
# sandbox. Every top-level directory (/home, /var, /opt, /srv, /mnt, ...) is refused as well.
SHARED_DIRS: tuple[str, ...] = ("/var/tmp",)
# Never proposed, nor anything beneath them.
SHARED_TREES: tuple[str, ...] = ("/tmp", "/dev/shm")
# What a refused write to a history file may have been called besides the file itself: bash
# writes NAME-PID.tmp and keeps NAME- as a backup, zsh NAME.new and NAME.LOCK, fish and others
# a temporary NAME.XXXXXX.
_HISTORY_SUFFIX = re.compile(r"-|-[0-9]+\.tmp|\.[A-Za-z0-9_]{1,12}")


def quiet(
    violations: Iterable[Mapping[str, Any]], env: Mapping[str, str], homes: Iterable[str]
) -> list[dict[str, Any]]:
    """``violations`` without the refused writes of interactive shells and REPLs to their
    history files (``defaults.SHELL_HISTORIES`` in each of ``homes``, and the files the
    ``defaults.HISTORY_ENV_NAMES`` variables of ``env`` name). Every ``ringfence shell`` would
    otherwise end with one; the history stays hidden and unwritten all the same."""
    files = {os.path.join(h, rel) for h in homes for rel in defaults.SHELL_HISTORIES}
    for name in defaults.HISTORY_ENV_NAMES:
        value = env.get(name, "")
        if os.path.isabs(value):
            files.add(os.path.normpath(value))
    return [dict(v) for v in violations if not _is_history(v, files)]


def _is_history(v: Mapping[str, Any], files: set[str]) -> bool:
    if v.get("kind") != "filesystem":
        return False
    path = str(v.get("path", ""))
    if path in files:
        return True
    head = os.path.dirname(path)
    base = os.path.basename(path)
    for f in files:
        name = os.path.basename(f)
        if (
            os.path.dirname(f) == head
            and base.startswith(name)
            and _HISTORY_SUFFIX.fullmatch(base[len(name) :])
        ):
            return True
    return False


def homes_of(plan: LinuxPlan) -> tuple[str, ...]:
    """Every directory that may be the user's home here: ``$HOME`` inside the sandbox and
    outside it (they differ under ``sudo``, ``--env HOME=`` or a service), and the account's
    home in the password database, each also resolved."""
    found = [plan.env.get("HOME"), plan.guard_home, os.environ.get("HOME")]
    try:
        found.append(pwd.getpwuid(plan.uid).pw_dir)
    except (KeyError, OverflowError):
        pass
    out: dict[str, None] = {}
    for h in found:
        if h and os.path.isabs(h):
            out.setdefault(os.path.normpath(h), None)
            out.setdefault(os.path.realpath(h), None)
    return tuple(p for p in out if p != "/")


def reported(plan: LinuxPlan, violations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a command's violations say to the user: history writes dropped (:func:`quiet`),
    each rule named as precisely as the plan allows (:func:`relabel`)."""
    return relabel(plan, quiet(violations, plan.env, homes_of(plan)))


def relabel(plan: LinuxPlan, violations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Name the rule that decides a refused write the kernel reported as outside the roots:
    under a deny-read path, it is hidden on purpose (the guard only sees that the kernel
    refused the call; the plan knows the path was masked); at a protected name (``.bashrc``,
    ``.git/hooks``), it stays read-only even in a writable root, so no widening would allow
    it and none is proposed."""
    # A scrubbed copy of a config file is read-only whatever the writable roots are: no
    # widening would let a write through, so none is proposed.
    copies = [(m.target, m.entry) for m in plan.mounts if m.kind is MountKind.FILE]
    names = _protected_names(plan)
    out = []
    for v in violations:
        labelled = dict(v)
        if v.get("kind") == "filesystem":
            path = str(v.get("path", ""))
            hidden = next(
                (h.entry for h in plan.hidden if semantics.is_under(path, h.target)), None
            )
            copy = next((_copy_rule(e) for t, e in copies if t == path), None)
            if hidden is not None:
                labelled["rule"] = f"deny_read: {hidden}"
            elif copy is not None:
                labelled["rule"] = copy
            elif v.get("rule") == OUTSIDE and os.path.isabs(path):
                name = next((n for n in names if semantics.name_covers(n, path)), None)
                if name is not None:
                    labelled["rule"] = f"protected: {name}"
        out.append(labelled)
    return out


def _copy_rule(entry: str | None) -> str:
    if entry == offline.RESOLV_CONF_PATH:
        return "the sandbox's own resolver (read-only)"
    return f"scrubbed copy (read-only): {entry}"


def widenings(plan: LinuxPlan, violations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The smallest widenings that would have allowed ``violations`` under ``plan``; none
    where the smallest one would be too wide (:func:`refusal_of_root`)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for v in violations:
        if v.get("kind") == "filesystem" and v.get("rule") == OUTSIDE:
            root = suggested_root(plan, str(v.get("path", "")))
            if root is not None:
                out.setdefault(
                    ("writable_root", root),
                    {"kind": "writable_root", "path": root, "flag": f"--writable {root}",
                     "because": f"{v['op']} {v['path']}"},
                )  # fmt: skip
        elif (
            v.get("kind") == "filesystem"
            and v.get("rule") == SOCKET_OUTSIDE
            and str(v["path"]) not in RESOLVER_SOCKETS
        ):
            # One socket, where it really is: the narrowest grant there is (a directory of
            # sockets is never proposed).
            sock = str(v["path"])
            out.setdefault(
                ("allow_socket", sock),
                {"kind": "allow_socket", "path": sock, "flag": f"--allow-socket {sock}",
                 "because": f"{v['op']} {sock}"},
            )  # fmt: skip
        elif v.get("kind") == "network" and v.get("rule") in (offline.OFF, offline.OUTSIDE_PROXY):
            hint = _network_hint(plan, v)
            if hint is not None:
                out.setdefault(("allow_domain", hint["entry"]), hint)
        elif v.get("kind") == "network" and str(v.get("rule", "")).startswith(NOT_LISTED):
            entry = f"{v['host']}:{v['port']}"
            out.setdefault(
                ("allow_domain", entry),
                {"kind": "allow_domain", "entry": entry, "flag": f"--allow-domain {entry}",
                 "because": f"connect {entry}"},
            )  # fmt: skip
    return list(out.values())


def _network_hint(plan: LinuxPlan, v: Mapping[str, Any]) -> dict[str, Any] | None:
    """The allow entry for a host the command tried to reach outside the proxy (a name it
    looked up, an address it connected to), and the flags that would allow it: with the
    network off, switching to the allowlist with that one entry. None for a local or private
    target (the proxy refuses those anyway: never proposed), with the network on, or when
    the managed ceiling forbids it."""
    host = str(v.get("host", ""))
    if v.get("op") == "resolve" and offline.is_public_name(host):
        entry = host  # 80 and 443: a lookup has no port
    elif v.get("op") == "connect" and offline.is_public_address(host):
        entry = f"[{host}]:{v.get('port')}" if ":" in host else f"{host}:{v.get('port')}"
    else:
        return None
    if plan.network is Network.OFF:
        flag, extra = f"--network allowlist --allow-domain {entry}", {"network": "allowlist"}
    elif plan.network is Network.ALLOWLIST:
        flag, extra = f"--allow-domain {entry}", {}
    else:
        return None
    if not _ceiling_allows(entry):
        return None
    because = f"resolve {host}" if v.get("op") == "resolve" else f"connect {entry}"
    return {"kind": "allow_domain", "entry": entry, "flag": flag, "because": because, **extra}


def _ceiling_allows(entry: str) -> bool:
    """Whether the managed ceiling lets a policy reach ``entry`` through the allowlist proxy
    (a hint it forbids would only fail on the next run). An unreadable ceiling: no."""
    from ringfence.errors import RingfenceError
    from ringfence.policy import config

    try:
        ceiling = config.load_ceiling()
        return ceiling is None or (
            ceiling.permits_network(Network.ALLOWLIST.value) and ceiling.covers_domain(entry)
        )
    except RingfenceError:
        return False


def to_allow_text(widenings: Iterable[Mapping[str, Any]]) -> str:
    """The flags of ``widenings`` as one command line's worth: ``--network allowlist`` once,
    however many hosts it is for."""
    flags = [str(w["flag"]) for w in widenings]
    switch = "--network allowlist "
    if any(w.get("network") == "allowlist" for w in widenings):
        flags = [switch.strip()] + [f.removeprefix(switch) for f in flags]
    return " ".join(flags)


def suggested_root(plan: LinuxPlan, path: str) -> str | None:
    """The writable root to propose for a refused write to ``path``: the nearest existing
    directory at or above it, resolved; None when there is none or it would open too much."""
    if plan.mode is not Mode.WORKSPACE_WRITE or not os.path.isabs(path):
        return None
    root = smallest_root(path)
    if root is None:
        return None
    real = os.path.realpath(root)
    if refusal_of_root(plan, root) or refusal_of_root(plan, real):
        return None
    return real


def refusal_of_root(plan: LinuxPlan, root: str) -> str | None:
    """Why ``root`` may not be proposed as a writable root, or None when it may.

    Proposed only: an absolute, normal path; not ``/``, a top-level directory, a shared
    temporary directory or a system directory (or beneath one); not a home directory, an
    ancestor of one, or a hidden directory in one (``~/.config``, ``~/.local/bin``: tool
    configuration, credentials, programs that run later with full rights); not a directory
    holding a writable root or the working directory (the workspace's parent); not at, in, or
    on the way to a protected name (``.git``, ``.vscode``, ``.config/git``) or a protected
    path; not a deny-read path, one beneath it or one holding it.
    """
    if not os.path.isabs(root) or os.path.normpath(root) != root:
        return "not an absolute, normal path"
    if root == "/" or root.count("/") == 1:
        return "the root or a top-level directory"
    if root in SHARED_DIRS:
        return "shared by every user"
    if any(semantics.is_under(root, d) for d in SHARED_TREES):
        # Inside, /tmp is the host's read-only below the workspace's layer: a refusal there
        # is a host directory the command may only look at (another user's, or tmux's and
        # X11's socket directories); opening it would hand over those channels.
        return "in a temporary directory every program shares"
    if any(semantics.is_under(root, d) for d in SYSTEM_DIRS):
        return "a system directory"
    for home in homes_of(plan):
        if semantics.is_under(home, root):
            return "a home directory or one holding it"
        below = semantics.relative_components(root, home)
        if below and below[0].startswith("."):
            return "a hidden directory of a home"
    for r in (*plan.guard_roots, *plan.guard_git_roots, plan.cwd):
        if r and (semantics.is_under(r, root) or semantics.is_under(os.path.realpath(r), root)):
            return "holds a writable root or the working directory"
    for p in plan.guard_paths:
        if semantics.is_under(root, p):
            return "a protected path"
    for name in (*_protected_names(plan), *_DEFAULT_NAMES):
        if semantics.name_match(name, root) is not None:
            return f"a protected name ({name})"
    masks = [m.target for m in plan.mounts if m.kind is MountKind.MASK]
    for target in (*masks, *(h.target for h in plan.hidden)):
        if semantics.overlaps(root, target):
            return "a hidden path or one holding it"
    return None


_DEFAULT_NAMES = (
    *defaults.STRICT_GIT_PROTECTED,
    *defaults.GIT_PROTECTED,
    *defaults.TOOL_PROTECTED,
    *defaults.SHELL_PROTECTED,
)


def _protected_names(plan: LinuxPlan) -> tuple[str, ...]:
    """The name patterns protected under writable roots: on Linux the git rules stand in for
    the portable ``.git/...`` names, which still describe what they keep read-only."""
    names = tuple(plan.guard_names)
    if plan.guard_git == "allowlist":
        names = (*names, *defaults.GIT_PROTECTED)
    return names


def smallest_root(path: str) -> str | None:
    """The directory that, made writable, allows a write to ``path``: the nearest existing
    directory at or above it (the file's own directory when it exists). None for ``/`` or a
    relative path."""
    if not os.path.isabs(path):
        return None
    cur = os.path.normpath(path)
    cur = cur if os.path.isdir(cur) else os.path.dirname(cur)
    while cur not in ("", "/") and not os.path.isdir(cur):
        cur = os.path.dirname(cur)
    return None if cur in ("", "/") else cur


def widen(policy: Policy, chosen: Iterable[Mapping[str, Any]]) -> Policy:
    """``policy`` with exactly the ``chosen`` widenings added (and validated again)."""
    roots = list(policy.writable_roots)
    domains = list(policy.allow_domains)
    sockets = list(policy.allow_sockets)
    network = policy.effective_network
    for w in chosen:
        if w.get("kind") == "writable_root":
            if w["path"] not in roots:
                roots.append(str(w["path"]))
        elif w.get("kind") == "allow_socket":
            if w["path"] not in sockets:
                sockets.append(str(w["path"]))
        elif w.get("kind") == "allow_domain":
            if w.get("network") == "allowlist" and network is Network.OFF:
                network = Network.ALLOWLIST  # exactly the entries chosen, nothing else
            elif network is not Network.ALLOWLIST:
                raise PolicyError("an allow_domain widening needs --network allowlist")
            if w["entry"] not in domains:
                domains.append(str(w["entry"]))
        elif w.get("kind") == "network" and w.get("network") in (Network.ALLOWLIST, Network.ON):
            network = Network(w["network"])  # only ever asked for by name, never proposed
        else:
            raise PolicyError(f"not a widening ringfence knows: {dict(w)!r}")
    return dataclasses.replace(
        policy,
        writable_roots=tuple(roots),
        allow_domains=tuple(domains),
        allow_sockets=tuple(sockets),
        network=network,
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


# What an agent may ask for by name (the MCP server's request_widening tool), and nothing else.
REQUEST_KINDS = ("writable_path", "domain", "network")


def requested_widenings(
    plan: LinuxPlan, policy: Policy, kind: str, value: str
) -> tuple[dict[str, Any], ...]:
    """The widenings (for :func:`widen`) that give exactly what an agent asked for by name,
    checked by the rules a proposed one obeys; () when ``policy`` allows it already;
    PolicyError saying why it may not even be asked for.

    ``writable_path``: an existing directory, reached through no link planted in a writable
    area (like ``--writable``), and never one :func:`refusal_of_root` refuses (a home, ``/``,
    a system or shared directory, a parent of the workspace, a protected or hidden path).
    ``domain``: one host name or address, with an optional port (``example.com:8443``), no
    wildcard; with the network off it becomes an allowlist of that one name. ``network``:
    ``on`` (any host, any port).
    """
    text = value.strip()
    if kind == "writable_path":
        return _requested_path(plan, policy, text)
    if kind == "domain":
        return _requested_domain(policy, text)
    if kind == "network":
        if text != "on":
            raise PolicyError("a network widening is 'on' (any host, any port)")
        if policy.effective_network is Network.ON:
            return ()
        return ({"kind": "network", "network": "on", "flag": "--network on"},)
    raise PolicyError(f"not a widening that can be asked for: {kind!r} (one of {REQUEST_KINDS})")


def _requested_path(plan: LinuxPlan, policy: Policy, text: str) -> tuple[dict[str, Any], ...]:
    from ringfence.policy import paths

    if policy.mode is not Mode.WORKSPACE_WRITE:
        raise PolicyError(f"the sandbox is {policy.mode.value}: it has no writable paths")
    trusted = [policy.workspace, *policy.writable_roots]
    trusted += [os.path.realpath(t) for t in trusted]
    real = paths.writable_root("writable_path", text, trusted)
    if real in {*trusted, *policy.writable_paths()}:
        return ()
    for candidate in dict.fromkeys((os.path.normpath(text), real)):
        why = refusal_of_root(plan, candidate)
        if why is not None:
            raise PolicyError(f"{candidate} cannot be made writable: {why}")
    if semantics.first_under(real, policy.writable_paths()):
        return ()
    return ({"kind": "writable_root", "path": real, "flag": f"--writable {real}"},)


def _requested_domain(policy: Policy, text: str) -> tuple[dict[str, Any], ...]:
    from ringfence.policy import netrules

    if not text.isascii():  # a look-alike letter would show one host and grant another
        try:
            ascii_form = text.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_form = None
        shown = f" (its ASCII form is {ascii_form})" if ascii_form else ""
        raise PolicyError(
            f"{printable(text)!r}: ask for the host name in ASCII{shown}, so that the person "
            "sees exactly the name that would be allowed"
        )
    rule = netrules.parse_rule(text)
    if rule.wildcard:
        raise PolicyError(f"{text!r}: ask for one host name, not a wildcard")
    network = policy.effective_network
    if network is Network.ON:
        return ()
    entry = {"kind": "allow_domain", "entry": text, "flag": f"--allow-domain {text}"}
    if network is Network.OFF:
        switch = {"kind": "network", "network": "allowlist", "flag": "--network allowlist"}
        return (switch, entry)
    rules = netrules.NetRules.parse(policy.allow_domains, policy.deny_domains)
    decisions = [rules.decide(rule.host, port) for port in rule.ports]
    if all(d.allowed for d in decisions):
        return ()
    denied = next((d for d in decisions if d.rule.startswith("denied by")), None)
    if denied is not None:
        raise PolicyError(f"{text!r} is {denied.rule} in the user's policy")
    return (entry,)
