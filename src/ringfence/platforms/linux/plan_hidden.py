"""What the Linux sandbox hides: runtime sockets of more privileged services, ringfence's own
state, deny-read paths (masked), and config files that mix settings with credentials (a
scrubbed, read-only copy instead). Pure: mount ops decided from the policy and the facts."""

from __future__ import annotations

import os

from ringfence.errors import PolicyError
from ringfence.platforms.linux import mountops
from ringfence.platforms.linux.hostfacts import HostFacts
from ringfence.platforms.linux.mountops import Hidden, MountList
from ringfence.policy import defaults
from ringfence.policy.model import Policy
from ringfence.policy.semantics import first_under, hidden_by, is_strictly_under, is_under

# Paths the sandbox rebuilds itself; a writable root may not be one of them or contain them,
# and there is nothing of the host's to hide in them.
SYSTEM_TARGETS = ("/proc", "/sys", "/dev")


def mask_mode(path: str, allowed: set[str]) -> int:
    """Masked directories are unreadable; one that holds an allowed socket is traversable."""
    return 0o111 if any(is_strictly_under(a, path) for a in allowed) else 0


def _shown(path: str, home: str | None) -> str:
    if home and is_strictly_under(path, home):
        return "~/" + os.path.relpath(path, home)
    return path


def _scrub_mounts(policy: Policy, facts: HostFacts, b: MountList, notes: list[str]) -> set[str]:
    """Mixed config files (defaults.HOME_SCRUB): a read-only scrubbed copy over the file (over
    its resolved target when it is a symlink), or a mask when it could not be scrubbed. Files
    the user named with --deny-read stay hidden. Returns the paths handled here, which the
    deny-read step then skips."""
    handled: set[str] = set()
    # What stays hidden whatever links point into it: a scrubbed copy of ~/.netrc through a
    # ~/.npmrc -> ~/.netrc link would show the part of it that does not look secret.
    hidden: list[str] = []
    for d in policy.deny_read_paths(facts.home):
        if d in facts.scrub_files and d not in policy.deny_read:
            continue
        info = facts.info(d)
        hidden.extend([d] if info is None or info.kind != "symlink" else [d, info.real])
    for path, found in facts.scrub_files.items():
        if path in policy.deny_read:
            continue
        handled.add(path)
        target = found.real
        # Under /tmp too: the sandbox's /tmp shows the host's below its layer.
        if b.in_fresh(target) or first_under(target, SYSTEM_TARGETS):
            continue
        shown = _shown(path, facts.home)
        via = f" (via symlink to {target})" if target != path else ""
        inside = hidden_by(target, hidden)
        if inside is not None:
            notes.append(f"{shown}: its target lies in deny-read {inside}; hidden, not scrubbed")
            op = mountops.mask(
                target, is_dir=False, mode=0, why=f"deny-read: {shown}{via}", entry=shown
            )
        elif found.content is None:
            notes.append(f"{shown}: could not be scrubbed ({found.error}); hidden instead")
            op = mountops.mask(
                target, is_dir=False, mode=0, why=f"deny-read: {shown}{via}", entry=shown
            )
        else:
            removed = ", ".join(found.removed) if found.removed else "nothing"
            op = mountops.file_copy(
                target,
                found.content,
                mode=found.mode,
                why=f"scrubbed: {shown}{via} (removed: {removed})",
                entry=shown,
            )
        if target in b.targets:
            notes.append(f"scrub {shown}: already a mount point; the copy goes on top")
        b.add(op)
    return handled


def hide_runtime_sockets(b: MountList, policy: Policy, facts: HostFacts) -> None:
    """Runtime sockets and directories that reach more privileged services, masked."""
    allowed = set(policy.allow_sockets)
    runtime = list(defaults.RUNTIME_SOCKETS)
    for var in ("XDG_RUNTIME_DIR", "SSH_AUTH_SOCK"):
        value = facts.env.get(var)
        if value and os.path.isabs(value):
            runtime.append(os.path.normpath(value))
    for p in dict.fromkeys(runtime):
        info = facts.info(p)
        if info is None or p in allowed or b.in_fresh(p):
            continue
        if info.kind == "symlink":
            continue  # its target is listed on its own (e.g. /var/run -> /run)
        is_dir = info.kind == "dir"
        mode = mask_mode(p, allowed)
        b.add(mountops.mask(p, is_dir=is_dir, mode=mode, why="runtime socket hidden"), fresh=is_dir)


def hide_own_state(b: MountList, facts: HostFacts, cache: str | None) -> list[Hidden]:
    """ringfence's own state (every workspace's caches and /tmp layers, the audit log, session
    sockets) is hidden; this workspace's cache alone comes back on top."""
    hidden: list[Hidden] = []
    for p in facts.own_state:
        info = facts.info(p)
        if info is None or info.kind != "dir" or b.in_fresh(p):
            continue
        mode = 0o111 if cache is not None and is_under(cache, p) else 0
        b.add(mountops.mask(p, mode=mode, why="ringfence's own state hidden", entry=p), fresh=True)
        hidden.append(Hidden(p, p))  # reported as hidden, never offered as a writable root
    if cache is not None:
        b.add(mountops.bind(cache, readonly=False, why="this workspace's tool caches"))
    return hidden


def hide_secrets(
    b: MountList,
    policy: Policy,
    facts: HostFacts,
    *,
    layered: bool,
    bound: tuple[str, ...],
    notes: list[str],
) -> list[Hidden]:
    """Secrets: masked wherever they are (reads outside writable roots are otherwise allowed);
    config files that mix settings and credentials: a scrubbed copy instead."""
    scrubbed = _scrub_mounts(policy, facts, b, notes)
    deny = list(policy.deny_read_paths(facts.home))
    if facts.account_home and policy.default_deny_read:  # $HOME elsewhere: the account's too
        deny.extend(policy.deny_read_paths(facts.account_home)[len(policy.deny_read) :])
    if policy.default_deny_read and layered:
        deny.extend(facts.tmp_secrets)
    allowed = set(policy.allow_sockets)
    hidden: list[Hidden] = []
    for p in dict.fromkeys(deny):
        for sys_target in SYSTEM_TARGETS:
            if is_under(p, sys_target) and p in policy.deny_read:
                raise PolicyError(
                    f"policy: deny-read {p}: the sandbox builds its own {sys_target}, where "
                    "nothing of the host's is to hide; drop it"
                )
        info = facts.info(p)
        if info is None or p in scrubbed:
            continue
        target = info.real
        tinfo = facts.info(target) if target != p else info
        if first_under(target, SYSTEM_TARGETS):
            if p in policy.deny_read:
                raise PolicyError(
                    f"policy: deny-read {p} leads to {target}, which the sandbox builds itself; "
                    "name the file it should hide"
                )
            continue
        if b.in_fresh(target) and not first_under(target, bound):
            continue  # inside a fresh tmpfs or mask of ours: the host's file is not there
        if tinfo is None:
            continue  # a link to nothing hides nothing
        is_dir = tinfo.kind == "dir"
        if target in b.targets:
            notes.append(f"deny-read {p}: already a mount point, masked by an earlier rule")
        mode = mask_mode(target, allowed)
        op = mountops.mask(target, is_dir=is_dir, mode=mode, why=f"deny-read: {p}", entry=p)
        b.add(op, fresh=is_dir)
        hidden.append(Hidden(target, p))
    return hidden
