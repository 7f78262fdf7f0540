"""``os.path.realpath`` for many paths that share their parents, one ``lstat`` per new path.

Host facts resolve every name a policy may protect under every writable root (a hundred
roots times the protected names, plus every ``--protect`` path): resolving each from ``/``
repeats the same parents' lookups thousands of times. A plain absolute path resolves to its
parent's resolution plus its own name when the name found there is no symlink, so each parent
is resolved once and remembered; anything else (a symlink, a path that is not plain and
absolute) goes to ``realpath`` itself. A directory asked about many entries (a writable root,
for every protected name) is listed once, and a name missing from it needs no ``lstat``.
The answers are ``os.path.realpath``'s (tests/unit/test_realpaths.py checks them against it,
links, loops and missing paths included).
"""

from __future__ import annotations

import errno
import os
import stat

from ringfence.plancache import facts

LIST_AFTER = 8  # entries of one directory looked up one by one before it is listed instead
LIST_MAX = 4096  # a bigger directory is not listed: its entries are looked up one by one


class RealPaths:
    """A memo of resolved paths for one look at the host (the host may change later: make a
    new one for each ``gather``)."""

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}
        self._stats: dict[str, os.stat_result | OSError] = {}
        self._asked: dict[str, int] = {}  # a directory -> lstat()s of its entries so far
        self._names: dict[str, frozenset[str] | None] = {}  # its listing (None: not listed)

    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat``, asked once per path (its error too)."""
        got = self._lstat(path)
        if isinstance(got, OSError):
            raise got
        return got

    def _lstat(self, path: str, *, plain: bool = False) -> os.stat_result | OSError:
        got = self._stats.get(path)
        if got is None:
            names = self._listing(path, plain=plain)
            if names is not None and path[path.rfind("/") + 1 :] not in names:
                got = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
                # what a kept plan depends on: this name's absence, not the whole listing
                facts.note("lstat", path, ("err", errno.ENOENT))
            else:
                try:
                    got = os.lstat(path)
                except OSError as e:
                    got = e
            self._stats[path] = got
        return got

    def _listing(self, path: str, *, plain: bool) -> frozenset[str] | None:
        """The names in the directory holding ``path``, once it has been asked about
        ``LIST_AFTER`` entries (a writable root asked for every protected name, most of which
        are not there): one listing instead of a failed ``lstat`` each. None while it has
        not, for a directory that cannot be listed or holds more than ``LIST_MAX`` entries,
        and for a path that is not plain (``lstat`` answers those)."""
        cut = path.rfind("/")
        if not plain and (
            cut < 0 or path.startswith("//") or os.path.normpath(path) != path or path == "/"
        ):
            return None
        parent = path[:cut] or "/"
        if parent in self._names:
            return self._names[parent]
        asked = self._asked.get(parent, 0) + 1
        self._asked[parent] = asked
        if asked < LIST_AFTER:
            return None
        names: set[str] | None = set()
        try:
            with facts.unrecorded(), os.scandir(parent) as entries:
                for entry in entries:
                    names.add(entry.name)  # type: ignore[union-attr]
                    if len(names) > LIST_MAX:  # type: ignore[arg-type]
                        names = None
                        break
        except OSError:
            names = None
        listed = frozenset(names) if names is not None else None
        self._names[parent] = listed
        return listed

    def __call__(self, path: str) -> str:
        got = self._memo.get(path)
        if got is None:
            got = self._memo[path] = self._resolve(path)
        return got

    def _resolve(self, path: str) -> str:
        if (
            path == "/"
            or not path.startswith("/")
            or path.startswith("//")
            or os.path.normpath(path) != path
        ):
            return os.path.realpath(path)
        cut = path.rfind("/")  # normalised, not "/": a plain name after the last slash
        parent = self(path[:cut] or "/")
        # As realpath does: look at the name where the parent really is (not at ``path``: the
        # kernel would fail ``file/..`` on the way, realpath takes ``..`` lexically).
        newpath = (parent if parent != "/" else "") + path[cut:]
        st = self._lstat(newpath, plain=True)  # an error: realpath keeps the name as it is
        if not isinstance(st, OSError) and stat.S_ISLNK(st.st_mode):
            return os.path.realpath(path)
        return newpath
