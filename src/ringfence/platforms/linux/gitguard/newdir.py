"""What a new git directory may hold: the scan a directory gets when it becomes a git
directory, or arrives by rename as a ``.git`` directory still in the making.

Either way host git will trust everything in it from then on (its own ``git init`` in a
``.git`` in the making adopts the config keys and hook files it finds), so everything must be
what ``git init`` itself leaves there, and a config or pointer must pass its content check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Final

from ringfence.platforms.linux.gitguard.content import ContentRules
from ringfence.platforms.linux.gitguard.fileio import read_regular, replace_with_copy

# Imported here, not when first needed: the guard runs inside the sandbox's view of the
# files, where ringfence's own source may not be visible.
from ringfence.policy import gitconfig, gitdir
from ringfence.policy.gitdir import Entry

# A directory that completes its layout is scanned before it counts; a bigger one is refused
# (git init makes ~20 entries; a clone completes its layout before it fetches objects).
MAX_SCAN_ENTRIES: Final = 20_000

# What a new git directory may hold besides git's data: what `git init` copies from its
# template (anything else there is refused).
TEMPLATE_ENTRIES: Final = frozenset(
    {("description",), ("info",), ("info", "exclude"), ("branches",), ("hooks",)}
)
TEMPLATE_DIRS: Final = frozenset({("info",), ("branches",), ("hooks",)})


def _raise(exc: OSError) -> None:
    raise exc


Event = Callable[[str, str, str], None]


def scan(
    content: ContentRules, event: Event, top: str, trees: list[tuple[str, tuple[str, ...]]]
) -> str | None:
    """Judge every entry of ``trees`` (a directory on disk, and the path its entries will have
    in the git directory ``top``): None when all may be there. The checked files are then
    replaced by copies of the bytes judged, where they are now: a descriptor the command
    opened before writes a file git never reads."""
    judge = _Scan(content, event, top)
    seen = 0
    for tree, prefix in trees:
        for dirpath, dirnames, filenames in os.walk(tree, onerror=_raise, followlinks=False):
            sub = (*prefix, *(p for p in dirpath[len(tree) :].split("/") if p))
            if sub and gitdir.classify(sub) is Entry.INCUBATOR:
                dirnames[:] = []  # nested repositories are judged when they complete
                continue
            for name in [*dirnames, *filenames]:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    return f"more than {MAX_SCAN_ENTRIES} entries to check"
                problem = judge.problem(f"{dirpath}/{name}", (*sub, name))
                if problem is not None:
                    return problem
    for full, data in judge.checked.items():
        replace_with_copy(full, data)
    return None


class _Scan:
    def __init__(self, content: ContentRules, event: Event, top: str) -> None:
        self.content = content
        self.event = event
        self.top = top
        self.checked: dict[str, bytes] = {}  # path now -> the bytes judged

    def problem(self, full: str, rel: tuple[str, ...]) -> str | None:
        st = os.lstat(full)
        kind = gitdir.classify(rel)
        what = "/".join(rel)
        if stat.S_ISLNK(st.st_mode):
            return f"the symlink {what} (a git directory holds none)"
        if not plain(st.st_mode):
            return f"{what} is a FIFO or device (git would wait on it)"
        if kind in (Entry.DATA, Entry.INCUBATOR):
            return None
        if rel in TEMPLATE_ENTRIES:
            want = stat.S_IFDIR if rel in TEMPLATE_DIRS else stat.S_IFREG
            return None if stat.S_IFMT(st.st_mode) == want else f"{what} has the wrong type"
        if not stat.S_ISREG(st.st_mode):
            return f"{what} is not a regular file"
        return None if kind is Entry.HOOK_SAMPLE else self._content_problem(full, rel, kind)

    def _content_problem(self, full: str, rel: tuple[str, ...], kind: Entry) -> str | None:
        what = "/".join(rel)
        data = read_regular(full)
        if kind is Entry.CONFIG or rel == ("config.worktree",):
            data, dropped = self.content.settle(data, "config")
            if dropped:
                self.event("dropped_worktree", full, gitconfig.WORKTREE_REFUSED)
            problem = self.content.config_problem(data, gitdir_path=self.top, kind="config")
        elif kind is Entry.POINTER:
            problem = self.content.pointer_problem(f"{self.top}/{what}", rel[-1], data)
        elif kind is Entry.CHECKED:
            name = gitdir.CHECKED_PATHS[rel]
            problem = self.content.pointer_problem(f"{self.top}/{what}", name, data)
        else:
            return f"{what} is not something a new repository holds"
        if problem is not None:
            return f"{what}: {problem}"
        self.checked[full] = data
        return None


def incoming_problem(tree: str, base: tuple[str, ...]) -> str | None:
    """A directory renamed into a git directory as ``base``: every entry it brings is judged
    where it will be. Only git's data may arrive this way (a todo list, config or hook inside
    it would skip the checks its own name gets)."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(tree, onerror=_raise, followlinks=False):
        sub = tuple(p for p in dirpath[len(tree) :].split("/") if p)
        if gitdir.classify((*base, *sub)) is Entry.INCUBATOR:
            dirnames[:] = []  # nested repositories in the making: judged when complete
            continue
        for name in [*dirnames, *filenames]:
            seen += 1
            if seen > MAX_SCAN_ENTRIES:
                return f"more than {MAX_SCAN_ENTRIES} entries to check"
            rel = (*base, *sub, name)
            kind = gitdir.classify(rel)
            if kind not in (Entry.DATA, Entry.INCUBATOR):
                return f"a directory renamed in would bring {'/'.join(rel)} ({kind.value})"
            mode = os.lstat(f"{dirpath}/{name}").st_mode
            if stat.S_ISLNK(mode):
                return f"a directory renamed in would bring the symlink {'/'.join(rel)}"
            if not plain(mode):
                return f"a directory renamed in would bring a FIFO or device {'/'.join(rel)}"
    return None


def plain(mode: int) -> bool:
    """What git may meet where it reads: a FIFO (or a device) would have it wait, or worse.
    A socket is fsmonitor's; opening one fails at once."""
    return stat.S_IFMT(mode) in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFSOCK)
