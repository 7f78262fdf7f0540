"""Every path a policy names gets its treatment in the Linux plan, wherever it lies.

A property test over generated policies whose writable, protected and deny-read paths lie
under /tmp, /var/tmp, $HOME, the workspace and behind symlinked directories: the compiled
plan binds every writable root, makes every existing protected path read-only (or hands it to
the guard), and hides every existing deny-read path, or refuses the policy, never drops it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.errors import PolicyError
from ringfence.platforms.linux.hostfacts import HostFacts, PathInfo
from ringfence.platforms.linux.mountops import MountOp
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.model import Mode, Policy

HOME = "/home/u"
WS_CHOICES = ("/tmp/tmpab12/ws", "/var/tmp/ws", "/home/u/proj", "/srv/ws")
# (directory, is a symlink to) — the symlinked ones resolve elsewhere
DIRS = {
    "/tmp/tmpab12": None,
    "/tmp/tmpab12/ws": None,
    "/tmp/other": None,
    "/tmp/link": "/var/tmp/real",
    "/var/tmp": None,
    "/var/tmp/ws": None,
    "/var/tmp/real": None,
    "/home/u": None,
    "/home/u/proj": None,
    "/home/u/proj/sub": None,
    "/home/u/linked": "/tmp/other",
    "/srv/ws": None,
    "/srv/ws/build": None,
}
LEAVES = ("secret", "creds.json", ".env", "keys")


def _facts(files: list[str]) -> HostFacts:
    paths: dict[str, PathInfo] = {}
    for d, link in DIRS.items():
        paths[d] = PathInfo("symlink", link) if link else PathInfo("dir", d)
    for f in files:
        parent = os.path.dirname(f)
        real_parent = DIRS.get(parent) or parent
        real = os.path.join(real_parent, os.path.basename(f))
        if real != f:
            paths[f] = PathInfo("symlink", real)
        paths[real] = PathInfo("file", real)
    return _hf(paths, tmp_layer="/home/u/.cache/ringfence/workspaces/ws-0/tmp")


def _hf(paths: dict[str, PathInfo], **kw: object) -> HostFacts:
    """Facts of a host with only ``paths`` on it (and ``kw`` for the other fields)."""
    base: dict[str, object] = {
        "uid": 1000,
        "gid": 1000,
        "home": HOME,
        "landlock_abi": 6,
        "env": {"HOME": HOME},
        "paths": paths,
    }
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


def _covering_mask(plan: LinuxPlan, target: str) -> MountOp | None:
    """The last mount op at or above ``target``: what the command sees there."""
    last = None
    for op in plan.mounts:
        if op.target == target or target.startswith(op.target.rstrip("/") + "/"):
            last = op
    return last


file_paths = st.builds(os.path.join, st.sampled_from(sorted(DIRS)), st.sampled_from(LEAVES)).filter(
    lambda p: True
)


@settings(max_examples=300, deadline=None)
@given(
    workspace=st.sampled_from(WS_CHOICES),
    extra_roots=st.lists(st.sampled_from(["/tmp/other", "/var/tmp/real", "/srv/ws/build"])),
    deny=st.lists(file_paths, max_size=5),
    protect=st.lists(file_paths, max_size=5),
    read_only=st.booleans(),
)
def test_every_policy_path_gets_its_treatment(
    workspace: str,
    extra_roots: list[str],
    deny: list[str],
    protect: list[str],
    read_only: bool,
) -> None:
    files = sorted(set(deny) | set(protect))
    facts = _facts(files)
    roots = () if read_only else tuple(dict.fromkeys(extra_roots))
    policy = Policy(
        mode=Mode.READ_ONLY if read_only else Mode.WORKSPACE_WRITE,
        workspace=workspace,
        writable_roots=roots,
        deny_read=tuple(dict.fromkeys(deny)),
        protected=tuple(dict.fromkeys(protect)),
        default_deny_read=False,
    )
    plan = compile_linux(policy, facts, cwd=workspace)
    # Writable roots: bound read-write at their own path, and nothing read-only over them.
    for root in policy.writable_paths():
        op = _covering_mask(plan, root)
        assert op is not None and op.kind == "bind" and not op.readonly, (root, op)
    # Deny-read: the resolved file is covered by a mask, whichever mount came before.
    for p in policy.deny_read:
        info = facts.info(p)
        assert info is not None
        target = info.real if info.kind == "symlink" else p
        op = _covering_mask(plan, target)
        assert op is not None and op.kind == "mask", (p, target, op)
    # Protected paths inside a writable root: read-only bind on it (or an enclosing one), and
    # named to the guard; outside the roots everything is read-only already.
    for p in policy.protected:
        info = facts.info(p)
        assert info is not None
        target = info.real if info.kind == "symlink" else p
        inside = any(target == r or target.startswith(r + "/") for r in policy.writable_paths())
        if not inside:
            if target.startswith("/tmp/"):  # the host's file, not the layer's copy of it
                op = _covering_mask(plan, target)
                assert op is not None and (
                    op.kind == "mask" or (op.readonly and op.source == target)
                ), (p, op)
            continue
        op = _covering_mask(plan, target)
        assert op is not None and (op.kind == "mask" or op.readonly), (p, target, op)
        assert p in plan.guard_paths or target in plan.guard_paths
    # Read-only mode: a workspace under /tmp is the host's directory, read-only.
    if read_only and workspace.startswith("/tmp/"):
        op = _covering_mask(plan, workspace)
        assert op is not None and op.kind == "bind" and op.readonly


@pytest.mark.parametrize("path", ["/proc/self/environ", "/dev/shm/x", "/sys/kernel"])
def test_a_deny_read_path_the_sandbox_rebuilds_is_refused(path: str) -> None:
    facts = _facts([])
    with pytest.raises(PolicyError, match="builds its own"):
        compile_linux(
            Policy(workspace="/srv/ws", deny_read=(path,), default_deny_read=False),
            facts,
            cwd="/srv/ws",
        )


def test_tmp_secrets_are_hidden_and_host_tmp_is_the_lower_layer() -> None:
    facts = _hf(
        {
            "/srv/ws": PathInfo("dir", "/srv/ws"),
            "/tmp/krb5cc_1000": PathInfo("file", "/tmp/krb5cc_1000"),
            "/tmp/ssh-XXXXabcd": PathInfo("dir", "/tmp/ssh-XXXXabcd"),
        },
        tmp_layer="/c/ws/tmp",
        tmp_secrets=("/tmp/krb5cc_1000", "/tmp/ssh-XXXXabcd"),
    )
    plan = compile_linux(Policy(workspace="/srv/ws"), facts, cwd="/srv/ws")
    tmp = [op for op in plan.mounts if op.target == "/tmp"]
    assert [(op.kind, op.source) for op in tmp] == [("overlay", "/c/ws/tmp")]
    masks = {op.target for op in plan.mounts if op.kind == "mask"}
    assert {"/tmp/krb5cc_1000", "/tmp/ssh-XXXXabcd"} <= masks
    plan = compile_linux(Policy(workspace="/srv/ws", default_deny_read=False), facts, cwd="/srv/ws")
    assert not {"/tmp/krb5cc_1000", "/tmp/ssh-XXXXabcd"} & {op.target for op in plan.mounts}


def test_without_a_layer_tmp_is_a_private_tmpfs_and_says_so() -> None:
    facts = _hf({"/srv/ws": PathInfo("dir", "/srv/ws")})
    plan = compile_linux(Policy(workspace="/srv/ws"), facts, cwd="/srv/ws")
    assert [op.kind for op in plan.mounts if op.target == "/tmp"] == ["tmpfs"]
    assert any("/tmp: private to this command" in n for n in plan.notes)


def test_own_state_is_hidden_and_this_workspaces_cache_comes_back() -> None:
    cache = "/home/u/.cache/ringfence/workspaces/ws-0/cache"
    facts = _hf(
        {
            "/srv/ws": PathInfo("dir", "/srv/ws"),
            "/home/u/.cache/ringfence": PathInfo("dir", "/home/u/.cache/ringfence"),
            "/home/u/.local/state/ringfence": PathInfo("dir", "/home/u/.local/state/ringfence"),
            cache: PathInfo("dir", cache),
        },
        cache_root=cache,
        tmp_layer="/home/u/.cache/ringfence/workspaces/ws-0/tmp",
        own_state=("/home/u/.cache/ringfence", "/home/u/.local/state/ringfence"),
    )
    plan = compile_linux(Policy(workspace="/srv/ws"), facts, cwd="/srv/ws")
    seq = [(op.kind, op.target, op.mode) for op in plan.mounts]
    i = seq.index(("mask", "/home/u/.cache/ringfence", 0o111))
    assert ("mask", "/home/u/.local/state/ringfence", 0) in seq
    j = [k for k, (kind, t, _) in enumerate(seq) if kind == "bind" and t == cache]
    assert j and j[0] > i  # bound back on top of the mask
    assert cache in plan.guard_roots


def test_home_as_workspace_protects_persistence_locations() -> None:
    facts = _hf(
        {
            HOME: PathInfo("dir", HOME),
            "/home/u/.local/bin": PathInfo("dir", "/home/u/.local/bin"),
        },
    )
    plan = compile_linux(Policy(workspace=HOME), facts, cwd=HOME)
    assert ("bind", "/home/u/.local/bin", True) in [
        (op.kind, op.target, op.readonly) for op in plan.mounts
    ]
    for rel in (".config/systemd", ".pam_environment", ".local/bin", "bin", ".ssh"):
        assert os.path.join(HOME, rel) in plan.guard_paths, rel
    # A project directory that happens to hold bin/ keeps it writable.
    plan = compile_linux(Policy(workspace="/srv/ws"), _facts([]), cwd="/srv/ws")
    assert "/srv/ws/bin" not in plan.guard_paths


def test_a_stopped_link_scan_is_said_not_hidden() -> None:
    from ringfence.platforms.linux.hostfacts import LINK_SCAN_STOPPED

    facts = _hf(
        {"/srv/ws": PathInfo("dir", "/srv/ws"), "/srv/ws/t": PathInfo("file", "/srv/ws/t")},
        outside_git_and_links=("/srv/ws/t", LINK_SCAN_STOPPED),
    )
    plan = compile_linux(Policy(workspace="/srv/ws"), facts, cwd="/srv/ws")
    assert any("scan for dotfile links stopped" in n for n in plan.notes)
    assert "/srv/ws/t" in plan.guard_paths
    assert not any("\0" in p for p in plan.guard_paths)
