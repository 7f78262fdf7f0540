"""What may change inside a git directory (policy/gitdir.py): pure rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.policy.gitdir import (
    Entry,
    PointerError,
    classify,
    describe_finding,
    inside,
    pointer_target,
    symlink_target,
    todo_refusals,
    writable,
)


@pytest.mark.parametrize(
    "rel",
    [
        "HEAD",
        "ORIG_HEAD",
        "FETCH_HEAD",
        "MERGE_HEAD",
        "CHERRY_PICK_HEAD",
        "AUTO_MERGE",
        "COMMIT_EDITMSG",
        "MERGE_MSG",
        "SQUASH_MSG",
        "index",
        "index.lock",
        "HEAD.lock",
        "config.lock",
        "packed-refs",
        "packed-refs.lock",
        "shallow",
        "shallow.lock",
        "sharedindex.0123abcd",
        "next-index-1234.lock",
        "gc.pid",
        "gc.log",
        "BISECT_LOG",
        "objects/ab/cdef0123",
        "objects/pack/pack-1.pack",
        "objects/info/commit-graph",
        "objects/info/packs",
        "refs/heads/main",
        "refs/heads/feature/x.lock",
        "logs/HEAD",
        "logs/refs/heads/main",
        "rebase-merge/done",
        "rebase-merge/onto",
        "rebase-apply/patch",
        "rr-cache/abc/preimage",
        "lfs/objects/ab/cd/abcd",
        "reftable/tables.list",
        "info/sparse-checkout",
        "info/sparse-checkout.lock",
    ],
)
def test_ordinary_data_is_writable(rel: str) -> None:
    kind = classify(rel.split("/"))
    assert kind is Entry.DATA and writable(kind)


@pytest.mark.parametrize(
    "rel",
    [
        "hooks/pre-commit",
        "hooks/post-checkout",
        "hooks/pre-commit.lock",
        "hooks/sub/x.sample",
        "hooks/.x.sample",
        "hooks",
        "info/exclude",
        "info/attributes",
        "info/grafts",
        "info/refs",
        "config.worktree",
        "description",
        "branches/origin",
        "remotes/origin",
        "objects/info/alternates",
        "objects/info/alternates.lock",
        "objects/info/http-alternates",
        "some-future-file",
        "hooks.lock",
        "fsmonitor--daemon.ipc",
    ],
)
def test_everything_else_is_read_only(rel: str) -> None:
    kind = classify(rel.split("/"))
    assert kind is Entry.READ_ONLY and not writable(kind)


def test_special_entries() -> None:
    assert classify(["config"]) is Entry.CONFIG
    assert classify(["commondir"]) is Entry.POINTER
    assert classify(["gitdir"]) is Entry.POINTER
    assert classify(["rebase-merge", "git-rebase-todo"]) is Entry.CHECKED
    assert classify(["sequencer", "todo"]) is Entry.CHECKED
    assert classify(["rebase-merge", "strategy"]) is Entry.CHECKED
    assert classify(["sequencer", "opts"]) is Entry.CHECKED
    assert writable(Entry.CHECKED)
    assert classify(["hooks", "pre-commit.sample"]) is Entry.HOOK_SAMPLE
    assert classify(["modules", "sub", "config"]) is Entry.INCUBATOR
    assert classify(["worktrees", "wt", "HEAD"]) is Entry.INCUBATOR
    for kind in (Entry.CONFIG, Entry.POINTER, Entry.READ_ONLY):
        assert not writable(kind)
    with pytest.raises(ValueError):
        classify([])


@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s), min_size=1))
def test_nothing_under_hooks_but_samples_is_ever_writable(rest: list[str]) -> None:
    kind = classify(["hooks", *rest])
    if writable(kind):
        assert len(rest) == 1 and rest[0].endswith(".sample") and not rest[0].startswith(".")


def test_pointer_targets() -> None:
    assert pointer_target(".git", b"gitdir: ../g/.git\n", holder_dir="/w/sub", gitdir=None) == (
        "/w/g/.git"
    )
    assert pointer_target(".git", b"gitdir: /abs/x\r\n", holder_dir="/w", gitdir=None) == "/abs/x"
    # git keeps everything after "gitdir: " but trailing CR/LF; a second line is refused,
    # not cut off (git would read "y\n/../../out" as one path)
    with pytest.raises(PointerError):
        pointer_target(".git", b"gitdir: y\n/../../out\n", holder_dir="/w", gitdir=None)
    assert pointer_target(
        "commondir", b"../..\n", holder_dir="/m/.git/worktrees/w", gitdir=None
    ) == ("/m/.git")
    for bad in (
        b"",
        b"gitdir:",
        b"gitdir:x",
        b"nope: x",
        b"gitdir: a\0b",
        b"\xff\xfe",
        b"x" * 5000,
    ):
        with pytest.raises(PointerError):
            pointer_target(".git", bad, holder_dir="/w", gitdir=None)


def test_links_and_roots() -> None:
    assert symlink_target("/w/.git", "../../etc") == "/etc"
    assert symlink_target("/w/.git", "objects/x") == "/w/.git/objects/x"
    assert inside("/w/a", ("/w",)) and inside("/w", ("/w",))
    assert not inside("/wx", ("/w",))


def test_merge_strategies_are_gits_own() -> None:
    from ringfence.policy.gitdir import strategy_refusals

    assert strategy_refusals(b"ort\n") == [] and strategy_refusals(b"") == []
    assert strategy_refusals(b"x/evil\n") == ["'x/evil'"]


def test_todo_lists_may_not_run_commands() -> None:
    assert todo_refusals(b"pick abc one\n# exec x\n\nfixup def two\nlabel onto\n") == []
    assert todo_refusals(b"pick abc\nexec make test\n") == ["line 2: 'exec'"]
    assert todo_refusals(b"  x rm -rf /\n") == ["line 1: 'x'"]


def test_findings_read_as_one_line() -> None:
    line = describe_finding({"kind": "refused_config", "path": "/w/.git/config", "detail": "k"})
    assert line == "refused git config: /w/.git/config (k)"
    assert describe_finding({"kind": "more_git"}) == "more git findings not listed"


def test_the_guard_reads_as_much_as_the_config_parser_accepts() -> None:
    from ringfence.platforms.linux import gitfiles
    from ringfence.platforms.linux.gitguard.fileio import MAX_CONTENT_BYTES
    from ringfence.policy.gitconfig import MAX_CONFIG_BYTES

    assert MAX_CONTENT_BYTES == MAX_CONFIG_BYTES == gitfiles.MAX_CONFIG_BYTES


def test_the_host_moves_aside_what_the_guard_could_not_check(tmp_path: Path) -> None:
    """Fail closed: files the guard was to check at the end, when it could not, are moved
    aside unread; nothing outside the plan's roots is touched, no symlink is followed."""
    import types

    from ringfence.connection import move_aside as _move_aside

    root, outside = tmp_path / "ws", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub/.git").write_text("gitdir: /elsewhere\n")
    (outside / ".git").write_text("x")
    (root / "link").symlink_to(outside)
    plan = types.SimpleNamespace(
        guard_roots=(str(root),), guard_git_roots=(), guard_git_private_roots=(), mounts=()
    )
    found = _move_aside(
        plan,  # type: ignore[arg-type]
        [str(root / "sub/.git"), str(outside / ".git"), str(root / "link/.git"), str(root)],
    )
    assert [f["path"] for f in found] == [str(root / "sub/.git"), str(root / "link/.git")]
    assert (root / "sub/.git.ringfence-refused").exists() and not (root / "sub/.git").exists()
    assert (outside / ".git").exists()  # outside the roots, and behind a link: left alone
    assert "NOT moved" in found[1]["detail"]


def test_the_host_finds_what_the_guard_could_not_check_in_the_tmp_layer(tmp_path: Path) -> None:
    """A pointer the sandbox wrote under its /tmp lies in the layer's upper directory on the
    host: moved aside there, never at the host's own /tmp path."""
    import types

    from ringfence.connection import move_aside as _move_aside
    from ringfence.platforms.linux import mountops

    layer = tmp_path / "layer"
    (layer / "upper/x").mkdir(parents=True)
    (layer / "upper/x/.git").write_text("gitdir: /elsewhere\n")
    plan = types.SimpleNamespace(
        guard_roots=(str(tmp_path / "ws"),),
        guard_git_roots=(),
        guard_git_private_roots=("/tmp",),
        mounts=(mountops.overlay("/tmp", str(layer)),),
    )
    found = _move_aside(plan, ["/tmp/x/.git", "/tmp"])  # type: ignore[arg-type]
    assert [f["path"] for f in found] == [str(layer / "upper/x/.git")]
    assert (layer / "upper/x/.git.ringfence-refused").exists()


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
            max_size=8,
        ),
        max_size=4,
    )
)
def test_sq_dequote_reads_what_git_quotes(args: list[str]) -> None:
    """git's own sq_quote (``git rev-parse --sq-quote``) as the oracle."""
    import subprocess

    from ringfence.policy.gitdir import sq_dequote

    quoted = subprocess.run(
        ["git", "rev-parse", "--sq-quote", *args], capture_output=True, check=True
    ).stdout.decode("utf-8", "surrogateescape")
    assert sq_dequote(quoted.strip("\n")) == args
