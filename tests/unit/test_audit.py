"""The audit log: redaction, atomic appends from concurrent writers, rotation, torn lines."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from ringfence.audit import AuditLog, redact


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("ls -la", "ls -la"),
        ("ghp_" + "a" * 36, "[REDACTED]"),
        ("--token=abc123", "--token=[REDACTED]"),
        ("PASSWORD=hunter2", "PASSWORD=[REDACTED]"),
        ("https://user:pw@example.com/x.git", "https://[REDACTED]@example.com/x.git"),
        ("Authorization: Bearer eyJabc.def", "Authorization: Bearer [REDACTED]"),
        ("sk-" + "x" * 40, "[REDACTED]"),
        ("AKIAABCDEFGHIJKLMNOP", "[REDACTED]"),
        ("api_key:xyz", "api_key:[REDACTED]"),
    ],
)
def test_redaction(arg: str, expected: str) -> None:
    assert redact(arg) == expected


def _writer(path: str, n: int, tag: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.write({"type": "command", "time": f"{i:06d}", "tag": tag, "i": i, "pad": "x" * 200})


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "audit.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(path, 200, t)) for t in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = Path(path).read_bytes().splitlines()
    assert len(lines) == 1200
    records = [json.loads(line) for line in lines]  # every line is one whole record
    for t in range(6):
        assert [r["i"] for r in records if r["tag"] == t] == list(range(200))
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"


def test_rotation_keeps_whole_records_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path, max_bytes=4096)
    for i in range(200):
        log.write({"time": f"1970-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "i": i, "pad": "y" * 100})
    for suffix in ("", ".1", ".2", ".3"):
        assert 0 < Path(path + suffix).stat().st_size <= 4096
    assert not Path(path + ".4").exists()
    got = [r["i"] for r in log.records()]
    assert (
        got == list(range(got[0], 200)) and got[0] > 0
    )  # the oldest rotated away, the rest in order
    assert list(log.records(since="1970-01-01T00:03:10Z")) == [
        r for r in log.records() if r["i"] >= 190
    ]


def test_a_killed_writer_leaves_nothing_that_breaks_the_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    log = AuditLog(path)
    log.write({"time": "1", "i": 1})
    with open(path, "ab") as f:
        f.write(b'{"time": "2", "i": 2, "torn')  # a writer killed mid-record
    log.write({"time": "3", "i": 3})
    assert [r["i"] for r in log.records()] == [1, 3]


def test_the_log_is_not_followed_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "audit.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        AuditLog(str(tmp_path / "audit.jsonl")).write({"i": 1})
    assert target.read_text() == ""
    assert os.path.islink(tmp_path / "audit.jsonl")
