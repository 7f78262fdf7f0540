"""The Linux compiler: a pure function of (Policy, HostFacts), checked without privileges."""

from __future__ import annotations

import os

import pytest

from ringfence.errors import PolicyError, UnsupportedError
from ringfence.explain import render
from ringfence.platforms.linux import mountops
from ringfence.platforms.linux.hostfacts import HostFacts, PathInfo, ScrubFile
from ringfence.platforms.linux.mountops import MountOp
from ringfence.platforms.linux.plan import compile_linux
from ringfence.policy.model import Mode, Network, Policy


def facts(paths: dict[str, str] | None = None, **kw: object) -> HostFacts:
    info = {"/w": PathInfo("dir", "/w")}
    for p, spec in (paths or {}).items():
        kind, _, real = spec.partition(":")
        info[p] = PathInfo(kind, real or p)
    base: dict[str, object] = {
        "uid": 1000,
        "gid": 1000,
        "home": "/home/u",
        "landlock_abi": 6,
        "env": {"HOME": "/home/u", "PATH": "/bin"},
        "paths": info,
    }
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


def ops(plan_mounts: tuple[MountOp, ...], kind: str | None = None) -> list[tuple[str, str, bool]]:
    return [(m.kind, m.target, m.readonly) for m in plan_mounts if kind is None or m.kind == kind]


def test_default_plan_shape() -> None:
    plan = compile_linux(Policy(workspace="/w"), facts(), cwd="/w")
    assert plan.namespaces == ("user", "mount", "pid", "ipc", "uts", "net")
    assert plan.mounts[0] == mountops.bind("/", readonly=True, why="host root, read-only")
    targets = [m.target for m in plan.mounts]
    assert targets.index("/tmp") < targets.index("/w")
    assert ("bind", "/w", False) in ops(plan.mounts)
    assert ("proc", "/proc", False) in ops(plan.mounts)
    assert plan.env["RINGFENCE_SANDBOX"] == "1" and plan.env["TMPDIR"] == "/tmp"
    assert plan.landlock is not None and plan.landlock.abi == 6
    assert [r.path for r in plan.landlock.rules][:2] == ["/", "/w"]


def test_compile_is_deterministic() -> None:
    f = facts({"/w/.git": "dir", "/w/.git/hooks": "dir"})
    assert compile_linux(Policy(workspace="/w"), f, cwd="/w") == compile_linux(
        Policy(workspace="/w"), f, cwd="/w"
    )


def test_network_on_keeps_the_host_network() -> None:
    plan = compile_linux(Policy(workspace="/w", network=Network.ON), facts(), cwd="/w")
    assert "net" not in plan.namespaces
    assert plan.env["RINGFENCE_NETWORK"] == "on"


def test_existing_protected_paths_are_bound_read_only_with_pinned_ancestors() -> None:
    f = facts(
        {"/w/.git": "dir", "/w/.git/hooks": "dir", "/w/.git/config": "file", "/w/.envrc": "file"}
    )
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    binds = ops(plan.mounts, "bind")
    assert ("bind", "/w/.git", False) in binds  # pinned: cannot be renamed away
    assert ("bind", "/w/.git/hooks", True) in binds
    assert ("bind", "/w/.envrc", True) in binds
    envrc = next(m for m in plan.mounts if m.target == "/w/.envrc")
    assert envrc.is_dir is False
    order = [m.target for m in plan.mounts]
    assert order.index("/w") < order.index("/w/.git") < order.index("/w/.git/hooks")
    # .git/config is replaced through the guard's content check, so it is no mount point
    # (a rename onto a mount point fails); the guard's git rules are on instead.
    assert not any(m.target == "/w/.git/config" for m in plan.mounts)
    assert plan.guard_git == "allowlist" and plan.guard_enabled
    assert not any(n.startswith(".git/") for n in plan.guard_names)


def test_strict_git_keeps_all_of_git_read_only_and_the_git_rules_strict() -> None:
    f = facts({"/w/.git": "dir", "/w/.git/hooks": "dir", "/w/.git/config": "file"})
    plan = compile_linux(Policy(workspace="/w", strict_git=True), f, cwd="/w")
    assert ("bind", "/w/.git", True) in ops(plan.mounts, "bind")
    assert plan.guard_git == "strict" and ".git" in plan.guard_names


def test_no_default_protect_turns_the_git_rules_off() -> None:
    plan = compile_linux(Policy(workspace="/w", default_protected=False), facts(), cwd="/w")
    assert plan.guard_git == "off" and not plan.guard_names
    assert plan.guard_enabled  # the unix socket rules still need it


def test_missing_protected_names_get_no_mount_and_no_placeholder() -> None:
    plan = compile_linux(Policy(workspace="/w"), facts(), cwd="/w")
    assert not any(m.target.startswith("/w/") for m in plan.mounts)
    assert ".envrc" in plan.guard_names


def test_symlinked_protected_name_protects_the_target_not_the_link() -> None:
    f = facts({"/w/.vscode": "symlink:/w/real", "/w/real": "dir"})
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    targets = [m.target for m in plan.mounts]
    assert "/w/real" in targets and "/w/.vscode" not in targets


def test_symlink_to_outside_writable_roots_needs_no_mount() -> None:
    f = facts({"/w/.vscode": "symlink:/etc/x", "/etc/x": "dir"})
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    assert "/etc/x" not in [m.target for m in plan.mounts]


def test_gitdir_pointer_and_modules() -> None:
    f = facts(
        {
            "/w/.git": "file",
            "/g": "dir",
            "/g/config": "file",
            "/g/hooks": "dir",
            "/g/modules/m/config": "file",
            "/g/modules/m/hooks": "dir",
            "/x": "dir",
        },
        gitdirs={"/w/.git": "/g"},
        modules={"/g": ("/g/modules/m",)},
    )
    plan = compile_linux(Policy(workspace="/w", writable_roots=("/g",)), f, cwd="/w")
    ro = [t for k, t, r in ops(plan.mounts, "bind") if r]
    assert "/g/hooks" in ro and "/g/modules/m/hooks" in ro
    # configs are the guard's (checked by content), never mount points
    assert "/g/config" not in ro and "/g/modules/m/config" not in ro


def test_linked_worktree_git_dirs_become_git_only_roots() -> None:
    f = facts(
        {
            "/w/.git": "file",
            "/main/.git": "dir",
            "/main/.git/hooks": "dir",
            "/main/.git/worktrees/w": "dir",
            "/main/.git/worktrees/w/HEAD": "file",
        },
        gitdirs={"/w/.git": "/main/.git/worktrees/w"},
        commondirs={"/main/.git/worktrees/w": "/main/.git"},
        backlinks={"/main/.git/worktrees/w": "/w/.git"},
    )
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    binds = ops(plan.mounts, "bind")
    assert ("bind", "/main/.git", False) in binds
    assert ("bind", "/main/.git/worktrees/w", False) in binds
    assert ("bind", "/main/.git/hooks", True) in binds
    assert set(plan.guard_git_roots) == {"/main/.git", "/main/.git/worktrees/w"}
    assert plan.guard_roots == ("/w",)  # not writable roots: only the git rules apply there
    assert plan.landlock is not None
    assert "/main/.git" in [r.path for r in plan.landlock.rules]
    # without the git rules (no default protection) nothing outside the workspace opens up
    bare = compile_linux(Policy(workspace="/w", default_protected=False), f, cwd="/w")
    assert bare.guard_git_roots == () and ("bind", "/main/.git", False) not in ops(bare.mounts)
    assert "/main/.git" not in plan.socket_roots  # git needs no socket there


@pytest.mark.parametrize(
    ("backlinks", "gitdir", "common"),
    [
        ({}, "/main/.git/worktrees/w", "/main/.git"),  # no gitdir file pointing back
        ({"/main/.git/worktrees/w": "/elsewhere/.git"}, "/main/.git/worktrees/w", "/main/.git"),
        ({"/victim/.git": "/w/.git"}, "/victim/.git", "/victim/.git"),  # not a worktree dir
    ],
)
def test_a_git_file_naming_another_repository_opens_nothing(
    backlinks: dict[str, str], gitdir: str, common: str
) -> None:
    """A .git file is the workspace's claim: only a linked worktree git made itself (its
    git directory in <common>/worktrees/, pointing back at this .git file) is believed."""
    f = facts(
        {"/w/.git": "file", gitdir: "dir", os.path.join(gitdir, "HEAD"): "file", common: "dir"},
        gitdirs={"/w/.git": gitdir},
        commondirs={gitdir: common},
        backlinks=backlinks,
    )
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    assert plan.guard_git_roots == ()
    assert not any(m.source in (gitdir, common) for m in plan.mounts if m.kind == "bind")


def test_hooks_path_directories_are_read_only_and_guarded() -> None:
    f = facts({"/w/.git": "dir", "/w/.husky": "dir"}, hooks_paths={"/w/.git": "/w/.husky"})
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    assert ("bind", "/w/.husky", True) in ops(plan.mounts, "bind")
    assert plan.guard_hooks_dirs == ("/w/.husky",)


def test_strict_git_binds_the_whole_git_dir() -> None:
    f = facts({"/w/.git": "dir", "/w/.git/hooks": "dir"})
    plan = compile_linux(Policy(workspace="/w", strict_git=True), f, cwd="/w")
    assert ("bind", "/w/.git", True) in ops(plan.mounts, "bind")
    assert ("bind", "/w/.git/hooks", True) not in ops(plan.mounts, "bind")


def test_deny_read_masks_existing_paths_only() -> None:
    f = facts({"/home/u/.ssh": "dir", "/home/u/.netrc": "file"})
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    masks = {m.target: m for m in plan.mounts if m.kind == "mask"}
    assert masks["/home/u/.ssh"].is_dir and masks["/home/u/.ssh"].mode == 0
    assert not masks["/home/u/.netrc"].is_dir
    assert "/home/u/.aws" not in masks


def test_runtime_dirs_are_masked_and_allowed_sockets_come_back() -> None:
    f = facts(
        {"/run/user": "dir", "/run/user/1000/bus": "other"},
        env={"XDG_RUNTIME_DIR": "/run/user/1000"},
    )
    plan = compile_linux(Policy(workspace="/w", allow_sockets=("/run/user/1000/bus",)), f, cwd="/w")
    mask = next(m for m in plan.mounts if m.target == "/run/user")
    assert mask.kind == "mask" and mask.mode == 0o111
    rebind = next(m for m in plan.mounts if m.target == "/run/user/1000/bus")
    assert rebind.kind == "bind" and rebind.create


def test_writable_root_under_tmp_gets_a_created_mountpoint() -> None:
    f = facts({"/tmp/w": "dir"})
    plan = compile_linux(Policy(workspace="/tmp/w"), f, cwd="/tmp/w")
    op = next(m for m in plan.mounts if m.target == "/tmp/w")
    assert op.create and not op.readonly


def test_nothing_is_created_outside_fresh_mounts() -> None:
    f = facts({"/w/.git": "dir", "/w/.git/hooks": "dir", "/home/u/.ssh": "dir"})
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    fresh = ("/dev/", "/tmp/", "/run/user/")
    for m in plan.mounts:
        if m.create:
            assert m.target.startswith(fresh), m


@pytest.mark.parametrize("root", ["/", "/proc", "/proc/1", "/dev", "/sys/fs"])
def test_system_dirs_cannot_be_writable_roots(root: str) -> None:
    f = facts({root: "dir"})
    with pytest.raises(PolicyError, match="writable root"):
        compile_linux(Policy(workspace="/w", writable_roots=(root,)), f, cwd="/w")


def test_missing_writable_root_is_refused() -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        compile_linux(Policy(workspace="/w", writable_roots=("/gone",)), facts(), cwd="/w")


def test_no_landlock_fails_closed() -> None:
    with pytest.raises(UnsupportedError, match="Landlock"):
        compile_linux(Policy(workspace="/w"), facts(landlock_abi=0), cwd="/w")


def test_full_access_has_no_boundary_and_needs_no_landlock() -> None:
    plan = compile_linux(
        Policy(workspace="/w", mode=Mode.FULL_ACCESS), facts(landlock_abi=0), cwd="/w"
    )
    assert not plan.sandboxed and plan.mounts == () and plan.landlock is None
    assert plan.env["RINGFENCE_SANDBOX"] == "0"


def test_read_only_mode_binds_no_writable_root() -> None:
    plan = compile_linux(Policy(workspace="/w", mode=Mode.READ_ONLY), facts(), cwd="/w")
    assert ("bind", "/w", False) not in ops(plan.mounts)
    assert plan.landlock is not None
    assert "/w" not in [r.path for r in plan.landlock.rules]


def test_plan_to_dict_is_json_ready() -> None:
    import json

    plan = compile_linux(Policy(workspace="/w"), facts(), cwd="/w")
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["landlock"]["rules"][0] == {
        "path": "/",
        "access": ["EXECUTE", "READ_FILE", "READ_DIR"],
    }


def test_landlock_scopes_signals_and_abstract_sockets_from_abi_6() -> None:
    from ringfence.platforms.linux import landlock

    plan = compile_linux(Policy(workspace="/w"), facts(landlock_abi=6), cwd="/w")
    assert plan.landlock is not None
    assert plan.landlock.scoped == landlock.SCOPE["SIGNAL"] | landlock.SCOPE["ABSTRACT_UNIX_SOCKET"]
    older = compile_linux(Policy(workspace="/w"), facts(landlock_abi=5), cwd="/w")
    assert older.landlock is not None and older.landlock.scoped == 0
    assert any("scoping unavailable" in n for n in older.notes)


def test_limits_reach_the_plan() -> None:
    from ringfence.policy.model import Limits

    policy = Policy(workspace="/w", limits=Limits(processes=99, tmp_size="1g", cpu_seconds=5))
    plan = compile_linux(policy, facts(), cwd="/w")
    assert ("NPROC", 99) in plan.rlimits and ("CPU", 5) in plan.rlimits
    assert ("max_user_namespaces", 0) in plan.userns_limits
    tmp = next(m for m in plan.mounts if m.target == "/tmp")
    assert tmp.size == "1g"


def test_minimum_landlock_abi_is_enforced() -> None:
    with pytest.raises(UnsupportedError, match="requires Landlock ABI 6"):
        compile_linux(Policy(workspace="/w", landlock_min_abi=6), facts(landlock_abi=5), cwd="/w")
    plan = compile_linux(
        Policy(workspace="/w", landlock_min_abi=6), facts(landlock_abi=6), cwd="/w"
    )
    assert plan.sandboxed
    with pytest.raises(PolicyError, match="landlock_min_abi"):
        Policy(workspace="/w", landlock_min_abi=0).validate()


def _scrub_facts(**files: ScrubFile) -> HostFacts:
    paths = {p: "file" for p in files}
    paths.update({f.real: "file" for f in files.values()})
    for p, f in files.items():
        if f.real != p:
            paths[p] = f"symlink:{f.real}"
    return facts(paths, scrub_files=files)


def test_mixed_config_files_get_a_scrubbed_copy() -> None:
    npmrc = ScrubFile("npmrc", "/home/u/.npmrc", 0o400, b"registry=x\n", ("_authToken",))
    plan = compile_linux(
        Policy(workspace="/w"), _scrub_facts(**{"/home/u/.npmrc": npmrc}), cwd="/w"
    )
    [op] = [m for m in plan.mounts if m.target == "/home/u/.npmrc"]
    assert op.kind == "file" and op.content == b"registry=x\n" and op.mode == 0o400
    assert op.why == "scrubbed: ~/.npmrc (removed: _authToken)"
    # the plan's JSON form names the copy by size and digest, never its text
    [shown] = [m for m in plan.to_dict()["mounts"] if m["target"] == "/home/u/.npmrc"]
    assert shown["content"].startswith("11 bytes, sha256 ")
    assert "scrubbed: ~/.npmrc (removed: _authToken)" in render(plan)


def test_a_symlinked_config_file_is_scrubbed_at_its_target() -> None:
    f = ScrubFile("npmrc", "/home/u/dotfiles/npmrc", 0o400, b"registry=x\n", ())
    plan = compile_linux(Policy(workspace="/w"), _scrub_facts(**{"/home/u/.npmrc": f}), cwd="/w")
    kinds = {m.target: m.kind for m in plan.mounts}
    assert kinds["/home/u/dotfiles/npmrc"] == "file" and "/home/u/.npmrc" not in kinds


def test_a_file_that_cannot_be_scrubbed_is_hidden() -> None:
    f = ScrubFile("docker", "/home/u/.docker/config.json", error="not JSON")
    plan = compile_linux(
        Policy(workspace="/w"), _scrub_facts(**{"/home/u/.docker/config.json": f}), cwd="/w"
    )
    [op] = [m for m in plan.mounts if m.target == "/home/u/.docker/config.json"]
    assert op.kind == "mask" and op.content is None
    assert any("could not be scrubbed (not JSON); hidden instead" in n for n in plan.notes)


def test_deny_read_named_by_the_user_still_hides_a_mixed_file() -> None:
    f = ScrubFile("npmrc", "/home/u/.npmrc", 0o400, b"registry=x\n", ())
    policy = Policy(workspace="/w", deny_read=("/home/u/.npmrc",))
    plan = compile_linux(policy, _scrub_facts(**{"/home/u/.npmrc": f}), cwd="/w")
    assert [m.kind for m in plan.mounts if m.target == "/home/u/.npmrc"] == ["mask"]


def test_a_link_into_a_deny_read_path_is_hidden_not_scrubbed() -> None:
    f = ScrubFile("npmrc", "/home/u/.netrc", 0o400, b"machine-x\n", ())
    plan = compile_linux(Policy(workspace="/w"), _scrub_facts(**{"/home/u/.npmrc": f}), cwd="/w")
    assert [m.kind for m in plan.mounts if m.target == "/home/u/.netrc"] == ["mask", "mask"]
    assert all(m.content is None for m in plan.mounts)
    assert any("its target lies in deny-read /home/u/.netrc" in n for n in plan.notes)


def test_writable_dev_shm_names_the_private_tmpfs_never_the_hosts() -> None:
    """``--writable /dev/shm`` is accepted and binds nothing: the sandbox's own /dev/shm is a
    fresh tmpfs, writable already; the host's would be a channel to the host and to every
    other sandbox."""
    f = facts({"/dev/shm": "dir"})
    plan = compile_linux(Policy(workspace="/w", writable_roots=("/dev/shm",)), f, cwd="/w")
    shm = [m for m in plan.mounts if m.target == "/dev/shm"]
    assert [(m.kind, m.source) for m in shm] == [("tmpfs", None)]
    assert shm[0].why == "private to this sandbox (--writable /dev/shm names it)"
    sources = [m.source or "" for m in plan.mounts]
    assert not any(s == "/dev/shm" or s.startswith("/dev/shm/") for s in sources)
    assert "/dev/shm" not in plan.guard_roots
    assert any(n.startswith("--writable /dev/shm: the sandbox's own") for n in plan.notes)
    assert plan.landlock is not None and "/dev/shm" in [r.path for r in plan.landlock.rules]
    default = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    assert plan.mounts == default.mounts and plan.landlock == default.landlock


@pytest.mark.parametrize("root", ["/dev/shm/sub", "/dev/shm/a/b"])
def test_a_directory_inside_dev_shm_is_refused_with_what_to_name(root: str) -> None:
    f = facts({root: "dir", "/dev/shm": "dir"})
    with pytest.raises(PolicyError, match=r"private, empty tmpfs.*--writable /dev/shm names it"):
        compile_linux(Policy(workspace="/w", writable_roots=(root,)), f, cwd="/w")


def test_dev_shm_as_the_workspace_is_refused() -> None:
    """A command started in the host's /dev/shm would find the private one, empty."""
    f = facts({"/dev/shm": "dir"})
    with pytest.raises(PolicyError, match="/dev/shm cannot be a writable root"):
        compile_linux(Policy(workspace="/dev/shm"), f, cwd="/dev/shm")


def test_reduced_isolation_refuses_writable_dev_shm() -> None:
    from ringfence.policy.model import Isolation

    f = facts({"/dev/shm": "dir"})
    policy = Policy(workspace="/w", writable_roots=("/dev/shm",), isolation=Isolation.REDUCED)
    with pytest.raises(PolicyError, match="reduced isolation does not have"):
        compile_linux(policy, f, cwd="/w")


def test_the_plan_lists_what_it_hides_for_the_reports() -> None:
    f = facts({"/home/u/.ssh": "dir", "/home/u/.netrc": "symlink:/home/u/secrets/netrc",
               "/home/u/secrets/netrc": "file"})  # fmt: skip
    plan = compile_linux(Policy(workspace="/w"), f, cwd="/w")
    assert ("/home/u/.ssh", "/home/u/.ssh") in plan.hidden
    assert ("/home/u/secrets/netrc", "/home/u/.netrc") in plan.hidden


def test_socket_rule_reaches_the_guard() -> None:
    """With namespaces the guard always runs for the unix socket rule: writable roots, the
    private /tmp and /dev/shm, and --allow-socket entries (with a link's target)."""
    f = facts({"/var/run/pg.sock": "symlink:/run/pg.sock", "/run/pg.sock": "other"})
    policy = Policy(workspace="/w", allow_sockets=("/var/run/pg.sock",))
    plan = compile_linux(policy, f, cwd="/w")
    assert plan.guard_enabled
    assert plan.socket_roots[0] == "/w" and plan.socket_roots[-2:] == ("/tmp", "/dev/shm")
    assert plan.allow_sockets == ("/var/run/pg.sock", "/run/pg.sock")
    ro = compile_linux(Policy(workspace="/w", mode=Mode.READ_ONLY), facts(), cwd="/w")
    assert ro.guard_enabled and ro.socket_roots == ("/tmp", "/dev/shm")


def test_reduced_isolation_has_no_socket_rule() -> None:
    from ringfence.policy.model import Isolation

    plan = compile_linux(Policy(workspace="/w", isolation=Isolation.REDUCED), facts(), cwd="/w")
    assert plan.socket_roots == () and not plan.guard_enabled
    assert any("unix sockets on disk reachable" in n for n in plan.notes)


def test_a_refused_socket_is_widened_by_exactly_that_socket() -> None:
    from ringfence.escalation import widen, widenings

    plan = compile_linux(Policy(workspace="/w"), facts(), cwd="/w")
    v = {"kind": "filesystem", "op": "connect", "path": "/run/pg.sock",
         "rule": "unix socket outside the writable roots"}  # fmt: skip
    (w,) = widenings(plan, [v])
    assert w["flag"] == "--allow-socket /run/pg.sock"
    assert widen(Policy(workspace="/w"), [w]).allow_sockets == ("/run/pg.sock",)
