"""Each command and network decision lands in the audit log, redacted; `ringfence audit` reads
it; `--no-audit` leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _log(rf: Runner) -> Path:
    return Path(rf.env()["XDG_STATE_HOME"]) / "ringfence" / "audit.jsonl"


def _records(rf: Runner) -> list[dict[str, object]]:
    r = rf("audit", "--json", cwd="/")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_commands_and_network_decisions_are_recorded(rf: Runner) -> None:
    ws = rf.mkdir()
    before = len(_records(rf))
    secret = "ghp_" + "A" * 36
    r = rf("run", "--", "sh", "-c", f"exit 3 # {secret}", cwd=ws)
    assert r.returncode == 3
    r = rf(
        "run",
        "--network",
        "allowlist",
        "--allow-domain",
        "pypi.org",
        "--",
        "curl",
        "-sS",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "https://example.com/",
        cwd=ws,
    )
    records = _records(rf)[before:]
    commands = [x for x in records if x["type"] == "command"]
    assert len(commands) == 2
    first = commands[0]
    assert first["exit"] == 3 and first["cwd"] == str(ws)
    assert secret not in json.dumps(records) and "[REDACTED]" in str(first["argv"])
    assert str(first["policy"]).startswith("sha256:")
    assert {"time", "session", "duration", "approval", "violations"} <= set(first)
    network = [x for x in records if x["type"] == "network"]
    assert [(x["host"], x["port"], x["allowed"]) for x in network] == [("example.com", 443, False)]
    assert commands[1]["violations"] == [
        {"kind": "network", "host": "example.com", "port": 443, "rule": "not in the allowlist"}
    ]
    assert [(n["host"], n["allowed"], n["count"]) for n in commands[1]["network"]] == [
        ("example.com", False, 1)
    ]
    assert first["version"] == 1 and first["outcome"] == "exited"
    assert network[0]["session"] == commands[1]["session"] != first["session"]
    assert oct(_log(rf).stat().st_mode & 0o777) == "0o600"
    text = rf("audit", cwd="/").stdout
    assert "network BLOCKED example.com:443" in text and "exit 3" in text


def test_no_audit_leaves_nothing(rf: Runner) -> None:
    ws = rf.mkdir()
    before = len(_records(rf))
    assert rf("run", "--no-audit", "--", "true", cwd=ws).returncode == 0
    assert len(_records(rf)) == before
