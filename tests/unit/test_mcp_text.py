"""What the MCP server's text looks like to a model: terminal output without escape
sequences (ansi.py), argument errors in one sentence, and which SDK is missing or too old."""

from __future__ import annotations

import importlib.metadata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ringfence import ansi
from ringfence.cli import mcp as cli_mcp
from ringfence.mcp_compat import argument_error, describe_type


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("a\r\nb\r\n", "a\nb\n"),
        ("10%\r50%\r100%\n", "100%\n"),
        ("ab\bc", "ac"),
        ("\x1b]0;title\x07x\x1b]8;;https://e.example\x1b\\link\x1b]8;;\x1b\\", "xlink"),
        ("\x1bP+q\x1b\\ok", "ok"),
        ("\x1b(B\x1b=\x1b7z\x1b8", "z"),
        ("\x9b31mc1\x9d0;t\x9c!", "c1!"),
        ("tab\tbell\x07nul\x00del\x7f", "tab\tbellnuldel"),
        ("\x1b[?2004hprompt$ ", "prompt$ "),
    ],
)
def test_escape_sequences_and_controls_are_removed(raw: str, plain: str) -> None:
    assert ansi.strip(raw) == plain


def test_a_sequence_split_across_reads_is_held_until_complete() -> None:
    c = ansi.Cleaner()
    assert [c.feed(p) for p in ("a\x1b[3", "1mb\x1b]0;t", "i\x1b", "\\c\r", "\nd")] == [
        "a",
        "b",
        "",
        "c",
        "\nd",
    ]
    assert c.feed("\x1b[", final=True) == "["  # the end: nothing more is coming
    held = ansi.Cleaner()
    held.feed("x\x1b[3")
    assert held.take_held() == "\x1b[3"


def test_what_never_ends_is_not_held_forever() -> None:
    c = ansi.Cleaner()
    out = c.feed("\x1b]" + "x" * (ansi.HOLD_LIMIT + 10))
    assert out.endswith("x" * 100)


# Plain text, controls, the introducers and pieces of real sequences, mixed at random.
_PIECES = st.sampled_from(
    ["a", "z", " ", "\n", "\t", "\r", "\b", "\x1b", "\x9b", "\x9d", "\x9c", "\x07", "\x00",
     "\x7f", "[", "]", "31m", ";", "\\", "P", "é", "\u2028", "\x85", "\x1b[0m", "\x1b]0;t\x07"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=40).map("".join))
def test_the_plain_text_shortcut_gives_what_the_full_cleaning_gives(text: str) -> None:
    """clean() returns text without controls unchanged, without looking at each line: the
    result must be exactly what the line-by-line cleaning makes of it, for any text."""
    assert ansi.clean(text) == ansi._clean_lines(text)


def test_plain_text_comes_back_as_it_is() -> None:
    text = "line one\ttabbed\nline two é\n\n"
    assert ansi.clean(text) is text


class _Args(BaseModel):
    command: str | list[str]
    cwd: str | None = None
    timeout_s: float = 1.0
    pty: bool = False
    ids: list[int] = []


def _error(**given: object) -> str:
    with pytest.raises(ValidationError) as e:
        _Args.model_validate(given)
    return argument_error("run_command", e.value, _Args.model_json_schema())


def test_argument_errors_are_one_sentence() -> None:
    assert _error(command="x", timeout_s="soon") == (
        'run_command: timeout_s must be a number, not "soon".'
    )
    assert _error(command=5, pty="maybe") == (
        "run_command: command must be a string or a list of strings, not 5; "
        'pty must be true or false, not "maybe".'
    )
    assert _error(cwd=".") == "run_command: command is required (a string or a list of strings)."
    long = _error(command="x", ids="y" * 500)
    assert long.endswith('..."'[:-1] + ".") or len(long) < 200
    assert (
        describe_type({"type": "array", "items": {"type": "integer"}}) == "a list of whole numbers"
    )
    assert describe_type({"enum": ["a", "b"]}) == 'one of "a", "b"'


@pytest.mark.parametrize(
    ("version", "says"),
    [
        (None, "which is not installed"),
        ("1.9.4", "mcp 1.9.4 is too old"),
        ("2.1.0", "mcp 2.1.0 is too old"),
        ("0.9.1", "mcp 0.9.1 is too old"),
        ("1.23.0", None),
        ("1.30.0", None),
        ("2.3.0", None),
    ],
)
def test_a_missing_or_old_sdk_is_named(
    monkeypatch: pytest.MonkeyPatch, version: str | None, says: str | None
) -> None:
    def installed(name: str) -> str:
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", installed)
    problem = cli_mcp.sdk_problem()
    if says is None:
        assert problem is None
    else:
        assert problem is not None and says in problem
        assert "1.23 or later or 2.3 or later" in problem and "ringfence[mcp]" in problem
