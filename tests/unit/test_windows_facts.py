"""The Windows facts gatherer over a simulated Windows tree (junctions, case, a huge tree):
what it resolves, finds and refuses. Not run on Windows."""

from __future__ import annotations

import pytest
from winsim import Tree

from ringfence.errors import PolicyError
from ringfence.platforms.windows.facts import gather
from ringfence.platforms.windows.plan import WindowsInstall, compile_windows
from ringfence.policy import winpaths
from ringfence.policy.model import PathStyle, Policy

W = PathStyle.WINDOWS
HOME = "C:\\Users\\dev"


def tree() -> Tree:
    return Tree(
        dirs=[
            "C:\\w",
            "C:\\w\\.git",
            "C:\\w\\.git\\hooks",
            "C:\\w\\sub",
            "C:\\w\\sub\\.GIT",
            "C:\\w\\sub\\.GIT\\Hooks",
            "C:\\w\\deep",
            "E:\\cache",
            "C:\\outside",
            "C:\\outside\\.git",
            "C:\\outside\\.git\\hooks",
            HOME,
            HOME + "\\.ssh",
        ],
        files=["C:\\w\\.envrc", "C:\\w\\.git\\hooks\\pre-commit"],
        links={"C:\\w\\cache": "E:\\cache", "C:\\w\\escape": "C:\\outside"},
    )


def test_matches_are_found_in_any_case_and_links_are_neither_entered_nor_trusted() -> None:
    fs = tree()
    policy = Policy(workspace="C:\\w", path_style=W)
    got = gather(policy, home=HOME, temp="C:\\t\\1", fs=fs, environ={"PATH": ""})
    found = {winpaths.key(f) for f in got.facts.found}
    assert found == {
        winpaths.key(p) for p in ("C:\\w\\.git\\hooks", "C:\\w\\sub\\.GIT\\Hooks", "C:\\w\\.envrc")
    }
    # The junction to C:\outside was not walked: its hooks are not ours to protect or grant.
    assert not any(p.endswith(("escape", "cache")) for p in fs.listed)
    assert "C:\\w\\sub" in fs.listed  # ordinary directories are walked
    existing = got.facts.existing
    assert existing is not None
    assert HOME + "\\.ssh" in existing and HOME + "\\.aws" not in existing


def test_a_writable_root_through_a_junction_is_granted_at_its_target() -> None:
    fs = tree()
    policy = Policy(workspace="C:\\outside", writable_roots=("C:\\w\\deep",), path_style=W)
    facts = gather(policy, home=HOME, temp="C:\\t\\1", fs=fs, environ={}).facts
    assert facts.realpaths == {}  # no links on these paths
    policy = Policy(workspace="C:\\x", writable_roots=("C:\\w\\cache",), path_style=W)
    facts = gather(policy, home=HOME, temp="C:\\t\\1", fs=fs, environ={}).facts
    assert facts.realpaths["C:\\w\\cache"] == "E:\\cache"
    plan = compile_windows(policy, facts, WindowsInstall.placeholder())
    assert "E:\\cache" in plan.writable and "C:\\w\\cache" not in plan.writable


def test_a_root_through_a_link_planted_inside_another_root_is_refused() -> None:
    policy = Policy(workspace="C:\\w", writable_roots=("C:\\w\\escape",), path_style=W)
    with pytest.raises(PolicyError, match="passes through the link"):
        gather(policy, home=HOME, temp="C:\\t\\1", fs=tree(), environ={})


def test_path_tools_are_collected_and_odd_entries_skipped() -> None:
    policy = Policy(workspace="C:\\w", path_style=W)
    env = {"PATH": 'C:\\Windows;"C:\\Users\\dev\\.cargo\\bin";relative;;C:\\x:y'}
    facts = gather(policy, home=HOME, temp="C:\\t\\1", fs=tree(), environ=env).facts
    assert facts.path_dirs == ("C:\\Windows", "C:\\Users\\dev\\.cargo\\bin")


def test_a_huge_tree_stops_the_walk_and_says_so() -> None:
    policy = Policy(workspace="C:\\w", path_style=W)
    got = gather(policy, home=HOME, temp="C:\\t\\1", fs=tree(), environ={}, max_entries=2)
    assert got.notes and "stopped looking" in got.notes[0]
