"""The Linux compiler (Policy + HostFacts -> LinuxPlan): golden renderings of whole plans.

Every step of a refactor must leave these files byte-identical; a change to what the kernel is
told shows up as a reviewable diff of a golden file. Regenerate with RINGFENCE_UPDATE_GOLDEN=1.
The facts are written out here (no host is looked at), so the files are the same on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ringfence.platforms.linux import bpf, landlock, seccomp
from ringfence.platforms.linux.hostfacts import HostFacts, PathInfo, ScrubFile
from ringfence.platforms.linux.mountops import MountKind, MountOp
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.model import Isolation, Limits, Mode, Network, Policy

GOLDEN = Path(__file__).parent / "golden"
HOME = "/home/dev"
WS = "/home/dev/repo"


def _facts(**extra: Any) -> HostFacts:
    paths = {
        WS: PathInfo("dir", WS),
        f"{WS}/.git": PathInfo("dir", f"{WS}/.git"),
        f"{WS}/.git/hooks": PathInfo("dir", f"{WS}/.git/hooks"),
        f"{WS}/.git/config": PathInfo("file", f"{WS}/.git/config"),
        f"{WS}/.envrc": PathInfo("file", f"{WS}/.envrc"),
        f"{WS}/.vscode": PathInfo("dir", f"{WS}/.vscode"),
        f"{HOME}/.ssh": PathInfo("dir", f"{HOME}/.ssh"),
        f"{HOME}/.aws": PathInfo("dir", f"{HOME}/.aws"),
        f"{HOME}/.bashrc": PathInfo("file", f"{HOME}/.bashrc"),
        f"{HOME}/.gitconfig": PathInfo("file", f"{HOME}/.gitconfig"),
        f"{HOME}/.npmrc": PathInfo("file", f"{HOME}/.npmrc"),
        "/srv/cache": PathInfo("dir", "/srv/cache"),
        "/tmp/build": PathInfo("dir", "/tmp/build"),
        "/tmp/krb5cc_1000": PathInfo("file", "/tmp/krb5cc_1000"),
        "/etc/resolv.conf": PathInfo("file", "/etc/resolv.conf"),
    }
    base: dict[str, Any] = {
        "uid": 1000,
        "gid": 1000,
        "home": HOME,
        "landlock_abi": 7,
        "env": {
            "HOME": HOME,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TERM": "xterm",
            "AWS_SECRET_ACCESS_KEY": "not-a-real-key",
            "GITHUB_TOKEN": "not-a-real-token",
        },
        "paths": paths,
        "cgroups": {
            "memory": (2, "/sys/fs/cgroup/user.slice/ringfence"),
            "pids": (2, "/sys/fs/cgroup/user.slice/ringfence"),
        },
        "cache_root": f"{HOME}/.cache/ringfence/workspaces/repo-0123abcd/cache",
        "tmp_layer": f"{HOME}/.cache/ringfence/workspaces/repo-0123abcd/tmp",
        "state_dir": f"{HOME}/.cache/ringfence/workspaces/repo-0123abcd",
        "own_state": (f"{HOME}/.cache/ringfence", f"{HOME}/.local/state/ringfence"),
        "tmp_secrets": ("/tmp/krb5cc_1000",),
        "xdg_dirs": {"config": f"{HOME}/.config", "data": f"{HOME}/.local/share"},
        "user_quotas": {"max_inotify_instances": 128, "max_inotify_watches": 65536},
        "scrub_files": {
            f"{HOME}/.npmrc": ScrubFile(
                "npmrc",
                f"{HOME}/.npmrc",
                content=b"registry=https://registry.npmjs.org/\n",
                removed=("//registry.npmjs.org/:_authToken",),
            ),
        },
    }
    base.update(extra)
    return HostFacts(**base)


CASES: dict[str, tuple[Policy, HostFacts]] = {
    "linux_default": (Policy(workspace=WS), _facts()),
    "linux_allowlist": (
        Policy(
            workspace=WS,
            writable_roots=("/srv/cache", "/tmp/build"),
            protected=(f"{WS}/secrets",),
            deny_read=("/srv/cache/keys",),
            network=Network.ALLOWLIST,
            allow_domains=("pypi.org", "*.npmjs.org"),
            deny_domains=("evil.pypi.org",),
            allow_sockets=("/run/docker.sock",),
            publish=(8080, "18080:3000"),
            strict_git=True,
            limits=Limits(processes=512, memory=1 << 30, open_files=1024, cpu_seconds=60),
        ),
        _facts(),
    ),
    "linux_read_only_online": (
        Policy(workspace=WS, mode=Mode.READ_ONLY, network=Network.ON, tool_caches=False),
        _facts(),
    ),
    "linux_home_workspace": (
        Policy(workspace=HOME, default_deny_read=False),
        _facts(
            paths={
                HOME: PathInfo("dir", HOME),
                f"{HOME}/.bashrc": PathInfo("file", f"{HOME}/.bashrc"),
            },
            home_dot_entries=(f"{HOME}/.bashrc", f"{HOME}/.config", f"{HOME}/.local"),
        ),
    ),
    "linux_tmp_sized_old_kernel": (
        Policy(workspace=WS, limits=Limits(tmp_size="25%"), expose_ports=(5432,)),
        _facts(landlock_abi=3, cgroups={}, cgroup_note="no delegated cgroup (doctor says more)"),
    ),
    "linux_reduced": (Policy(workspace=WS, isolation=Isolation.REDUCED), _facts()),
    "linux_full_access": (Policy(workspace=WS, mode=Mode.FULL_ACCESS), _facts()),
}


def _mount_flags(m: MountOp) -> str:
    """The mount attributes mounts.py sets for this op, read from the op's own fields: what a
    refactor of the plan's types must keep. (The golden text lists a mask's ``ro`` last, and
    none for a directory mask, which mounts.py seals read-only once the view is built.)"""
    flags = [n for n, on in (("nosuid", m.nosuid), ("nodev", m.nodev), ("noexec", m.noexec)) if on]
    if m.kind is MountKind.MASK:
        assert m.readonly, m  # every mask ends read-only
        if not m.is_dir:
            flags.append("ro")
    elif m.readonly:
        flags.insert(0, "ro")
    if m.kind is MountKind.BIND:
        flags.append("rec" if m.recursive else "single")
    return " ".join(flags)


def _mount_line(m: MountOp) -> str:
    parts = [m.kind, m.target]
    if m.source is not None:
        parts += ["<-", m.source]
    parts.append(f"[{_mount_flags(m)}]")
    parts.append("dir" if m.is_dir else "file")
    parts.append(f"mode={m.mode:04o}")
    if m.create:
        parts.append("create")
    if m.size is not None:
        parts.append(f"size={m.size}")
    if m.content is not None:
        parts.append(f"content={len(m.content)}B:{hashlib.sha256(m.content).hexdigest()[:16]}")
    return " ".join(parts) + f"  # {m.why}"


def render(plan: LinuxPlan) -> str:
    """A stable text of everything the runner is told, field by field."""
    out: dict[str, Any] = {
        "sandboxed": plan.sandboxed,
        "mode": str(plan.mode),
        "network": str(plan.network),
        "isolation": str(plan.isolation),
        "cwd": plan.cwd,
        "uid/gid": [plan.uid, plan.gid],
        "env": dict(sorted(plan.env.items())),
        "sandbox_env": sorted(plan.sandbox_env),
        "scrubbed_env": sorted(plan.scrubbed_env),
        "state_dir": plan.state_dir,
        "namespaces": list(plan.namespaces),
        "mounts": [_mount_line(m) for m in plan.mounts],
        "rlimits": [list(r) for r in plan.rlimits],
        "userns_limits": [list(r) for r in plan.userns_limits],
        "cgroups": [list(s) for s in plan.cgroup_sites],
        "cgroup_limits": [list(s) for s in plan.cgroup_limits],
        "cgroup_note": plan.cgroup_note,
        "proxy_port": plan.proxy_port,
        "allow_domains": list(plan.allow_domains),
        "deny_domains": list(plan.deny_domains),
        "allow_local_targets": plan.allow_local_targets,
        "expose_ports": list(plan.expose_ports),
        "publish": [list(p) for p in plan.publish],
        "guard": {
            "enabled": plan.guard_enabled,
            "roots": list(plan.guard_roots),
            "paths": list(plan.guard_paths),
            "names": list(plan.guard_names),
            "git": plan.guard_git,
            "git_roots": list(plan.guard_git_roots),
            "git_private_roots": list(plan.guard_git_private_roots),
            "hooks_dirs": list(plan.guard_hooks_dirs),
            "global_hooks_path": plan.guard_global_hooks_path,
            "home": plan.guard_home,
            "dot_dirs": list(plan.guard_dot_dirs),
        },
        "hidden": [list(h) for h in plan.hidden],
        "socket_roots": list(plan.socket_roots),
        "allow_sockets": list(plan.allow_sockets),
        "notes": list(plan.notes),
    }
    if plan.landlock is not None:
        ll = plan.landlock
        out["landlock"] = {
            "abi": ll.abi,
            "handled_fs": landlock.access_names(ll.handled_fs),
            "handled_net": ll.handled_net,
            "scoped": ll.scoped,
            "net_ports": [list(p) for p in ll.net_ports],
            "rules": [f"{r.path}: {' '.join(landlock.access_names(r.access))}" for r in ll.rules],
        }
    if plan.seccomp is not None:
        program = seccomp.build_program(plan.seccomp, "x86_64")
        digest = hashlib.sha256(bpf.encode(program)).hexdigest()
        out["seccomp"] = {
            "allow_inet": plan.seccomp.allow_inet,
            "x86_64": f"{len(program)} insns, sha256 {digest}",
        }
    return json.dumps(out, indent=1) + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_linux_plans_match_their_golden_text(name: str) -> None:
    """Review a change here by reading the diff of the golden file; regenerate with
    RINGFENCE_UPDATE_GOLDEN=1."""
    policy, facts = CASES[name]
    text = render(compile_linux(policy.validate(), facts, cwd=policy.workspace))
    path = GOLDEN / f"{name}.json"
    if os.environ.get("RINGFENCE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()
