"""Ordinary git workflows work inside ringfence with no extra flags.

Each test runs one real workflow inside the sandbox (as root and as the unprivileged user),
leaves a per-test nonce in what it commits, and then checks on the host, with host git, that
the nonce is there; the command also reports ``$RINGFENCE_SANDBOX`` and the test's own nonce
(``rf.confined_sh``): a test cannot pass unless the confined command really did the work.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

# The prelude of every script run inside the sandbox: stop at the first failure, an identity
# for commits, no system or user config (HOME is under the sandbox's /tmp layer), no editor.
INNER = (
    "set -e; export HOME=/tmp GIT_CONFIG_NOSYSTEM=1 GIT_EDITOR=true GIT_PAGER=cat "
    "GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=agent@example.invalid "
    "GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=agent@example.invalid; "
)
FILE_OK = "-c protocol.file.allow=always"


@pytest.fixture
def home() -> Iterator[Path]:
    """A HOME for host git, so no user config of this machine takes part. Its only setting
    trusts every repository: a local clone's upload-pack does not see ``-c`` options."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-githome-"))
    (d / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _git(home: Path, *args: str | Path, check: bool = True) -> str:
    """Host git, outside the sandbox, on repositories the test user may own."""
    r = subprocess.run(
        [
            "git",
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=host",
            "-c",
            "user.email=host@example.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
        },
    )
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout.strip()


def _chown_tree(root: Path, rf: Runner) -> None:
    for p in [root, *root.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


def _host_repo(path: Path, home: Path, rf: Runner, files: dict[str, str] | None = None) -> str:
    """A repository made on the host with one commit, owned by the runner's user; its HEAD."""
    _git(home, "init", "-q", "-b", "main", path)
    for name, text in (files or {"README": "base\n"}).items():
        (path / name).write_text(text)
    _git(home, "-C", path, "add", "-A")
    _git(home, "-C", path, "commit", "-qm", "base")
    _chown_tree(path, rf)
    return _git(home, "-C", path, "rev-parse", "HEAD")


def _run(rf: Runner, ws: Path, script: str, timeout: float = 60) -> None:
    """The workflow, in the sandbox: it must prove it ran confined (see ``Confinement``)."""
    r = rf.confined_sh(ws, INNER + script, timeout=timeout)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def _subjects(home: Path, repo: Path, rev: str = "HEAD", n: int = 1) -> list[str]:
    return _git(home, "-C", repo, "log", f"-{n}", "--format=%s", rev).splitlines()


def test_clone_from_a_local_path_and_commit(rf: Runner, home: Path) -> None:
    """`git clone /local/path` into the workspace, then a commit in the clone."""
    nonce = secrets.token_hex(8)
    src = rf.mkdir("src-") / "origin"
    base = _host_repo(src, home, rf)
    ws = rf.mkdir()
    _run(
        rf,
        ws,
        f"git clone -q {src} clone && cd clone && echo {nonce} > nonce.txt && "
        f"git add nonce.txt && git commit -qm 'clone {nonce}'",
    )
    clone = ws / "clone"
    assert _subjects(home, clone) == [f"clone {nonce}"]
    assert _git(home, "-C", clone, "show", "HEAD:nonce.txt") == nonce
    assert _git(home, "-C", clone, "rev-parse", "HEAD~1") == base
    assert _git(home, "-C", clone, "config", "--get", "remote.origin.url") == str(src)


def test_submodule_add_and_commit(rf: Runner, home: Path) -> None:
    """`git submodule add <local repo> sub` writes .gitmodules, .git/modules/sub, a commit.
    The submodule's symlinks are checked out as symlinks (git's probe of whether they work,
    a symlink in the module's git directory in the making, is allowed), and its config is
    kept without core.worktree (git finds the checkout by its .git file)."""
    nonce = secrets.token_hex(8)
    lib = rf.mkdir("lib-") / "lib"
    _host_repo(lib, home, rf, {"lib.txt": f"lib {nonce}\n"})
    (lib / "link").symlink_to("lib.txt")
    _git(home, "-C", lib, "add", "link")
    _git(home, "-C", lib, "commit", "-qm", "link")
    _chown_tree(lib, rf)
    lib_head = _git(home, "-C", lib, "rev-parse", "HEAD")
    ws = rf.mkdir()
    _host_repo(ws, home, rf)
    _run(rf, ws, f"git {FILE_OK} submodule add -q {lib} sub && git commit -qm 'sub {nonce}'")
    assert _subjects(home, ws) == [f"sub {nonce}"]
    gitmodules = _git(home, "-C", ws, "show", "HEAD:.gitmodules")
    assert "path = sub" in gitmodules and f"url = {lib}" in gitmodules
    assert _git(home, "-C", ws, "ls-tree", "HEAD", "sub").split()[:3] == [
        "160000",
        "commit",
        lib_head,
    ]
    assert (ws / "sub/lib.txt").read_text() == f"lib {nonce}\n"
    assert _git(home, "-C", ws / "sub", "rev-parse", "--absolute-git-dir") == str(
        ws / ".git/modules/sub"
    )
    assert (ws / "sub/link").is_symlink() and (ws / "sub/link").read_text() == f"lib {nonce}\n"
    module_config = (ws / ".git/modules/sub/config").read_text()
    assert "symlinks = false" not in module_config and "worktree" not in module_config
    assert _git(home, "-C", ws / "sub", "status", "--porcelain") == ""


def test_submodule_update_init_in_a_fresh_clone(rf: Runner, home: Path) -> None:
    """Clone a superproject, `git submodule update --init`, then commit inside the submodule."""
    nonce, nonce2 = secrets.token_hex(8), secrets.token_hex(8)
    lib = rf.mkdir("lib-") / "lib"
    lib_head = _host_repo(lib, home, rf, {"lib.txt": f"lib {nonce}\n"})
    sup = rf.mkdir("super-") / "super"
    _host_repo(sup, home, rf)
    _git(home, "-C", sup, "submodule", "add", "-q", lib, "sub")
    _git(home, "-C", sup, "commit", "-qm", "add sub")
    _chown_tree(sup, rf)
    ws = rf.mkdir()
    _run(
        rf,
        ws,
        f"git clone -q {sup} fresh && cd fresh && git {FILE_OK} submodule update --init -q && "
        f"cd sub && echo {nonce2} > mine.txt && git add mine.txt && "
        f"git commit -qm 'in-sub {nonce2}'",
    )
    sub = ws / "fresh/sub"
    assert (sub / "lib.txt").read_text() == f"lib {nonce}\n"
    assert _subjects(home, sub) == [f"in-sub {nonce2}"]
    assert _git(home, "-C", sub, "rev-parse", "HEAD~1") == lib_head
    assert _git(home, "-C", sub, "rev-parse", "--absolute-git-dir") == str(
        ws / "fresh/.git/modules/sub"
    )
    assert _git(home, "-C", ws / "fresh", "config", "--get", "submodule.sub.url") == str(lib)


def test_remote_add_push_and_set_upstream(rf: Runner, home: Path) -> None:
    """`git remote add`, `git push -u` to bare repositories in the workspace, `git branch -u`:
    one bare repository made on the host (an existing one), one made by the command."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _host_repo(ws, home, rf)
    _git(home, "init", "-q", "--bare", ws / "origin.git")
    _chown_tree(ws, rf)
    _run(
        rf,
        ws,
        f"echo {nonce} > pushed.txt && git add pushed.txt && git commit -qm 'push {nonce}' && "
        'git remote add origin "$PWD/origin.git" && git push -q -u origin HEAD && '
        'git init -q --bare "$PWD/backup.git" && git remote add backup "$PWD/backup.git" && '
        "git push -q backup main && git branch -q -u backup/main",
    )
    for bare in ("origin.git", "backup.git"):
        assert _subjects(home, ws / bare, "main") == [f"push {nonce}"], bare
    assert _git(home, "-C", ws, "config", "--get", "remote.origin.url") == str(ws / "origin.git")
    assert _git(home, "-C", ws, "config", "--get", "branch.main.remote") == "backup"
    assert _git(home, "-C", ws, "config", "--get", "branch.main.merge") == "refs/heads/main"
    assert _git(home, "-C", ws, "rev-parse", "origin/main") == _git(
        home, "-C", ws, "rev-parse", "HEAD"
    )


def test_config_local_user_settings(rf: Runner, home: Path) -> None:
    """`git config --local user.email ...` (a harmless key) is written to .git/config."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _host_repo(ws, home, rf)
    _run(
        rf,
        ws,
        f"git config --local user.email x@example.invalid && "
        f"git config --local user.name 'agent {nonce}'",
    )
    assert _git(home, "-C", ws, "config", "--local", "--get", "user.email") == "x@example.invalid"
    assert _git(home, "-C", ws, "config", "--local", "--get", "user.name") == f"agent {nonce}"


def _branchy_repo(ws: Path, home: Path, rf: Runner) -> dict[str, str]:
    """main: base, main-2; topic (from base): topic-1. Returns the commits by subject."""
    _git(home, "init", "-q", "-b", "main", ws)
    (ws / "base.txt").write_text("base\n")
    _git(home, "-C", ws, "add", "-A")
    _git(home, "-C", ws, "commit", "-qm", "base")
    _git(home, "-C", ws, "branch", "topic")
    (ws / "m.txt").write_text("main\n")
    _git(home, "-C", ws, "add", "-A")
    _git(home, "-C", ws, "commit", "-qm", "main-2")
    _git(home, "-C", ws, "checkout", "-q", "topic")
    (ws / "t.txt").write_text("topic\n")
    _git(home, "-C", ws, "add", "-A")
    _git(home, "-C", ws, "commit", "-qm", "topic-1")
    _git(home, "-C", ws, "checkout", "-q", "main")
    _chown_tree(ws, rf)
    return {
        s: _git(home, "-C", ws, "rev-parse", ref)
        for s, ref in (("main-2", "main"), ("topic-1", "topic"))
    }


def test_rebase_plain_and_interactive_autosquash(rf: Runner, home: Path) -> None:
    """`git rebase` onto main, then `git rebase -i --autosquash` of a fixup commit."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(
        rf,
        ws,
        f"git checkout -q topic && echo {nonce} > r.txt && git add r.txt && "
        f"git commit -qm 'rebase {nonce}' && git rebase -q main && "
        f"echo more >> r.txt && git commit -q -a --fixup HEAD && "
        f"GIT_SEQUENCE_EDITOR=: git rebase -q -i --autosquash main",
    )
    assert _subjects(home, ws, "topic", 5) == [f"rebase {nonce}", "topic-1", "main-2", "base"]
    assert _git(home, "-C", ws, "show", "topic:r.txt") == f"{nonce}\nmore"
    assert not (ws / ".git/rebase-merge").exists()


def test_rebase_exec_runs_its_command_in_the_sandbox(rf: Runner, home: Path) -> None:
    """`git rebase --exec CMD` (its todo list, exec lines and all, written through a lock
    file and a rename) runs CMD after each commit it replays; a todo list left behind would be
    moved aside when the command ends (test_git_attacks)."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(rf, ws, f"git checkout -q topic && git rebase -q --exec 'echo {nonce} >> ran.txt' main")
    ran = (ws / "ran.txt").read_text().splitlines()
    assert ran and set(ran) == {nonce}, ran
    assert _git(home, "-C", ws, "merge-base", "--is-ancestor", "main", "topic") == ""
    assert not (ws / ".git/rebase-merge").exists()


def test_merge_with_a_conflict_resolved(rf: Runner, home: Path) -> None:
    """A conflicting `git merge`, resolved and committed (MERGE_HEAD, MERGE_MSG state)."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(
        rf,
        ws,
        "git checkout -q topic && echo topic > c.txt && git add c.txt && git commit -qm c-topic "
        "&& git checkout -q main && echo main > c.txt && git add c.txt && git commit -qm c-main "
        "&& { git merge -q topic >/dev/null 2>&1 || test -f .git/MERGE_HEAD; } && "
        f"echo {nonce} > c.txt && git add c.txt && git commit -qm 'merge {nonce}'",
    )
    assert _subjects(home, ws) == [f"merge {nonce}"]
    assert _git(home, "-C", ws, "rev-parse", "HEAD^2") == _git(home, "-C", ws, "rev-parse", "topic")
    assert _git(home, "-C", ws, "show", "HEAD:c.txt") == nonce


def test_cherry_pick_a_range(rf: Runner, home: Path) -> None:
    """`git cherry-pick A..B` of two commits (the sequencer's state)."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    before = _branchy_repo(ws, home, rf)
    _run(
        rf,
        ws,
        f"git checkout -q topic && echo 1 > p1.txt && git add p1.txt && "
        f"git commit -qm 'pick {nonce} 1' && echo 2 > p2.txt && git add p2.txt && "
        f"git commit -qm 'pick {nonce} 2' && git checkout -q main && "
        f"git cherry-pick topic~2..topic >/dev/null",
    )
    assert _subjects(home, ws, "main", 3) == [f"pick {nonce} 2", f"pick {nonce} 1", "main-2"]
    assert _git(home, "-C", ws, "rev-parse", "main~2") == before["main-2"]


def test_stash_push_and_pop(rf: Runner, home: Path) -> None:
    """`git stash push -u` then `git stash pop`, and a commit of what came back."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(
        rf,
        ws,
        f"echo {nonce} >> m.txt && echo u > untracked.txt && "
        f"git stash push -q -u -m 'stash {nonce}' && test ! -e untracked.txt && "
        f"git stash list | grep -q 'stash {nonce}' && git stash pop -q && "
        f"git add -A && git commit -qm 'stash {nonce}'",
    )
    assert _subjects(home, ws) == [f"stash {nonce}"]
    assert _git(home, "-C", ws, "show", "HEAD:m.txt") == f"main\n{nonce}"
    assert _git(home, "-C", ws, "show", "HEAD:untracked.txt") == "u"
    assert _git(home, "-C", ws, "stash", "list") == ""


def test_annotated_and_lightweight_tags(rf: Runner, home: Path) -> None:
    """`git tag -a` (a tag object) and a lightweight tag."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(rf, ws, f"git tag -a v-{nonce} -m 'tag {nonce}' && git tag lw-{nonce} topic")
    assert _git(home, "-C", ws, "cat-file", "-t", f"v-{nonce}") == "tag"
    assert _git(home, "-C", ws, "tag", "-l", "--format=%(contents:subject)", f"v-{nonce}") == (
        f"tag {nonce}"
    )
    assert _git(home, "-C", ws, "rev-parse", f"lw-{nonce}") == _git(
        home, "-C", ws, "rev-parse", "topic"
    )


def test_gc_packs_an_existing_repository(rf: Runner, home: Path) -> None:
    """A commit, then `git gc --prune=now`: objects packed, refs packed, history intact."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _branchy_repo(ws, home, rf)
    _run(
        rf,
        ws,
        f"echo {nonce} > g.txt && git add g.txt && git commit -qm 'gc {nonce}' && "
        f"git gc -q --prune=now",
    )
    assert _subjects(home, ws) == [f"gc {nonce}"]
    counts = dict(
        line.split(": ", 1) for line in _git(home, "-C", ws, "count-objects", "-v").splitlines()
    )
    assert counts["count"] == "0" and int(counts["packs"]) >= 1, counts
    assert "refs/heads/topic" in (ws / ".git/packed-refs").read_text()
    _git(home, "-C", ws, "fsck", "--no-progress")


def test_worktree_add_inside_the_workspace(rf: Runner, home: Path) -> None:
    """`git worktree add ../wt -b B` (both inside the workspace), then a commit in it."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _host_repo(ws / "main", home, rf)
    _chown_tree(ws, rf)
    _run(
        rf,
        ws,
        f"cd main && git worktree add -q -b wt-{nonce} ../wt && cd ../wt && "
        f"echo {nonce} > w.txt && git add w.txt && git commit -qm 'wt {nonce}' && "
        f"git worktree list >/dev/null",
    )
    assert _subjects(home, ws / "main", f"wt-{nonce}") == [f"wt {nonce}"]
    assert _git(home, "-C", ws / "wt", "status", "--porcelain") == ""
    assert f"worktree {ws / 'wt'}" in _git(
        home, "-C", ws / "main", "worktree", "list", "--porcelain"
    )


def test_linked_worktree_as_the_workspace(rf: Runner, home: Path) -> None:
    """The workspace is a linked worktree whose gitdir and common dir lie outside it: edit,
    add and commit there work with no flags."""
    nonce = secrets.token_hex(8)
    main = rf.mkdir("main-") / "repo"
    _host_repo(main, home, rf)
    wt = rf.mkdir("wt-") / "wt"
    _git(home, "-C", main, "worktree", "add", "-q", "-b", "wt", wt)
    _chown_tree(main, rf)
    _chown_tree(wt.parent, rf)
    _run(
        rf,
        wt,
        f"echo {nonce} > w.txt && echo changed >> README && git add -A && "
        f"git commit -qm 'linked {nonce}' && git status --porcelain",
    )
    assert _subjects(home, main, "wt") == [f"linked {nonce}"]
    assert _git(home, "-C", main, "show", "wt:w.txt") == nonce
    assert _git(home, "-C", wt, "status", "--porcelain") == ""


def test_large_file_commit_without_lfs(rf: Runner, home: Path) -> None:
    """A 20 MB incompressible file committed as an ordinary blob."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _host_repo(ws, home, rf)
    size = 20_000_000
    _run(
        rf,
        ws,
        f"head -c {size} /dev/urandom > big.bin && git add big.bin && git commit -qm 'big {nonce}'",
        timeout=90,
    )
    assert _subjects(home, ws) == [f"big {nonce}"]
    assert _git(home, "-C", ws, "cat-file", "-s", "HEAD:big.bin") == str(size)
    assert _git(home, "-C", ws, "rev-parse", "HEAD:big.bin") == _git(
        home, "-C", ws, "hash-object", ws / "big.bin"
    )


def test_init_new_and_again_keeps_what_gits_probes_found(rf: Runner, home: Path) -> None:
    """`git init` probes the file system from inside its `.git` while it is still in the
    making (a chmod of config and back, an empty `tXXXXXX` and a `tXXXXXX -> testing` link):
    the answers are git's own, not the sandbox's refusals (core.filemode = false would stop
    git from recording an executable bit; core.symlinks = false checks links out as files).
    Run again in the existing repository, it must not turn core.filemode off either."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _run(
        rf,
        ws,
        f"git init -q -b main fresh && cd fresh && echo {nonce} > n && chmod +x n && "
        f"ln -s n link && git add n link && git commit -qm 'init {nonce}' && git init -q",
    )
    repo = ws / "fresh"
    assert _subjects(home, repo) == [f"init {nonce}"]
    assert _git(home, "-C", repo, "config", "--get", "core.filemode") == "true"
    assert _git(home, "-C", repo, "config", "--get", "core.symlinks", check=False) == ""
    tree = _git(home, "-C", repo, "ls-tree", "HEAD")
    assert "100755 blob" in tree and "120000 blob" in tree, tree
    assert not [p.name for p in (repo / ".git").iterdir() if p.name.startswith("t")]


def test_a_git_directory_in_the_making_can_be_undone(rf: Runner) -> None:
    """A `.git` directory that never became a repository is the command's to remove, and
    what `git init` copies into one may be made by hand too."""
    nonce = secrets.token_hex(8)
    ws = rf.mkdir()
    _run(
        rf,
        ws,
        "mkdir -p a/.git/hooks a/.git/info a/.git/refs && touch a/.git/hooks/pre-commit.sample "
        f"a/.git/description a/.git/HEAD && echo {nonce} > a/.git/info/exclude && "
        f"echo {nonce} > a/kept && rm -rf a/.git",
    )
    assert (ws / "a/kept").read_text().strip() == nonce
    assert not (ws / "a/.git").exists()
