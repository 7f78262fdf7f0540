"""What git takes for a repository, and where a path lies with respect to one."""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Final

from ringfence.policy import gitdir
from ringfence.policy.gitdir import Entry

GITMODULES: Final = ".gitmodules"
DOT_GIT: Final = ".git"


class Unknown(OSError):
    """The guard cannot tell what a path is (a directory it cannot search): refuse (EACCES)."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EACCES, what)


def exists(path: str) -> bool:
    """lstat-existence; an answer other than "there" or "not there" is refused by callers."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise Unknown(f"{path}: {os.strerror(exc.errno or errno.EIO)}") from None
    return True


def is_gitdir(path: str) -> bool:
    """Would git read ``path`` as a git directory, or as the common directory of one?

    setup.c's ``is_git_directory`` wants a ``HEAD`` in the git directory and ``objects`` and
    ``refs`` in its common directory, which is the git directory itself unless a
    ``commondir`` names another. Git reads ``config``, ``hooks/`` and ``info/`` from a common
    directory whether or not it has a ``HEAD``, so ``objects`` plus ``refs`` alone make a
    directory one the rules govern; a ``HEAD`` plus a ``commondir`` make a linked one.
    Stricter than git on purpose: any ``HEAD``, valid or not, and ``objects``/``refs`` of any
    type, so a directory is governed no later than git would first trust it.
    """
    if exists(path + "/objects") and exists(path + "/refs"):
        return True
    return exists(path + "/HEAD") and exists(path + "/commondir")


def is_directory(path: str) -> bool:
    """lstat says directory (canonical paths: no symlink on the way)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise Unknown(f"{path}: {os.strerror(exc.errno or errno.EIO)}") from None
    return stat.S_ISDIR(st.st_mode)


def is_dot_git(name: str) -> bool:
    """``.git`` in any letter case (a case-folding directory finds ``.GIT`` as ``.git``)."""
    return name.lower() == DOT_GIT


@dataclass(frozen=True)
class Place:
    """Where a path lies with respect to git: the nearest git directory above it, if any."""

    gitdir: str | None
    rel: tuple[str, ...]
    kind: Entry | None  # None: not inside a git directory
    # gitdir is a ``.git`` directory in the making: not a repository yet, so nothing in it is
    # used by git now, but everything in it will be once someone runs `git init` there
    making: bool = False

    @property
    def governed(self) -> bool:
        return self.kind is not None

    @property
    def where(self) -> str:
        return f"git directory {self.gitdir}"

    @property
    def what(self) -> str:
        return "/".join(self.rel)


WORKTREE_GITDIR: Final = "worktree-gitdir"


def worktree_backlink(place: Place) -> bool:
    """``worktrees/<id>/gitdir``: where `git worktree repair` writes a ``.git`` file."""
    return (
        place.kind is Entry.INCUBATOR
        and len(place.rel) == 3
        and place.rel[0] == "worktrees"
        and place.rel[2] == "gitdir"
    )


# Where the git rules say nothing: not in a git directory, not a checked file.
UNGOVERNED: Final = Place(None, (), None)


def is_main_gitdir(path: str) -> bool:
    """A repository that holds its own objects and refs: what a common directory must be."""
    try:
        return all(exists(f"{path}/{n}") for n in ("HEAD", "objects", "refs"))
    except Unknown:
        return False


MAX_HOPS: Final = 40  # as the kernel's limit on symlinks followed in one lookup


def through_proc(base: str, text: str) -> bool:
    """Does a symlink in ``base`` with target ``text`` lead through procfs (/proc, or a link
    into it such as /dev/fd)? Its magic links (/proc/self/cwd, /proc/self/fd/N) lead wherever
    the process following them is, so where they lead for the guard says nothing. Resolved
    one component at a time; a loop or too many hops counts as yes."""
    proc_dev = os.stat("/proc").st_dev
    todo = (
        [p for p in text.split("/") if p]
        if text.startswith("/")
        else [
            *[p for p in base.split("/") if p],
            *[p for p in text.split("/") if p],
        ]
    )
    todo.reverse()
    cur, hops = "/", 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        cur = os.path.dirname(cur) if part == ".." else os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except OSError:
            return False  # not there (yet): nothing below it is followed now
        if st.st_dev == proc_dev:
            return True
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_HOPS:
                return True
            target = os.readlink(cur)
            parts = [p for p in target.split("/") if p]
            todo.extend(reversed(parts))
            cur = "/" if target.startswith("/") else os.path.dirname(cur)
    return False


_PROBE: Final = re.compile(r"t[A-Za-z0-9]{6}")


def probe_name(place: Place) -> bool:
    """git init's test of whether symlinks work (setup.c: an empty ``tXXXXXX`` from mkstemp,
    removed, then ``symlink("testing", "tXXXXXX")``, removed at once), made where git init
    makes it: at the top of a ``.git`` directory in the making, or in a submodule's git
    directory in the making under ``modules/``. Refused, git would set core.symlinks=false and
    check links out as plain files. The name is one git never reads, and the layout check
    refuses a directory that still holds it."""
    if _PROBE.fullmatch(place.rel[-1]) is None:
        return False
    return place.kind is Entry.INCUBATOR or (place.making and len(place.rel) == 1)


def symlink_probe(place: Place, text: str | None) -> bool:
    """The second half of git init's probe (:func:`probe_name`): the link itself."""
    return text == "testing" and probe_name(place)


def hooks_in(hooks: str | None) -> str | None:
    """Why a hooks directory about to be used holds hooks already, or None."""
    if hooks is None:
        return None
    try:
        names = [e.name for e in os.scandir(hooks)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"cannot look into its hooks directory {hooks} ({exc.strerror or exc})"
    planted = sorted(n for n in names if n in gitdir.HOOK_NAMES)
    if planted:
        return f"its hooks directory {hooks} (core.hooksPath) holds {', '.join(planted[:3])}"
    return None


def link_problem(path: str, text: str) -> str | None:
    """A symlink (but a ``.git`` one, judged as a pointer) may not lead into or onto a
    git directory: a work tree resolved through it (a module's ``core.worktree``, git
    run in it) would be that git directory, and a checkout writes ``hooks/`` there. Its
    text may not name ``.git`` at all (moved elsewhere, a relative one would lead
    elsewhere); where it leads now is looked at up to ``/``."""
    if is_dot_git(posixpath.basename(path)):
        return None
    if any(is_dot_git(part) for part in text.split("/")):
        return f"a symlink may not lead into a git directory (.git in {text!r})"
    if through_proc(posixpath.dirname(path), text):
        # /proc/self/cwd and the like lead wherever the process that follows them is: for
        # git resolving a work tree from its git directory, into that git directory
        return f"a symlink may not lead through /proc ({text!r})"
    cur = os.path.realpath(gitdir.symlink_target(posixpath.dirname(path), text))
    while True:
        try:
            found = is_gitdir(cur)
        except OSError:  # not readable here: nor by you (the same user), so no work tree
            found = False
        if found:
            return f"a symlink may not lead into a git directory ({cur})"
        parent = posixpath.dirname(cur)
        if parent == cur:
            return None
        cur = parent
