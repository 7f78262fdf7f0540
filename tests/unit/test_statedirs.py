"""Per-workspace state: one directory per workspace, the cwd default, ringfence clean."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ringfence import cleanup
from ringfence.errors import PolicyError
from ringfence.policy import statedirs
from ringfence.policy.paths import default_workspace


def test_workspace_keys_are_stable_distinct_and_safe() -> None:
    a = statedirs.workspace_key("/srv/proj")
    assert a == statedirs.workspace_key("/srv/proj")
    assert a != statedirs.workspace_key("/srv/other/proj")
    assert a.startswith("proj-")
    odd = statedirs.workspace_key("/srv/../we ird\n/na;me")
    assert "/" not in odd and "\n" not in odd and " " not in odd
    assert statedirs.workspace_key("/").startswith("root-")


def test_prepare_makes_a_private_tree(tmp_path: Path) -> None:
    base = tmp_path / "ringfence"
    ws = statedirs.prepare_workspace(str(base), "/srv/proj")
    assert ws is not None
    assert (Path(ws) / "workspace").read_text() == "/srv/proj\n"
    for sub in ("tmp/upper", "tmp/work"):
        assert (Path(ws) / sub).is_dir()
    assert (base.stat().st_mode & 0o777) == 0o700
    assert (Path(ws).stat().st_mode & 0o777) == 0o700
    assert (Path(ws) / "tmp" / "upper").stat().st_mode & 0o7777 == 0o1777


@pytest.mark.parametrize(
    ("cwd", "why"),
    [
        ("/", "root directory"),
        ("/home/u", "your home directory"),
        ("/home", "contains your home directory"),
        ("/tmp", "directory every program shares"),
        ("/var/tmp", "directory every program shares"),
        ("/var", "directory every program shares"),
    ],
)
def test_the_cwd_default_refuses_home_root_and_shared_dirs(
    cwd: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os.path, "realpath", lambda p: p)
    with pytest.raises(PolicyError, match=why) as e:
        default_workspace(cwd, "/home/u")
    assert "pass --workspace explicitly" in str(e.value)


def test_the_cwd_default_takes_a_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "realpath", lambda p: p)
    assert default_workspace("/home/u/proj", "/home/u") == "/home/u/proj"
    assert default_workspace("/tmp/tmpab12", "/home/u") == "/tmp/tmpab12"
    assert default_workspace("/srv", None) == "/srv"


def test_clean_selects_by_workspace_age_and_existence(tmp_path: Path) -> None:
    base = str(tmp_path / "ringfence")
    live = tmp_path / "live"
    live.mkdir()
    a = statedirs.prepare_workspace(base, str(live))
    b = statedirs.prepare_workspace(base, str(tmp_path / "gone"))
    assert a and b
    os.chmod(os.path.join(a, "tmp", "work"), 0)  # as overlayfs leaves its work directory
    old = time.time() - 10 * 86400
    os.utime(os.path.join(b, "workspace"), (old, old))
    assert [s.path for s in cleanup.select(base, gone=True)] == [b]
    assert [s.path for s in cleanup.select(base, older_than_days=5)] == [b]
    assert [s.path for s in cleanup.select(base, workspace=str(live))] == [a]
    assert len(cleanup.select(base, everything=True)) == 2
    for st in cleanup.select(base, everything=True):
        cleanup.remove(st.path)
    assert not os.path.exists(a) and not os.path.exists(b)


def test_tmp_secrets_match_the_patterns_and_skip_symlinks(tmp_path: Path) -> None:
    from ringfence.platforms.linux.hostfacts import tmp_secrets

    for name in ("krb5cc_1000", "ssh-abc", ".X11-unix", "xauth_q", "project", "tmux-1000x"):
        (tmp_path / name).mkdir()
    (tmp_path / "krb5cc_evil").symlink_to("/usr")  # another user's plant: not followed
    found = {os.path.basename(p) for p in tmp_secrets(str(tmp_path))}
    assert found == {"krb5cc_1000", "ssh-abc", ".X11-unix", "xauth_q", "tmux-1000x"}


def test_remove_never_follows_a_symlink_and_empties_unreadable_dirs(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "data").mkdir(parents=True)
    (victim / "data" / "important.txt").write_text("keep")
    victim.chmod(0o755)
    state = tmp_path / "state"
    (state / "tmp" / "upper" / "p").mkdir(parents=True)
    (state / "tmp" / "upper" / "p" / "a").symlink_to(victim)  # planted by a sandbox
    (state / "tmp" / "upper" / "p" / "fifo").touch()
    locked = state / "tmp" / "work" / "work"
    locked.mkdir(parents=True)
    (locked / "x").mkdir()
    locked.chmod(0)
    deep = state / "cache"
    deep.mkdir()
    cur = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=cur)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    os.close(cur)
    cleanup.remove(str(state))
    assert not state.exists()
    assert (victim / "data" / "important.txt").read_text() == "keep"
    assert victim.stat().st_mode & 0o777 == 0o755


def test_a_state_in_use_cannot_be_locked_for_removal(tmp_path: Path) -> None:
    ws = statedirs.prepare_workspace(str(tmp_path / "rf"), "/srv/p")
    assert ws is not None
    held = statedirs.hold(ws)
    assert held is not None
    assert statedirs.try_exclusive(ws) is None
    os.close(held)
    lock = statedirs.try_exclusive(ws)
    assert lock is not None
    os.close(lock)


def test_clean_never_walks_a_planted_link_or_an_unmarked_directory(tmp_path: Path) -> None:
    """A sandbox whose writable root holds the cache directory may plant a link as
    'ringfence/workspaces' or a directory with no marker: clean lists and removes neither."""
    victim = tmp_path / "victim"
    (victim / "Documents").mkdir(parents=True)
    (victim / "Documents" / "thesis.txt").write_text("keep")
    base = tmp_path / "evil" / "ringfence"
    base.mkdir(parents=True)
    (base / "workspaces").symlink_to(victim)
    assert list(cleanup.states(str(base))) == []
    (base / "workspaces").unlink()
    (base / "workspaces" / "unmarked").mkdir(parents=True)
    assert list(cleanup.states(str(base))) == []
    assert cleanup.select(str(base), everything=True, gone=True) == []
    assert (victim / "Documents" / "thesis.txt").read_text() == "keep"


def test_link_chain_resolves_dotdot_after_a_link_as_the_kernel_does(tmp_path: Path) -> None:
    from ringfence.platforms.linux.hostfacts import link_chain

    (tmp_path / "deep" / "inner").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "deep" / "inner")
    (tmp_path / "rc").symlink_to("lnk/../zprofile")
    chain = link_chain(str(tmp_path / "rc"))
    assert chain == [str(tmp_path / "rc"), str(tmp_path / "lnk"), str(tmp_path / "deep/zprofile")]
    assert chain[-1] == os.path.realpath(tmp_path / "rc")
