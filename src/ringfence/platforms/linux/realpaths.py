"""``os.path.realpath`` for many paths that share their parents, one ``lstat`` per new path.

Host facts resolve every name a policy may protect under every writable root (a hundred
roots times the protected names, plus every ``--protect`` path): resolving each from ``/``
repeats the same parents' lookups thousands of times. A plain absolute path resolves to its
parent's resolution plus its own name when the name found there is no symlink, so each parent
is resolved once and remembered; anything else (a symlink, a path that is not plain and
absolute) goes to ``realpath`` itself.
The answers are ``os.path.realpath``'s (tests/unit/test_realpaths.py checks them against it,
links, loops and missing paths included).
"""

from __future__ import annotations

import os
import stat


class RealPaths:
    """A memo of resolved paths for one look at the host (the host may change later: make a
    new one for each ``gather``)."""

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}
        self._stats: dict[str, os.stat_result | OSError] = {}

    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat``, asked once per path (its error too)."""
        got = self._lstat(path)
        if isinstance(got, OSError):
            raise got
        return got

    def _lstat(self, path: str) -> os.stat_result | OSError:
        got = self._stats.get(path)
        if got is None:
            try:
                got = os.lstat(path)
            except OSError as e:
                got = e
            self._stats[path] = got
        return got

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
        st = self._lstat(newpath)  # an error: realpath keeps the name as it is
        if not isinstance(st, OSError) and stat.S_ISLNK(st.st_mode):
            return os.path.realpath(path)
        return newpath
