"""Compile a Policy into the LinuxPlan the runner executes: a pure function, no I/O.

Everything the kernel will be told is decided here, in an order a reader can follow: which
namespaces, which mounts (in the order they are made), which Landlock rules, which names the
guard protects, and the exact environment. ``ringfence explain`` prints this plan.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ringfence.errors import PolicyError, UnsupportedError
from ringfence.network.offline import RESOLV_CONF, RESOLV_CONF_PATH, offline_environment
from ringfence.network.proxy_env import PROXY_PORT, git_ssh_environment, proxy_environment
from ringfence.platforms.linux import landlock, mountops, seccomp
from ringfence.platforms.linux.hostfacts import PRIVATE_SHM, HostFacts, host_roots
from ringfence.platforms.linux.mountops import MountList
from ringfence.platforms.linux.plan_hidden import (
    SYSTEM_TARGETS,
    hide_own_state,
    hide_runtime_sockets,
    hide_secrets,
)
from ringfence.platforms.linux.plan_limits import rlimits, userns_limits, with_cgroups
from ringfence.platforms.linux.plan_model import DEVICE_PATHS, DEVICES, LinuxPlan
from ringfence.platforms.linux.plan_reduced import NET_ABI, SCOPE_ABI, compile_reduced
from ringfence.policy import defaults
from ringfence.policy.caches import cache_environment
from ringfence.policy.environment import build_environment, sandbox_variables, scrubbed_names
from ringfence.policy.model import Isolation, Mode, Network, PathStyle, Policy
from ringfence.policy.semantics import RootIndex, first_under, is_under


def _check_writable_root(path: str) -> None:
    if path == "/":
        raise PolicyError("policy: '/' cannot be a writable root; name the directories to write")
    if is_under(path, PRIVATE_SHM):
        raise PolicyError(
            f"policy: {path} cannot be a writable root: the sandbox's {PRIVATE_SHM} is a private, "
            f"empty tmpfs, always writable (--writable {PRIVATE_SHM} names it, never the host's)"
        )
    for sys_target in SYSTEM_TARGETS:
        if is_under(path, sys_target):
            raise PolicyError(
                f"policy: {path} cannot be a writable root: the sandbox builds its own {sys_target}"
            )


def _host_tmp_read_only(
    policy: Policy, facts: HostFacts, roots: tuple[str, ...]
) -> list[tuple[str, bool, str]]:
    """(target, is a directory, why) of each read-only path the policy names in host /tmp,
    outside the writable roots, resolved through a symlink."""
    named = [(p, f"protected: --protect (host /tmp): {p}") for p in policy.protected]
    if policy.mode is Mode.READ_ONLY:
        named.insert(0, (policy.workspace, "workspace, read-only (host /tmp)"))
    out: list[tuple[str, bool, str]] = []
    for p, why in named:
        info = facts.info(p)
        if info is None:
            continue
        target = info.real
        tinfo = facts.info(target)
        if (
            tinfo is None
            or tinfo.kind == "symlink"
            or not is_under(target, "/tmp")
            or target == "/tmp"
            or first_under(target, roots)
        ):
            continue  # outside /tmp the read-only root shows the host's file already
        out.append((target, tinfo.kind == "dir", why))
    return out


def _persistence_paths(policy: Policy, facts: HostFacts, roots: tuple[str, ...]) -> tuple[str, ...]:
    """Absolute paths inside the writable roots where a write would run later with the
    user's full rights ($HOME's login and autostart files, cron spools) or reach ringfence's
    own state: protected whether they exist yet or not."""
    if not roots:
        return ()
    out: list[str] = []
    if policy.default_protected and facts.home:
        for home in (facts.home, facts.account_home):
            if home:
                out.extend(os.path.join(home, rel) for rel in defaults.HOME_PROTECTED)
            if home and first_under(home, roots):
                # The caller's PATH directories in a writable home: what its shells run by
                # name later (a conda or tool bin dir that no list names).
                out.extend(
                    os.path.normpath(d)
                    for d in facts.env.get("PATH", "").split(":")
                    if os.path.isabs(d) and is_under(os.path.normpath(d), home)
                )
        out.extend(defaults.SYSTEM_PROTECTED)
        out.extend(facts.home_dot_entries)
    if policy.default_protected:
        config, data = facts.xdg_dirs.get("config"), facts.xdg_dirs.get("data")
        if config:
            out.extend(os.path.join(config, rel) for rel in defaults.XDG_CONFIG_PROTECTED)
        if data:
            out.extend(os.path.join(data, rel) for rel in defaults.XDG_DATA_PROTECTED)
    if policy.default_protected:
        out.extend(p for p in facts.outside_git_and_links if "\0" not in p)
    out.extend(facts.own_state)
    out.extend(facts.own_code)
    under = RootIndex(roots)
    return tuple(p for p in dict.fromkeys(out) if under.first_under(p))


def _protected_targets(
    policy: Policy,
    facts: HostFacts,
    roots: tuple[str, ...],
    extra: tuple[str, ...] = (),
    hops: list[str] | None = None,
) -> list[tuple[str, str]]:
    """(path, why) for every existing protected path inside a writable root.

    Symlinks are never mount targets: when a protected name is a symlink whose target lies in
    a writable root, the target is protected instead (a planted link cannot redirect a mount
    to somewhere it would do harm, and cannot make a protected name writable).
    """
    found: list[tuple[str, str]] = []
    names = [n for n in _guard_names(policy) if "*" not in n]
    if _git_mode(policy) == "allowlist":
        names.insert(0, ".git/hooks")  # the guard checks the rest of .git; hooks stay mounted
    under = RootIndex(roots)

    def consider(path: str, why: str) -> None:
        info = facts.info(path)
        if info is None:
            return
        if info.kind == "symlink":
            target = facts.info(info.real)
            if target is not None and target.kind != "symlink" and under.first_under(info.real):
                found.append((info.real, f"{why} (via symlink {path})"))
            if hops is not None:  # the links on the way: a symlink cannot be a mount target
                hops.extend(h for h in facts.link_hops.get(path, ()) if under.first_under(h))
            return
        real = info.real  # the place itself when a parent is a link
        if under.first_under(real):
            found.append((real, why if real == path else f"{why} (via {path})"))

    for root in roots:
        for n in names:
            consider(os.path.join(root, n), f"protected: {n}")
    git_names = ("hooks",) if not policy.strict_git else ()
    gitdirs = [*facts.gitdirs.values(), *facts.commondirs.values()]
    for mods in facts.modules.values():
        gitdirs.extend(mods)
    for gd in gitdirs:
        if policy.strict_git:
            consider(gd, "protected: git directory (strict_git)")
        elif policy.default_protected:
            for n in git_names:
                consider(os.path.join(gd, n), f"protected: git {n}")
    if _git_mode(policy) != "off":
        for hooks in facts.hooks_paths.values():
            consider(hooks, "protected: git hooks (core.hooksPath)")
        for included in facts.git_includes:
            consider(included, "protected: git config (included by a config)")
        for checkout in facts.module_worktrees:
            # kept in place (its parents pinned): it cannot be moved away and a symlink put
            # where its module's core.worktree leads
            consider(os.path.join(checkout, ".git"), "protected: a submodule's checkout")
    for p in policy.protected:
        consider(p, "protected: --protect")
    for p in extra:
        consider(p, "protected: runs later with your rights, or ringfence's own state")
    # Dedupe, keep first reason; drop paths beneath another protected path.
    uniq: dict[str, str] = {}
    for p, why in found:
        uniq.setdefault(p, why)
    ordered = sorted(uniq, key=lambda p: (p.count("/"), p))
    kept: list[tuple[str, str]] = []
    kept_set: set[str] = set()
    for p in ordered:
        # Shallower paths come first, so an enclosing protected path is already kept: look up
        # each ancestor (linear in depth) instead of comparing with every kept path.
        anc, covered = p, False
        while not covered:
            covered = anc in kept_set
            parent = os.path.dirname(anc)
            if parent == anc:
                break
            anc = parent
        if not covered:
            kept.append((p, uniq[p]))
            kept_set.add(p)
    return kept


def _git_mode(policy: Policy) -> str:
    """How the name guard treats git directories (see the gitguard package)."""
    if policy.strict_git:
        return "strict"
    return "allowlist" if policy.default_protected else "off"


def _guard_names(policy: Policy) -> tuple[str, ...]:
    """The name patterns the guard matches itself: on Linux the git rules replace the
    portable ``.git/...`` names (which macOS and Windows still use)."""
    names = policy.protected_names()
    if _git_mode(policy) == "allowlist":
        return tuple(n for n in names if n not in defaults.GIT_PROTECTED)
    return names


def _git_roots(policy: Policy, facts: HostFacts, roots: tuple[str, ...]) -> tuple[str, ...]:
    """Git directories outside the writable roots that a linked worktree inside them needs
    to commit: its own git directory and the common directory. Made writable with only the git
    rules applying there (no other name is writable in them)."""
    if _git_mode(policy) != "allowlist":
        return ()
    out: list[str] = []
    for pointer, gd in facts.gitdirs.items():
        if not first_under(pointer, roots):
            continue
        common = facts.commondirs.get(gd)
        # A .git file is the repository's claim: anyone can write one naming another
        # repository. Only a linked worktree git made is believed: its git directory lies in
        # <common>/worktrees/ and its own gitdir file points back at this very .git file.
        if (
            common is None
            or facts.backlinks.get(gd) != pointer
            or os.path.dirname(gd) != os.path.join(common, "worktrees")
        ):
            continue
        for d in (gd, common):
            if d is None or first_under(d, roots) or d in out:
                continue
            info = facts.info(d)
            if info is None or info.kind != "dir" or facts.info(os.path.join(gd, "HEAD")) is None:
                continue
            _check_writable_root(d)
            out.append(d)
    return tuple(out)


def compile_linux(policy: Policy, facts: HostFacts, *, cwd: str) -> LinuxPlan:
    """The plan for ``policy`` on this host. Pure: same inputs, same plan.

    The steps run in the order the runner applies what they decide: the unsandboxed base,
    the writable roots, then (with namespaces) the mounts, Landlock, the network, and the
    name guard's rules."""
    policy.validate()
    if policy.path_style != PathStyle.POSIX:
        raise PolicyError("linux plan: the policy holds Windows paths; give POSIX paths")
    base = _base_plan(policy, facts, cwd)
    if not policy.sandboxed:
        return replace(
            base, notes=("full-access: no boundary; the command runs with all of your rights",)
        )
    _require_landlock(policy, facts)
    base = with_cgroups(base, policy.limits, facts)
    roots, names_shm, cache_env = _writable_roots(policy, facts)
    own_vars = dict(base.sandbox_env)
    sandbox_vars = {**own_vars, **cache_env}
    base = replace(
        base, env=build_environment(facts.env, policy.env, sandbox_vars), sandbox_env=sandbox_vars
    )
    if policy.isolation is Isolation.REDUCED:
        if policy.publish:
            raise UnsupportedError(
                "--publish needs the sandbox's own network namespace, which reduced isolation "
                "does not have (and with the network off it refuses every inet socket)"
            )
        if policy.effective_network is Network.ALLOWLIST:
            raise UnsupportedError(
                "network allowlist needs the sandbox's own network namespace, which reduced "
                "isolation does not have: its filtering proxy would not be the only way out. "
                "Use --network off or on with --isolation reduced"
            )
        return compile_reduced(policy, facts, roots, base)
    notes: list[str] = []
    b = MountList()
    _system_mounts(b, policy, names_shm, notes)
    layered = _tmp_mount(b, policy, facts, notes)
    hide_runtime_sockets(b, policy, facts)
    git_roots = _git_roots(policy, facts, roots)
    cache = facts.cache_root if facts.cache_root in roots else None
    _writable_mounts(b, roots, git_roots, cache)
    if layered:
        for target, is_dir, why in _host_tmp_read_only(policy, facts, roots):
            b.add(mountops.bind(target, readonly=True, is_dir=is_dir, why=why))
    protected, extra_protected = _protected_mounts(b, policy, facts, roots, git_roots)
    hidden = hide_own_state(b, facts, cache)
    hidden += hide_secrets(
        b, policy, facts, layered=layered, bound=(*roots, *git_roots), notes=notes
    )
    _allowed_sockets(b, policy, facts, notes)
    offline_env = _own_resolver(b, policy, facts, notes)
    rules = _landlock_rules(facts, (*roots, *git_roots), notes)
    rules, network_env, proxy = _network(policy, facts, rules, notes)
    published = _published(policy, notes)
    sandbox_env = {**cache_env, **own_vars, "TMPDIR": "/tmp", **network_env, **offline_env}
    guard_paths = _guard_paths(policy, facts, roots, protected, extra_protected)
    if any("\0" in p for p in facts.outside_git_and_links):
        notes.append(
            "your home's hidden entries hold more than 8,000 files: the scan for dotfile "
            "links stopped there; a link beyond it does not make its target read-only"
        )
    if policy.mode is Mode.READ_ONLY:
        notes.append("read-only: only the workspace's private /tmp layer and /dev/shm are writable")
    git_mode = _git_mode(policy)
    # The /tmp layer lasts on the host (ringfence's cache): governed like a writable root.
    git_private = ("/tmp",) if layered and git_mode != "off" else ()
    return replace(
        base,
        sandboxed=True,
        namespaces=_namespaces(policy.effective_network),
        mounts=tuple(b.ops),
        landlock=rules,
        # Inet sockets stay allowed with the network off: the command has its own empty network
        # namespace, so they reach only its own loopback (test suites start local servers).
        seccomp=seccomp.SeccompPolicy(allow_inet=True),
        rlimits=rlimits(policy.limits),
        userns_limits=userns_limits(policy.limits, facts),
        guard_roots=roots,
        guard_paths=guard_paths if roots else (),
        guard_names=_guard_names(policy) if roots else (),
        guard_git=git_mode if roots or git_private else "off",
        guard_git_roots=git_roots,
        guard_git_private_roots=git_private,
        guard_hooks_dirs=tuple(
            sorted(h for h in set(facts.hooks_paths.values()) if first_under(h, roots))
        )
        if roots and git_mode != "off"
        else (),
        guard_global_hooks_path=facts.global_hooks_path if git_mode != "off" else None,
        guard_home=facts.home,
        guard_dot_dirs=tuple(
            h
            for h in dict.fromkeys((facts.home, facts.account_home))
            if h and roots and policy.default_protected and first_under(h, roots)
        ),
        hidden=tuple(hidden),
        socket_roots=(*roots, "/tmp", PRIVATE_SHM),  # not git roots: git needs no socket there
        allow_sockets=tuple(
            dict.fromkeys(
                q for p in policy.allow_sockets for q in (p, getattr(facts.info(p), "real", p))
            )
        ),
        env=build_environment(facts.env, policy.env, sandbox_env),
        sandbox_env=sandbox_env,
        notes=tuple(notes),
        publish=published,
        **proxy,
    )


def _base_plan(policy: Policy, facts: HostFacts, cwd: str) -> LinuxPlan:
    """What every plan has, sandboxed or not; the boundary is added to it."""
    sandbox_vars = sandbox_variables(policy)
    return LinuxPlan(
        sandboxed=False,
        env=build_environment(facts.env, policy.env, sandbox_vars),
        cwd=cwd,
        uid=facts.uid,
        gid=facts.gid,
        network=policy.effective_network,
        mode=policy.mode,
        scrubbed_env=tuple(scrubbed_names(facts.env, policy.env)),
        state_dir=facts.state_dir if policy.sandboxed else None,
        sandbox_env=sandbox_vars,
    )


def _require_landlock(policy: Policy, facts: HostFacts) -> None:
    if facts.landlock_abi < 1:
        raise UnsupportedError(
            "Landlock is not available on this kernel (needs Linux >= 5.13 with "
            "CONFIG_SECURITY_LANDLOCK and 'landlock' in the lsm= boot list). ringfence will not "
            "run without it; run `ringfence doctor` for details, or use --mode full-access to "
            "run without any boundary"
        )
    if facts.landlock_abi < policy.landlock_min_abi:
        raise UnsupportedError(
            f"the policy requires Landlock ABI {policy.landlock_min_abi} but this kernel offers "
            f"ABI {facts.landlock_abi}; use a newer kernel or lower the requirement"
        )


def _writable_roots(
    policy: Policy, facts: HostFacts
) -> tuple[tuple[str, ...], bool, dict[str, str]]:
    """The host directories the command may write (checked), whether the policy named the
    private /dev/shm, and the variables pointing tools at this workspace's cache (a root too)."""
    roots = host_roots(policy)
    names_shm = roots != policy.writable_paths()
    if names_shm and policy.isolation is Isolation.REDUCED:
        raise PolicyError(
            f"policy: --writable {PRIVATE_SHM} names the sandbox's private {PRIVATE_SHM}, which "
            "reduced isolation does not have (it would be the host's, shared with every process)"
        )
    for r in roots:
        _check_writable_root(r)
        info = facts.info(r)
        if info is None or info.kind != "dir":
            raise PolicyError(f"policy: writable root {r} does not exist or is not a directory")
    cache_env: dict[str, str] = {}
    if facts.cache_root is not None and roots and not first_under(facts.cache_root, roots):
        roots = (*roots, facts.cache_root)
        cache_env = cache_environment(facts.cache_root, facts.env)
    return roots, names_shm, cache_env


def _system_mounts(b: MountList, policy: Policy, names_shm: bool, notes: list[str]) -> None:
    """The read-only host root, then the sandbox's own /dev, /dev/shm and /proc, made fresh."""
    b.add(mountops.bind("/", readonly=True, why="host root, read-only"))
    b.add(mountops.tmpfs("/dev", mode=0o755, why="minimal /dev"), fresh=True)
    for dev in DEVICES:
        b.add(mountops.device(dev))
    b.add(mountops.devpts("/dev/pts", why="private pseudo-terminals"))
    for name, text in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        b.add(mountops.symlink(f"/dev/{name}", text, why="/dev link"))
    shm = str(policy.limits.shm_size)
    shm_why = f"private to this sandbox (--writable {PRIVATE_SHM} names it)"
    b.add(mountops.tmpfs(PRIVATE_SHM, mode=0o1777, size=shm, why=shm_why), fresh=True)
    if names_shm:
        notes.append(
            f"--writable {PRIVATE_SHM}: the sandbox's own, empty at start and gone at the end; "
            "the host's is not reachable"
        )
    b.add(mountops.remount_ro("/dev", why="no new device nodes"))
    b.add(mountops.proc("/proc", why="fresh /proc for the sandbox's pid namespace"))


def _tmp_mount(b: MountList, policy: Policy, facts: HostFacts, notes: list[str]) -> bool:
    """/tmp: this workspace's lasting layer over the host's, or a private tmpfs. True for the
    layer (host /tmp is then visible, read-only, below it)."""
    if facts.tmp_layer is not None and policy.limits.tmp_size is None:
        # Host /tmp read-only below, this workspace's lasting layer above: the harness's scripts
        # and venvs are there, writes land in the layer, and host sockets below stay out of
        # reach (overlayfs does not pass connect() through to a lower layer's socket).
        why = "host /tmp read-only, writes kept in this workspace's private /tmp layer"
        b.add(mountops.overlay("/tmp", facts.tmp_layer, why=why))
        return True
    tmp = policy.limits.tmp_size
    size = str(tmp if tmp is not None else "25%")
    b.add(mountops.tmpfs("/tmp", mode=0o1777, size=size, why="private /tmp (TMPDIR)"), fresh=True)
    why = (
        f"tmp-size {tmp} asks for a tmpfs"
        if tmp is not None
        else "no per-workspace layer: ringfence's cache directory could not be made"
    )
    notes.append(f"/tmp: private to this command and empty ({why}); host /tmp is not visible")
    return False


def _writable_mounts(
    b: MountList, roots: tuple[str, ...], git_roots: tuple[str, ...], cache: str | None
) -> None:
    """Writable roots, shallowest first; then git directories writable for git only."""
    for r in sorted((*roots, *git_roots), key=lambda p: (p.count("/"), p)):
        if r == cache:
            continue  # bound back after ringfence's own state is hidden
        why = (
            "git directory of a linked worktree (git rules)" if r in git_roots else "writable root"
        )
        b.add(mountops.bind(r, readonly=False, why=why))


def _protected_mounts(
    b: MountList,
    policy: Policy,
    facts: HostFacts,
    roots: tuple[str, ...],
    git_roots: tuple[str, ...],
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Protected paths: pin every ancestor between the root and the path (a mount point cannot
    be renamed or removed), then bind the path read-only on itself. Returns the (path, why)
    bound and the paths protected whether they exist or not (for the name guard)."""
    pinned: set[str] = {*roots, *git_roots}
    extra_protected = _persistence_paths(policy, facts, roots)
    hops: list[str] = []
    protected = _protected_targets(policy, facts, (*roots, *git_roots), extra_protected, hops)
    extra_protected = (*extra_protected, *dict.fromkeys(hops))
    under = RootIndex((*roots, *git_roots))
    for path, why in protected:
        root = under.first_under(path)
        assert root is not None
        anc = os.path.dirname(path)
        chain: list[str] = []
        while anc != root and is_under(anc, root) and anc not in pinned:
            chain.append(anc)
            anc = os.path.dirname(anc)
        for a in reversed(chain):
            b.add(mountops.bind(a, readonly=False, why=f"pinned ancestor of {path}"))
            pinned.add(a)
        info = facts.info(path)
        is_dir = info is None or info.kind == "dir"
        b.add(mountops.bind(path, readonly=True, is_dir=is_dir, why=why))
        pinned.add(path)
    return protected, extra_protected


def _allowed_sockets(b: MountList, policy: Policy, facts: HostFacts, notes: list[str]) -> None:
    """Sockets the policy names explicitly come back on top of the masks."""
    for p in policy.allow_sockets:
        info = facts.info(p)
        if info is None:
            notes.append(f"allowed socket {p} does not exist; skipped")
            continue
        b.add(mountops.bind(p, readonly=False, is_dir=info.kind == "dir", why="allowed socket"))


def _landlock_rules(
    facts: HostFacts, writable: tuple[str, ...], notes: list[str]
) -> landlock.LandlockRuleset:
    """Reads everywhere, writes to the writable roots, git roots, /tmp and /dev/shm; signals
    and abstract sockets scoped to the sandbox where the kernel can."""
    rules = landlock.build_ruleset(
        facts.landlock_abi,
        read_paths=("/",),
        write_paths=(*writable, "/tmp", PRIVATE_SHM),
        device_paths=DEVICE_PATHS,
    )
    if facts.landlock_abi >= SCOPE_ABI:
        # The command may not signal, or connect to abstract unix sockets of, anything outside
        # its own domain: the runner, and (with the network on) the host's abstract sockets
        # such as X11's @/tmp/.X11-unix/X0.
        return replace(
            rules, scoped=landlock.SCOPE["SIGNAL"] | landlock.SCOPE["ABSTRACT_UNIX_SOCKET"]
        )
    notes.append(
        f"Landlock ABI {facts.landlock_abi} < {SCOPE_ABI}: signal and abstract-socket "
        "scoping unavailable"
    )
    return rules


def _namespaces(network: Network) -> tuple[str, ...]:
    net = ("net",) if network in (Network.OFF, Network.ALLOWLIST) else ()
    return ("user", "mount", "pid", "ipc", "uts", *net)


def _own_resolver(
    b: MountList, policy: Policy, facts: HostFacts, notes: list[str]
) -> dict[str, str]:
    """With the sandbox's own network namespace: its ``/etc/resolv.conf`` names the resolver
    the runner starts on its loopback (network/dns_stub.py), which fails every lookup at once
    and keeps the names for the report. A read-only copy over the file (over its target when
    it is a link: glibc follows it); without one glibc asks 127.0.0.1 anyway. With the network
    off, package managers are told not to retry (network/offline.py). Returns those
    variables."""
    network = policy.effective_network
    if network not in (Network.OFF, Network.ALLOWLIST):
        return {}
    info = facts.info(RESOLV_CONF_PATH)
    target = info.real if info is not None else RESOLV_CONF_PATH
    found = facts.info(target)
    if (
        found is not None
        and found.kind == "file"
        and not b.in_fresh(target)
        and not first_under(target, (*SYSTEM_TARGETS, "/tmp"))
    ):
        via = f" (via symlink to {target})" if target != RESOLV_CONF_PATH else ""
        b.add(
            mountops.file_copy(
                target,
                RESOLV_CONF,
                mode=0o644,
                why=f"the sandbox's own resolver: {RESOLV_CONF_PATH}{via}",
                entry=RESOLV_CONF_PATH,
            )
        )
    notes.append(
        "DNS: the sandbox's own resolver at 127.0.0.1:53 fails every lookup at once and "
        "reports the names tried"
    )
    return offline_environment(facts.env) if network is Network.OFF else {}


def _network(
    policy: Policy, facts: HostFacts, rules: landlock.LandlockRuleset, notes: list[str]
) -> tuple[landlock.LandlockRuleset, dict[str, str], dict[str, Any]]:
    """With the allowlist: the proxy's variables, its rules (as plan fields), and Landlock's
    second wall (TCP connect to the proxy and the exposed ports only). Returns the ruleset,
    the variables and the plan's proxy fields."""
    network = policy.effective_network
    env: dict[str, str] = {}
    proxy: dict[str, Any] = {"expose_ports": tuple(sorted(set(policy.expose_ports)))}
    if PROXY_PORT in policy.expose_ports and network is Network.ALLOWLIST:
        raise PolicyError(f"policy: port {PROXY_PORT} is the proxy's; expose another port")
    if network is Network.ALLOWLIST:
        env.update(proxy_environment(PROXY_PORT))
        if "GIT_SSH_COMMAND" not in facts.env:
            env.update(git_ssh_environment())
        proxy |= {
            "proxy_port": PROXY_PORT,
            "allow_domains": policy.allow_domains,
            "deny_domains": policy.deny_domains,
            "allow_local_targets": policy.allow_local_targets,
        }
        if facts.landlock_abi >= NET_ABI:  # a second wall: TCP connect to the proxy only
            connect = landlock.ACCESS_NET["CONNECT_TCP"]
            ports = (PROXY_PORT, *proxy["expose_ports"])
            rules = replace(
                rules, handled_net=connect, net_ports=tuple((connect, p) for p in ports)
            )
        else:
            notes.append(
                f"Landlock ABI {facts.landlock_abi} < {NET_ABI}: TCP connect is not limited to "
                "the proxy port (the empty network namespace still is the wall)"
            )
        notes.append(
            f"network allowlist: the only way out is the filtering proxy at 127.0.0.1:"
            f"{PROXY_PORT} (HTTP CONNECT, http:// and SOCKS5)"
        )
    if proxy["expose_ports"]:
        notes.append(
            "host services: 127.0.0.1:"
            + ", ".join(str(p) for p in proxy["expose_ports"])
            + " inside reach the same ports on the host's loopback"
        )
    return rules, env, proxy


def _published(policy: Policy, notes: list[str]) -> tuple[tuple[int, int], ...]:
    """``--publish``: which host loopback ports lead to which ports inside."""
    pairs = policy.published_ports()
    inside = {p for _, p in pairs}
    if policy.effective_network is Network.ALLOWLIST and PROXY_PORT in inside:
        raise PolicyError(f"policy: port {PROXY_PORT} inside is the proxy's; publish another port")
    if pairs:
        notes.append(
            "published: "
            + ", ".join(f"host 127.0.0.1:{h} -> 127.0.0.1:{p} inside" for h, p in pairs)
            + " (and the host's [::1]); the relay connects to nothing but these ports inside"
        )
    return pairs


def _guard_paths(
    policy: Policy,
    facts: HostFacts,
    roots: tuple[str, ...],
    protected: list[tuple[str, str]],
    extra_protected: tuple[str, ...],
) -> tuple[str, ...]:
    """The paths the name guard keeps read-only: those bound read-only, then the ones that
    may not exist yet (named by the policy, persistence places, git's included configs and
    hooks directories)."""
    protected_paths = [p for p, _ in protected]
    seen = set(protected_paths)
    under = RootIndex(roots)
    for p in dict.fromkeys((*policy.protected, *extra_protected)):
        # the guard sees real paths: a protected place behind a linked parent by its real name,
        # and by the name given too (the link itself may be what is protected)
        for q in dict.fromkeys((p, facts.resolved.get(p, p))):
            if q not in seen and (q == p or under.first_under(q)):
                protected_paths.append(q)
                seen.add(q)
    if _git_mode(policy) != "off":  # included configs, hooks dirs: even before they exist
        seen = set(protected_paths)
        named = (*facts.git_includes, *sorted(set(facts.hooks_paths.values())))
        protected_paths.extend(
            p for p in dict.fromkeys(named) if p not in seen and under.first_under(p)
        )
    return tuple(protected_paths)
