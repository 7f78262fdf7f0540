"""Which paths the name guard protects: a pure matcher, no I/O.

The supervisor (the ``nameguard`` package) hands these functions the canonical absolute path a
syscall would create, remove or rename, and they answer with the rule that forbids it (or
``None``). Keeping the decision pure makes it testable against an independent oracle and
keeps the code that touches the kernel small.

Semantics
---------
* ``protected_paths`` are absolute: the path itself and everything beneath it.
* ``protected_names`` are patterns of path components (``"*"`` = exactly one component,
  ``"**"`` = zero or more, anything else = that exact name). They apply only under a writable
  root, and only to the components *below* that root (the outermost root when roots nest):
  a path is protected when the pattern matches a contiguous, non-empty run of those
  components and the path is the run's end or beneath it.
* :func:`may_hold_protected` answers for a directory or symlink that appears at a path by
  rename, link or symlink: it could bring protected paths with it when a pattern's match
  could *start* at or above the new name and end beneath it (``x/.git`` with ``.git/hooks``),
  or when the new name is an ancestor of a ``protected_paths`` entry. Matches that lie wholly
  inside the moved tree are not counted: every writable place is a writable root, so such a
  tree was checked by the same patterns where it was built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ringfence.policy import semantics
from ringfence.policy.semantics import GLOB_ANY, GLOB_ONE


def check_canonical(path: str) -> None:
    """Raise ValueError unless ``path`` is absolute and canonical.

    Canonical: starts with ``/``, no empty, ``.`` or ``..`` component, no trailing slash (except
    ``/`` itself), no NUL. The supervisor resolves paths before asking, so anything else means
    a bug there; refusing loudly is safer than guessing what the caller meant.
    """
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ValueError(f"not an absolute path: {path!r}")
    if path == "/":
        return
    parts = path[1:].split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a canonical path: {path!r}")


@dataclass(frozen=True)
class _Pattern:
    text: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class GuardRules:
    """The protection rules for one sandbox (see the module docstring for the semantics)."""

    writable_roots: tuple[str, ...]
    protected_paths: tuple[str, ...] = ()
    protected_names: tuple[str, ...] = ()
    # Git directories (see the gitguard package): "allowlist" (only git's ordinary data is writable,
    # config by checked content), "strict" (all read-only) or "off".
    git: str = "off"
    # Directories writable only because git needs them (a linked worktree's git directory and
    # common directory outside the writable roots): only the git rules apply there.
    git_roots: tuple[str, ...] = ()
    # Directories the git rules govern that no pointer may name: the sandbox's /tmp layer. It
    # lasts on the host under another path (ringfence's cache), where host git may later be
    # led by a symlink the command left: a repository built there must pass the same checks.
    git_private_roots: tuple[str, ...] = ()
    # core.hooksPath directories named by a repository's config at start, and the user's
    # global core.hooksPath when it is relative (then it names <worktree>/<it> everywhere).
    hooks_dirs: tuple[str, ...] = ()
    global_hooks_path: str | None = None
    home: str | None = None  # what ~/ means in a git config path
    # Unix sockets on disk the command may connect or send to: those beneath ``socket_roots``
    # (the writable roots, git roots, the private /tmp and /dev/shm) or at or beneath an
    # ``allow_sockets`` entry (``--allow-socket``; a socket or a directory of them).
    socket_roots: tuple[str, ...] = ()
    allow_sockets: tuple[str, ...] = ()
    # Directories (a home directory inside a writable root) whose hidden entries, ``.*``, are
    # all protected, existing or not: what a shell, editor, language runtime or desktop
    # reads from there at start is an open-ended list, so none of it is writable. A writable
    # root beneath one (ringfence's tool cache, a --writable ~/.x) is excepted.
    dot_dirs: tuple[str, ...] = ()
    _patterns: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False, default=())
    # A path can only match if one of its components is some pattern's first literal component
    # (None when a pattern starts with a glob): a cheap test that clears most paths at once.
    _first_names: frozenset[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for path in (
            *self.writable_roots,
            *self.protected_paths,
            *self.git_roots,
            *self.git_private_roots,
        ):
            check_canonical(path)
        for path in (*self.hooks_dirs, *self.socket_roots, *self.allow_sockets, *self.dot_dirs):
            check_canonical(path)
        if self.git not in ("off", "allowlist", "strict"):
            raise ValueError(f"git mode {self.git!r} is not off, allowlist or strict")
        patterns = []
        for text in self.protected_names:
            parts = tuple(text.split("/"))
            if text.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
                raise ValueError(
                    f"protected name {text!r} must be relative components, like '.git/hooks'"
                )
            if all(p == GLOB_ANY for p in parts):
                raise ValueError(f"protected name {text!r} would protect every path")
            patterns.append(_Pattern(text, parts))
        object.__setattr__(self, "_patterns", tuple(patterns))
        firsts = {p.parts[0] for p in patterns}
        if not firsts & {GLOB_ONE, GLOB_ANY}:
            object.__setattr__(self, "_first_names", frozenset(firsts))

    # Indexes over the lists above: each question a guarded call asks costs the length of
    # its path, not the number of roots or protected paths (thousands in a large policy).
    @cached_property
    def _roots_index(self) -> semantics.RootIndex:
        return semantics.RootIndex(self.writable_roots)

    @cached_property
    def _protected_index(self) -> semantics.RootIndex:
        return semantics.RootIndex(self.protected_paths)

    @cached_property
    def _socket_index(self) -> semantics.RootIndex:
        return semantics.RootIndex((*self.socket_roots, *self.allow_sockets))


def _relative_to_root(rules: GuardRules, path: str) -> tuple[str, ...] | None:
    """The components below the outermost writable root holding ``path`` (the shortest; the
    first given among equally long ones), else None."""
    roots = rules.writable_roots
    held = rules._roots_index.holders(path)
    if not held:
        return None
    outer = min(held, key=lambda i: (len(roots[i]), i))
    return semantics.relative_components(path, roots[outer])


def protected_by(rules: GuardRules, path: str) -> str | None:
    """The rule text that protects ``path`` (canonical, absolute), else None."""
    check_canonical(path)
    top = rules._protected_index.first_under(path)
    if top is not None:
        return top
    rel = _relative_to_root(rules, path)
    if rel is not None and (rules._first_names is None or not rules._first_names.isdisjoint(rel)):
        for pattern in rules._patterns:
            if semantics.covers(pattern.parts, rel):
                return pattern.text
    return _dot_entry(rules, path)  # named by a pattern first: the more telling rule


def _dot_entry(rules: GuardRules, path: str) -> str | None:
    """``<dir>/.*`` when ``path`` is, or lies beneath, a hidden entry of a ``dot_dirs``
    directory and not beneath a writable root nested there."""
    for d in rules.dot_dirs:
        rel = semantics.relative_components(path, d)
        if not rel or not rel[0].startswith("."):
            continue
        roots = rules.writable_roots
        nested = any(
            roots[i] != d and semantics.is_under(roots[i], d)
            for i in rules._roots_index.holders(path)
        )
        if not nested:
            return f"{d.rstrip('/')}/.*"
    return None


def may_hold_protected(rules: GuardRules, path: str) -> str | None:
    """For a directory or symlink appearing at ``path``: the rule it could bring, else None.

    Also true when ``path`` itself is protected, so callers can use this one check for
    directories and symlinks.
    """
    rule = protected_by(rules, path)
    if rule is not None:
        return rule
    top = rules._protected_index.first_beneath(path)
    if top is not None:
        return top
    rel = _relative_to_root(rules, path)
    if rel is None:
        return None
    for pattern in rules._patterns:
        if semantics.leads(pattern.parts, rel):
            return pattern.text
    return None


def is_ancestor_of_protected_path(rules: GuardRules, path: str) -> str | None:
    """The ``protected_paths`` entry strictly beneath ``path``, else None.

    Removing or renaming such an ancestor would take the protected path with it.
    """
    check_canonical(path)
    # canonical paths: ``top != path`` is "strictly beneath"
    top = rules._protected_index.first_beneath(path, strict=True)
    if top is not None:
        return top
    for d in rules.dot_dirs:  # the directory itself too: it takes all its hidden entries
        if semantics.is_under(d, path):
            return f"{d.rstrip('/')}/.*"
    return None


SOCKET_OUTSIDE = "unix socket outside the writable roots"
"""The rule a refused connect or send to a unix socket on disk is reported with (escalation
turns it into ``--allow-socket PATH``)."""


def socket_refused(rules: GuardRules, path: str) -> str | None:
    """Why the command may not connect or send to the unix socket at ``path`` (canonical,
    absolute: where the socket file really is), else None.

    Allowed: beneath a writable root, a linked worktree's git directory, the sandbox's private
    /tmp or /dev/shm (``socket_roots``), or at or beneath an ``allow_sockets`` entry. Everything
    else (a host daemon's socket on the read-only root) is refused.
    """
    check_canonical(path)
    if rules._socket_index.holders(path):
        return None
    return SOCKET_OUTSIDE
