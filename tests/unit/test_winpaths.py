"""Windows paths in a policy: one canonical spelling, or a refusal that says why."""

from __future__ import annotations

import ntpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.errors import PolicyError
from ringfence.policy import winpaths
from ringfence.policy.model import PathStyle, Policy
from ringfence.policy.semantics import WINDOWS, is_under


@pytest.mark.parametrize(
    ("given_path", "canonical"),
    [
        ("C:\\work", "C:\\work"),
        ("c:/work/proj/", "C:\\work\\proj"),
        ("C:\\", "C:\\"),
        ("C:/", "C:\\"),
        ("C:\\a\\.\\b\\..\\c", "C:\\a\\c"),
        ("C:\\a\\\\b", "C:\\a\\b"),
        ("\\\\?\\C:\\work\\x", "C:\\work\\x"),
        ("\\??\\C:\\work", "C:\\work"),
        ("\\\\?\\UNC\\srv\\share\\d", "\\\\srv\\share\\d"),
        ("\\\\srv\\share", "\\\\srv\\share"),
        ("//srv/share/d/", "\\\\srv\\share\\d"),
        ("C:\\Program Files\\x", "C:\\Program Files\\x"),
        ("C:\\a\\icon.d", "C:\\a\\icon.d"),
        ("C:\\a\\console", "C:\\a\\console"),
    ],
)
def test_spellings_of_one_path_become_one(given_path: str, canonical: str) -> None:
    assert winpaths.normalize("p", given_path) == canonical


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        ("work\\x", "relative"),
        ("\\work", "relative"),
        ("C:work", "relative to the current directory of drive C:"),
        ("C:\\..\\x", "climbs above"),
        ("\\\\srv\\share\\..\\..\\x", "climbs above"),
        ("C:\\work\\file:stream", "alternate data stream"),
        ("C:\\work\\.git::$DATA", "alternate data stream"),
        ("C:\\work\\.git.", "ending in a dot or space"),
        ("C:\\work\\.git ", "ending in a dot or space"),
        ("C:\\work\\NUL", "reserved device name"),
        ("C:\\work\\com1.txt", "reserved device name"),
        ("C:\\work\\con.d", "reserved device name"),
        ("C:\\work\\aux .c", "reserved device name"),
        ("C:\\work\\a*b", "does not allow"),
        ("C:\\work\\a\x01b", "does not allow"),
        ("\\\\.\\PhysicalDrive0", "names a device"),
        ("\\\\?\\GLOBALROOT\\Device\\x", "device or volume path"),
        ("\\\\?\\Volume{0000}\\x", "device or volume path"),
        ("\\\\srv", "server\\share"),
    ],
)
def test_ambiguous_or_relative_paths_are_refused(bad: str, why: str) -> None:
    with pytest.raises(PolicyError, match=r"^where: ") as e:
        winpaths.normalize("where", bad)
    assert why in str(e.value)


def test_comparison_ignores_letter_case_and_respects_component_boundaries() -> None:
    assert is_under("C:\\Work\\.GIT\\hooks", "c:\\work", WINDOWS)
    assert is_under("C:\\work", "C:\\WORK", WINDOWS)
    assert not is_under("C:\\workshop", "C:\\work", WINDOWS)
    assert is_under("C:\\x", "C:\\", WINDOWS)
    assert not is_under("D:\\x", "C:\\", WINDOWS)


def test_parent_stops_at_roots() -> None:
    assert winpaths.parent("C:\\a\\b") == "C:\\a"
    assert winpaths.parent("C:\\a") == "C:\\"
    assert winpaths.parent("C:\\") == "C:\\"
    assert winpaths.parent("\\\\s\\sh\\a") == "\\\\s\\sh"
    assert winpaths.parent("\\\\s\\sh") == "\\\\s\\sh"


_part = st.text(alphabet="abcXYZ.-_ 1", min_size=1, max_size=6)
_sep = st.sampled_from(["\\", "/", "\\\\"])


@given(st.lists(st.one_of(_part, st.just(".."), st.just(".")), max_size=8), _sep)
def test_a_canonical_path_is_stable_and_never_climbs(parts: list[str], sep: str) -> None:
    raw = "C:" + sep + sep.join(parts)
    try:
        canonical = winpaths.normalize("p", raw)
    except PolicyError:
        return
    assert winpaths.normalize("p", canonical) == canonical  # idempotent
    assert canonical.startswith("C:\\")
    components = canonical[3:].split("\\") if canonical != "C:\\" else []
    assert ".." not in components and "." not in components and "" not in components
    assert "/" not in canonical
    # The same path ntpath reaches, when ntpath's reading is unambiguous.
    assert winpaths.key(canonical) == winpaths.key(ntpath.normpath(raw.replace("/", "\\")))


def test_a_windows_policy_holds_canonical_paths_only() -> None:
    ok = Policy(workspace="C:\\work", protected=("C:\\work\\x",), path_style=PathStyle.WINDOWS)
    assert ok.validate() is ok
    with pytest.raises(PolicyError, match=r"not in canonical form; use 'C:\\\\work'"):
        Policy(workspace="c:/work", path_style=PathStyle.WINDOWS).validate()
    with pytest.raises(PolicyError, match="alternate data stream"):
        Policy(
            workspace="C:\\work", writable_roots=("C:\\w:s",), path_style=PathStyle.WINDOWS
        ).validate()
    with pytest.raises(PolicyError, match="relative"):
        Policy(workspace="C:\\work", path_style=PathStyle.POSIX).validate()
    as_text = Policy(workspace="C:\\work", path_style="windows")  # type: ignore[arg-type]
    assert as_text.validate().deny_read_paths("C:\\Users\\al")[0] == "C:\\Users\\al\\.ssh"
    with pytest.raises(PolicyError, match="not posix or windows"):
        Policy(workspace="C:\\work", path_style="dos").validate()  # type: ignore[arg-type]


def test_default_hidden_paths_are_joined_the_windows_way() -> None:
    policy = Policy(workspace="C:\\work", path_style=PathStyle.WINDOWS)
    hidden = policy.deny_read_paths("C:\\Users\\al")
    assert "C:\\Users\\al\\.ssh" in hidden
    assert "C:\\Users\\al\\AppData\\Roaming\\GitHub CLI" in hidden
    assert all("/" not in p for p in hidden)
