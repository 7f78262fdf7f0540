"""What a policy's paths and names mean, written once: every backend asks here.

Three questions decide most of a boundary, and each used to be answered in several places
that could drift apart:

* **Under a root**: is ``path`` the root itself or beneath it? (:func:`is_under`) A root with
  a trailing separator means the same directory as without; ``/`` (or a drive root
  ``C:\\``) holds every absolute path; an empty path or root holds and is held by nothing.
* **Protected names**: does a protected name pattern (``.git/hooks``; ``*`` = exactly one
  component, ``**`` = zero or more) match a contiguous, non-empty run of a path's
  components, with the path at the run's end or beneath it? (:func:`covers`) Or does a
  match need components the path does not have yet, so that the path is on the way to one?
  (:func:`leads`)
* **Deny-read**: which deny-read entry hides ``path``? An entry hides itself and everything
  beneath it, and nothing else (:func:`hidden_by`).

Platforms spell and compare paths differently: Linux compares bytes, macOS's APFS and
Windows' NTFS ignore letter case, and Windows separates components with backslashes. That is
said once, by the :class:`PathSyntax` every function takes (``POSIX`` unless told).

Pure and free of ringfence imports at run time: the name guard's supervisor calls
:func:`covers` for every path a command creates.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringfence.policy.model import PathStyle

GLOB_ONE = "*"
GLOB_ANY = "**"


@dataclass(frozen=True)
class PathSyntax:
    """How one platform writes and compares paths: its separator, and whether two names that
    differ only in letter case are the same file."""

    sep: str
    caseless: bool

    def key(self, path: str) -> str:
        """What every spelling of one path shares under this syntax."""
        return path.casefold() if self.caseless else path

    def components(self, path: str) -> tuple[str, ...]:
        """The non-empty components of ``path``, as written (not case-folded)."""
        return tuple(c for c in path.split(self.sep) if c)


POSIX = PathSyntax("/", caseless=False)
"""Linux: byte-exact names, ``/`` separated."""
MACOS = PathSyntax("/", caseless=True)
"""macOS: APFS (as formatted by default) ignores letter case."""
WINDOWS = PathSyntax("\\", caseless=True)
"""Windows: NTFS ignores letter case; canonical paths (``policy.winpaths``) use ``\\``."""


def syntax_of(style: PathStyle) -> PathSyntax:
    """The syntax of a policy's paths (``Policy.path_style``)."""
    return WINDOWS if style == "windows" else POSIX


# ---------------------------------------------------------------------------- under a root


def is_under(path: str, root: str, syntax: PathSyntax = POSIX) -> bool:
    """``path`` is ``root`` or lies beneath it (see the module docstring for the edges)."""
    if not path or not root:
        return False
    sep = syntax.sep
    p = syntax.key(path).rstrip(sep)
    r = syntax.key(root).rstrip(sep)
    return p == r or p.startswith(r + sep)


def is_strictly_under(path: str, root: str, syntax: PathSyntax = POSIX) -> bool:
    """``path`` lies beneath ``root`` and is not ``root`` itself."""
    sep = syntax.sep
    return is_under(path, root, syntax) and (
        syntax.key(path).rstrip(sep) != syntax.key(root).rstrip(sep)
    )


def first_under(path: str, roots: Iterable[str], syntax: PathSyntax = POSIX) -> str | None:
    """The first of ``roots`` that holds ``path`` (:func:`is_under`), else None."""
    for root in roots:
        if is_under(path, root, syntax):
            return root
    return None


def _strict_prefixes(key: str, sep: str) -> Iterator[str]:
    """Every ``key[:i]`` that ends right before a separator: exactly the rstripped roots
    ``r`` for which ``key.startswith(r + sep)`` (:func:`is_under`'s second case)."""
    pos = key.find(sep)
    while pos != -1:
        yield key[:pos]
        pos = key.find(sep, pos + 1)


class RootIndex:
    """A fixed list of roots, asked :func:`first_under` (and its mirror image, "which root
    lies under this path") many times: each question costs the path's length, not the number
    of roots. The answers are exactly those of the loops over ``roots`` (the same root, the
    first in order), so a policy of thousands of paths decides as a small one does."""

    __slots__ = ("_at", "_sorted", "roots", "syntax")

    def __init__(self, roots: Iterable[str], syntax: PathSyntax = POSIX) -> None:
        self.roots = tuple(roots)
        self.syntax = syntax
        at: dict[str, list[int]] = {}
        for i, root in enumerate(self.roots):
            if root:  # an empty root holds and is held by nothing (is_under)
                at.setdefault(self._key(root), []).append(i)
        self._at = at
        self._sorted: list[str] | None = None

    def _key(self, path: str) -> str:
        return self.syntax.key(path).rstrip(self.syntax.sep)

    def holders(self, path: str) -> list[int]:
        """Indices (ascending) of the roots that are ``path`` or hold it."""
        if not path or not self._at:
            return []
        p = self._key(path)
        at = self._at
        found = list(at.get(p, ()))
        for prefix in _strict_prefixes(p, self.syntax.sep):
            found.extend(at.get(prefix, ()))
        return sorted(found)

    def first_under(self, path: str) -> str | None:
        """``first_under(path, roots)``: the first root that is ``path`` or holds it."""
        found = self.holders(path)
        return self.roots[found[0]] if found else None

    def beneath(self, path: str, *, strict: bool = False) -> list[int]:
        """Indices (ascending) of the roots that lie under ``path`` (``is_under(root,
        path)``); with ``strict``, not ``path`` itself (``is_strictly_under``)."""
        if not path or not self._at:
            return []
        if self._sorted is None:
            self._sorted = sorted(self._at)
        q = self._key(path)
        found = [] if strict else list(self._at.get(q, ()))
        prefix = q + self.syntax.sep
        keys = self._sorted
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            found.extend(self._at[keys[i]])
            i += 1
        return sorted(found)

    def first_beneath(self, path: str, *, strict: bool = False) -> str | None:
        """The first root (in order) that lies under ``path`` (see :meth:`beneath`)."""
        found = self.beneath(path, strict=strict)
        return self.roots[found[0]] if found else None


class PrefixSet:
    """A growing set of roots asked only "does one of you strictly hold this path?"
    (``any(is_strictly_under(path, r) for r in roots)``), in the path's length."""

    __slots__ = ("_keys", "syntax")

    def __init__(self, syntax: PathSyntax = POSIX) -> None:
        self.syntax = syntax
        self._keys: set[str] = set()

    def add(self, root: str) -> None:
        if root:
            self._keys.add(self.syntax.key(root).rstrip(self.syntax.sep))

    def strictly_holds(self, path: str) -> bool:
        if not path or not self._keys:
            return False
        p = self.syntax.key(path).rstrip(self.syntax.sep)
        return any(prefix in self._keys for prefix in _strict_prefixes(p, self.syntax.sep))


def overlaps(a: str, b: str, syntax: PathSyntax = POSIX) -> bool:
    """One of ``a`` and ``b`` holds the other."""
    return is_under(a, b, syntax) or is_under(b, a, syntax)


def relative_components(path: str, root: str, syntax: PathSyntax = POSIX) -> tuple[str, ...] | None:
    """The components of ``path`` below ``root`` (``()`` for the root itself), as written in
    ``path``; None when ``path`` is not under ``root``."""
    if not is_under(path, root, syntax):
        return None
    return syntax.components(path)[len(syntax.components(root)) :]


# -------------------------------------------------------------------------------- deny-read


def hidden_by(path: str, deny_read: Iterable[str], syntax: PathSyntax = POSIX) -> str | None:
    """The deny-read entry that hides ``path``: the first one that is ``path`` or holds it.
    Entries are exact paths (no patterns); everything beneath one is hidden with it."""
    return first_under(path, deny_read, syntax)


# -------------------------------------------------------------------------- protected names


class NameMatch(Enum):
    """How a path meets a protected name pattern."""

    COVERS = "covers"  # the path is a match, or lies beneath one
    LEADS = "leads"  # the path is on the way to a match: the pattern needs more components


def pattern_parts(pattern: str, syntax: PathSyntax = POSIX) -> tuple[str, ...]:
    """The components of a protected name pattern (always ``/``-separated, as the defaults
    and policy files write them), case-folded under a caseless syntax."""
    return tuple(syntax.key(p) for p in pattern.split("/") if p)


def _closure(parts: Sequence[str], states: set[int]) -> set[int]:
    """Add the positions reachable by letting ``**`` match zero components."""
    out = set(states)
    todo = list(states)
    while todo:
        pos = todo.pop()
        if pos < len(parts) and parts[pos] == GLOB_ANY and pos + 1 not in out:
            out.add(pos + 1)
            todo.append(pos + 1)
    return out


def _step(parts: Sequence[str], states: set[int], name: str) -> set[int]:
    nxt: set[int] = set()
    for pos in states:
        if pos >= len(parts):
            continue
        want = parts[pos]
        if want == GLOB_ANY:
            nxt.add(pos)
        elif want in (GLOB_ONE, name):
            nxt.add(pos + 1)
    return _closure(parts, nxt)


def covers(parts: Sequence[str], comps: Sequence[str]) -> bool:
    """Does the pattern ``parts`` match a non-empty contiguous run of ``comps``? (Then the
    path of ``comps`` is a protected name, or lies beneath one.) Both already split, and
    case-folded by the caller when the syntax is caseless: this is the guard's hot path."""
    for start in range(len(comps)):
        states = _closure(parts, {0})
        for name in comps[start:]:
            states = _step(parts, states, name)
            if not states:
                break
            if len(parts) in states:
                return True
    return False


def leads(parts: Sequence[str], comps: Sequence[str]) -> bool:
    """Can a match of ``parts`` start inside ``comps``, consume the rest of them, and still
    need a component? (Then the path of ``comps`` is on the way to a protected name.) A
    leading ``**`` only restates "at any depth" and is ignored, so that not every directory
    leads to ``**/hooks``."""
    i = 0
    while i < len(parts) and parts[i] == GLOB_ANY:
        i += 1
    parts = parts[i:]
    for start in range(len(comps)):
        states = _closure(parts, {0})
        for name in comps[start:]:
            states = _step(parts, states, name)
            if not states:
                break
        for pos in states:
            if any(p != GLOB_ANY for p in parts[pos:]):
                return True
    return False


def name_match(pattern: str, path: str, syntax: PathSyntax = POSIX) -> NameMatch | None:
    """How ``path`` (its components, wherever the pattern starts) meets protected name
    ``pattern``: :attr:`NameMatch.COVERS` before :attr:`NameMatch.LEADS`, else None. A
    pattern of nothing but ``**`` names no place (the guard refuses it) and matches nothing."""
    parts = pattern_parts(pattern, syntax)
    if all(p == GLOB_ANY for p in parts):
        return None
    comps = tuple(syntax.key(c) for c in syntax.components(path))
    if covers(parts, comps):
        return NameMatch.COVERS
    return NameMatch.LEADS if leads(parts, comps) else None


def name_covers(pattern: str, path: str, syntax: PathSyntax = POSIX) -> bool:
    """``path`` is a match of protected name ``pattern``, or lies beneath one."""
    return name_match(pattern, path, syntax) is NameMatch.COVERS
