"""Escalation hints, without a sandbox: for refused paths of every kind, the proposed writable
root is never one of the kinds that widen too much (home, its ancestors and hidden
directories, /, /proc, /sys, /dev and the other system directories, a parent of the
workspace, a protected name, a hidden path), and refused writes of shells to their history
files are not reported at all.

The plans are compiled from a real directory tree (the hints look at which directories
exist), built under /var/tmp: the sandbox's /tmp is private, so nothing under the host's /tmp
is ever masked or proposed."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence import escalation
from ringfence.escalation import (
    OUTSIDE,
    quiet,
    refusal_of_root,
    relabel,
    reported,
    smallest_root,
    suggested_root,
    widenings,
)
from ringfence.platforms.linux import hostfacts
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import defaults
from ringfence.policy.model import Mode, Policy


@dataclass(frozen=True)
class Tree:
    base: Path
    home: Path
    ws: Path
    other: Path  # a directory a hint may name: not home, not system, not a parent
    plan: LinuxPlan


def _plan(home: Path, ws: Path, **policy: object) -> LinuxPlan:
    pol = Policy(workspace=str(ws), tool_caches=False, **policy)  # type: ignore[arg-type]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    facts = hostfacts.gather(pol, env=env, landlock_abi=6)
    return compile_linux(pol, facts, cwd=str(ws))


def _var_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="ringfence-esc-", dir="/var/tmp")).resolve()


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Here, a directory under /var/tmp (see the module's docstring)."""
    d = _var_tmp()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    base = _var_tmp()
    home = base / "home" / "u"
    ws = home / "proj"
    other = base / "srv" / "data"
    for d in (
        ws / "sub",
        other / "deep",
        other / "repo" / ".git" / "hooks",
        other / ".vscode",
        other / ".config",
        home / ".config" / "gh",
        home / ".config" / "app",
        home / ".ssh",
        home / ".local" / "bin",
        home / "proj2",
    ):
        d.mkdir(parents=True)
    (home / ".bashrc").write_text("")
    (home / ".bash_history").write_text("")
    yield Tree(base, home, ws, other, _plan(home, ws))
    shutil.rmtree(base, ignore_errors=True)


def _outside(path: str | Path, op: str = "openat") -> dict[str, str]:
    return {"kind": "filesystem", "op": op, "path": str(path), "rule": OUTSIDE}


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _homes(tree: Tree) -> list[str]:
    out = [str(tree.home), os.path.realpath(str(tree.home))]
    if os.environ.get("HOME", "").startswith("/"):
        out.append(os.path.realpath(os.environ["HOME"]))
    return out


def _forbidden(tree: Tree, root: str) -> str | None:
    """The oracle, written apart from the code: why ``root`` must never be proposed."""
    if not root.startswith("/") or os.path.normpath(root) != root:
        return "relative or not normal"
    if root == "/" or root.count("/") == 1:
        return "/ or top-level"
    if root == "/var/tmp" or _under(root, "/tmp") or _under(root, "/dev/shm"):
        return "shared tmp"
    for sys_dir in ("/proc", "/sys", "/dev", "/etc", "/usr", "/run", "/boot", "/var/lib"):
        if _under(root, sys_dir):
            return f"system: {sys_dir}"
    for h in _homes(tree):
        if _under(h, root):
            return "home or an ancestor"
        if _under(root, h) and root[len(h) :].lstrip("/").startswith("."):
            return "hidden in home"
    if _under(str(tree.ws), root):
        return "workspace or its parent"
    comps = root.split("/")
    if ".git" in comps:
        return "in a git directory"
    flat = [n for n in (*defaults.TOOL_PROTECTED, *defaults.SHELL_PROTECTED) if "*" not in n]
    for name in flat:
        parts = name.split("/")
        for i in range(len(comps)):
            run = comps[i : i + len(parts)]
            if run == parts or (i + len(run) == len(comps) and parts[: len(run)] == run):
                return f"protected name {name}"
    for target, _ in tree.plan.hidden:
        if _under(root, target) or _under(target, root):
            return "hidden path"
    return None


_COMPONENT_LIST = [
    "x", "new", "deep", "sub", "..", ".", "", ".git", "hooks", "config", ".bashrc", ".vscode",
    ".config", "git", "gh", ".ssh", "id_rsa", ".local", "bin", "proj2", "repo", ".profile",
]  # fmt: skip
COMPONENTS = st.sampled_from(_COMPONENT_LIST)


def _bases(tree: Tree) -> list[str]:
    return [
        "/",
        "/proc/self",
        "/proc/1/root",
        "/sys/fs",
        "/dev",
        "/dev/shm",
        "/etc",
        "/usr/local/lib",
        "/var",
        "/var/tmp",
        "/run/user",
        os.environ.get("HOME", "/root"),
        str(tree.base),
        str(tree.base / "home"),
        str(tree.home),
        str(tree.home / ".config"),
        str(tree.home / ".config" / "app"),
        str(tree.home / ".ssh"),
        str(tree.home / "proj2"),
        str(tree.ws),
        str(tree.other),
        str(tree.other / "repo"),
        str(tree.other / ".vscode"),
        str(tree.other / ".config"),
        str(tree.other / "repo" / ".git"),
        "relative/dir",
        "..",
    ]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_generated_refusal_ever_proposes_a_forbidden_root(
    tree: Tree, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(_bases(tree)))
    tail = data.draw(st.lists(COMPONENTS, max_size=4))
    path = "/".join([base, *tail]) if tail else base
    op = data.draw(st.sampled_from(["openat", "mkdir", "renameat2", "unlinkat"]))
    _check(tree, path, op)


def _check(tree: Tree, path: str, op: str = "openat") -> list[str]:
    proposed = []
    for w in widenings(tree.plan, relabel(tree.plan, [_outside(path, op)])):
        root = w["path"]
        assert _forbidden(tree, root) is None, (path, root, _forbidden(tree, root))
        assert w["flag"] == f"--writable {root}"
        assert os.path.isdir(root)
        # The narrowest: the nearest existing directory at or above the refused path.
        assert root == os.path.realpath(smallest_root(path) or "")
        proposed.append(root)
    return proposed


def test_every_short_refusal_is_checked_and_some_are_proposed(tree: Tree) -> None:
    """The same oracle over every base with every tail of up to two components; and the
    rules are not vacuous: ordinary directories are still proposed."""
    comps = _COMPONENT_LIST
    proposed: set[str] = set()
    for base in _bases(tree):
        tails = [[]] + [[a] for a in comps] + [[a, b] for a in comps for b in comps]
        for tail in tails:
            proposed.update(_check(tree, "/".join([base, *tail]) if tail else base))
    assert {str(tree.other), str(tree.other / "deep"), str(tree.home / "proj2")} <= proposed


@pytest.mark.parametrize(
    "root",
    ["/", "/proc", "/proc/1", "/sys", "/dev", "/dev/shm", "/etc", "/etc/ssh", "/usr/local/bin",
     "/var/lib/docker", "/run/user/1000", "/var/tmp", "/home", "/opt", "relative", "/a/../b",
     "/tmp/T", "/tmp/tmux-1000", "/tmp/.X11-unix", "/dev/shm/x"],
)  # fmt: skip
def test_system_shared_and_relative_roots_are_never_proposed(tree: Tree, root: str) -> None:
    assert refusal_of_root(tree.plan, root) is not None


def test_home_its_ancestors_and_hidden_dirs_are_never_proposed(tree: Tree) -> None:
    plan = tree.plan
    for root in (tree.home, tree.home.parent, tree.base):
        assert refusal_of_root(plan, str(root)) is not None, root
    for rel in (".config", ".config/app", ".local/bin", ".ssh", ".config/gh"):
        assert refusal_of_root(plan, str(tree.home / rel)) is not None, rel
    assert refusal_of_root(plan, str(tree.home / "proj2")) is None  # an ordinary directory


def test_a_home_other_than_the_commands_is_still_a_home(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under sudo or ``--env HOME=``, ringfence's $HOME and the command's differ: neither
    is proposed (the case that proposed ``--writable /root``)."""
    other_home = tree.base / "home" / "v"
    other_home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(other_home))
    v = _outside(other_home / "newfile")
    assert widenings(tree.plan, relabel(tree.plan, [v])) == []
    assert escalation.suggested_root(tree.plan, str(other_home / "newfile")) is None


def test_parents_of_the_workspace_are_never_proposed(tree: Tree) -> None:
    ws = tree.base / "work" / "ws"
    ws.mkdir(parents=True)
    plan = _plan(tree.home, ws)
    assert widenings(plan, [_outside(ws.parent / "sibling")]) == []
    assert widenings(plan, [_outside(tree.base / "x")]) == []


def test_the_directory_written_is_proposed_when_it_is_reasonable(tree: Tree) -> None:
    ws = widenings(tree.plan, [_outside(tree.other / "deep" / "f.txt")])
    assert [w["path"] for w in ws] == [str(tree.other / "deep")]
    missing = widenings(tree.plan, [_outside(tree.other / "deep" / "a" / "b", "mkdir")])
    assert [w["path"] for w in missing] == [str(tree.other / "deep")]
    home = widenings(tree.plan, [_outside(tree.home / "proj2" / "x")])
    assert [w["path"] for w in home] == [str(tree.home / "proj2")]


def test_protected_names_are_said_so_and_never_proposed(tree: Tree) -> None:
    cases = {
        tree.home / ".bashrc": "protected: .bashrc",
        tree.home / ".profile": "protected: .profile",
        tree.other / "repo" / ".git" / "hooks" / "pre-commit": "protected: .git/hooks",
        tree.other / ".vscode" / "tasks.json": "protected: .vscode",
        tree.home / ".config" / "git" / "config": "protected: .config/git",
    }
    vs = relabel(tree.plan, [_outside(p) for p in cases])
    assert [v["rule"] for v in vs] == list(cases.values())
    assert widenings(tree.plan, vs) == []
    # On the way to a protected name: as a root, it would take the name out of reach.
    assert refusal_of_root(tree.plan, str(tree.other / ".config")) is not None
    assert refusal_of_root(tree.plan, str(tree.other / "repo" / ".git")) is not None
    assert widenings(tree.plan, [_outside(tree.other / ".config" / "app" / "x")]) == []


def test_a_protected_path_is_never_proposed(tmp_path: Path) -> None:
    home, ws, kept = tmp_path / "h", tmp_path / "w", tmp_path / "srv" / "kept"
    for d in (home, ws, kept / "inner"):
        d.mkdir(parents=True)
    plan = _plan(home, ws, protected=(str(kept),))
    assert refusal_of_root(plan, str(kept / "inner")) == "a protected path"
    assert widenings(plan, [_outside(kept / "inner" / "f")]) == []


def test_deny_read_is_named_never_lifted(tree: Tree) -> None:
    v = _outside(tree.home / ".ssh" / "authorized_keys")
    [labelled] = relabel(tree.plan, [v])
    assert labelled["rule"] == f"deny_read: {tree.home / '.ssh'}"
    assert widenings(tree.plan, [labelled]) == []
    assert (str(tree.home / ".ssh"), str(tree.home / ".ssh")) in tree.plan.hidden


def test_a_root_holding_a_hidden_path_is_never_proposed(tmp_path: Path) -> None:
    home, ws, srv = tmp_path / "h", tmp_path / "w", tmp_path / "srv" / "data"
    for d in (home, ws, srv / "secret"):
        d.mkdir(parents=True)
    plan = _plan(home, ws, deny_read=(str(srv / "secret"),))
    assert widenings(plan, [_outside(srv / "new")]) == []
    assert widenings(plan, [_outside(srv / "secret" / "x")]) == []


def test_read_only_mode_proposes_nothing(tree: Tree) -> None:
    plan = _plan(tree.home, tree.ws, mode=Mode.READ_ONLY)
    assert widenings(plan, [_outside(tree.other / "deep" / "f")]) == []


def test_relative_paths_propose_nothing(tree: Tree) -> None:
    assert smallest_root("deep/f") is None
    assert suggested_root(tree.plan, "deep/f") is None
    assert widenings(tree.plan, [_outside("x/y")]) == []


def test_a_symlink_is_proposed_as_its_target_and_checked_there(tmp_path: Path) -> None:
    home, ws, srv = tmp_path / "h", tmp_path / "w", tmp_path / "srv" / "data"
    for d in (home, ws, srv):
        d.mkdir(parents=True)
    (tmp_path / "srv" / "link").symlink_to(srv)
    (tmp_path / "srv" / "to-home").symlink_to(home)
    plan = _plan(home, ws)
    assert suggested_root(plan, str(tmp_path / "srv" / "link" / "f")) == str(srv)
    assert suggested_root(plan, str(tmp_path / "srv" / "to-home" / "f")) is None
    etc = tmp_path / "srv" / "to-etc"
    etc.symlink_to("/etc")
    assert suggested_root(plan, str(etc / "passwd")) is None


# ---------------------------------------------------------------------- history files


@pytest.mark.parametrize("name", defaults.SHELL_HISTORIES)
def test_history_writes_are_not_reported(name: str) -> None:
    vs = [_outside(f"/home/u/{name}"), {"kind": "filesystem", "op": "openat",
          "path": f"/home/u/{name}", "rule": f"deny_read: /home/u/{name}"}]  # fmt: skip
    assert quiet(vs, {}, ["/home/u"]) == []


@pytest.mark.parametrize(
    "path",
    ["/home/u/.bash_history-4242.tmp", "/home/u/.bash_history-", "/home/u/.zsh_history.new",
     "/home/u/.zsh_history.LOCK", "/home/u/.local/share/fish/fish_history.Ab3xYz"],
)  # fmt: skip
def test_the_temporary_names_shells_write_histories_by_are_not_reported(path: str) -> None:
    assert quiet([_outside(path, "renameat2")], {}, ["/home/u"]) == []


@pytest.mark.parametrize(
    "path",
    ["/home/u/.bashrc", "/home/u/.bash_historyx", "/home/u/.bash_history/../.ssh/x",
     "/home/u/sub/.bash_history", "/srv/.bash_history", "/home/u/.bash_history.d/evil/x",
     "/home/u/notes"],
)  # fmt: skip
def test_other_refusals_are_still_reported(path: str) -> None:
    v = _outside(path)
    assert quiet([v], {}, ["/home/u"]) == [v]


def test_history_files_named_by_the_environment_are_not_reported() -> None:
    env = {"HISTFILE": "/srv/hist/bash", "PYTHON_HISTORY": "/srv/hist/py", "LESSHISTFILE": "-"}
    vs = [_outside("/srv/hist/bash"), _outside("/srv/hist/py"), _outside("/srv/hist/other")]
    assert quiet(vs, env, []) == [_outside("/srv/hist/other")]
    network = {
        "kind": "network",
        "host": "example.com",
        "port": 443,
        "rule": "not in the allowlist",
    }
    assert quiet([network, {"kind": "more"}], env, []) == [network, {"kind": "more"}]


def test_the_plans_home_is_where_histories_are_looked_for(tree: Tree) -> None:
    hist = _outside(tree.home / ".bash_history")
    other = _outside(tree.home / "notes")
    assert reported(tree.plan, [hist, other]) == [other]
    plan = replace(tree.plan, env={**tree.plan.env, "HISTFILE": str(tree.other / "h")})
    assert reported(plan, [_outside(tree.other / "h")]) == []
