"""The git rules' check at the end of a command: every file whose content counts only once
none of the command's processes is left to change it (pointers, todo lists, .gitmodules), judged
by what is there then, and by the inodes the guard pinned when they were made (pins.py)."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from ringfence.platforms.linux.gitguard.fileio import put_copy, read_regular, replace_with_copy
from ringfence.platforms.linux.gitguard.layout import (
    DOT_GIT,
    WORKTREE_GITDIR,
    exists,
    is_dot_git,
    is_gitdir,
)
from ringfence.policy import gitdir

if TYPE_CHECKING:
    from ringfence.platforms.linux.gitguard.guard import GitGuard


def finish(g: GitGuard, quarantine: Callable[[str], str | None]) -> list[str]:
    """Check every file whose content counts only now that none of the command's
    processes is left to change it. One that passes is replaced by the guard's copy of the
    bytes it judged (a descriptor passed elsewhere then writes a file git never reads);
    one that fails is moved aside by ``quarantine`` (which returns the new name). A
    repository this command completed that uses a common directory must still find a
    complete repository there (the command may have undone the one it made). Returns the
    files that failed and could not be moved: the caller must not call this finished."""
    for gd in sorted(g.completed):
        if os.path.lexists(f"{gd}/commondir"):
            g.note_pointer(f"{gd}/commondir", "commondir", done=True)
    unsecured: list[str] = []
    for path, kind in sorted(g.pending.items()):
        judged = _judge_held(g, path, kind, quarantine, unsecured)
        problem = _final_problem(g, path, kind, judged)
        if problem is None:
            continue
        moved = quarantine(path)
        if moved is None:
            unsecured.append(path)  # left in place: the host must move it (fail closed)
            continue
        g.event("refused_pointer", path, f"{problem}; moved to {moved}")
    g.pending.clear()
    g.pins.close_all()
    return unsecured


def _judge_held(
    g: GitGuard, path: str, kind: str, quarantine: Callable[[str], str | None], unsecured: list[str]
) -> set[tuple[int, int]]:
    """Judge the files noted at ``path`` through their inode and the directory they were
    made in (pins.py), whatever directory above was renamed meanwhile: by content, as if
    at ``path`` and where they are now. One that passes is replaced there by a copy (no
    descriptor held elsewhere writes what git reads); one refused is set aside
    (:meth:`Held.set_aside`). Returns the inodes judged (the check by name skips them)."""
    judged: set[tuple[int, int]] = set()
    for held in g.pins.held(path):
        st = os.fstat(held.fd)
        judged.add((st.st_dev, st.st_ino))
        there = held.in_place()
        now = held.path_now() if there else ""
        try:
            data = held.read()
            problem = _content_problem(g, path, kind, data)
            if problem is None and now and now != path:
                problem = _content_problem(g, now, kind, data)
            if problem is None and there:
                put_copy(held.dir_fd, held.name, data, stat.S_IMODE(st.st_mode))
        except OSError as exc:
            problem = f"could not be checked ({exc.strerror or exc})"
        if problem is None:
            continue
        where = held.set_aside(quarantine, now)
        if where is None:
            unsecured.append(now or path)  # the host's to move
            continue
        g.event("refused_pointer", now or path, f"{problem}; {where}")
    return judged


def _content_problem(g: GitGuard, path: str, kind: str, data: bytes) -> str | None:
    """Why ``data`` may not be the file of ``kind`` at ``path`` that git reads."""
    holder = posixpath.dirname(path)
    if kind in gitdir.POINTER_NAMES and not exists(f"{holder}/HEAD"):
        # no HEAD beside it: git does not read it, but for `git init` there, which reads
        # a commondir (and puts config and hooks where it leads) all the same
        read_anyway = kind == "commondir" and (
            is_dot_git(posixpath.basename(holder)) or is_gitdir(holder)
        )
        if not read_anyway:
            return None
    if kind == WORKTREE_GITDIR:
        kind = "gitdir"
    problem = g.content.pointer_problem(path, kind, data)
    if problem is None and kind == DOT_GIT:
        problem = g.new_top_problem(posixpath.dirname(path))
    return problem


def _link_problem(g: GitGuard, path: str) -> str | None:
    """A ``.git`` symlink, as it is now."""
    try:
        target = os.path.realpath(path)
    except OSError:
        return None
    if not os.path.islink(path):
        return None  # replaced since: judged as what it is now
    if g.pointer_root_of(target) is None or not is_gitdir(target):
        return f"a .git symlink must lead to a repository in the writable roots ({target})"
    return g.planted_hooks(posixpath.dirname(path))


def _final_problem(g: GitGuard, path: str, kind: str, judged: Container[object] = ()) -> str | None:
    """The file noted at ``path``, by name (one judged through its pin is skipped)."""
    if kind == ".git-link":
        return _link_problem(g, path)
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in judged:
            return None  # judged through its directory (_judge_held)
        data = read_regular(path)
    except (FileNotFoundError, ValueError):
        return None  # gone (and if renamed with its directory: _judge_held), or no name at all
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    problem = _content_problem(g, path, kind, data)
    if problem is None:
        try:
            replace_with_copy(path, data)
        except OSError as exc:
            problem = f"could not be secured ({exc.strerror or exc})"
    return problem
