"""The indexes that make large policies cheap answer exactly as the loops they replace.

``RootIndex`` and ``PrefixSet`` (policy/semantics.py) stand in for loops over a list of roots
in the compiler, the mount list and the name guard; each property here runs the old loop
(kept in this file as the reference) next to the index on the same random input: the same
root, the first in order, for every path, including the edges (``/``, trailing separators,
empty strings, duplicates, letter case under a caseless syntax).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.platforms.linux import guard_rules
from ringfence.platforms.linux.guard_rules import (
    SOCKET_OUTSIDE,
    GuardRules,
    is_ancestor_of_protected_path,
    may_hold_protected,
    protected_by,
    socket_refused,
)
from ringfence.policy import semantics
from ringfence.policy.semantics import (
    MACOS,
    POSIX,
    WINDOWS,
    PathSyntax,
    PrefixSet,
    RootIndex,
    first_under,
    is_strictly_under,
    is_under,
)

_names = st.sampled_from(["a", "b", "A", "ab", ".git", "hooks", "x y", "é"])
_syntaxes = st.sampled_from([POSIX, MACOS, WINDOWS])


@st.composite
def _loose_paths(draw: st.DrawFn, sep: str = "/") -> str:
    """Any spelling: absolute or not, doubled and trailing separators, the root, nothing."""
    comps = draw(st.lists(_names, max_size=4))
    lead = draw(st.sampled_from(["", sep, sep + sep]))
    trail = draw(st.sampled_from(["", sep]))
    return lead + sep.join(comps) + trail


def _paths_for(syntax: PathSyntax) -> st.SearchStrategy[str]:
    return _loose_paths(syntax.sep)


@settings(max_examples=600, deadline=None, database=None)
@given(st.data(), _syntaxes)
def test_root_index_answers_as_the_loops(data: st.DataObject, syntax: PathSyntax) -> None:
    roots = data.draw(st.lists(_paths_for(syntax), max_size=8))
    paths = data.draw(st.lists(_paths_for(syntax), min_size=1, max_size=8))
    index = RootIndex(roots, syntax)
    for path in paths:
        assert index.first_under(path) == first_under(path, roots, syntax)
        assert index.holders(path) == [i for i, r in enumerate(roots) if is_under(path, r, syntax)]
        assert index.beneath(path) == [i for i, r in enumerate(roots) if is_under(r, path, syntax)]
        assert index.beneath(path, strict=True) == [
            i for i, r in enumerate(roots) if is_strictly_under(r, path, syntax)
        ]
        want = next((r for r in roots if is_under(r, path, syntax)), None)
        assert index.first_beneath(path) == want


@settings(max_examples=400, deadline=None, database=None)
@given(st.data(), _syntaxes)
def test_prefix_set_answers_as_the_loop(data: st.DataObject, syntax: PathSyntax) -> None:
    roots = data.draw(st.lists(_paths_for(syntax), max_size=8))
    paths = data.draw(st.lists(_paths_for(syntax), min_size=1, max_size=8))
    fresh = PrefixSet(syntax)
    for r in roots:
        fresh.add(r)
    for path in paths:
        assert fresh.strictly_holds(path) == any(is_strictly_under(path, r, syntax) for r in roots)


def test_root_index_keeps_the_first_of_nested_and_repeated_roots() -> None:
    index = RootIndex(("/w/a/b", "/w", "/w/a", "/w/", "/"))
    assert index.first_under("/w/a/b/c") == "/w/a/b"
    assert index.first_under("/w/a/x") == "/w"
    assert index.first_under("/elsewhere") == "/"
    assert index.first_beneath("/w") == "/w/a/b"
    assert index.first_beneath("/w", strict=True) == "/w/a/b"
    assert index.first_beneath("/w/a", strict=True) == "/w/a/b"
    assert RootIndex(("",)).first_under("/x") is None


# -- the name guard: the loops it used before, kept here as the reference ---------------------


def _ref_relative(rules: GuardRules, path: str) -> tuple[str, ...] | None:
    for root in sorted(rules.writable_roots, key=len):
        rel = semantics.relative_components(path, root)
        if rel is not None:
            return rel
    return None


def _ref_dot_entry(rules: GuardRules, path: str) -> str | None:
    for d in rules.dot_dirs:
        rel = semantics.relative_components(path, d)
        if not rel or not rel[0].startswith("."):
            continue
        nested = any(r != d and is_under(r, d) and is_under(path, r) for r in rules.writable_roots)
        if not nested:
            return f"{d.rstrip('/')}/.*"
    return None


def _ref_protected_by(rules: GuardRules, path: str) -> str | None:
    for top in rules.protected_paths:
        if is_under(path, top):
            return top
    rel = _ref_relative(rules, path)
    if rel is not None:
        for text in rules.protected_names:
            if semantics.covers(tuple(text.split("/")), rel):
                return text
    return _ref_dot_entry(rules, path)


def _ref_may_hold(rules: GuardRules, path: str) -> str | None:
    rule = _ref_protected_by(rules, path)
    if rule is not None:
        return rule
    for top in rules.protected_paths:
        if is_under(top, path):
            return top
    rel = _ref_relative(rules, path)
    if rel is None:
        return None
    for text in rules.protected_names:
        if semantics.leads(tuple(text.split("/")), rel):
            return text
    return None


def _ref_ancestor(rules: GuardRules, path: str) -> str | None:
    for top in rules.protected_paths:
        if top != path and is_under(top, path):
            return top
    for d in rules.dot_dirs:
        if is_under(d, path):
            return f"{d.rstrip('/')}/.*"
    return None


def _ref_socket(rules: GuardRules, path: str) -> str | None:
    for top in (*rules.socket_roots, *rules.allow_sockets):
        if is_under(path, top):
            return None
    return SOCKET_OUTSIDE


_canon = st.lists(_names, max_size=4).map(lambda c: "/" + "/".join(c))
_canon_lists = st.lists(_canon, max_size=6)


@settings(max_examples=600, deadline=None, database=None)
@given(
    _canon_lists,
    _canon_lists,
    st.lists(st.sampled_from([".git/hooks", "a", "*/b", "a/**/hooks", ".git"]), max_size=3),
    _canon_lists,
    _canon_lists,
    st.lists(_canon, max_size=2),
    st.lists(_canon, min_size=1, max_size=8),
)
def test_guard_rules_answer_as_the_loops(  # noqa: PLR0917 - one argument per strategy
    roots: Sequence[str],
    protected: Sequence[str],
    names: Sequence[str],
    sockets: Sequence[str],
    allowed: Sequence[str],
    dot_dirs: Sequence[str],
    paths: Sequence[str],
) -> None:
    rules = GuardRules(
        writable_roots=tuple(roots),
        protected_paths=tuple(protected),
        protected_names=tuple(names),
        socket_roots=tuple(sockets),
        allow_sockets=tuple(allowed),
        dot_dirs=tuple(dot_dirs),
    )
    for path in paths:
        assert protected_by(rules, path) == _ref_protected_by(rules, path)
        assert may_hold_protected(rules, path) == _ref_may_hold(rules, path)
        assert is_ancestor_of_protected_path(rules, path) == _ref_ancestor(rules, path)
        assert socket_refused(rules, path) == _ref_socket(rules, path)
        assert guard_rules._relative_to_root(rules, path) == _ref_relative(rules, path)


def test_guard_rules_at_scale_match_the_loops() -> None:
    """A thousand protected paths and a hundred roots, every path of the tree asked."""
    roots = (*tuple(f"/r{i:03d}" for i in range(100)), "/r001/in")
    protected = (*tuple(f"/r{i % 100:03d}/p{i:04d}" for i in range(1000)), "/r002")
    rules = GuardRules(
        writable_roots=roots,
        protected_paths=protected,
        protected_names=(".git/hooks", ".envrc"),
        socket_roots=(*roots, "/tmp"),
        dot_dirs=("/r003",),
    )
    paths = ["/", "/r001", "/r001/in/.envrc", "/r003/.x", "/tmp/s", "/nowhere/p0001"]
    paths += [f"/r{i % 100:03d}/p{i:04d}/x" for i in range(0, 1000, 7)]
    paths += [f"/r{i:03d}/.git/hooks/pre-commit" for i in range(0, 100, 3)]
    paths += [f"/r{i:03d}/p{i:04d}x" for i in range(0, 100, 5)]
    for path in paths:
        assert protected_by(rules, path) == _ref_protected_by(rules, path)
        assert may_hold_protected(rules, path) == _ref_may_hold(rules, path)
        assert is_ancestor_of_protected_path(rules, path) == _ref_ancestor(rules, path)
        assert socket_refused(rules, path) == _ref_socket(rules, path)
