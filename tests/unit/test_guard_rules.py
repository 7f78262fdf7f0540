"""The name guard's pure matcher, by example and against an independent regex oracle."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.platforms.linux.guard_rules import (
    GuardRules,
    check_canonical,
    is_ancestor_of_protected_path,
    may_hold_protected,
    protected_by,
)

NAMES = (".envrc", ".vscode", ".git/hooks", ".git/config", ".git/modules/**/hooks", ".mcp.json")
RULES = GuardRules(
    writable_roots=("/ws", "/ws/nested", "/other"),
    protected_paths=("/ws/keep/this", "/outside/secret"),
    protected_names=NAMES,
)


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/ws/.envrc", ".envrc"),
        ("/ws/a/b/.envrc", ".envrc"),
        ("/ws/.envrc/x", ".envrc"),  # beneath a protected name
        ("/ws/.vscode/tasks.json", ".vscode"),
        ("/ws/sub/.git/hooks/pre-commit", ".git/hooks"),
        ("/ws/.git/hooks", ".git/hooks"),
        ("/ws/.git/config", ".git/config"),
        ("/ws/.git/modules/a/hooks/x", ".git/modules/**/hooks"),
        ("/ws/.git/modules/a/b/c/hooks", ".git/modules/**/hooks"),
        ("/ws/.git/modules/hooks", ".git/modules/**/hooks"),  # ** = zero components
        ("/ws/nested/.mcp.json", ".mcp.json"),
        ("/ws/keep/this", "/ws/keep/this"),
        ("/ws/keep/this/deep", "/ws/keep/this"),
        ("/outside/secret/x", "/outside/secret"),  # protected_paths apply everywhere
        ("/other/.envrc", ".envrc"),
        ("/ws/.git", None),
        ("/ws/.git/config.lock", None),
        ("/ws/.git/hooksx", None),
        ("/ws/x.envrc", None),
        ("/ws/.git/modules/a/nothooks", None),
        ("/ws/keep", None),
        ("/ws/keep/thisx", None),
        ("/ws", None),
        ("/elsewhere/.envrc", None),  # not under a writable root
        ("/", None),
    ],
)
def test_protected_by(path: str, rule: str | None) -> None:
    assert protected_by(RULES, path) == rule


def test_names_match_below_the_root_only() -> None:
    rules = GuardRules(writable_roots=("/home/u/.vscode/ws",), protected_names=(".vscode",))
    assert protected_by(rules, "/home/u/.vscode/ws/file") is None
    assert protected_by(rules, "/home/u/.vscode/ws/.vscode") == ".vscode"


def test_star_is_one_component() -> None:
    rules = GuardRules(writable_roots=("/w",), protected_names=("a/*/c",))
    assert protected_by(rules, "/w/a/b/c") == "a/*/c"
    assert protected_by(rules, "/w/a/c") is None
    assert protected_by(rules, "/w/a/b/b/c") is None


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/ws/x/.git", ".git/hooks"),  # could bring x/.git/hooks
        ("/ws/.git", ".git/hooks"),
        ("/ws/.git/modules", ".git/modules/**/hooks"),
        ("/ws/.git/modules/a/b", ".git/modules/**/hooks"),
        ("/ws/.envrc", ".envrc"),  # itself protected
        ("/ws/keep", "/ws/keep/this"),  # ancestor of a protected path
        ("/outside", "/outside/secret"),
        ("/ws/x", None),
        ("/ws/x/.gitx", None),
        ("/ws/.git/objects", None),
        ("/elsewhere/.git", None),
    ],
)
def test_may_hold_protected(path: str, rule: str | None) -> None:
    assert may_hold_protected(RULES, path) == rule


def test_leading_double_star_does_not_make_every_dir_suspect() -> None:
    rules = GuardRules(writable_roots=("/w",), protected_names=("**/hooks",))
    assert protected_by(rules, "/w/a/hooks") == "**/hooks"
    assert may_hold_protected(rules, "/w/a") is None


def test_ancestor_of_protected_path() -> None:
    assert is_ancestor_of_protected_path(RULES, "/ws/keep") == "/ws/keep/this"
    assert is_ancestor_of_protected_path(RULES, "/ws") == "/ws/keep/this"
    assert is_ancestor_of_protected_path(RULES, "/ws/keep/this") is None
    assert is_ancestor_of_protected_path(RULES, "/ws/other") is None


@pytest.mark.parametrize(
    "bad", ["", "relative", "/a//b", "/a/", "/a/./b", "/a/../b", "/a/\0", "/..", "//"]
)
def test_non_canonical_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_canonical(bad)
    with pytest.raises(ValueError):
        protected_by(RULES, bad)


@pytest.mark.parametrize("bad", ["/abs", "a//b", "../x", "./x", "**", "**/**", "a/"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        GuardRules(writable_roots=("/w",), protected_names=(bad,))


def test_bad_roots_are_refused() -> None:
    with pytest.raises(ValueError):
        GuardRules(writable_roots=("w",))
    with pytest.raises(ValueError):
        GuardRules(writable_roots=("/w",), protected_paths=("/w/",))


# ------------------------------------------------------------------ properties

component = st.sampled_from(["a", "b", ".git", "hooks", "modules", "config", ".envrc", "x"])
pattern_part = st.one_of(component, st.just("*"), st.just("**"))
patterns = st.lists(pattern_part, min_size=1, max_size=4).filter(
    lambda p: any(x != "**" for x in p)
)
rel_paths = st.lists(component, min_size=0, max_size=6)


def oracle(pattern: list[str], comps: list[str]) -> bool:
    """Regex reference: does the pattern match a non-empty contiguous run of comps?"""
    rx = "".join(
        "(?:[^/]+/)*" if p == "**" else "[^/]+/" if p == "*" else re.escape(p) + "/"
        for p in pattern
    )
    for i in range(len(comps)):
        for j in range(i + 1, len(comps) + 1):
            if re.fullmatch(rx, "".join(c + "/" for c in comps[i:j])):
                return True
    return False


def as_path(comps: list[str]) -> str:
    return "/w" + "".join("/" + c for c in comps)


@settings(max_examples=400, deadline=None, database=None)
@given(patterns, rel_paths)
def test_protected_by_matches_the_regex_oracle(pattern: list[str], comps: list[str]) -> None:
    rules = GuardRules(writable_roots=("/w",), protected_names=("/".join(pattern),))
    assert (protected_by(rules, as_path(comps)) is not None) == oracle(pattern, comps)


@settings(max_examples=300, deadline=None, database=None)
@given(patterns, rel_paths, rel_paths)
def test_protection_is_inherited_by_descendants(
    pattern: list[str], comps: list[str], more: list[str]
) -> None:
    rules = GuardRules(writable_roots=("/w",), protected_names=("/".join(pattern),))
    if protected_by(rules, as_path(comps)):
        assert protected_by(rules, as_path(comps + more))


@settings(max_examples=400, deadline=None, database=None)
@given(patterns, rel_paths, st.lists(component, min_size=1, max_size=4))
def test_may_hold_catches_every_match_that_crosses_the_new_name(
    pattern: list[str], dest: list[str], inside: list[str]
) -> None:
    """If moving a tree containing ``inside`` to ``dest`` makes a path protected that was not
    protected inside the tree where it was built, may_hold_protected(dest) must say so."""
    rules = GuardRules(writable_roots=("/w",), protected_names=("/".join(pattern),))
    after = protected_by(rules, as_path(dest + inside))
    before = protected_by(rules, as_path(inside))
    if after and not before:
        assert may_hold_protected(rules, as_path(dest))


def test_socket_rule() -> None:
    from ringfence.platforms.linux.guard_rules import SOCKET_OUTSIDE, socket_refused

    r = GuardRules(
        writable_roots=("/w",),
        socket_roots=("/w", "/tmp", "/dev/shm"),
        allow_sockets=("/run/docker.sock", "/run/user/1000"),
    )
    for ok in ("/w/s", "/w/a/b.sock", "/tmp/x", "/dev/shm/y", "/run/docker.sock",
               "/run/user/1000/bus"):  # fmt: skip
        assert socket_refused(r, ok) is None, ok
    for bad in ("/var/run/postgresql/.s.PGSQL.5432", "/run/docker.sock2", "/wx/s", "/run/user",
                "/tmpx/s", "/run/user/1001/bus"):  # fmt: skip
        assert socket_refused(r, bad) == SOCKET_OUTSIDE, bad
    with pytest.raises(ValueError):
        GuardRules(writable_roots=(), allow_sockets=("rel/s",))


def test_every_hidden_entry_of_a_dot_dir_is_protected_but_nested_roots() -> None:
    from ringfence.platforms.linux.guard_rules import (
        GuardRules,
        is_ancestor_of_protected_path,
        protected_by,
    )

    cache = "/home/u/.cache/ringfence/workspaces/w/cache"
    rules = GuardRules(
        writable_roots=("/home/u", cache),
        protected_names=(".bashrc",),
        dot_dirs=("/home/u",),
    )
    assert protected_by(rules, "/home/u/.bash_aliases") == "/home/u/.*"
    assert protected_by(rules, "/home/u/.local/lib/python3/site-packages/x.pth") == "/home/u/.*"
    assert protected_by(rules, "/home/u/.bashrc") == ".bashrc"  # its own name first
    assert protected_by(rules, "/home/u/notes.txt") is None
    assert protected_by(rules, "/home/u/proj/.envrc") is None  # hidden, but not home's entry
    assert protected_by(rules, cache + "/pip/x") is None  # a writable root nested there
    assert is_ancestor_of_protected_path(rules, "/home/u") == "/home/u/.*"
    assert is_ancestor_of_protected_path(rules, "/home") == "/home/u/.*"
    assert is_ancestor_of_protected_path(rules, "/home/u/proj") is None
