"""The name guard's git rules on the real kernel (supervisor driven directly, as in
test_nameguard.py): every git directory by what git reads, and every alias of an entry."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Runner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_nameguard import expect_errno, run_guarded

from ringfence.platforms.linux.guard_rules import GuardRules

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

EVIL_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tfsmonitor = touch /tmp/pwned\n"
GOOD_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n[user]\n\temail = a@b\n"
HOST_GIT = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin"}


def _rules(ws: Path, **kw: object) -> GuardRules:
    return GuardRules(writable_roots=(str(ws),), git="allowlist", **kw)  # type: ignore[arg-type]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "ws"
    root.mkdir()
    return root


@pytest.fixture
def repo(ws: Path) -> Path:
    """An existing repository the user made on the host, with a real hook."""
    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=HOST_GIT)
    (ws / ".git/hooks/pre-commit").write_text("#!/bin/sh\nexit 0\n")
    return ws


def _is_repo_with(path: Path, config: bytes) -> bool:
    layout = all(os.path.lexists(path / n) for n in ("HEAD", "objects", "refs"))
    return layout and (path / "config").exists() and (path / "config").read_bytes() == config


# ------------------------------------------------------------ a directory becoming a repository


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).mkdir()


STEPS: dict[str, Callable[[Path], object]] = {
    "config": lambda d: (d / "config").write_bytes(EVIL_CONFIG),
    "HEAD": lambda d: (d / "HEAD").write_text("ref: refs/heads/main\n"),
    "objects": _mkdir("objects"),
    "refs": _mkdir("refs"),
}


@pytest.mark.parametrize("order", list(itertools.permutations(STEPS)))
def test_no_order_of_steps_builds_a_repository_with_a_bad_config(
    ws: Path, order: tuple[str, ...]
) -> None:
    d = ws / "sub/.git"

    def probe() -> int:
        d.mkdir(parents=True)
        for step in order:
            try:
                STEPS[step](d)
            except PermissionError:
                return 3  # the step that completes the layout was refused
        return 0

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 3, order
    assert not _is_repo_with(d, EVIL_CONFIG)
    assert out.denials  # the completing step (config checked) or the late config write


@pytest.mark.parametrize("order", list(itertools.permutations(("config", "objects", "refs"))))
def test_no_order_of_steps_builds_a_common_directory_with_a_bad_config(
    ws: Path, order: tuple[str, ...]
) -> None:
    """Objects and refs without a HEAD: git reads config and hooks there when a linked git
    directory's commondir names it, so the pair completes a layout as a HEAD does."""
    d = ws / "common"

    def probe() -> int:
        d.mkdir()
        for step in order:
            try:
                STEPS[step](d)
            except PermissionError:
                return 3
        return 0

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 3, order
    assert not ((d / "objects").exists() and (d / "refs").exists() and (d / "config").exists())
    assert out.denials


def test_a_head_beside_a_commondir_gets_that_commondir_judged(ws: Path) -> None:
    """A common directory (objects, refs) with a commondir is no linked git directory until a
    HEAD appears; from then on git follows the commondir, so it is judged at the end."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    d = ws / "q"
    for name in ("objects", "refs"):
        (d / name).mkdir(parents=True)
    (d / "commondir").write_text("/elsewhere\n")
    g = GitGuard(roots=(str(ws),))
    assert g.creating(str(d / "HEAD"), stat.S_IFREG) is None
    assert g.pending == {str(d / "commondir"): "commondir"}
    (d / "HEAD").write_text("ref: refs/heads/main\n")
    moved: list[str] = []
    assert g.finish(lambda path: moved.append(path) or path + ".refused") == []
    assert moved == [str(d / "commondir")]


def _stopped_rebase(proj: Path) -> Path:
    """A repository at ``proj`` in the middle of a rebase; the path of its todo list."""
    for name in ("objects", "refs", "rebase-merge"):
        (proj / ".git" / name).mkdir(parents=True)
    (proj / ".git/HEAD").write_text("ref: refs/heads/main\n")
    return proj / ".git/rebase-merge/git-rebase-todo"


@pytest.mark.parametrize("todo", ["exec touch pwned\n", "pick 0123abc one\n"])
def test_a_pending_file_renamed_away_while_it_is_checked_is_judged_by_its_inode(
    ws: Path, todo: str
) -> None:
    """Another command, in a sandbox of its own on the same workspace, renames the checkout
    away while this command's end check runs and back afterwards: the check must judge
    the todo list the command left, not find its name empty (found by an outside review)."""
    from ringfence.platforms.linux.gitguard import quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    proj = ws / "proj"
    path = _stopped_rebase(proj)
    state = path.parent
    path.write_text("")
    g = GitGuard(roots=(str(ws),))
    assert g.writing(str(path)) is None  # an open for writing notes it, and holds it
    path.write_text(todo)
    os.rename(proj, ws / "elsewhere")  # the other command, just as the check starts
    events: list[tuple[str, str, str]] = []
    g.on_event = lambda *e: events.append(e)
    assert g.finish(quarantine) == []
    os.rename(ws / "elsewhere", proj)  # and back
    left = {p.name: p.read_text() for p in state.iterdir()}
    if todo.startswith("exec"):
        assert left == {"git-rebase-todo.ringfence-refused": todo}, left
        assert [e[0] for e in events] == ["refused_pointer"], events
    else:
        assert left == {"git-rebase-todo": todo} and not events, (left, events)


def test_a_descriptor_held_elsewhere_cannot_write_what_git_reads_after_the_check(
    ws: Path,
) -> None:
    """The command passes an open descriptor of its (clean) todo list to another sandbox,
    which renames the checkout away while the check runs, writes an `exec` line through the
    descriptor afterwards, and renames the checkout back (found by an outside review). The
    check replaces the file with a copy where it is, so the descriptor writes a file nobody
    reads."""
    from ringfence.platforms.linux.gitguard import quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    proj = ws / "proj"
    path = _stopped_rebase(proj)
    path.write_text("pick 0123abc one\n")
    g = GitGuard(roots=(str(ws),))
    assert g.writing(str(path)) is None
    passed = os.open(path, os.O_WRONLY | os.O_APPEND)  # what the other sandbox received
    try:
        os.rename(proj, ws / "elsewhere")
        assert g.finish(quarantine) == []
        os.write(passed, b"exec touch pwned\n")
    finally:
        os.close(passed)
    os.rename(ws / "elsewhere", proj)
    assert path.read_text() == "pick 0123abc one\n"


@pytest.mark.parametrize("mover", ["names-taken", "mover-fails"])
def test_a_refused_file_that_cannot_be_moved_aside_leaves_gits_name(ws: Path, mover: str) -> None:
    """The command took every plain name the file would be moved aside to, kept a
    descriptor of it (passed to another sandbox) and writes an `exec` line through it after
    the check (found by an outside review): the file must not stay at git's name."""
    from ringfence.platforms.linux.gitguard import quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    path = _stopped_rebase(ws / "proj")
    for n in range(100):
        path.with_name("git-rebase-todo.ringfence-refused" + (f"-{n}" if n else "")).touch()
    path.write_text("")
    g = GitGuard(roots=(str(ws),))
    assert g.writing(str(path)) is None
    passed = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(passed, b"exec touch pwned\n")
        assert g.finish(quarantine if mover == "names-taken" else lambda p: None) == []
        os.write(passed, b"exec touch pwned\n")
    finally:
        os.close(passed)
    assert not path.exists() or b"exec" not in path.read_bytes()


def test_a_full_list_of_waiting_files_moves_with_its_directory(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the cap, renaming the directory that holds waiting files carries them along (they
    are no new files); none may drop out of the check by a refusal half-way."""
    from ringfence.platforms.linux.gitguard import pins
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    monkeypatch.setattr(pins, "MAX_PINS", 2)
    g = GitGuard(roots=(str(ws),))
    for name in ("a", "b"):
        (ws / "d" / name).mkdir(parents=True)
        (ws / "d" / name / ".git").write_text("gitdir: /nowhere\n")
        g.note_pointer(str(ws / "d" / name / ".git"), ".git")
    os.rename(ws / "d", ws / "e")
    g.moved(str(ws / "d"), str(ws / "e"), pointer=None, is_dir=True)
    assert sorted(g.pending) == [str(ws / "e/a/.git"), str(ws / "e/b/.git")]
    moved: list[str] = []
    g.finish(lambda p: moved.append(p) or None)
    assert not (ws / "e/a/.git").exists() or (ws / "e/a/.git").read_bytes() == b""


def test_files_held_again_at_one_name_are_let_go(ws: Path) -> None:
    """A file replaced at a waiting name again and again: the replaced ones are let go (a
    loop of replacements grew the guard's descriptors to its limit; an outside review)."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    g = GitGuard(roots=(str(ws),))
    todo = _stopped_rebase(ws / "proj")
    g.note_pointer(str(todo), "todo")
    for i in range(20):  # replaced in place: the old one has no name left
        todo.with_name("t").write_text(f"pick {i}\n")
        os.rename(todo.with_name("t"), todo)
        g.pins.pin(str(todo))
    assert len(g.pins.held(str(todo))) == 1


def test_a_name_noted_before_its_file_keeps_its_room(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room is counted by waiting names: a name noted before its file exists (open with
    O_CREAT) is held once the file is made, even with every other room taken since, and is
    judged where its directory went (found by an outside review)."""
    from ringfence.platforms.linux.gitguard import pins, quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    monkeypatch.setattr(pins, "MAX_PINS", 2)
    g = GitGuard(roots=(str(ws),))
    todo = _stopped_rebase(ws / "proj")
    g.note_pointer(str(todo), "todo")
    (ws / "a").mkdir()
    g.note_pointer(str(ws / "a/.git"), ".git")
    with pytest.raises(OSError):
        g.note_pointer(str(ws / "b/.git"), ".git")
    todo.write_text("exec touch pwned\n")
    g.pins.pin(str(todo))  # as files.py does after the open
    os.rename(ws / "proj", ws / "away")
    assert g.finish(quarantine) == []
    os.rename(ws / "away", ws / "proj")
    assert not todo.exists() or b"exec" not in todo.read_bytes()


def test_a_refused_file_renamed_itself_is_emptied(ws: Path) -> None:
    """Renamed by another command to a name git does not read (and perhaps back later,
    which that command's own guard then judges): no name of it is moved, it is emptied."""
    from ringfence.platforms.linux.gitguard import quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    proj = ws / "proj"
    path = _stopped_rebase(proj)
    path.write_text("")
    g = GitGuard(roots=(str(ws),))
    assert g.writing(str(path)) is None
    path.write_text("exec touch pwned\n")
    os.rename(path, path.with_name("parked"))
    assert g.finish(quarantine) == []
    assert path.with_name("parked").read_bytes() == b""


def test_files_waiting_for_the_check_are_bounded(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ringfence.platforms.linux.gitguard import pins
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    monkeypatch.setattr(pins, "MAX_PINS", 3)
    g = GitGuard(roots=(str(ws),))
    for i in range(3):
        (ws / f"r{i}").mkdir()
        g.note_pointer(str(ws / f"r{i}/.git"), ".git")
        (ws / f"r{i}/.git").write_text("gitdir: x\n")
        g.pins.pin(str(ws / f"r{i}/.git"))
    with pytest.raises(OSError) as exc:
        g.note_pointer(str(ws / "r3/.git"), ".git")
    assert exc.value.errno == errno.EMFILE
    g.finish(lambda p: p + ".refused")
    g.note_pointer(str(ws / "r3/.git"), ".git")  # the check let them go


def _linked(d: Path, commondir: str = "../..") -> Path:
    d.mkdir(parents=True)
    (d / "HEAD").write_text("ref: refs/heads/main\n")
    (d / "commondir").write_text(commondir + "\n")
    return d


def test_a_linked_git_directory_renamed_gets_its_commondir_judged(ws: Path) -> None:
    """Its commondir (``../..``) names another directory from the new place: judged at the
    end, by the name it has after the rename."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    _linked(ws / "moved")  # as it is after `mv wt moved`
    g = GitGuard(roots=(str(ws),))
    g.moved(str(ws / "wt"), str(ws / "moved"), pointer=None, is_dir=True)
    assert g.pending == {str(ws / "moved/commondir"): "commondir"}


def _pointer_then_rename() -> int:
    """A pointer file the end check judges, then its directory renamed (run guarded)."""
    os.makedirs("sub")
    with open("sub/.git", "w") as f:
        f.write("gitdir: /etc\n")
    try:
        os.rename("sub", "moved")
    except OSError as e:
        return 20 + (e.errno or 0)
    return 0


def test_a_pointers_new_name_is_told_before_the_rename(ws: Path) -> None:
    """The host hears of the name a pending file will have before the rename is done
    (guard_tell): told after, a guard failing in between would leave the host only the old
    name, which no longer holds it (review 19)."""
    log = ws.parent / "told.log"

    def on_event(kind: str, path: str, detail: str) -> None:
        if kind == "git_pending":
            with open(log, "a") as f:
                f.write(f"{path}\t{os.path.lexists(path)}\n")

    out = run_guarded(_rules(ws), _pointer_then_rename, cwd=ws, on_event=on_event)
    assert out.status == 0, out
    assert (ws / "moved/.git").exists()
    told = log.read_text().splitlines()
    assert f"{ws}/sub/.git\tFalse" in told  # made after it was told
    assert f"{ws}/moved/.git\tFalse" in told, told


def test_a_rename_the_host_could_not_be_told_of_is_not_done(ws: Path) -> None:
    """A guard that cannot tell the host fails before the rename: the file stays where the
    host knows it, and the command's call fails."""
    from ringfence.platforms.linux.guard_tell import TellError

    def on_event(kind: str, path: str, detail: str) -> None:
        if kind == "git_pending" and path.endswith("/moved/.git"):
            raise TellError("the host stopped reading the name guard")

    out = run_guarded(
        _rules(ws), _pointer_then_rename, cwd=ws, on_event=on_event, serve_errors_ok=True
    )
    assert out.status == 20 + errno.EACCES, out
    assert (ws / "sub/.git").read_text() == "gitdir: /etc\n"
    assert not (ws / "moved").exists()


def _log_told(log: Path) -> Callable[[str, str, str], None]:
    def on_event(kind: str, path: str, detail: str) -> None:
        if kind in ("git_pending", "git_untold"):
            with open(log, "a") as f:
                f.write(f"{kind} {path}\n")

    return on_event


def _failing_calls() -> int:
    """Calls that tell a name and then fail: a rename onto a repository, a symlink onto its
    .git (each refused by the kernel: not empty, exists)."""
    os.makedirs("sub")
    with open("sub/.git", "w") as f:
        f.write("gitdir: /etc\n")
    errors = []
    for attempt in (lambda: os.rename("sub", "other"), lambda: os.symlink("../x", "other/.git")):
        try:
            attempt()
        except OSError as e:
            errors.append(e.errno)
    return 0 if errors == [errno.ENOTEMPTY, errno.EEXIST] else 1


def test_names_told_for_calls_that_failed_are_taken_back(ws: Path) -> None:
    """Left told, the host would move aside a nested repository's .git should the end check
    not run, though the command may not remove it (outside review of guard_tell)."""
    _host_git("init", "-q", str(ws / "other"))
    log = ws.parent / "told.log"
    out = run_guarded(_rules(ws), _failing_calls, cwd=ws, on_event=_log_told(log))
    assert out.status == 0, out
    other = f"{ws}/other/.git"
    assert log.read_text().splitlines() == [
        f"git_pending {ws}/sub/.git",
        f"git_pending {other}",  # the rename's: sub/.git would have been there
        f"git_untold {other}",
        f"git_pending {other}",  # the symlink's: a .git link is checked at the end
        f"git_untold {other}",
    ]
    assert (ws / "other/.git/HEAD").exists() and (ws / "sub/.git").exists()


def _host_git(*args: str) -> None:
    """The user's own git on the host, as it makes what a test starts from."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, *args], check=True, env=HOST_GIT)


def _failed_then_written(todo: str) -> Callable[[], int]:
    def probe() -> int:
        try:  # noted (writing), then refused by the kernel: taken back, and no longer noted
            os.open(todo, os.O_WRONLY | os.O_DIRECTORY)
        except OSError as e:
            if e.errno != errno.ENOTDIR:
                return 1
        fd = os.open(todo, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"exec touch pwned\n")
        os.close(fd)
        return 0

    return probe


def test_a_file_written_after_a_failed_call_on_it_is_told_again(ws: Path) -> None:
    """A call that failed takes back the name it told and what it noted: the next write to
    that todo list is noted and told again (an outside review made it run `exec` at the
    host's `git rebase --continue`: the name stayed noted but untold, and the host left it
    when the end check did not run)."""
    todo = _stopped_rebase(ws / "proj")
    todo.write_text("pick 0123abc one\n")
    log = ws.parent / "told.log"
    out = run_guarded(_rules(ws), _failed_then_written(str(todo)), cwd=ws, on_event=_log_told(log))
    assert out.status == 0, out
    assert log.read_text().splitlines() == [
        f"git_pending {todo}",
        f"git_untold {todo}",
        f"git_pending {todo}",
    ]


def _failed_link_then_write() -> int:
    try:
        os.symlink("elsewhere", "sm/.git")
    except FileExistsError:
        pass
    try:
        with open("sm/.git", "w") as f:
            f.write("gitdir: /etc\n")
    except PermissionError:
        return 0
    return 1


def test_a_failed_call_leaves_no_note_that_would_let_an_existing_pointer_be_rewritten(
    ws: Path,
) -> None:
    """A .git symlink noted for the end check, and then not made (one exists): the existing
    checkout's .git file is still the user's, which the command may not rewrite. Left
    noted, it counted as the command's own (writing() allows those)."""
    _host_git("init", "-q", f"--separate-git-dir={ws / 'store'}", str(ws / "sm"))
    before = (ws / "sm/.git").read_text()
    out = run_guarded(_rules(ws), _failed_link_then_write, cwd=ws)
    assert out.status == 0, out
    assert (ws / "sm/.git").read_text() == before


def _made_removed_then_replaced() -> int:
    os.makedirs("x")
    with open("x/.git", "w") as f:
        f.write("gitdir: /etc\n")
    os.unlink("x/.git")
    os.rmdir("x")
    os.rename("other", "x")
    return 0


def test_a_name_whose_file_went_away_is_taken_back(ws: Path) -> None:
    """Left told, the host would move aside whatever came to that name later (here a
    repository of the user's, renamed there) should the end check not run."""
    _host_git("init", "-q", str(ws / "other"))
    log = ws.parent / "told.log"
    out = run_guarded(_rules(ws), _made_removed_then_replaced, cwd=ws, on_event=_log_told(log))
    assert out.status == 0, out
    assert log.read_text().splitlines() == [f"git_pending {ws}/x/.git", f"git_untold {ws}/x/.git"]


def test_the_host_moves_aside_only_files_and_links(ws: Path) -> None:
    """Every file the end check waits for is a regular file or a symlink: a directory at a
    told name (a repository's .git) is never the command's to lose."""
    from types import SimpleNamespace

    from ringfence.connection import move_aside

    subprocess.run(["git", "init", "-q", str(ws / "repo")], check=True, env=HOST_GIT)
    (ws / "sub").mkdir()
    (ws / "sub/.git").write_text("gitdir: /etc\n")
    plan = SimpleNamespace(
        guard_roots=(str(ws),), guard_git_roots=(), guard_git_private_roots=(), mounts=()
    )
    moved = move_aside(plan, [str(ws / "repo/.git"), str(ws / "sub/.git")])  # type: ignore[arg-type]
    assert [m["path"] for m in moved] == [str(ws / "sub/.git")]
    assert (ws / "repo/.git/HEAD").is_file() and not (ws / "sub/.git").exists()


def _links_onto_the_todo(todo: str) -> Callable[[], int]:
    def probe() -> int:
        d = os.path.dirname(todo)
        with open(f"{d}/x", "w") as f:
            f.write("exec touch pwned\n")
        os.link(f"{d}/x", f"{d}/y")
        try:  # its other name could write it after the check, or be renamed over it
            os.rename(f"{d}/x", todo)
        except PermissionError:
            pass
        else:
            return 1
        os.link(f"{d}/y", f"{d}/z")  # an ordinary file's two names: renaming one onto the
        os.rename(f"{d}/y", f"{d}/z")  # other does nothing, as the kernel does
        return 0 if os.path.exists(f"{d}/y") and os.path.exists(f"{d}/z") else 2

    return probe


def test_a_file_with_other_names_is_not_renamed_onto_a_checked_name(ws: Path) -> None:
    """An outside review renamed a todo list onto another name of itself (a no-op to the
    kernel), which the guard took for a move: the todo list left the end check, and its
    `exec` line ran at the host's `git rebase --continue`."""
    todo = _stopped_rebase(ws / "proj")
    todo.write_text("pick 0123abc one\n")
    out = run_guarded(_rules(ws), _links_onto_the_todo(str(todo)), cwd=ws)
    assert out.status == 0, out
    assert todo.read_text() == "pick 0123abc one\n"


def _exchange_pointers() -> int:
    for d in ("A", "B"):
        os.makedirs(d)
        with open(f"{d}/.git", "w") as f:
            f.write("gitdir: /etc\n")
    return 0 if _libc_exchange("A", "B") == 0 else 1


def _libc_exchange(a: str, b: str) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    return int(libc.renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange))


def test_an_exchange_done_is_never_refused_after_it_is_done(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the told budget spent to the last byte, an exchange of two directories that hold
    pointer files still goes through: what it tells was paid before it (an outside review
    made it fail with EMFILE after the kernel had swapped them, leaving A/.git unchecked)."""
    from ringfence.platforms.linux.gitguard import told

    names = [f"{ws}/A/.git", f"{ws}/B/.git"]
    monkeypatch.setattr(told, "TOLD_BUDGET", sum(told.told_cost(n) for n in names))
    log = ws.parent / "told.log"
    out = run_guarded(_rules(ws), _exchange_pointers, cwd=ws, on_event=_log_told(log))
    assert out.status == 0, out
    assert log.read_text().splitlines() == [f"git_pending {n}" for n in names]


def test_what_follows_a_done_rename_never_fails_it(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors just after a rename (a command can use up the guard's), holding the
    file again fails: the books must follow the rename all the same (an outside review left
    a .git it had renamed away in the books, and then wrote an existing checkout's .git
    through that stale entry)."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    told: list[tuple[str, str]] = []
    g = GitGuard(roots=(str(ws),), on_event=lambda kind, path, detail: told.append((kind, path)))
    (ws / "t").mkdir()
    (ws / "t/.git").write_text("gitdir: ../g\n")
    src, dst = str(ws / "t/.git"), str(ws / "t/x")
    g.note_pointer(src, ".git")
    g.created_dot_git.add(src)

    def no_room(path: str) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(g.pins, "pin", no_room)
    os.rename(src, dst)
    g.moved(src, dst, pointer=None, is_dir=False)
    assert g.pending == {dst: ".git"} and g.created_dot_git == {dst}
    assert told == [("git_pending", src), ("git_pending", dst), ("git_untold", src)]


def test_no_fifo_where_git_reads_a_file(ws: Path) -> None:
    """A FIFO named .gitmodules (or .git) would hang the host's git reading it."""
    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=HOST_GIT)

    def probe() -> int:
        codes = []
        for name in (".gitmodules", "sub/.git"):
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            codes.append(expect_errno(lambda n=name: os.mkfifo(n), errno.EACCES))
        return max(codes)

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 0, out
    assert not (ws / ".gitmodules").exists() and not (ws / "sub/.git").exists()


def _content_checked_onto_then_worktree_in() -> int:
    os.makedirs("a")
    open("a/.git", "w").close()
    os.rename("a/.git", "main/.gitmodules")  # the guard's checked copy goes there
    try:
        os.rename("wt", "a")  # a linked worktree moved to where a/.git was
    except OSError:
        return 3
    try:
        with open("a/.git", "w") as f:
            f.write("gitdir: /etc\n")
    except PermissionError:
        return 0
    return 1


def test_the_source_of_a_rename_onto_a_checked_file_leaves_the_books(ws: Path) -> None:
    """It is gone once the guard's copy is in place: kept in the books as the command's own
    .git, a worktree's .git brought to that name could be rewritten (an outside review)."""
    _host_git("init", "-q", str(ws / "main"))
    _host_git("-C", str(ws / "main"), "commit", "-q", "--allow-empty", "-m", "one")
    _host_git("-C", str(ws / "main"), "worktree", "add", "-q", str(ws / "wt"))
    before = (ws / "wt/.git").read_text()
    out = run_guarded(_rules(ws), _content_checked_onto_then_worktree_in, cwd=ws)
    assert out.status == 0, out
    assert (ws / "a/.git").read_text() == before


def _fifos_where_git_reads() -> int:
    os.mkfifo("f1")
    codes = [
        expect_errno(lambda: os.rename("f1", "main/.git/index"), errno.EACCES),
        expect_errno(lambda: os.mkfifo("main/.git/packed-refs"), errno.EACCES),
        expect_errno(lambda: os.rename("f1", "sub/.git"), errno.EACCES),
    ]
    return max(codes)


def test_no_fifo_in_a_git_directory_or_as_dot_git(ws: Path) -> None:
    """Host git reading an index, HEAD or packed-refs that is a FIFO hangs."""
    subprocess.run(["git", "init", "-q", str(ws / "main")], check=True, env=HOST_GIT)
    (ws / "sub").mkdir()
    out = run_guarded(_rules(ws), _fifos_where_git_reads, cwd=ws)
    assert out.status == 0, out
    assert not (ws / "main/.git/index").exists() and not (ws / "sub/.git").exists()


def _fifos_git_would_meet() -> int:
    os.makedirs("d")
    os.mkfifo("d/x")
    os.makedirs("x/objects")
    os.mkfifo("x/index")  # x is no git directory yet: a FIFO may be made there
    codes = [
        expect_errno(lambda: os.mkfifo("main/.gitignore"), errno.EACCES),
        expect_errno(lambda: os.mkfifo("main/sub/.gitattributes"), errno.EACCES),
        expect_errno(lambda: os.rename("d", "main/.git/refs/heads/evil"), errno.EACCES),
        # with refs, x would become a git directory holding a FIFO
        expect_errno(lambda: os.mkdir("x/refs"), errno.EACCES),
    ]
    os.rename("main/.gitmodules", "main/.gitmodules")  # one file, one name: nothing happens
    return max(codes)


def test_no_fifo_where_git_would_meet_it(ws: Path) -> None:
    """Host git waits on a FIFO it reads: a worktree's .gitignore, .gitattributes or .mailmap,
    one brought into a git directory by a directory renamed in, or one in a directory that
    becomes a git directory (an outside review hung `git status`, `log` and `branch`)."""
    subprocess.run(["git", "init", "-q", str(ws / "main")], check=True, env=HOST_GIT)
    (ws / "main/sub").mkdir()
    (ws / "main/.gitmodules").write_text("")
    out = run_guarded(_rules(ws), _fifos_git_would_meet, cwd=ws)
    assert out.status == 0, out
    assert (ws / "main/.gitmodules").exists() and not (ws / "x/refs").exists()
    assert not (ws / "main/.git/refs/heads/evil").exists()


def test_a_call_past_the_told_budget_is_refused_before_it_is_made(ws: Path) -> None:
    """Each told name costs the host memory outside the sandbox's limit, and the native
    launcher keeps at most 8 MiB of them: past its budget a call is refused (EMFILE), and
    nothing is told."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard
    from ringfence.platforms.linux.gitguard.told import TOLD_BUDGET

    told: list[str] = []
    g = GitGuard(roots=(str(ws),), on_event=lambda kind, path, detail: told.append(path))
    g.note_pointer(str(ws / "a/.git"), ".git")
    g.told.spent = TOLD_BUDGET - 10
    with pytest.raises(OSError) as caught:
        g.note_pointer(str(ws / "b/.git"), ".git")
    assert caught.value.errno == errno.EMFILE
    with pytest.raises(OSError):
        g.moving(str(ws / "a"), str(ws / "c"), is_dir=True)
    assert told == [str(ws / "a/.git")]
    g.note_pointer(str(ws / "a/.git"), ".git")  # told already: no cost
    g.note_pointer(str(ws / "d/.git"), ".git", done=True)  # the end check's own: no budget
    assert told == [str(ws / "a/.git"), str(ws / "d/.git")]


def test_an_exchanged_linked_git_directory_is_judged_where_it_went(ws: Path) -> None:
    """RENAME_EXCHANGE of a linked git directory G with an empty directory E: the linked one
    is at E afterwards, and that is the commondir the end of the command judges (found by
    an outside review: noted before the swap, the note went to G)."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    _linked(ws / "E")  # after the exchange
    (ws / "G").mkdir()
    g = GitGuard(roots=(str(ws),))
    g.exchanged(str(ws / "G"), str(ws / "E"))
    assert g.pending == {str(ws / "E/commondir"): "commondir"}
    moved: list[str] = []
    assert g.finish(lambda path: moved.append(path) or path + ".refused") == []
    assert moved == [str(ws / "E/commondir")]  # ../.. from E is no repository


@pytest.mark.parametrize(
    ("where", "text", "ok"),
    [
        ("repo/worktrees/w", "../..", True),
        ("repo/worktrees/w", "../../", False),
        ("repo/worktrees/w", "../../../repo", False),
        ("repo/worktrees/w", "{ws}/repo", False),
        ("repo/modules/m", "../..", False),
        ("sub/.git", "../../repo", False),
    ],
)
def test_a_commondir_is_only_what_git_worktree_writes(
    ws: Path, where: str, text: str, ok: bool
) -> None:
    """``../..`` in ``<git directory>/worktrees/<id>/`` names the repository that holds it
    however that is moved; any other wording could be re-aimed by a later rename."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    subprocess.run(["git", "init", "-q", "--bare", str(ws / "repo")], check=True, env=HOST_GIT)
    d = _linked(ws / where, text.format(ws=ws))
    g = GitGuard(roots=(str(ws),))
    data = (d / "commondir").read_bytes()
    problem = g.content.pointer_problem(str(d / "commondir"), "commondir", data)
    assert (problem is None) is ok, problem
    if not ok:
        assert problem is not None and "not what git writes" in problem


def test_the_way_to_a_submodule_checkout_stays(ws: Path) -> None:
    """A module config's core.worktree names ``lib/foo``: neither it nor ``lib`` may go away,
    be replaced or arrive as a symlink or a renamed directory; inside the checkout, and
    beside it, anything goes."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=HOST_GIT)
    module = ws / ".git/modules/lib/foo"
    subprocess.run(["git", "init", "-q", "--bare", str(module)], check=True, env=HOST_GIT)
    (module / "config").write_text("[core]\n\tbare = false\n\tworktree = ../../../../lib/foo\n")
    (ws / "lib").mkdir()
    (ws / "other").mkdir()
    g = GitGuard(roots=(str(ws),), home=str(ws))
    for path in (ws / "lib", ws / "lib/foo"):
        assert g.removing(str(path)) is not None, path
    refusal = g.creating(str(ws / "lib/foo"), stat.S_IFLNK, symlink="../.git")
    assert refusal is not None and "core.worktree" in refusal
    assert g.creating(str(ws / "lib"), stat.S_IFDIR, incoming=str(ws / "other")) is not None
    assert g.creating(str(ws / "lib/foo"), stat.S_IFDIR) is None  # git submodule update
    assert g.removing(str(ws / "lib/foo/file")) is None
    assert g.removing(str(ws / "other")) is None
    assert g.creating(str(ws / "other/link"), stat.S_IFLNK, symlink="../lib") is None


def test_no_symlink_leads_into_a_git_directory(ws: Path) -> None:
    """A work tree resolved through such a link would be a git directory (a checkout writes
    hooks/ there): refused by where it leads now and by a .git in its text; other links,
    and .git links (judged as pointers), are as before."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=HOST_GIT)
    subprocess.run(["git", "init", "-q", "--bare", str(ws / "bare")], check=True, env=HOST_GIT)
    (ws / "d").mkdir()
    g = GitGuard(roots=(str(ws),))
    for text in (".git", ".git/modules/x", "../.GIT/hooks", "bare", "bare/hooks", "./x/../bare"):
        refusal = g.creating(str(ws / "link"), stat.S_IFLNK, symlink=text)
        assert refusal is not None and "into a git directory" in refusal, text
    for text in ("d", "d/missing", "..", "/usr/bin", "git"):
        assert g.creating(str(ws / "link"), stat.S_IFLNK, symlink=text) is None, text
    (ws / "d/fd").symlink_to("/dev/fd")
    for text in ("/proc/self/cwd", "/dev/fd/0", "d/fd/1", "../" * 12 + "proc/self/root"):
        refusal = g.creating(str(ws / "link"), stat.S_IFLNK, symlink=text)
        assert refusal is not None and "through /proc" in refusal, text


def test_a_clean_new_repository_completes_and_is_then_governed(ws: Path) -> None:
    d = ws / "bare.git"

    def probe() -> int:
        d.mkdir()
        (d / "config").write_bytes(GOOD_CONFIG)
        (d / "hooks").mkdir()
        (d / "hooks/pre-push.sample").write_text("#!/bin/sh\n")
        for step in ("HEAD", "objects", "refs"):
            STEPS[step](d)
        rc = expect_errno(lambda: (d / "hooks/pre-push").write_text("x"), errno.EACCES)
        rc = rc or expect_errno(lambda: (d / "config").write_bytes(GOOD_CONFIG), errno.EACCES)
        rc = rc or expect_errno(lambda: os.mkdir(d / "info"), errno.EACCES)
        (d / "objects/ab").mkdir()
        (d / "refs/heads").mkdir()
        (d / "refs/heads/main").write_text("0" * 40 + "\n")
        (d / "config.lock").write_bytes(GOOD_CONFIG + b'[remote "o"]\n\turl = /x\n')
        os.rename(d / "config.lock", d / "config")
        return rc

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 0, out.denials
    assert b"url = /x" in (d / "config").read_bytes()
    assert not (d / "hooks/pre-push").exists()


def test_hooks_other_than_samples_stop_a_layout_from_completing(ws: Path) -> None:
    d = ws / "r.git"

    def probe() -> int:
        d.mkdir()
        (d / "hooks").mkdir()
        (d / "hooks/post-checkout").write_text("#!/bin/sh\ntouch /tmp/pwned\n")
        STEPS["HEAD"](d)
        STEPS["objects"](d)
        return expect_errno(lambda: STEPS["refs"](d), errno.EACCES)

    assert run_guarded(_rules(ws), probe, cwd=ws).status == 0
    assert not (d / "refs").exists()


def test_a_dot_git_directory_is_governed_while_in_the_making(ws: Path) -> None:
    """A `.git` directory is governed from its mkdir: `git init` there later (host git, no
    guard) would adopt whatever it holds. What git init itself makes may be made, and its
    probes (a chmod of config and back, `tXXXXXX` as a file and as a link) work."""
    d = ws / "p/.git"
    odd = ws / "x"

    def probe() -> int:
        d.mkdir(parents=True)
        for sub in ("hooks", "info", "branches", "refs/heads"):
            (d / sub).mkdir(parents=True)
        (d / "description").write_text("x\n")
        (d / "info/exclude").write_text("# x\n")
        (d / "hooks/pre-commit.sample").write_text("#!/bin/sh\n")
        probe_name = d / "tAb3x9Z"
        probe_name.touch()
        probe_name.unlink()
        probe_name.symlink_to("testing")
        probe_name.unlink()
        (d / "config.lock").write_bytes(GOOD_CONFIG)
        os.rename(d / "config.lock", d / "config")
        os.chmod(d / "config", 0o744)
        os.chmod(d / "config", 0o644)
        rcs = [
            expect_errno(lambda: (d / "hooks/pre-commit").write_text("x"), errno.EACCES),
            expect_errno(lambda: (d / "config").write_bytes(GOOD_CONFIG), errno.EACCES),
            expect_errno(lambda: (d / "info/attributes").write_text("* filter=x"), errno.EACCES),
            expect_errno(lambda: (d / "tAb3x9Z").symlink_to("/etc"), errno.EACCES),
            expect_errno(lambda: (d / "refs/tAb3x9Z").symlink_to("testing"), errno.EACCES),
            expect_errno((d / "description2").mkdir, errno.EACCES),
        ]
        (d / "info/exclude").write_text("*\n")  # its own, judged at the end: moved aside
        # a directory renamed in as .git brings only what git init makes
        (odd / "hooks").mkdir(parents=True)
        (odd / "hooks/post-checkout").write_text("#!/bin/sh\n")
        (ws / "q").mkdir()
        rcs.append(expect_errno(lambda: os.rename(odd, ws / "q/.git"), errno.EACCES))
        (odd / "hooks/post-checkout").unlink()
        (odd / "config").write_bytes(GOOD_CONFIG)
        os.rename(odd, ws / "q/.git")
        return max(rcs)

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 0, out.denials
    assert sorted(p.name for p in d.iterdir()) == [
        "branches",
        "config",
        "description",
        "hooks",
        "info",
        "refs",
    ]
    assert (ws / "q/.git/config").read_bytes() == GOOD_CONFIG
    assert (d / "info/exclude").read_text() == "*\n"  # judged when the command ends (below)


def test_in_the_making_types_modes_and_exclude(ws: Path) -> None:
    """What an outside review found: a FIFO as info/exclude (host git status hangs), any
    mode on a config (world-writable), patterns in info/exclude (hide files), a `.git`
    renamed in under modules/ unchecked."""
    from ringfence.platforms.linux.gitguard import quarantine
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    d = ws / "p/.git"
    (d / "info").mkdir(parents=True)
    g = GitGuard(roots=(str(ws),))
    assert g.creating(str(d / "info/exclude"), stat.S_IFIFO) is not None
    assert g.creating(str(d / "description"), stat.S_IFSOCK) is not None
    assert g.creating(str(d / "hooks"), stat.S_IFREG) is not None
    assert g.creating(str(d / "info/exclude"), stat.S_IFREG) is None
    assert g.checked_kind(str(d / "info/exclude")) == "exclude"
    g.note_pointer(str(d / "info/exclude"), "exclude")
    (d / "info/exclude").write_text("# comments only\n*\n")
    assert g.finish(quarantine) == []
    assert not (d / "info/exclude").exists() and (d / "info/exclude.ringfence-refused").exists()
    (d / "config").write_bytes(GOOD_CONFIG)
    (d / "config").chmod(0o644)
    assert g.changing_mode(str(d / "config"), 0o744) is None  # git's probe
    for mode in (0o666, 0o646, 0o4744, 0o000, 0o600):
        assert g.changing_mode(str(d / "config"), mode) is not None, oct(mode)
    repo = ws / "r/.git"
    for name in ("objects", "refs", "modules/x"):
        (repo / name).mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    stage = ws / "stage"
    (stage / "hooks").mkdir(parents=True)
    (stage / "hooks/pre-commit").write_text("#!/bin/sh\n")
    refusal = g.creating(str(repo / "modules/x/.git"), stat.S_IFDIR, incoming=str(stage))
    assert refusal is not None and "in the making" in refusal, refusal


def test_a_dot_git_directory_in_the_making_is_the_commands_to_undo(ws: Path) -> None:
    d = ws / "p/.git"

    def probe() -> int:
        (d / "hooks").mkdir(parents=True)
        (d / "hooks/x.sample").write_text("#!/bin/sh\n")
        (d / "HEAD").write_text("ref: refs/heads/main\n")
        (d / "refs").mkdir()
        shutil.rmtree(d)
        return 0

    out = run_guarded(_rules(ws), probe, cwd=ws)
    assert out.status == 0, out.denials
    assert not d.exists()


def test_links_out_of_a_new_repository_stop_it_from_completing(ws: Path) -> None:
    d = ws / "r.git"

    def probe() -> int:
        d.mkdir()
        (d / "logs").symlink_to("/etc")
        STEPS["HEAD"](d)
        STEPS["objects"](d)
        return expect_errno(lambda: STEPS["refs"](d), errno.EACCES)

    assert run_guarded(_rules(ws), probe, cwd=ws).status == 0


# ------------------------------------------------------------ config: checked bytes, own copy


def test_config_rename_puts_the_checked_bytes_in_place_not_the_callers_file(repo: Path) -> None:
    """The command keeps a second name and an open fd for the file it renames; neither can
    change what ends up as the config, because the guard renames its own copy."""
    cfg = repo / ".git/config"

    def probe() -> int:
        lock = repo / ".git/config.lock"
        lock.write_bytes(GOOD_CONFIG)
        fd = os.open(lock, os.O_WRONLY)  # before the second name: then it is refused
        os.link(lock, repo / "alias")
        os.rename(lock, cfg)
        os.write(fd, EVIL_CONFIG)
        with open(repo / "alias", "r+b") as f:  # its one name left, once the guard's copy
            f.write(EVIL_CONFIG)  # took the config's place
        return 0 if not lock.exists() else 5

    out = run_guarded(_rules(repo), probe, cwd=repo)
    assert out.status == 0, out.denials
    assert cfg.read_bytes() == GOOD_CONFIG
    assert cfg.stat().st_ino != (repo / "alias").stat().st_ino


def test_a_malformed_config_is_refused_not_a_crash(repo: Path) -> None:
    before = (repo / ".git/config").read_bytes()

    def probe() -> int:
        for junk in (b"[core\n", b"\0\0\0", b'[a]\nb = "unclosed\n', bytes(range(256))):
            (repo / ".git/config.lock").write_bytes(junk)
            rc = expect_errno(
                lambda: os.rename(repo / ".git/config.lock", repo / ".git/config"), errno.EACCES
            )
            if rc:
                return rc
        return 0

    out = run_guarded(_rules(repo), probe, cwd=repo)
    assert out.status == 0
    assert (repo / ".git/config").read_bytes() == before
    assert all("malformed" in str(d["rule"]) for d in out.denials)


# ------------------------------------------------------------ symlinks, renames, unknowns


def test_a_git_directory_holds_no_symlink(repo: Path) -> None:
    """Git makes none; a link would let one name stand for another the rules judge
    differently (rebase-merge -> a directory holding an exec todo, objects/info -> one
    holding alternates)."""
    (repo / ".git/lost-found").mkdir()

    def probe() -> int:
        for name, target in (
            ("refs/x", "/etc"),
            ("refs/inside", "../heads"),
            ("rebase-merge", "lost-found"),
            ("sequencer", "lost-found"),
            ("objects/info2", "../lost-found"),
        ):
            rc = expect_errno(
                lambda t=target, n=name: os.symlink(t, repo / ".git" / n),  # type: ignore[misc]
                errno.EACCES,
            )
            if rc:
                return rc
        return 0

    assert run_guarded(_rules(repo), probe, cwd=repo).status == 0
    assert not any(p.is_symlink() for p in (repo / ".git").rglob("*"))


def test_a_directory_renamed_into_a_git_directory_brings_no_link_out(repo: Path) -> None:
    def probe() -> int:
        (repo / "stage").mkdir()
        (repo / "stage/out").symlink_to("/etc/passwd")
        return expect_errno(
            lambda: os.rename(repo / "stage", repo / ".git/objects/zz"), errno.EACCES
        )

    assert run_guarded(_rules(repo), probe, cwd=repo).status == 0
    assert not (repo / ".git/objects/zz").exists()


def test_a_dot_git_symlink_may_not_point_outside_the_roots(ws: Path) -> None:
    def probe() -> int:
        (ws / "a").mkdir()
        rc = expect_errno(lambda: os.symlink("/etc", ws / "a/.git"), errno.EACCES)
        os.symlink("../b.git", ws / "a/.GIT2")
        return rc

    assert run_guarded(_rules(ws), probe, cwd=ws).status == 0


def test_strict_makes_every_git_directory_read_only(repo: Path) -> None:
    rules = GuardRules(writable_roots=(str(repo),), git="strict", protected_names=(".git",))

    def probe() -> int:
        (repo / "b.git").mkdir()
        for step in ("HEAD", "objects"):
            STEPS[step](repo / "b.git")
        rc = expect_errno(lambda: STEPS["refs"](repo / "b.git"), errno.EACCES)
        return rc or expect_errno(lambda: (repo / ".git/index").write_text("x"), errno.EACCES)

    assert run_guarded(rules, probe, cwd=repo).status == 0


def test_hooks_path_directories_take_only_samples(ws: Path) -> None:
    husky = ws / ".husky"
    husky.mkdir()
    (husky / "pre-commit").write_text("npm test\n")
    rules = _rules(ws, hooks_dirs=(str(husky),))

    def probe() -> int:
        rc = expect_errno(lambda: (husky / "post-checkout").write_text("x"), errno.EACCES)
        rc = rc or expect_errno(lambda: (husky / "pre-commit").write_text("x"), errno.EACCES)
        rc = rc or expect_errno(lambda: os.unlink(husky / "pre-commit"), errno.EACCES)
        rc = rc or expect_errno(lambda: os.chmod(husky / "pre-commit", 0o755), errno.EACCES)
        rc = rc or expect_errno(lambda: os.mkdir(husky / "sub"), errno.EACCES)
        (husky / "x.sample").write_text("inert\n")
        return rc

    assert run_guarded(rules, probe, cwd=ws).status == 0
    assert (husky / "pre-commit").read_text() == "npm test\n"


def test_guards_of_one_session_take_turns(ws: Path) -> None:
    """A guard holds the session's lock while it checks and acts: while another holds it, a
    guarded call waits (so a check cannot be undone by another guard's change meanwhile)."""
    import fcntl
    import threading
    import time

    memfd = os.memfd_create("test-guard-lock")
    other = os.open(f"/proc/self/fd/{memfd}", os.O_RDWR)  # another guard's description
    fcntl.flock(other, fcntl.LOCK_EX)
    done: list[int] = []

    def run() -> None:
        out = run_guarded(
            _rules(ws), lambda: os.mkdir(ws / "made") or 0, cwd=ws,
            lock=f"/proc/{os.getpid()}/fd/{memfd}",
        )  # fmt: skip
        done.append(out.status)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    held = not (ws / "made").exists()
    fcntl.flock(other, fcntl.LOCK_UN)
    t.join(30)
    os.close(other)
    os.close(memfd)
    assert held, "the guarded mkdir did not wait for the lock"
    assert done == [0] and (ws / "made").is_dir()


def test_guards_of_two_sandboxes_take_turns(rf: Runner) -> None:
    """The guards of all the user's sandboxes take turns on one lock (statedirs.GUARD_LOCK
    in the cache base), not only those of one session: while another holds it, a guarded
    call of a separate `ringfence run` waits."""
    import fcntl
    import time

    from ringfence.policy import statedirs

    env = rf.env()
    base = statedirs.cache_base(env, env["HOME"])
    assert base is not None
    lock_path = Path(base) / statedirs.GUARD_LOCK
    Path(base).mkdir(parents=True, exist_ok=True)
    os.chown(base, rf.uid, rf.gid)
    lock_path.touch(mode=0o600)
    os.chown(lock_path, rf.uid, rf.gid)
    other = os.open(lock_path, os.O_RDONLY)  # another sandbox's guard, holding it
    fcntl.flock(other, fcntl.LOCK_EX)
    ws = rf.mkdir()
    try:
        p = rf.popen("run", "--", "sh", "-c", "echo ready; mkdir made", cwd=ws)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        held = not (ws / "made").exists()
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    _, err = p.communicate(timeout=60)
    assert held, "the guarded mkdir did not wait for the other sandbox's guard"
    assert p.returncode == 0, err
    assert (ws / "made").is_dir()


# ------------------------------------------------------------ every alias of a protected entry


def _sock_bind(path: Path, _stage: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def _proc_reopen(path: Path, _stage: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with open(f"/proc/self/fd/{fd}", "wb") as f:
            f.write(b"evil")
    finally:
        os.close(fd)


def _tmpfile_link(path: Path, stage: Path) -> None:
    fd = os.open(stage, os.O_TMPFILE | os.O_WRONLY, 0o755)
    try:
        os.write(fd, b"evil")
        os.link(f"/proc/self/fd/{fd}", path)
    finally:
        os.close(fd)


def _staged(stage: Path, name: str) -> Path:
    staged = stage / name
    staged.write_bytes(b"evil")
    return staged


def _exchange(path: Path, stage: Path) -> None:
    import ctypes

    staged = _staged(stage, "x3")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, bytes(staged), -100, bytes(path), 2) != 0:  # RENAME_EXCHANGE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _append(path: Path, _stage: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"evil")


# Every way to change, alias, replace or remove a directory entry; each gets the entry and a
# scratch directory outside git (``stage``) to build replacements in.
ALIASES: dict[str, Callable[[Path, Path], object]] = {
    "open-write": lambda p, s: p.write_bytes(b"evil"),
    "open-append": _append,
    "open-rdwr": lambda p, s: os.close(os.open(p, os.O_RDWR)),
    "truncate": lambda p, s: os.truncate(p, 0),
    "chmod": lambda p, s: os.chmod(p, 0o777),
    "chown": lambda p, s: os.chown(p, -1, os.getgid()),
    "setxattr": lambda p, s: os.setxattr(p, "user.rf", b"1"),
    "removexattr": lambda p, s: os.removexattr(p, "user.rf"),
    "hardlink-away": lambda p, s: os.link(p, s / "alias"),
    "rename-away": lambda p, s: os.rename(p, s / "moved"),
    "unlink": lambda p, s: os.unlink(p),
    "rename-onto": lambda p, s: os.rename(_staged(s, "x1"), p),
    "link-onto": lambda p, s: os.link(_staged(s, "x2"), p),
    "exchange": _exchange,
    "proc-fd-reopen": _proc_reopen,
    "tmpfile-link": _tmpfile_link,
    "mkfifo-onto": lambda p, s: os.mkfifo(p),
    "symlink-onto": lambda p, s: os.symlink("/etc/passwd", p),
    "bind-onto": _sock_bind,
}
# (relative path, whether it exists on the host beforehand)
ENTRIES = {
    "hook": (".git/hooks/pre-commit", True),
    "new-hook": (".git/hooks/post-checkout", False),
    "info-exclude": (".git/info/exclude", True),
    "info-attributes": (".git/info/attributes", False),
    "config-worktree": (".git/config.worktree", False),
    "alternates": (".git/objects/info/alternates", False),
    "pointer": ("linked/.git", True),
    "config": (".git/config", True),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str, bytes | None]]:
    """Every entry outside the scratch directory: mode, owner group, content, our xattr."""
    out: dict[str, tuple[int, int, bytes | str, bytes | None]] = {}
    for p in sorted(root.rglob("*")):
        if "stage" in p.relative_to(root).parts:
            continue
        st = p.lstat()
        body: bytes | str = (
            os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b"<dir>"
        )
        try:
            attr: bytes | None = os.getxattr(p, "user.rf", follow_symlinks=False)
        except OSError:
            attr = None
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_gid, body, attr)
    return out


@pytest.fixture
def entries(repo: Path) -> Path:
    (repo / ".git/info").mkdir(exist_ok=True)
    (repo / ".git/info/exclude").write_text("# exclude\n")
    (repo / "linked").mkdir()
    (repo / "linked/.git").write_text(f"gitdir: {repo}/.git\n")
    (repo / "stage").mkdir()
    for rel, _ in ENTRIES.values():
        p = repo / rel
        if p.exists():
            os.setxattr(p, "user.rf", b"0")
    return repo


@pytest.mark.parametrize("alias", list(ALIASES))
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_no_alias_changes_a_protected_entry(entries: Path, entry: str, alias: str) -> None:
    rel, exists = ENTRIES[entry]
    if alias == "removexattr" and not exists:
        pytest.skip("nothing to remove")
    target = entries / rel
    before = _snapshot(entries)

    def probe() -> int:
        try:
            ALIASES[alias](target, entries / "stage")
        except OSError as exc:
            return 0 if exc.errno in (errno.EACCES, errno.EPERM, errno.EEXIST, errno.EROFS) else 20
        return 1  # the change went through

    out = run_guarded(_rules(entries), probe, cwd=entries)
    assert out.status in (0, 20), (entry, alias, out)
    assert _snapshot(entries) == before, (entry, alias, out)
    # a link or move out leaves the original, and no second name either
    assert not (entries / "stage/alias").exists() and not (entries / "stage/moved").exists()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entry=st.sampled_from(list(ENTRIES)),
    via=st.sampled_from(["plain", "dirfd", "symlinked-dir", "dotdot"]),
    alias=st.sampled_from(list(ALIASES)),
)
def test_no_path_spelling_reaches_a_protected_entry(
    tmp_path_factory: pytest.TempPathFactory, entry: str, via: str, alias: str
) -> None:
    """The same changes, naming the entry through a directory fd, a symlinked directory or
    ``..`` detours: the guard resolves as the kernel does, so the answer never changes."""
    root = tmp_path_factory.mktemp("spell").resolve()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=HOST_GIT)
    (root / ".git/hooks/pre-commit").write_text("#!/bin/sh\n")
    (root / ".git/info").mkdir(exist_ok=True)
    (root / ".git/info/exclude").write_text("# x\n")
    (root / "linked").mkdir()
    (root / "linked/.git").write_text(f"gitdir: {root}/.git\n")
    (root / "gitlink").symlink_to(".git")
    (root / "stage").mkdir()
    rel, _ = ENTRIES[entry]
    before = _snapshot(root)

    def probe() -> int:
        if via == "symlinked-dir" and rel.startswith(".git/"):
            target = root / "gitlink" / rel[len(".git/") :]
        elif via == "dotdot":
            target = root / "linked/.." / rel
        elif via == "dirfd":
            os.chdir(root / os.path.dirname(rel))
            target = Path(os.path.basename(rel))
        else:
            target = root / rel
        try:
            ALIASES[alias](target, root / "stage")
        except OSError:
            return 0
        return 1

    run_guarded(_rules(root), probe, cwd=root)
    assert _snapshot(root) == before, (entry, via, alias)


# ------------------------------------------------------------ the end of a command


def test_a_refused_file_that_cannot_be_moved_is_not_called_finished(ws: Path) -> None:
    """finish() reports what it could neither accept nor move aside: the guard must not say
    "finished" then, so the host moves it (fail closed)."""
    from ringfence.platforms.linux.gitguard.guard import GitGuard

    (ws / "sub").mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(ws / "repo.git")], check=True, env=HOST_GIT)
    (ws / "ok").mkdir()
    g = GitGuard(roots=(str(ws),))
    g.note_pointer(str(ws / "sub/.git"), ".git")  # noted before they exist: judged by name
    g.note_pointer(str(ws / "ok/.git"), ".git")
    (ws / "sub/.git").write_text("gitdir: /elsewhere/.git\n")
    (ws / "ok/.git").write_text("gitdir: ../repo.git\n")
    assert g.finish(lambda _path: None) == [str(ws / "sub/.git")]
    assert (ws / "sub/.git").exists()  # the host's to move now


def test_an_include_bomb_is_read_once_per_file(ws: Path) -> None:
    import time

    from ringfence.platforms.linux.gitfiles import ConfigRead, read_config

    (ws / "config").write_text("[include]\n\tpath = config\n" * 60)
    out = ConfigRead()
    t0 = time.monotonic()
    read_config(str(ws / "config"), None, out)
    assert time.monotonic() - t0 < 5 and out.files_read <= 64


def test_control_records_reach_the_init_whole() -> None:
    """A pending path is what the host moves aside should the guard not finish: cutting it
    (as reports are cut for display) would make the host miss it."""
    import json
    import socket

    from ringfence.platforms.linux.steps import MAX_REPORT_PATH, _Reporter

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.setblocking(False)
        long_path = "/w/" + "d" * (3 * MAX_REPORT_PATH) + "/.git"
        rep = _Reporter(a)
        rep.event("git_pending", long_path)
        rep.event("new_repository", long_path)
        assert json.loads(b.recv(65536))["path"] == long_path
        assert len(json.loads(b.recv(65536))["path"]) < len(long_path)
