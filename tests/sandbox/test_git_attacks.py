"""Attacks an outside review ran against the git rules, kept as regression tests.

Each plants from inside the sandbox, then runs on the host what a user would run next (git
status, commit, ``rebase --continue``) in a HOME of its own; a planted command only touches a
marker in a host directory the sandbox cannot see, which must stay empty. Each test also runs
the same plant with ``--no-default-protect`` first, so it is shown to catch the attack when the
git rules are off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

INNER = (
    "exec 2>&1; export HOME=/tmp GIT_CONFIG_NOSYSTEM=1 GIT_EDITOR=true "
    "GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@example.invalid "
    "GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@example.invalid\n"
)


@pytest.fixture
def marks() -> Iterator[Path]:
    """A host directory for markers: under /tmp, which the sandbox replaces with its own."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-marks-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _host_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_EDITOR": "true",
        "GIT_SEQUENCE_EDITOR": "true",
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@example.invalid",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@example.invalid",
    }


def _host(home: Path, cwd: Path, script: str) -> str:
    """Run ``script`` with sh on the host, as the user would, in ``cwd``."""
    r = subprocess.run(
        ["sh", "-c", script],
        cwd=cwd,
        env=_host_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return r.stdout + r.stderr


def _repo(ws: Path, rf: Runner, home: Path, commits: int = 1) -> None:
    home.mkdir(exist_ok=True)
    (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
    _host(home, ws, "git init -q -b main . && echo a > a && git add a && git commit -qm one")
    for i in range(1, commits):
        _host(home, ws, f"echo {i} >> a && git commit -qam c{i}")
    for p in [ws, *ws.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


def _attack(
    rf: Runner,
    tmp: Path,
    marks: Path,
    *,
    setup: Callable[[Path, Path], None],
    plant: str | tuple[str, ...],
    after: str,
    where: str = ".",
) -> tuple[str, str]:
    """Plant with the git rules off (must leave a marker: the test can see the attack) and
    on (must leave none). A tuple plants in that many sandboxed commands, one after the
    other. Returns ringfence's stderr (of all of them) and the host output of the run with
    the rules on."""
    outputs = []
    steps = (plant,) if isinstance(plant, str) else plant
    for flags in (("--no-default-protect",), ()):
        home = Path(tempfile.mkdtemp(prefix="ringfence-home-", dir=tmp))
        ws = rf.mkdir()
        setup(ws, home)
        for m in marks.iterdir():
            m.unlink()
        runs = [rf.confined_sh(ws, INNER + step.format(marks=marks), *flags) for step in steps]
        out, err = "".join(r.stdout for r in runs), "".join(r.stderr for r in runs)
        host = _host(home, ws / where, after)
        ran = sorted(m.name for m in marks.iterdir())
        if flags:
            assert ran, f"the attack does not work even unprotected:\n{out}\n{host}"
        else:
            assert not ran, f"planted command ran: {ran}\n{out}\n{err}\n{host}"
            outputs.append((err, host))
    return outputs[0]


# A linked git directory's commondir, pointing at a directory the command filled: git reads
# its config and hooks there whether or not it has a HEAD. The only commondir git writes is
# ``../..`` in ``<git directory>/worktrees/<id>/``; LINKED makes one (in A, a bare repository)
# and a checkout ``sub`` that uses it.
LINKED = (
    "git init -q --bare A && mkdir -p A/worktrees/w sub\n"
    "echo ../.. > A/worktrees/w/commondir && echo 'ref: refs/heads/main' > A/worktrees/w/HEAD\n"
    "echo 'gitdir: ../A/worktrees/w' > sub/.git\n"
)
FSM_CONFIG = "printf '[core]\\n\\tfsmonitor = \"touch {marks}/fsm; false\"\\n' > "
COMMONDIR_ATTACKS: dict[str, tuple[str | tuple[str, ...], str]] = {
    # A commondir of the command's own wording, naming a directory with no HEAD.
    "without-head": (
        "mkdir -p z/objects z/refs/heads z/hooks sub\n" + FSM_CONFIG + "z/config\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > z/hooks/pre-commit\n"
        "chmod +x z/hooks/pre-commit\n"
        "mkdir sub/.git && echo 'ref: refs/heads/main' > sub/.git/HEAD "
        "&& echo ../../z > sub/.git/commondir\n",
        "not what git writes",
    ),
    # The common directory taken apart by the command that made it (its HEAD removed, then a
    # config written): still governed by its objects and refs, and the commondir is judged
    # again at the end (found by an outside review; present before).
    "taken-apart-after": (
        LINKED + "rm A/HEAD A/config\n" + FSM_CONFIG + "A/config\n",
        "commondir",
    ),
    # ``B/l/../A`` reads as the complete B/A; git resolves the symlink B/l first and goes up
    # from where it led: C/D/A, objects and refs but no HEAD (found by an outside review).
    "dotdot-after-symlink": (
        "git init -q --bare B/A && mkdir -p C/D/E C/D/A sub/.git\n"
        "cp -r .git/objects .git/refs C/D/A/\n" + FSM_CONFIG + "C/D/A/config\n"
        "ln -s ../C/D/E B/l\n"
        "echo 'ref: refs/heads/main' > sub/.git/HEAD && echo ../../B/l/../A > sub/.git/commondir\n",
        "not what git writes",
    ),
    # A later command moves the common directory away and makes one without a HEAD in its
    # place, with the linked git directory moved in: objects and refs make it a common
    # directory git reads config from, so it is governed from the moment it has both (found
    # by an outside review; present before).
    "refilled-by-a-later-command": (
        (
            LINKED,
            "mv A A.old && mkdir -p A/objects A/refs A/worktrees\n"
            "mv A.old/worktrees/w A/worktrees/\n" + FSM_CONFIG + "A/config\n",
        ),
        "is replaced only by renaming a checked copy onto it",
    ),
    # The same with its config written before the layout completes: checked as it completes.
    "refilled-config-first": (
        (
            LINKED,
            "mv A A.old && mkdir -p A/objects A/worktrees && mv A.old/worktrees/w A/worktrees/\n"
            + FSM_CONFIG
            + "A/config\n"
            "mkdir A/refs.new && mv A/refs.new A/refs\n",
        ),
        "a new git directory",
    ),
    # A linked git directory moved under modules/, where its commondir (../..) names a
    # directory with objects and refs but no HEAD (found by an outside review).
    "linked-moved-under-modules": (
        "git worktree add -q wt 2>/dev/null\n"
        "mkdir -p .git/modules/a/b sub\n" + FSM_CONFIG + ".git/modules/a/config\n"
        "mkdir .git/modules/a/objects .git/modules/a/refs\n"
        "mv .git/worktrees/wt .git/modules/a/b/wt\n"
        "echo 'gitdir: ../.git/modules/a/b/wt' > sub/.git\n",
        "a new git directory",
    ),
    # A checkout's .git file names a directory through a path a later command re-aims with a
    # symlink into the sandbox's /tmp layer, which lasts on the host (ringfence's cache): a
    # repository built in /tmp is governed as one in the workspace (found by an outside
    # review; present before).
    "re-aimed-into-the-tmp-layer": (
        (
            "mkdir sub d && echo 'gitdir: ../d/evil' > sub/.git\n",
            "W=$(awk '$5 ~ /ringfence\\/workspaces\\/.*\\/cache$/ {{print $5}}' "
            "/proc/self/mountinfo | head -1)\n"
            "mkdir -p /tmp/evil/objects /tmp/evil/refs "
            "&& echo 'ref: refs/heads/main' > /tmp/evil/HEAD\n" + FSM_CONFIG + "/tmp/evil/config\n"
            'rmdir d && ln -s "${{W%/cache}}/tmp/upper" d\n',
        ),
        "is replaced only by renaming a checked copy onto it",
    ),
}


@pytest.mark.parametrize("attack", list(COMMONDIR_ATTACKS))
def test_a_common_directory_must_be_a_repository_to_the_end(
    rf: Runner, tmp_path: Path, marks: Path, attack: str
) -> None:
    plant, refusal = COMMONDIR_ATTACKS[attack]
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home),
        plant=plant,
        after="git status; echo x > f; git add f; git commit -qm x",
        where="sub",
    )
    assert refusal in err, err


def test_the_users_repository_pointed_at_a_common_directory_refilled_later(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """The user's own .git gets a commondir naming a repository the command made; a later
    command swaps that repository for objects and refs without a HEAD. Host git in the
    user's checkout would read the new config. No commondir but git's own (``../..`` in
    ``worktrees/<id>/``) stays."""
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home),
        plant=(
            "git init -q --bare A && echo ../A > .git/commondir\n",
            "mv A A.old && mkdir -p A/objects A/refs\n"
            "printf '[core]\\n\\tfsmonitor = \"touch {marks}/fsm; false\"\\n' > A/config\n",
        ),
        after="git status; echo x > f; git add f; git commit -qm x",
    )
    assert "not what git writes" in err, err


@pytest.mark.parametrize("mode", ["workspace-write", "read-only"])
def test_a_repository_in_the_tmp_layer_is_governed(rf: Runner, mode: str) -> None:
    """The /tmp layer lasts on the host (ringfence's cache), where a link left in the
    workspace can lead host git: a repository built there gets the workspace's checks, also
    when the workspace itself is read-only. A pointer may still not name /tmp (the host's
    /tmp is another directory)."""
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "mkdir -p /tmp/r/objects /tmp/r/refs\n"
        + FSM_CONFIG.format(marks="/nonexistent")
        + "/tmp/r/config && echo config-written\n"
        "mkdir /tmp/y && echo 'gitdir: /tmp/r' > /tmp/y/.git\n"
        "echo tmp-ok > /tmp/plain && cat /tmp/plain\n",
        "--mode",
        mode,
    )
    assert "config-written" not in r.stdout
    assert "tmp-ok" in r.stdout  # an ordinary file in /tmp is as before
    assert "git directory /tmp/r: config is replaced only by renaming" in r.stderr, r.stderr
    assert "/tmp/y/.git (points outside the writable roots (/tmp/r);" in r.stderr, r.stderr


def _repo_with_submodule(ws: Path, rf: Runner, home: Path) -> None:
    """A repository of yours with a submodule ``p`` added on the host (whose module config
    then has git's own core.worktree)."""
    _repo(ws, rf, home)
    src = home / "S"
    _host(home, home, f"git init -q -b main {src} && git -C {src} commit -q --allow-empty -m s")
    _host(
        home, ws, f"git -c protocol.file.allow=always submodule add -q {src} p && git commit -qm p"
    )
    for p in [ws, *ws.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


def test_your_submodule_checkout_stays_where_its_work_tree_leads(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """Your submodule's module config names its checkout (core.worktree, written by git on
    the host). A command that moved the checkout away and put a symlink to .git in its place
    would make your next checkout in the moved one write the commit's hooks into .git (found
    while fixing an outside review's finding; present before)."""
    plant = (
        "cd p && mkdir hooks && printf '#!/bin/sh\\ntouch {marks}/hook\\n' > hooks/post-checkout\n"
        "chmod +x hooks/post-checkout && git add hooks && git commit -qm evil\n"
        "git checkout -q HEAD~1 && cd ..\n"
        "mv p p.old && ln -s .git p\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo_with_submodule(ws, rf, home),
        plant=plant,
        after="(cd p.old 2>/dev/null && git checkout -q main); git checkout -q -b x",
    )
    assert "refused renameat2 " in err and "/p (protected: " in err, err


def _submodule_layout(layout: str, ws: Path, rf: Runner, home: Path) -> None:
    """Your repositories, made on the host, each with a submodule whose module config names
    its checkout (core.worktree): one of the repository at the workspace's top under a long
    name, one in a nested repository, one in a linked worktree's submodule."""
    _repo(ws, rf, home)
    src = home / "S"
    _host(home, home, f"git init -q -b main {src} && git -C {src} commit -q --allow-empty -m s")
    add = f"git -c protocol.file.allow=always submodule add -q {src}"
    if layout == "deep-name":
        _host(home, ws, f"{add} src/vendor/example.org/org/lib && git commit -qm sub")
    elif layout == "separate-git-dir":
        upstream = home / "R"
        _host(
            home,
            home,
            f"git init -q -b main {upstream} && cd {upstream} && {add} sub && git commit -qm s",
        )
        _host(
            home,
            ws,
            f"git clone -q --separate-git-dir={ws}/gd {upstream} n && cd n "
            "&& git -c protocol.file.allow=always submodule -q update --init",
        )
    elif layout == "nested-repo":
        _host(home, ws, f"git init -q -b main proj && cd proj && {add} lib/foo && git commit -qm s")
    else:
        _host(home, ws, f"{add} lib/foo && git commit -qm sub && git worktree add -q .wt/feat")
        _host(home, ws / ".wt/feat", "git -c protocol.file.allow=always submodule -q update --init")
    for p in [ws, *ws.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


CHECKOUTS = {
    "deep-name": ("src/vendor/example.org/org/lib", ".git/modules/src/vendor/example.org/org/lib"),
    "nested-repo": ("proj/lib/foo", "proj/.git/modules/lib/foo"),
    "linked-worktree": (".wt/feat/lib/foo", ".git/worktrees/feat/modules/lib/foo"),
    "separate-git-dir": ("n/sub", "gd/modules/sub"),
}


def _plant_hook(module: str) -> str:
    """Commit hooks/post-checkout into the module's repository (git plumbing, in the
    sandbox), on a branch ``evil``."""
    return (
        f"GD=$PWD/{module}\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > hookfile\n"
        "export GIT_DIR=$GD\n"
        "B=$(git hash-object -w hookfile)\n"
        "T1=$(printf '100755 blob %s\\tpost-checkout\\n' $B | git mktree)\n"
        "T2=$(printf '040000 tree %s\\thooks\\n' $T1 | git mktree)\n"
        "git update-ref refs/heads/evil $(git commit-tree -m evil -p HEAD $T2)\n"
        "unset GIT_DIR; rm hookfile\n"
    )


# Ways around the rule above, each found by an outside review: (layout, the steps after
# planting the hook, where you would run `git checkout evil`).
RE_AIMS = {
    # A .git (no repository) put between the checkout and its repository's top, so that the
    # first .git above hid the repository whose module config names the checkout.
    "dot-git-in-between": (
        "deep-name",
        "mkdir src/vendor/.git\n"
        "ln -s nowhere src/vendor/flush && rm src/vendor/flush\n"
        "mv src/vendor/example.org src/vendor/example.org2\n"
        "ln -s ../../.git/modules/src/vendor/example.org src/vendor/example.org\n"
        "rmdir src/vendor/.git\n",
        "src/vendor/example.org2/org/lib",
    ),
    # The module's git directory parked one level deeper (its config then names another
    # directory), the checkout's parent swapped for a symlink into .git/modules, the git
    # directory put back.
    "module-git-dir-parked": (
        "nested-repo",
        "mkdir proj/.git/modules/lib/x\n"
        "mv proj/.git/modules/lib/foo proj/.git/modules/lib/x/foo\n"
        "mv proj/lib proj/lib2\n"
        "ln -s .git/modules/lib proj/lib\n"
        "mv proj/.git/modules/lib/x/foo proj/.git/modules/lib/foo\n",
        "proj/lib2/foo",
    ),
    # A repository whose git directory lies outside its worktree moved away whole (the rule
    # looked at the repositories above it, not its own modules), and /proc/self/cwd, which
    # leads wherever the process following it is: for git, into the git directory.
    "own-modules-and-proc": (
        "separate-git-dir",
        "mv n n2\nmkdir -p n && ln -s /proc/self/cwd n/sub\n",
        "n2/sub",
    ),
}


@pytest.mark.parametrize("attack", list(RE_AIMS))
def test_no_way_round_the_checkout_rule(
    rf: Runner, tmp_path: Path, marks: Path, attack: str
) -> None:
    layout, steps, moved = RE_AIMS[attack]
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _submodule_layout(layout, ws, rf, home),
        plant=_plant_hook(CHECKOUTS[layout][1]) + steps,
        after=f"cd {moved} 2>/dev/null && git checkout -q evil",
    )
    assert "core.worktree) stays" in err or "holds the git directory of the checkout" in err, err


@pytest.mark.parametrize("layout", list(CHECKOUTS))
def test_no_submodule_checkout_is_swapped_for_its_git_directory(
    rf: Runner, tmp_path: Path, marks: Path, layout: str
) -> None:
    """The command commits a hooks/post-checkout into the submodule, moves its checkout away
    and puts a symlink to the module's git directory where it was: git run in the moved
    checkout would take that git directory for the work tree, write the hook into it and run
    it. Checkouts the guard finds when a directory is renamed, at any depth, in nested
    repositories and linked worktrees (found by an outside review; present before)."""
    checkout, module = CHECKOUTS[layout]
    plant = (
        f"CO={checkout}; GD=$PWD/{module}\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > hookfile\n"
        "export GIT_DIR=$GD\n"
        "B=$(git hash-object -w hookfile)\n"
        "T1=$(printf '100755 blob %s\\tpost-checkout\\n' $B | git mktree)\n"
        "T2=$(printf '040000 tree %s\\thooks\\n' $T1 | git mktree)\n"
        "git update-ref refs/heads/evil $(git commit-tree -m evil -p HEAD $T2)\n"
        "unset GIT_DIR; rm hookfile\n"
        "mv $CO ${{CO}}2 && ln -s $GD $CO\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _submodule_layout(layout, ws, rf, home),
        plant=plant,
        after=f"cd {checkout}2 2>/dev/null && git checkout -q evil",
    )
    assert "a submodule's config names (core.worktree) stays" in err, err


def test_a_new_worktree_top_brings_no_hooks_of_its_own(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """Your repository names its hooks relative to the worktree (husky: core.hooksPath =
    .husky). The command plants evil/.husky/pre-commit, then makes evil/.git point at your
    repository: git run in evil takes evil/.husky for the hooks (found by an outside
    review; present before)."""

    def setup(ws: Path, home: Path) -> None:
        _repo(ws, rf, home)
        _host(home, ws, "mkdir .husky && git config core.hooksPath .husky")

    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=(
            "mkdir -p evil/.husky\n"
            "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > evil/.husky/pre-commit\n"
            "chmod +x evil/.husky/pre-commit && printf 'gitdir: ../.git\\n' > evil/.git\n"
        ),
        after="cd evil && git commit -q --allow-empty -m x",
    )
    assert "(core.hooksPath) holds pre-commit" in err, err


def test_a_git_file_leading_to_no_repository_yet_is_moved_aside(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """evil/.git names a linked git directory that does not exist yet, beside planted
    hooks; a later `git worktree add wt` makes it one, and git run in evil would take
    evil/.husky for the hooks (found by an outside review; present before)."""

    def setup(ws: Path, home: Path) -> None:
        _repo(ws, rf, home)
        _host(home, ws, "mkdir .husky && git config core.hooksPath .husky")

    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=(
            "mkdir -p evil/.husky && printf 'gitdir: ../.git/worktrees/wt\\n' > evil/.git\n"
            "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > evil/.husky/pre-commit\n"
            "chmod +x evil/.husky/pre-commit\n",
            "git worktree add -q wt\n",
        ),
        after="cd evil && git commit -q --allow-empty -m x",
    )
    assert "evil/.git (it leads to no repository" in err, err


def test_a_directory_renamed_onto_rebase_state_brings_no_exec_line(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """A todo list with `exec` inside a directory renamed into place is judged at the end like
    one written in place: moved aside, so `git rebase --continue` runs nothing planted."""
    plant = (
        "git rebase -q -i HEAD~1 --exec true >/dev/null 2>&1 || true\n"
        "GIT_SEQUENCE_EDITOR='sed -i 1ibreak' git rebase -i HEAD~1 >/dev/null 2>&1 || true\n"
        "mkdir -p .git/objects/rmx && cp -r .git/rebase-merge/. .git/objects/rmx/\n"
        "echo 'exec touch {marks}/todo' > .git/objects/rmx/git-rebase-todo\n"
        "rm -rf .git/rebase-merge; mv .git/objects/rmx .git/rebase-merge\n"
        "echo 'exec touch {marks}/todo2' >> .git/rebase-merge/git-rebase-todo\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home, commits=3),
        plant=plant,
        after="git rebase --continue",
    )
    assert "git-rebase-todo" in err


def test_head_of_an_existing_repository_cannot_be_taken_away(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """Without HEAD the directory is no repository and nothing in it would be governed."""
    plant = (
        "mv .git/HEAD .git/objects/HEAD.save\n"
        "printf '[core]\\n\\tfsmonitor = \"touch {marks}/fsm; false\"\\n' > .git/config\n"
        "mv .git/objects/HEAD.save .git/HEAD\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home),
        plant=plant,
        after="git status",
    )
    assert "it would stop being a repository" in err


def test_hooks_may_not_be_a_link_into_data(rf: Runner, tmp_path: Path, marks: Path) -> None:
    plant = (
        "mkdir -p sub/.git/objects/h\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > sub/.git/objects/h/pre-commit\n"
        "chmod +x sub/.git/objects/h/pre-commit\n"
        "ln -s objects/h sub/.git/hooks && cd sub && git init -q\n"
    )
    _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home),
        plant=plant,
        after="echo x > f; git add f; git commit -qm x",
        where="sub",
    )


def test_a_merge_strategy_is_one_of_gits_own(rf: Runner, tmp_path: Path, marks: Path) -> None:
    """rebase-merge/strategy names `git-merge-<it>`, found relative to the worktree too."""
    plant = (
        "GIT_SEQUENCE_EDITOR='sed -i 1ibreak' git rebase -i HEAD~2 >/dev/null 2>&1 || true\n"
        "echo x/evil > .git/rebase-merge/strategy\n"
        "mkdir -p git-merge-x\n"
        "printf '#!/bin/sh\\ntouch {marks}/strategy\\n' > git-merge-x/evil\n"
        "chmod +x git-merge-x/evil\n"
        "git commit -q --allow-empty -m side\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home, commits=3),
        plant=plant,
        after="git rebase --continue",
    )
    assert "merge strategy" in err


def test_hooks_path_of_a_nested_repository_and_included_configs(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """A nested repository's core.hooksPath (not known at start) takes no hook; a file the
    workspace's config includes is config too."""

    def setup(ws: Path, home: Path) -> None:
        _repo(ws, rf, home)
        _host(home, ws, "git config include.path ../.gitconfig-project")
        (ws / "nested").mkdir()
        _host(home, ws / "nested", "git init -q -b main . && git config core.hooksPath .husky")
        (ws / "nested/.husky").mkdir()
        for p in [ws, *ws.rglob("*")]:
            os.lchown(p, rf.uid, rf.gid)

    plant = (
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > nested/.husky/pre-commit\n"
        "chmod +x nested/.husky/pre-commit\n"
        "printf '[core]\\n\\tfsmonitor = \"touch {marks}/fsm; false\"\\n' > .gitconfig-project\n"
    )
    _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=plant,
        after="git status; cd nested && echo x > f && git add f && git commit -qm x",
    )


@pytest.mark.parametrize(
    "plant",
    [
        # a .git symlink to a file rewritten later
        "mkdir sub && echo 'gitdir: ../z/.git' > ptr && ln -s ../ptr sub/.git\n"
        "echo 'gitdir: {out}' > ptr\n",
        # a gitdir path git reads across a newline
        "mkdir -p 'sub/y\n' && printf 'gitdir: y\\n/../../../../..{out}\\n' > sub/.git\n",
        # a pointer swapped out of the end-of-run check by RENAME_EXCHANGE
        "mkdir -p sub other && echo 'gitdir: {out}' > other/.git\n"
        'python3 -c "import ctypes; l=ctypes.CDLL(None); '
        "l.renameat2(-100, b'sub', -100, b'other', 2)\"\n",
        # ``..`` after a symlink: git goes up from where the symlink led (outside review)
        "mkdir -p sub B && ln -s {out}/refs B/l && echo 'gitdir: ../B/l/..' > sub/.git\n",
    ],
    ids=["symlink-to-file", "multi-line", "exchange", "dotdot-after-symlink"],
)
def test_no_pointer_leads_outside_the_roots(
    rf: Runner, tmp_path: Path, marks: Path, plant: str
) -> None:
    """Host git in ``sub`` must not end up in a repository outside the writable roots (one of
    the user's own, whose fsmonitor marks that it ran)."""
    out = Path(tempfile.mkdtemp(prefix="ringfence-outrepo-", dir="/var/tmp"))
    try:
        home = tmp_path / "outhome"
        home.mkdir()
        (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
        _host(home, out, "git init -q -b main .")
        _host(home, out, f"git config core.fsmonitor 'touch {marks}/outside; false'")
        _attack(
            rf,
            tmp_path,
            marks,
            setup=lambda ws, h: _repo(ws, rf, h),
            plant=plant.replace("{out}", f"{out}/.git"),
            after="git status",
            where="sub",
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_rebase_state_reached_through_a_symlink(rf: Runner, tmp_path: Path, marks: Path) -> None:
    """`.git/rebase-merge -> lost-found/rm` would have made an unchecked todo list the one
    `git rebase --continue` runs: a git directory holds no symlink."""
    plant = (
        "GIT_SEQUENCE_EDITOR='sed -i 1ibreak' git rebase -i HEAD~1 >/dev/null 2>&1 || true\n"
        "mkdir -p .git/lost-found/rm && cp -r .git/rebase-merge/. .git/lost-found/rm/\n"
        "echo 'exec touch {marks}/todo' > .git/lost-found/rm/git-rebase-todo\n"
        "rm -rf .git/rebase-merge; ln -s lost-found/rm .git/rebase-merge\n"
    )
    _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home, commits=3),
        plant=plant,
        after="git rebase --continue",
    )


def test_a_nested_repositorys_include_and_a_hooks_directory_renamed_in(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """A nested repository (not known at start) includes a file of its worktree, and names
    `.husky/_` as hooks: neither the include nor a hook arriving by a parent's rename runs."""

    def setup(ws: Path, home: Path) -> None:
        _repo(ws, rf, home)
        (ws / "sub/.husky/_").mkdir(parents=True)
        _host(home, ws / "sub", "git init -q -b main . && git config core.hooksPath .husky/_")
        _host(home, ws / "sub", "git config include.path ../shared.gitconfig")
        (ws / "sub/.husky/_/pre-commit").write_text("#!/bin/sh\nexit 0\n")
        (ws / "sub/.husky/_/pre-commit").chmod(0o755)
        for p in [ws, *ws.rglob("*")]:
            os.lchown(p, rf.uid, rf.gid)

    plant = (
        "printf '[core]\\n\\tfsmonitor = \"touch {marks}/inc; false\"\\n' > sub/shared.gitconfig\n"
        "mkdir -p sub/evil/_\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > sub/evil/_/pre-commit\n"
        "chmod +x sub/evil/_/pre-commit\n"
        "mv sub/.husky sub/.husky-old; mv sub/evil sub/.husky\n"
    )
    _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=plant,
        after="cd sub && git status && echo x > f && git add f && git commit -qm x",
    )


def test_options_for_git_apply_are_the_ones_git_am_stores(rf: Runner) -> None:
    """rebase-apply/apply-opt goes back to `git apply` on `git am --continue`:
    --build-fake-ancestor=FILE would write any file of the user's. Checked at the end."""
    ws = rf.mkdir()
    home = Path(tempfile.mkdtemp(prefix="ringfence-home-", dir="/var/tmp"))
    try:
        _repo(ws, rf, home)
        r = rf.confined_sh(
            ws,
            "mkdir -p .git/rebase-apply && echo \"'--build-fake-ancestor=/tmp/x'\" "
            "> .git/rebase-apply/apply-opt && mkdir -p ok/.git/rebase-apply && echo done",
        )
        assert "done" in r.stdout, r.stderr
        assert not (ws / ".git/rebase-apply/apply-opt").exists()
        assert (ws / ".git/rebase-apply/apply-opt.ringfence-refused").exists()
        assert "options git apply must not get" in r.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_guard_keeps_its_limits(rf: Runner) -> None:
    """prlimit on the guard (pid 2) would starve it of descriptors before its end-of-run
    checks: refused by the hardening filter (only the caller's own limits may change)."""
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "prlimit --pid 2 --nofile=3:3; echo rc=$?; ulimit -n 64 && echo own-ok")
    assert "rc=0" not in r.stdout and "own-ok" in r.stdout, (r.stdout, r.stderr)


def test_core_worktree_is_never_kept(rf: Runner, tmp_path: Path) -> None:
    """A work tree set in config is resolved through the file system each time git runs, so a
    later rename and symlink could re-aim it into a git directory. `git config core.worktree`
    still succeeds (git submodule sets it in every module), and the config is kept without
    it: git finds a checkout by its .git file."""
    ws = rf.mkdir()
    home = tmp_path / "h"
    _repo(ws, rf, home)
    r = rf.confined_sh(
        ws,
        "mkdir wt && git config core.worktree ../wt; echo main=$?\n"
        "git init -q --bare .git/modules/sub && mkdir sub "
        "&& printf 'gitdir: ../.git/modules/sub\\n' > sub/.git\n"
        "git --git-dir=.git/modules/sub config core.worktree ../../../sub; echo module=$?\n",
    )
    assert "main=0" in r.stdout and "module=0" in r.stdout, (r.stdout, r.stderr)
    for config in (ws / ".git/config", ws / ".git/modules/sub/config"):
        assert "worktree" not in config.read_text(), config
    assert "git config kept without core.worktree: " in r.stderr, r.stderr


def test_a_submodule_work_tree_re_aimed_into_its_git_directory(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """core.worktree, checked once while it names a checkout that points back, then re-aimed
    by a later command (the directory on its way swapped for a symlink into .git/modules):
    your next checkout in the submodule would write the commit's hooks into its git
    directory and run them (found by an outside review; present before)."""
    plant = (
        "git init -q S && cd S && git commit -q --allow-empty -m c1 && C1=$(git rev-parse HEAD)\n"
        "mkdir hooks && printf '#!/bin/sh\\ntouch {marks}/hook\\n' > hooks/post-checkout\n"
        "chmod +x hooks/post-checkout && git add hooks && git commit -qm c2\n"
        "cd .. && git init -q R && cd R && git commit -q --allow-empty -m top\n"
        "git -c protocol.file.allow=always submodule add -q ../S p && git commit -qm sub\n"
        "git -C p checkout -q $C1\n"
        "mkdir -p w/p && printf 'gitdir: ../../.git/modules/p\\n' > w/p/.git\n"
        "git config -f .git/modules/p/config core.worktree ../../../w/p\n",
        "cd R && mv w w.old && ln -s .git/modules w\n",
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home),
        plant=plant,
        after="git checkout -q master",
        where="R/p",
    )
    assert "git config kept without core.worktree" in err, err


@pytest.mark.parametrize(
    ("plant", "moved"),
    [
        # a pointer spelled inside, reaching outside through a symlink
        (
            "ln -s {out} lnk && mkdir sub && printf 'gitdir: ../lnk/.git\\n' > sub/.git\n",
            "sub/.git",
        ),
        # where `git worktree repair` would write a .git file (no HEAD beside it)
        (
            "mkdir -p .git/worktrees/x && echo {out}/.git > .git/worktrees/x/gitdir\n",
            ".git/worktrees/x/gitdir",
        ),
    ],
    ids=["through-symlink", "worktree-backlink"],
)
def test_pointers_are_judged_where_they_lead(
    rf: Runner, tmp_path: Path, plant: str, moved: str
) -> None:
    out = Path(tempfile.mkdtemp(prefix="ringfence-outrepo-", dir="/var/tmp"))
    try:
        ws = rf.mkdir()
        _repo(ws, rf, tmp_path / "h")
        r = rf.confined_sh(ws, INNER + plant.format(out=out))
        assert not (ws / moved).exists(), (r.stdout, r.stderr)
        assert (ws / f"{moved}.ringfence-refused").exists()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_hooks_directory_that_does_not_exist_yet(rf: Runner, tmp_path: Path, marks: Path) -> None:
    """core.hooksPath names tools/hooks, not there at start: neither it nor a symlink on its
    way may appear."""

    def setup(ws: Path, home: Path) -> None:
        _repo(ws, rf, home)
        _host(home, ws, "git config core.hooksPath tools/hooks")

    plant = (
        "mkdir -p evil/hooks\n"
        "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > evil/hooks/pre-commit\n"
        "chmod +x evil/hooks/pre-commit\n"
        "ln -s evil tools || mv evil tools\n"
    )
    _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=plant,
        after="echo x > f && git add f && git commit -qm x",
    )


def test_a_git_file_naming_a_host_repository_opens_nothing(rf: Runner) -> None:
    """A workspace's .git file pointing at another repository on the host is a claim, not a
    linked worktree (no gitdir file in <repo>/.git/worktrees/ points back): that repository
    stays read-only and its sockets out of reach."""
    victim = rf.mkdir("victim-")
    env = {**os.environ, "HOME": str(victim), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(victim)], check=True, env=env)
    head = (victim / ".git" / "HEAD").read_text()
    for p in [victim, *victim.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    ws = rf.mkdir()
    (ws / ".git").write_text(f"gitdir: {victim}/.git\n")
    os.chown(ws / ".git", rf.uid, rf.gid)
    r = rf.confined_sh(
        ws,
        f"echo 'ref: refs/heads/pwned' > {victim}/.git/HEAD || echo refused; "
        f"touch {victim}/.git/refs/heads/evil || echo refused",
    )
    assert r.stdout.count("refused") == 2, (r.stdout, r.stderr)
    assert (victim / ".git" / "HEAD").read_text() == head
    assert not (victim / ".git" / "refs" / "heads" / "evil").exists()


HOOK_AND_FSM = (
    "printf '#!/bin/sh\\ntouch {marks}/hook\\n' > {d}/hooks/pre-commit\n"
    "chmod +x {d}/hooks/pre-commit\n" + FSM_CONFIG + "{d}/config\n"
)
# A `.git` directory that is not a repository yet, holding a hook and a config: your own
# `git init` there later adopts both (it keeps existing config keys and hook files).
MAKING = {
    "written-in-place": "mkdir -p proj/.git/hooks\n" + HOOK_AND_FSM.replace("{d}", "proj/.git"),
    "renamed-in": (
        "mkdir -p x/hooks proj\n" + HOOK_AND_FSM.replace("{d}", "x") + "mv x proj/.git\n"
    ),
    "config-renamed-onto": ("mkdir -p proj/.git\n" + FSM_CONFIG + "c && mv c proj/.git/config\n"),
    # git init reads a commondir with or without a HEAD, and puts config and hooks there
    "commondir": (
        "mkdir -p proj/.git/modules/evil/hooks\n"
        + HOOK_AND_FSM.replace("{d}", "proj/.git/modules/evil")
        + "printf 'modules/evil\\n' > proj/.git/commondir\n"
    ),
    "commondir-after-layout": (
        "mkdir -p proj/.git/objects proj/.git/refs proj/.git/modules/evil/hooks\n"
        + HOOK_AND_FSM.replace("{d}", "proj/.git/modules/evil")
        + "printf 'modules/evil\\n' > proj/.git/commondir\n"
    ),
}


@pytest.mark.parametrize("route", sorted(MAKING))
def test_a_git_directory_in_the_making_is_governed(
    rf: Runner, tmp_path: Path, marks: Path, route: str
) -> None:
    """A `.git` directory without its layout is inert to git, until you run `git init` in
    its directory: then git adopts the config and hooks the command left there (found by
    an outside review; present before)."""

    def setup(ws: Path, home: Path) -> None:
        home.mkdir(exist_ok=True)
        (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")

    _attack(
        rf,
        tmp_path,
        marks,
        setup=setup,
        plant=MAKING[route],
        after="git init -q && git status >/dev/null; git commit -q --allow-empty -m x",
        where="proj",
    )


def test_a_todo_list_moved_away_by_another_command_while_it_is_checked(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """Command A leaves an `exec` line in a nested checkout's todo list; command B, in a
    sandbox of its own on the same workspace, renames the checkout away before A ends and
    back after A's end-of-command check, which found the name empty (found by an outside
    review; present before). The check now follows the file: it is moved aside wherever it
    is. Without the race (B too late) the outcome is the same, so the test cannot fail on
    timing; it catches the old code only when B wins, as it does here."""
    todo = "proj/.git/rebase-merge/git-rebase-todo"
    plant_a = (
        "cd proj && GIT_SEQUENCE_EDITOR='sed -i 1ibreak' git rebase -i HEAD~1 >/dev/null 2>&1\n"
        "echo 'exec touch {marks}/race' >> .git/rebase-merge/git-rebase-todo && sleep 2\n"
    )
    move_b = (
        f"for i in $(seq 1500); do grep -q race {todo} 2>/dev/null && break; sleep 0.02; done\n"
        "mv proj proj2 && sleep 4 && mv proj2 proj\n"
    )
    for flags in (("--no-default-protect",), ()):
        home = Path(tempfile.mkdtemp(prefix="ringfence-home-", dir=tmp_path))
        ws = rf.mkdir()
        (ws / "proj").mkdir()
        _repo(ws / "proj", rf, home, commits=3)
        for m in marks.iterdir():
            m.unlink()
        runs = [
            rf.popen("run", *flags, "--", "sh", "-c", INNER + s.format(marks=marks), cwd=ws)
            for s in (plant_a, move_b)
        ]
        outs = [p.communicate(timeout=60) for p in runs]
        host = _host(home, ws / "proj", "git rebase --continue")
        ran = sorted(m.name for m in marks.iterdir())
        if flags:
            assert ran == ["race"], f"the attack does not work even unprotected: {outs}\n{host}"
        else:
            assert not ran, f"planted command ran: {ran}\n{outs}\n{host}"
            assert "git-rebase-todo" in outs[0][1], outs


def test_patterns_in_the_exclude_of_a_git_directory_in_the_making(rf: Runner) -> None:
    """`info/exclude` is read-only in a repository (it hides files from `git status` and
    `git add -A`); in a `.git` in the making, one with patterns is moved aside when the
    command ends, so your `git init` there does not adopt it (found by an outside review)."""
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws, "mkdir -p proj/.git/info && printf '# ok\\n*.env\\n' > proj/.git/info/exclude"
    )
    assert r.returncode == 0, r.stderr
    assert "patterns in info/exclude" in r.stderr, r.stderr
    info = ws / "proj/.git/info"
    assert sorted(p.name for p in info.iterdir()) == ["exclude.ringfence-refused"]


def test_a_refused_todo_list_made_read_only_is_still_moved_aside(
    rf: Runner, tmp_path: Path, marks: Path
) -> None:
    """The command takes write permission off its todo list and the directory holding it,
    so that the guard (the same user, unprivileged) can neither move it aside nor empty it
    (found by an outside review; root's DAC override hid it). The guard gives the owner's
    write permission back, as the owner may, and moves it aside."""
    plant = (
        "GIT_SEQUENCE_EDITOR='sed -i 1ibreak' git rebase -i HEAD~1 >/dev/null 2>&1\n"
        "echo 'exec touch {marks}/ro' >> .git/rebase-merge/git-rebase-todo\n"
        "chmod 0444 .git/rebase-merge/git-rebase-todo && chmod 0555 .git/rebase-merge\n"
    )
    err, _ = _attack(
        rf,
        tmp_path,
        marks,
        setup=lambda ws, home: _repo(ws, rf, home, commits=3),
        plant=plant,
        after="chmod 755 .git/rebase-merge; git rebase --continue",
    )
    assert "git-rebase-todo (runs commands" in err, err
