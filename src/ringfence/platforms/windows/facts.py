"""What the Windows compiler needs to know about the machine, gathered before each command.

- ``realpaths``: every path the policy names, followed through junctions and symlinks, so a
  grant lands on the directory it reaches (an ACE on a link protects or grants nothing
  behind it); a root reached through a link that lies inside another writable root is
  refused, because an earlier sandboxed command may have planted it.
- ``existing``: which protected and hidden paths exist (an ACE needs a file).
- ``found``: the existing matches of protected names (``.git\\hooks`` at any depth) under the
  writable roots, by a walk that never enters a reparse point and stops after ``max_entries``
  (reported, so a huge tree is a visible gap and not a silent one).

The file system is reached only through ``Fs`` so that the logic runs on Linux against a
simulated Windows tree; ``OsFs`` is the real one. Not run on Windows yet.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ringfence.errors import PolicyError
from ringfence.platforms.windows.plan import WindowsFacts
from ringfence.policy import defaults_windows, semantics, winpaths
from ringfence.policy.model import Policy
from ringfence.policy.semantics import WINDOWS

FILE_ATTRIBUTE_REPARSE_POINT = 0x400
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    is_reparse: bool


class Fs(Protocol):
    def realpath(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def is_reparse(self, path: str) -> bool: ...
    def entries(self, path: str) -> list[Entry]: ...


class OsFs:
    """The real file system (``os``); on Windows ``realpath`` follows junctions and symlinks."""

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_reparse(self, path: str) -> bool:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        attrs = int(getattr(st, "st_file_attributes", 0))
        return stat.S_ISLNK(st.st_mode) or bool(attrs & FILE_ATTRIBUTE_REPARSE_POINT)

    def entries(self, path: str) -> list[Entry]:
        out = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    attrs = int(getattr(st, "st_file_attributes", 0))
                    reparse = e.is_symlink() or bool(attrs & FILE_ATTRIBUTE_REPARSE_POINT)
                    out.append(Entry(e.name, stat.S_ISDIR(st.st_mode), reparse))
        except OSError:
            return []
        return out


@dataclass(frozen=True)
class Gathered:
    facts: WindowsFacts
    notes: tuple[str, ...] = ()


def gather(
    policy: Policy,
    *,
    home: str,
    temp: str,
    profile_roots: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    fs: Fs | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Gathered:
    fs = fs or OsFs()
    env = os.environ if environ is None else environ
    path_dirs: list[str] = []
    for d in env.get("PATH", env.get("Path", "")).split(";"):
        try:
            path_dirs.append(winpaths.normalize("PATH entry", d.strip().strip('"')))
        except PolicyError:
            continue  # relative or odd entries are not granted anything
    writable = policy.writable_paths()
    folders = defaults_windows.folders_from_env(env)
    hidden = policy.deny_read_paths(home, "windows", folders=folders)
    anchored = defaults_windows.persistence_paths(home, folders) if policy.default_protected else ()
    named = [
        *writable,
        policy.workspace,
        temp,
        *policy.protected,
        *hidden,
        *anchored,
        *path_dirs,
    ]
    realpaths: dict[str, str] = {}
    for p in dict.fromkeys(named):
        real = winpaths.normalize("realpath", fs.realpath(p))
        if winpaths.key(real) != winpaths.key(p):
            realpaths[p] = real
    _refuse_planted_links(writable, fs)
    resolved_roots = [realpaths.get(r, r) for r in writable]
    existing = frozenset(
        p for p in (*policy.protected, *hidden, *anchored) if fs.exists(realpaths.get(p, p))
    )
    names = policy.protected_names("windows") if writable else ()
    found, notes = _scan(resolved_roots, names, fs, max_entries)
    facts = WindowsFacts(
        home=home,
        temp=temp,
        profile_roots=tuple(profile_roots),
        realpaths=realpaths,
        found=found,
        existing=existing,
        path_dirs=tuple(path_dirs),
        folders=folders,
    )
    return Gathered(facts, notes)


def _refuse_planted_links(writable: Iterable[str], fs: Fs) -> None:
    """A root reached through a junction or symlink inside another writable root is refused:
    the sandbox could have made it, to turn "grant build\\" into "grant my documents"."""
    roots = list(writable)
    for root in roots:
        cur = root
        while winpaths.parent(cur) != cur:
            if fs.is_reparse(cur):
                for other in roots:
                    if semantics.is_strictly_under(cur, other, WINDOWS):
                        raise PolicyError(
                            f"writable root {root} passes through the link {cur}, which lies "
                            f"inside the writable root {other} (a sandboxed command could have "
                            "made it); give the real path"
                        )
            cur = winpaths.parent(cur)


def _scan(
    roots: list[str], names: tuple[str, ...], fs: Fs, max_entries: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Existing matches of ``names`` under ``roots``: top-down, a match is recorded and not
    entered, reparse points are never entered."""
    found: list[str] = []
    notes: list[str] = []
    seen = 0
    for root in roots:
        stack = [root]
        while stack:
            directory = stack.pop()
            for e in fs.entries(directory):
                seen += 1
                if seen > max_entries:
                    notes.append(
                        f"stopped looking for protected names after {max_entries} entries; "
                        "matches deeper in the writable roots get no deny ACE"
                    )
                    return tuple(found), tuple(notes)
                path = directory.rstrip("\\") + "\\" + e.name
                if any(semantics.name_covers(n, path[len(root) :], WINDOWS) for n in names):
                    found.append(path)
                elif e.is_dir and not e.is_reparse:
                    stack.append(path)
    return tuple(found), tuple(notes)
