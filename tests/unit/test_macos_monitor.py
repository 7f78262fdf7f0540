"""The macOS violation monitor: parsing ``log stream --style ndjson`` lines, hostile input, the
bounds, and the Monitor's lifecycle against a stand-in ``log`` executable.

The sample lines are CONSTRUCTED FROM DOCUMENTATION, not captured on a Mac: the event fields
follow a published ``log stream --style ndjson`` probe on macOS (kernel sender, processID 0,
``eventMessage`` "Sandbox: comm(pid) deny(1) op target"), and the tag on a line of its own
after the denial follows how Anthropic's sandbox-runtime reads its ``(with message ...)`` tag.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from ringfence.errors import PolicyError
from ringfence.platforms.macos import monitor
from ringfence.platforms.macos.execute import process_table
from ringfence.platforms.macos.plan import MacFacts, compile_macos, new_tag
from ringfence.policy.model import Network, Policy

TAG = new_tag()
OTHER = new_tag()


def event(message: str, **fields: Any) -> str:
    """One ndjson line as ``log stream --style ndjson`` prints it (constructed, see above)."""
    record: dict[str, Any] = {
        "eventType": "logEvent", "messageType": "Error", "subsystem": "", "category": "",
        "processID": 0, "processImagePath": "/kernel", "userID": 0,
        "senderImagePath": "/System/Library/Extensions/Sandbox.kext/Contents/MacOS/Sandbox",
        "timestamp": "2026-11-25 10:00:00.000000+0000", "machTimestamp": 43149983861291,
        "threadID": 75214711, "eventMessage": message,
    }  # fmt: skip
    record.update(fields)
    return json.dumps(record)


def denial(rest: str, tag: str = TAG, comm: str = "bash", pid: int = 4242) -> str:
    return event(f"Sandbox: {comm}({pid}) deny(1) {rest}\n{tag}")


def test_the_stream_is_usr_bin_log_in_ndjson_filtered_on_the_tag() -> None:
    argv = monitor.log_argv(TAG)
    assert argv[:4] == ["/usr/bin/log", "stream", "--style", "ndjson"]
    assert argv[4] == "--predicate" and f'"{TAG}"' in argv[5] and '"Sandbox: "' in argv[5]
    assert monitor.log_argv(TAG, "/stand/in")[0] == "/stand/in"
    with pytest.raises(PolicyError):
        monitor.log_argv('x" OR TRUEPREDICATE OR "')  # the tag goes into a predicate: checked


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("file-write-create /Users/dev/repo/.git/hooks/pre-commit",
         {"kind": "filesystem", "op": "file-write-create",
          "path": "/Users/dev/repo/.git/hooks/pre-commit"}),
        ("file-write-data /private/etc/hosts",
         {"kind": "filesystem", "op": "file-write-data", "path": "/private/etc/hosts"}),
        ("file-write-unlink /Users/dev/repo/.git",
         {"kind": "filesystem", "op": "file-write-unlink", "path": "/Users/dev/repo/.git"}),
        ("file-read-data /Users/dev/.ssh/id_ed25519",
         {"kind": "filesystem", "op": "file-read-data", "path": "/Users/dev/.ssh/id_ed25519"}),
        ("network-outbound 203.0.113.7:443",
         {"kind": "network", "op": "network-outbound", "host": "203.0.113.7", "port": 443}),
        ("network-outbound [2001:db8::1]:80",
         {"kind": "network", "op": "network-outbound", "host": "2001:db8::1", "port": 80}),
        ("network-outbound /private/var/run/docker.sock",
         {"kind": "network", "op": "network-outbound", "path": "/private/var/run/docker.sock"}),
        ("mach-lookup com.apple.diagnosticd",
         {"kind": "other", "op": "mach-lookup", "path": "com.apple.diagnosticd"}),
    ],
)  # fmt: skip
def test_denials_become_linux_shaped_records(rest: str, expected: dict[str, Any]) -> None:
    v = monitor.parse_line(denial(rest), TAG)
    assert v is not None and v.pid == 4242 and v.process == "bash"
    report = v.to_report()
    assert {k: report[k] for k in expected} == expected
    assert report["pid"] == 4242 and "rule" in report


def test_duplicate_reports_are_counted_and_bytes_lines_parse() -> None:
    line = event(f"3 duplicate reports for Sandbox: cat(7) deny(1) file-read-data /x/y\n{TAG}")
    v = monitor.parse_line(line.encode(), TAG)
    assert v is not None and (v.op, v.path, v.pid, v.repeats) == ("file-read-data", "/x/y", 7, 4)


def test_only_this_sessions_tag_counts_and_it_must_come_last() -> None:
    assert monitor.parse_line(denial("file-write-data /a", tag=OTHER), TAG) is None
    assert monitor.parse_line(event("Sandbox: sh(1) deny(1) file-write-data /a"), TAG) is None
    assert monitor.parse_line(denial("file-write-data /a", tag=TAG + "x"), TAG) is None
    assert monitor.parse_line(denial("file-write-data /a", tag="x" + TAG), TAG) is None
    # Another session's process names a path that ends with our tag: Seatbelt appends its
    # own tag after it, so the event is not ours.
    assert monitor.parse_line(denial(f"file-write-data /a\n{TAG}", tag=OTHER), TAG) is None
    # Ours, with a path that carries another session's tag: ours, path intact.
    v = monitor.parse_line(denial(f"file-write-data /a\n{OTHER}"), TAG)
    assert v is not None and v.path == f"/a\n{OTHER}"


def test_a_hostile_path_comes_back_exactly_and_a_hostile_name_cannot_move_the_fields() -> None:
    path = "/Users/dev/repo/a\"b')\n; (allow default)\x00\x1b[31m\tend"
    v = monitor.parse_line(denial(f"file-write-create {path}"), TAG)
    assert v is not None and v.path == path and v.op == "file-write-create"
    # comm is chosen by the process; a fake "(pid) deny(1) op" inside it is not taken for
    # the real one, because an operation name cannot contain '('.
    v = monitor.parse_line(denial("file-write-data /real", comm="x(9) deny(1) y"), TAG)
    assert v is not None and (v.pid, v.op, v.path) == (4242, "file-write-data", "/real")


@pytest.mark.parametrize(
    "line",
    [
        'Filtering the log data using "eventMessage CONTAINS ..."',  # the stream's header
        "",
        "not json at all {",
        "[1, 2, 3]",
        json.dumps({"eventMessage": 42}),
        json.dumps({"eventMessage": None}),
        event(f"Sandbox: deny(1) file-read-data /x\n{TAG}"),  # no comm(pid)
        event(f"Sandbox: sh(1) allow file-read-data /x\n{TAG}"),  # not a denial
        event(f"Sandbox: sh(abc) deny(1) file-read-data /x\n{TAG}"),
        event(TAG),
        "\x00\xff garbage",
    ],
)
def test_garbage_is_ignored(line: str) -> None:
    assert monitor.parse_line(line, TAG) is None


def test_a_huge_line_is_skipped_whole_and_the_next_one_still_parses(tmp_path: Path) -> None:
    huge = denial("file-write-data /" + "a" * (2 * monitor.MAX_LINE))
    assert monitor.parse_line(huge, TAG) is None
    f = tmp_path / "stream"
    f.write_bytes((huge + "\n" + denial("file-write-data /after") + "\n").encode())
    with f.open("rb") as stream:
        lines = list(monitor.read_lines(stream))
    assert len(lines) == 1 and all(len(x) <= monitor.MAX_LINE for x in lines)
    v = monitor.parse_line(lines[0], TAG)
    assert v is not None and v.path == "/after"


def test_bounds_are_the_linux_ones_distinct_entries_then_more() -> None:
    from ringfence.platforms.linux import steps as linux_runner

    assert (monitor.MAX_REPORTS, monitor.MAX_REPORT_PATH) == (
        linux_runner.MAX_REPORTS, linux_runner.MAX_REPORT_PATH,
    )  # fmt: skip
    c = monitor.Collector(TAG)
    for i in range(150):
        c.feed(denial(f"file-write-data /w/{i}"))
        c.feed(denial(f"file-write-data /w/{i}"))  # repeats are one entry
    reports = c.reports()
    assert len(reports) == monitor.MAX_REPORTS + 1 and reports[-1] == {"kind": "more"}
    assert [r["path"] for r in reports[:-1]] == [f"/w/{i}" for i in range(100)]


def test_long_paths_keep_both_ends() -> None:
    long = "/start/" + "m" * 3000 + "/the-end.txt"
    v = monitor.parse_line(denial(f"file-write-create {long}"), TAG)
    assert v is not None and len(v.path) == monitor.MAX_REPORT_PATH + 3
    assert v.path.startswith("/start/mmm") and v.path.endswith("/the-end.txt") and "..." in v.path
    assert monitor.cut_path("/short") == "/short"


def test_rules_are_named_from_the_plan() -> None:
    facts = MacFacts(home="/Users/dev", tmpdir="/private/tmp/rf", tag=TAG)
    plan = compile_macos(
        Policy(workspace="/Users/dev/repo", protected=("/Users/dev/repo/secrets",),
               network=Network.ALLOWLIST, allow_domains=("pypi.org",)),
        facts,
    )  # fmt: skip
    cases = {
        "file-write-create /Users/dev/repo/sub/.GIT/hooks/x": "protected: .git/hooks",
        "file-write-data /Users/dev/repo/secrets/key": "protected: /Users/dev/repo/secrets",
        "file-read-data /Users/dev/.ssh/id_rsa": "deny_read: /Users/dev/.ssh",
        "file-write-create /Users/dev/elsewhere/x": "outside writable roots",
        "network-outbound 203.0.113.7:443": "network allowlist: only the proxy on localhost:3128",
        "mach-lookup com.apple.x": "not allowed by the profile",
    }
    c = monitor.Collector(TAG)
    for rest in cases:
        c.feed(denial(rest))
    assert [r["rule"] for r in c.reports(plan)] == list(cases.values())


def _stand_in_log(tmp_path: Path, lines: list[str], then: str = "exec sleep 100") -> Path:
    """A ``log`` stand-in: records its argv, prints ``lines``, then ``then``."""
    data = tmp_path / "lines.ndjson"
    data.write_text("".join(x + "\n" for x in lines))
    script = tmp_path / "log"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv"\n'
        'echo "Filtering the log data using \\"$6\\""\n'
        f'cat "{data}"\n'
        f"{then}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def _group_alive(pgid: int) -> list[int]:
    return [p.pid for p in process_table() if p.pgid == pgid and not p.zombie]


def test_the_monitor_runs_log_around_a_command_and_stops_it(tmp_path: Path) -> None:
    lines = [denial("file-write-create /Users/dev/x"), denial("file-read-data /y", tag=OTHER),
             "garbage", denial("network-outbound 198.51.100.2:22")]  # fmt: skip
    log = _stand_in_log(tmp_path, lines)
    m = monitor.Monitor(TAG, log=str(log), grace=0.05)
    assert m.start() is True  # the header line arrived
    pid = m.pid
    assert pid is not None and not _gone(pid)
    deadline = time.monotonic() + 5
    while len(m.collector.violations) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    reports = m.stop()
    assert _gone(pid)  # log was ended (SIGTERM), not left behind
    assert [(r["kind"], r["op"]) for r in reports] == [
        ("filesystem", "file-write-create"), ("network", "network-outbound"),
    ]  # fmt: skip
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:4] == ["stream", "--style", "ndjson", "--predicate"] and TAG in argv[4]


def test_a_log_that_ignores_sigterm_is_killed_and_a_silent_one_does_not_hang(
    tmp_path: Path,
) -> None:
    log = _stand_in_log(tmp_path, [], then="trap '' TERM\nwhile :; do sleep 1; done")
    m = monitor.Monitor(TAG, log=str(log), grace=0.0, ready_timeout=2)
    assert m.start() is True
    pid = m.pid
    assert pid is not None
    started = time.monotonic()
    assert m.stop() == []
    assert _gone(pid) and time.monotonic() - started < 4
    deadline = time.monotonic() + 2  # its whole group is gone too (the stand-in's sleep)
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _group_alive(pid)


def test_a_missing_log_is_an_oserror_and_the_default_is_usr_bin_log() -> None:
    assert monitor.Monitor(TAG).argv[0] == "/usr/bin/log"
    with pytest.raises(OSError):
        monitor.Monitor(TAG, log="/nonexistent/log").start()
