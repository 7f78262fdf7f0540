"""The native one-shot path writes a clean command's audit record without ``json``: it must
be the same bytes as ``json.dumps(audit.command_record(...), sort_keys=True)``, and skip
redaction only where ``audit.redact`` would change nothing."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ringfence import audit, auditfile


@given(st.text(max_size=40))
def test_json_str_is_json_dumps(text: str) -> None:
    assert auditfile.json_str(text) == json.dumps(text)


def test_json_str_of_surrogate_escaped_bytes_is_json_dumps() -> None:
    text = b"caf\xc3\xa9 \xff\xfe \x01\x7f \xf0\x9f\x98\x80".decode("utf-8", "surrogateescape")
    assert auditfile.json_str(text) == json.dumps(text)


@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=4),
    st.floats(min_value=0, max_value=1e5, allow_nan=False),
    st.integers(min_value=0, max_value=255),
    st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
    st.one_of(st.none(), st.text(max_size=20)),
)
def test_a_clean_record_is_what_audit_writes(
    argv: list[str], duration: float, status: int, sig: int | None, cwd: str | None
) -> None:
    when = 1796400000.123456
    returncode = -sig if sig is not None else status
    record = audit.command_record(
        session="0123456789ab",
        argv=argv,
        cwd=cwd,
        policy_digest="sha256:00112233aabbccdd",
        returncode=returncode,
        duration=duration,
        plan="cached",
    )
    record["time"] = auditfile.iso_utc(when)
    record["argv"] = argv  # redaction is the caller's (tested below)
    line = auditfile.command_line(
        argv=argv,
        cwd=cwd,
        duration=duration,
        returncode=128 + sig if sig is not None else status,
        signal=sig,
        policy="sha256:00112233aabbccdd",
        plan="cached",
        session="0123456789ab",
        when=when,
    )
    assert line == json.dumps(record, sort_keys=True)


SECRETS = [
    "ghp_" + "a" * 30,
    "github_pat_" + "b" * 25,
    "glpat-" + "c" * 20,
    "xoxb-1234567890",
    "sk-" + "d" * 20,
    "AKIA" + "E" * 16,
    "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2Q",
    "password=hunter2",
    "--Api-Key=abc",
    "ACCESS_KEY:xyz",
    "TOKEN=1",
    "https://user:pw@example.org/x",
    "Authorization: Bearer abc.def",
    "PWD=x",
    "my_secret=1",
    "auth=1",
]


def test_every_redacted_argument_is_seen_as_needing_it() -> None:
    for arg in SECRETS:
        assert audit.redact(arg) != arg, arg
        assert auditfile.needs_redaction(arg), arg


@given(st.text(max_size=60))
def test_an_argument_left_unredacted_needs_no_redaction(arg: str) -> None:
    if not auditfile.needs_redaction(arg):
        assert audit.redact(arg) == arg


def test_case_folded_look_alikes_are_redacted() -> None:
    """Review 17: ``re``'s case folding makes the long s an 's' and the dotless i an 'i'; a
    lower-cased hint check let such arguments through unredacted."""
    for arg in ("\u017fecret=abc", "pa\u017fswd=abc", "AK\u0131A" + "E" * 16):
        assert audit.redact(arg) != arg, arg
        assert auditfile.needs_redaction(arg), arg
