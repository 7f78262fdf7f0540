"""The run's record (RunResult.to_dict, the audit record), where --report puts it, and the
small command-line contracts: --version, -c, usage errors exit 2, help without markup."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringfence import audit
from ringfence.cli import main
from ringfence.cli.parser import SUBCOMMANDS, build_parser
from ringfence.cli.report import ReportSink
from ringfence.engine.result import NetDecision, RunResult, Violation
from ringfence.errors import PolicyError, UsageError


def test_the_record_has_a_version_and_groups_network_decisions() -> None:
    blocked = NetDecision("example.com", 443, False, "not in the allowlist")
    r = RunResult(
        137,
        signal=9,
        duration=1.23456,
        violations=(
            Violation("network", rule="not in the allowlist", host="example.com", port=443),
        ),
        network=(blocked, blocked),
        widenings=({"kind": "allow_domain", "flag": "--allow-domain example.com:443"},),
        argv=("curl", "https://example.com"),
    )
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON
    assert (d["version"], d["outcome"], d["exit"], d["signal"]) == (1, "signaled", 137, 9)
    assert d["duration"] == 1.2346 and d["argv"] == ["curl", "https://example.com"]
    assert d["violations"] == [{"kind": "network", "host": "example.com", "port": 443,
                                "rule": "not in the allowlist"}]  # fmt: skip
    assert d["network"] == [{"host": "example.com", "port": 443, "allowed": False,
                             "rule": "not in the allowlist", "address": None,
                             "protocol": None, "count": 2}]  # fmt: skip
    assert d["error"] is None and d["messages"] == []


@pytest.mark.parametrize(
    ("result", "outcome", "error"),
    [
        (RunResult(0), "exited", None),
        (RunResult(124, timed_out=True), "timed_out", None),
        (RunResult(77, error_kind="ApprovalRefused"), "refused", None),
        (RunResult(127, error_kind="ExecFailed"), "not_started", None),
        (RunResult(125, error_kind="SandboxError"), "error", "SandboxError"),
    ],
)
def test_outcome_says_how_it_ended(result: RunResult, outcome: str, error: str | None) -> None:
    assert (result.to_dict()["outcome"], result.to_dict()["error"]) == (outcome, error)


def test_the_audit_record_is_the_run_record_plus_the_logs_keys() -> None:
    record = audit.command_record(
        session="s", argv=["curl", "-H", "Authorization: Bearer abcdef"], cwd="/w",
        policy_digest="sha256:x", returncode=-15, duration=0.5,
        filesystem=[{"kind": "filesystem", "op": "openat", "path": "/x/token=hunter2",
                     "rule": "outside writable roots"}],
    )  # fmt: skip
    run = RunResult(0).to_dict()
    assert set(record) == set(run) | {"type", "time", "session", "cwd", "policy", "plan"}
    assert record["plan"] == "compiled"
    assert (record["exit"], record["signal"], record["outcome"]) == (143, 15, "signaled")
    assert record["argv"][2] == "Authorization: Bearer [REDACTED]"
    assert record["violations"][0]["path"] == "/x/token=[REDACTED]"
    assert "exit 143, signaled" in audit.format_record(record)
    legacy = {"type": "command", "time": "t", "session": "s", "argv": ["x"], "exit": 1,
              "violations": {"network": ["a:1 (r)"], "filesystem": []}}  # fmt: skip
    assert audit.format_record(legacy).endswith("-> exit 1 in None s, blocked 1")


def test_since_understands_spans_days_and_iso_and_refuses_the_rest() -> None:
    now = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
    assert audit.parse_time("1h", now) == now - dt.timedelta(hours=1)
    assert audit.parse_time("90s", now) == now - dt.timedelta(seconds=90)
    assert audit.parse_time("2025-03-01", now) == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert audit.parse_time("2025-03-01T10:00+01:00", now).hour == 10
    y = audit.parse_time("yesterday", now)
    assert y.astimezone().hour == 0 and (now - y) < dt.timedelta(days=2)
    with pytest.raises(UsageError, match="--since 'last week'"):
        audit.parse_time("last week", now)


def test_since_compares_times_not_strings(tmp_path: Path) -> None:
    log = audit.AuditLog(str(tmp_path / "a.jsonl"))
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).isoformat()
    log.write({"time": old, "i": 1})
    log.write({"time": audit.now(), "i": 2})
    assert [r["i"] for r in log.records(since="1h")] == [2]
    assert [r["i"] for r in log.records(since="yesterday")] == [1, 2]


def test_report_file_refuses_links_fifos_and_hard_links(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(PolicyError, match="is a symbolic link"):
        ReportSink.of(str(tmp_path / "link"), None)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(PolicyError, match="is not a regular file"):
        ReportSink.of(str(tmp_path / "fifo"), None)  # and it did not block
    os.link(target, tmp_path / "hard")
    with pytest.raises(PolicyError, match="another hard link"):
        ReportSink.of(str(tmp_path / "hard"), None)
    assert target.read_text() == "keep"
    with pytest.raises(PolicyError, match="stdout is the command's too"):
        ReportSink.of("-", None)
    with pytest.raises(PolicyError, match="not both"):
        ReportSink.of("x", 5)


def test_report_file_is_emptied_first_and_never_written_once_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("stale")
    sink = ReportSink.of(str(path), None)
    assert sink is not None and path.read_text() == ""
    assert sink.write({"exit": 0}) is None
    assert json.loads(path.read_text()) == {"exit": 0}
    path.rename(tmp_path / "moved")  # kept, so that its inode number is not reused
    path.write_text("another file")  # what a command could put there
    why = sink.write({"exit": 1})
    assert why is not None and "was replaced while the command ran" in why
    assert path.read_text() == "another file"


def test_report_fd_must_be_an_open_writable_descriptor_of_our_own() -> None:
    with pytest.raises(PolicyError, match="descriptors 0, 1 and 2 are the command's"):
        ReportSink.of(None, 1)
    r, w = os.pipe()
    try:
        with pytest.raises(PolicyError, match="not open for writing"):
            ReportSink.of(None, r)
        sink = ReportSink.of(None, w)
        assert sink is not None and not os.get_inheritable(w)
        assert sink.write({"exit": 3}) is None  # and closes it
        assert os.read(r, 1000) == b'{"exit": 3}\n'
    finally:
        os.close(r)
    with pytest.raises(PolicyError, match="no such open descriptor"):
        ReportSink.of(None, w)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_usage_errors_exit_2_and_name_the_right_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "check")
    assert code == 2 and "`ringfence check [flags] -- CMD [ARGS...]` or `-c LINE`" in err
    assert _cli(capsys, "check", "-c", " ")[0:3:2] == (
        2,
        "ringfence: -c: the command line is empty\n",
    )
    code, _, err = _cli(capsys, "run", "-c", "true", "--", "true")
    assert code == 2 and "either -c LINE or -- CMD" in err
    code, _, err = _cli(capsys, "run", "--report", "-", "--", "true")
    assert code == 2 and "--report -" in err
    assert _cli(capsys, "audit", "--since", "someday")[0] == 2


def test_check_c_judges_the_same_line_run_c_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "check", "--json", "-c", "ls && git status")
    assert code == 0
    assert json.loads(out)["commands"] == [["ls"], ["git", "status"]]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from ringfence import __version__

    assert _cli(capsys, "--version")[:2] == (0, f"ringfence {__version__}\n")
    code = (
        "import sys; sys.argv = ['ringfence', '--version']; from ringfence import entry; "
        "rc = entry.main(); heavy = [m for m in ('ringfence.cli', 'argparse', 'json') "
        "if m in sys.modules]; print(rc, heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout == f"ringfence {__version__}\n0 []\n"


def _helps() -> list[str]:
    texts = [build_parser().format_help()]
    for name in SUBCOMMANDS:
        parser = build_parser(name)
        sub = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        texts.append(sub.format_help())
        for action in sub._actions:
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                texts += [nested.format_help() for nested in choices.values()]
    return texts


def test_help_has_no_markup() -> None:
    for text in _helps():
        for mark in ("``", "`", ":func:", ":class:", ":meth:", "**"):
            assert mark not in text, text
