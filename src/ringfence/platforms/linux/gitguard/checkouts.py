"""Where a repository's submodules are checked out, as their module configs say.

``git submodule`` (on the host) writes ``core.worktree`` into every module's config
(``.git/modules/<name>/config``), naming the checkout, and git resolves it through the file
system each time it runs. The guard never lets a command write one (``gitconfig_edit``), but
yours are there: a command that moved such a checkout, or a directory above it, away and put
a symlink into a git directory in its place would make your next checkout in the moved one
write the commit's ``hooks/`` into that git directory. So nothing on the way to a checkout a
module config names may go away, be replaced, or become a symlink (``GitGuard``).
"""

from __future__ import annotations

import errno
import os
from typing import Final

from ringfence.platforms.linux.gitfiles import ConfigRead, read_config
from ringfence.platforms.linux.gitguard.layout import Unknown, is_gitdir

# Directories looked at under one repository's modules/ (module names may hold slashes, and
# modules have modules): beyond this the guard cannot tell, and refuses.
MAX_MODULE_DIRS: Final = 4096


def module_gitdirs(gitdir: str) -> list[str]:
    """Every module git directory of ``gitdir``: under ``modules/`` and each linked worktree's
    ``worktrees/<id>/modules/``, at any depth, and theirs in turn (nested submodules)."""
    return module_gitdirs_in([f"{gitdir}/modules", *_worktree_modules(gitdir)], nested=True)


def module_gitdirs_in(frontier: list[str], *, nested: bool = False) -> list[str]:
    """The git directories found under the directories of ``frontier``, descending through
    those that are none (module names with slashes); with ``nested``, into their modules."""
    found: list[str] = []
    seen = 0
    while frontier:
        d = frontier.pop()
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise Unknown(f"{d}: {os.strerror(exc.errno or errno.EIO)}") from None
        for e in entries:
            seen += 1
            if seen > MAX_MODULE_DIRS:
                raise Unknown(f"more than {MAX_MODULE_DIRS} directories under {d}")
            if not e.is_dir(follow_symlinks=False):
                continue
            if is_gitdir(e.path):
                found.append(e.path)
                if nested:
                    frontier += [f"{e.path}/modules", *_worktree_modules(e.path)]
            else:  # a module name with slashes: one directory per component
                frontier.append(e.path)
    return found


def _worktree_modules(gitdir: str) -> list[str]:
    try:
        return [f"{e.path}/modules" for e in os.scandir(f"{gitdir}/worktrees")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise Unknown(f"{gitdir}/worktrees: {os.strerror(exc.errno or errno.EIO)}") from None


def work_tree(gitdir: str, home: str | None) -> str | None:
    """The checkout a git directory's config names (``core.worktree``, in ``config`` or
    ``config.worktree``), as git resolves it from there (without following links), or None."""
    read = ConfigRead()
    for name in ("config", "config.worktree"):
        read_config(f"{gitdir}/{name}", home, read)
    return read.worktree


def named_at_or_below(path: str, home: str | None) -> str | None:
    """A checkout that the config of a git directory at or below ``path`` names, if any
    (``path`` under ``modules/``: renaming or removing it would re-aim that checkout)."""
    gitdirs = [path, *module_gitdirs(path)] if is_gitdir(path) else _gitdirs_below(path)
    return next((t for t in (work_tree(g, home) for g in gitdirs) if t is not None), None)


def _gitdirs_below(path: str) -> list[str]:
    """The git directories below ``path`` (a directory under ``modules/`` that is none
    itself: a component of a module's name), and their modules."""
    found: list[str] = []
    for d in module_gitdirs_in([path]):
        found += [d, *module_gitdirs(d)]
    return found


def work_trees(gitdir: str, home: str | None) -> tuple[str, ...]:
    """The checkouts the module configs of ``gitdir`` name."""
    named = (work_tree(m, home) for m in module_gitdirs(gitdir))
    return tuple(dict.fromkeys(w for w in named if w is not None))
