"""policy/semantics.py against oracles written apart from it, and each backend against it.

The oracles work on lists of components (prefixes, brute-force pattern runs), never on
string prefixes, so the string arithmetic of the code (trailing separators, ``/`` as root,
letter case) is checked by something that does not share its shape.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.platforms.linux.guard_rules import GuardRules, may_hold_protected, protected_by
from ringfence.platforms.macos import plan as mac_plan
from ringfence.policy import semantics, winpaths
from ringfence.policy.model import PathStyle
from ringfence.policy.semantics import MACOS, POSIX, WINDOWS, NameMatch, PathSyntax

# ------------------------------------------------------------------------------ oracles


def _comps(path: str, syntax: PathSyntax) -> list[str]:
    return [syntax.key(c) for c in path.split(syntax.sep) if c]


def under_oracle(path: str, root: str, syntax: PathSyntax) -> bool:
    """``root``'s components are a prefix of ``path``'s."""
    if not path or not root:
        return False
    p, r = _comps(path, syntax), _comps(root, syntax)
    return p[: len(r)] == r


def _full(pattern: list[str], comps: list[str]) -> bool:
    """Does ``pattern`` match exactly ``comps`` (``*`` one, ``**`` zero or more)?"""
    if not pattern:
        return not comps
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_full(rest, comps[i:]) for i in range(len(comps) + 1))
    return bool(comps) and head in ("*", comps[0]) and _full(rest, comps[1:])


def covers_oracle(pattern: list[str], comps: list[str]) -> bool:
    return any(
        _full(pattern, comps[i:j]) for i in range(len(comps)) for j in range(i + 1, len(comps) + 1)
    )


def leads_oracle(pattern: list[str], comps: list[str]) -> bool:
    """Some suffix of ``comps`` matches a prefix of the pattern (leading ``**`` dropped) whose
    rest still names a component."""
    while pattern and pattern[0] == "**":
        pattern = pattern[1:]
    return any(
        _full(pattern[:k], comps[i:]) and any(p != "**" for p in pattern[k:])
        for i in range(len(comps))
        for k in range(len(pattern) + 1)
    )


# ---------------------------------------------------------------------------- strategies

_names = st.sampled_from(["a", "b", "A", "B", "ab", ".git", ".GIT", "hooks", "x"])
_comp_lists = st.lists(_names, min_size=0, max_size=5)
_syntaxes = st.sampled_from([POSIX, MACOS, WINDOWS])


def _spell(comps: list[str], syntax: PathSyntax, trailing: bool) -> str:
    text = "C:\\" + "\\".join(comps) if syntax is WINDOWS else "/" + "/".join(comps)
    return text + syntax.sep if trailing and comps else text


# --------------------------------------------------------------------------- under a root


@settings(max_examples=500, deadline=None, database=None)
@given(_comp_lists, _comp_lists, _syntaxes, st.booleans(), st.booleans())
def test_is_under_matches_the_component_oracle(
    path: list[str], root: list[str], syntax: PathSyntax, slash_p: bool, slash_r: bool
) -> None:
    p, r = _spell(path, syntax, slash_p), _spell(root, syntax, slash_r)
    assert semantics.is_under(p, r, syntax) == under_oracle(p, r, syntax), (p, r)
    strictly = under_oracle(p, r, syntax) and _comps(p, syntax) != _comps(r, syntax)
    assert semantics.is_strictly_under(p, r, syntax) == strictly


@settings(max_examples=200, deadline=None, database=None)
@given(_comp_lists, _comp_lists, _comp_lists)
def test_relative_components_and_hidden_by(
    path: list[str], root: list[str], other: list[str]
) -> None:
    p, r, o = _spell(path, POSIX, False), _spell(root, POSIX, False), _spell(other, POSIX, False)
    rel = semantics.relative_components(p, r)
    if under_oracle(p, r, POSIX):
        assert rel == tuple(path[len(root) :])
    else:
        assert rel is None
    expected = next((d for d in (o, r) if under_oracle(p, d, POSIX)), None)
    assert semantics.hidden_by(p, (o, r)) == expected
    assert semantics.overlaps(p, r) == (under_oracle(p, r, POSIX) or under_oracle(r, p, POSIX))


@pytest.mark.parametrize(
    ("path", "root", "syntax", "under"),
    [
        ("/a/b", "/a/b/", POSIX, True),  # a trailing separator names the same directory
        ("/a/b/", "/a/b", POSIX, True),
        ("/a/bc", "/a/b", POSIX, False),  # component boundaries, not string prefixes
        ("/anything", "/", POSIX, True),
        ("/", "/", POSIX, True),
        ("/", "/a", POSIX, False),
        ("", "/", POSIX, False),  # the empty path is nowhere
        ("/a", "", POSIX, False),  # and the empty root holds nothing
        ("/A/b", "/a", POSIX, False),
        ("/A/b", "/a", MACOS, True),
        ("C:\\Work\\.GIT", "c:\\work", WINDOWS, True),
        ("C:\\x", "C:\\", WINDOWS, True),
        ("D:\\x", "C:\\", WINDOWS, False),
        ("C:\\workshop", "C:\\work", WINDOWS, False),
        ("\\\\srv\\share\\x", "\\\\SRV\\share", WINDOWS, True),
    ],
)
def test_is_under_edges(path: str, root: str, syntax: PathSyntax, under: bool) -> None:
    assert semantics.is_under(path, root, syntax) is under


# ------------------------------------------------------------------------ protected names

_pattern_parts = st.one_of(_names, st.just("*"), st.just("**"))
_patterns = st.lists(_pattern_parts, min_size=1, max_size=4).filter(
    lambda p: any(x != "**" for x in p)
)


@settings(max_examples=500, deadline=None, database=None)
@given(_patterns, _comp_lists)
def test_covers_and_leads_match_the_brute_force_oracle(
    pattern: list[str], comps: list[str]
) -> None:
    assert semantics.covers(pattern, comps) == covers_oracle(pattern, comps)
    assert semantics.leads(pattern, comps) == leads_oracle(pattern, comps)
    path = _spell(comps, POSIX, False)
    want = (
        NameMatch.COVERS
        if covers_oracle(pattern, comps)
        else NameMatch.LEADS
        if leads_oracle(pattern, comps)
        else None
    )
    assert semantics.name_match("/".join(pattern), path) is want


@settings(max_examples=300, deadline=None, database=None)
@given(_patterns, _comp_lists, _syntaxes)
def test_caseless_syntaxes_fold_both_sides(
    pattern: list[str], comps: list[str], syntax: PathSyntax
) -> None:
    path = "".join(syntax.sep + c for c in comps)  # relative to a root, as backends ask
    folded = [syntax.key(c) for c in comps]
    expected = covers_oracle([syntax.key(p) for p in pattern], folded)
    assert semantics.name_covers("/".join(pattern), path, syntax) == expected


def test_a_pattern_of_only_double_stars_matches_nothing() -> None:
    assert semantics.name_match("**", "/a/b") is None
    assert semantics.name_match("**/**", "/a/b") is None


# ------------------------------------------------------------ each backend agrees with it


@settings(max_examples=300, deadline=None, database=None)
@given(_patterns, _comp_lists)
def test_the_linux_guard_agrees(pattern: list[str], comps: list[str]) -> None:
    rules = GuardRules(writable_roots=("/w",), protected_names=("/".join(pattern),))
    path = "/w" + "".join("/" + c for c in comps)
    assert (protected_by(rules, path) is not None) == semantics.covers(pattern, comps)
    if comps and not semantics.covers(pattern, comps):
        assert (may_hold_protected(rules, path) is not None) == semantics.leads(pattern, comps)


_sb_names = st.sampled_from(["a", "B", "ab", ".git", ".Git", "hooks", "x-y", "c.d"])


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(_sb_names, min_size=1, max_size=3), _patterns, st.data())
def test_the_macos_profile_regexes_agree(
    root: list[str], pattern: list[str], data: st.DataObject
) -> None:
    """Seatbelt enforces regexes: the protected-name and path regexes of the profile mean
    what semantics says, in any letter case (APFS)."""
    rel = data.draw(st.lists(_sb_names, min_size=0, max_size=4))
    root_path = "/" + "/".join(root)
    path = root_path + "".join("/" + c for c in rel)
    named = re.match(mac_plan.name_regex(root_path, "/".join(pattern)), path) is not None
    assert named == semantics.name_covers("/".join(pattern), "/".join(rel), MACOS)
    other = "/" + "/".join(data.draw(st.lists(_sb_names, min_size=1, max_size=4)))
    hidden = re.match(mac_plan.path_regex(other), path) is not None
    assert hidden == (semantics.hidden_by(path, (other,), MACOS) is not None)


def test_windows_keys_are_the_semantics_keys() -> None:
    assert winpaths.key("C:\\Work\\X") == WINDOWS.key("C:\\Work\\X") == "c:\\work\\x"
    assert semantics.syntax_of(PathStyle.WINDOWS) is WINDOWS
    assert semantics.syntax_of(PathStyle.POSIX) is POSIX
