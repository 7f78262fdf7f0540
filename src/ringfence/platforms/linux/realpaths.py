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
        got = self._stats.get(path)
        if got is None:
            try:
                got = os.lstat(path)
            except OSError as e:
                got = e
            self._stats[path] = got
        if isinstance(got, OSError):
            raise got
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
        parent, name = os.path.split(path)  # a plain name: the path is normalised
        # As realpath does: look at the name where the parent really is (not at ``path``: the
        # kernel would fail ``file/..`` on the way, realpath takes ``..`` lexically).
        newpath = os.path.join(self(parent), name)
        try:
            is_link = stat.S_ISLNK(self.lstat(newpath).st_mode)
        except OSError:
            is_link = False  # realpath keeps a name it cannot look at as it is
        if is_link:
            return os.path.realpath(path)
        return newpath
