"""``ringfence run --report FILE`` / ``--report-fd N`` / ``-c LINE`` with the real kernel: the
record arrives where asked, and the sandboxed command can neither forge it nor redirect it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

HIGH_FD = 7  # dash redirects only descriptors 0-9


def _run_with_fd(rf: Runner, ws: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``ringfence run --report-fd 7 ARGS`` with 7 the write end of a pipe; its output and
    everything that came through the pipe."""
    r, w = os.pipe()
    # fd 7 of ringfence's, not of this process (pytest's own may be 7): a small exec wrapper
    wrapper = "import os, sys; os.dup2(int(sys.argv[1]), 7); os.execv(sys.argv[2], sys.argv[2:])"
    try:
        proc = subprocess.run(  # noqa: PLW1510 - the test asserts on returncode
            [
                rf.python,
                "-c",
                wrapper,
                str(w),
                *rf.argv(["run", "--report-fd", str(HIGH_FD), *args]),
            ],
            cwd=ws,
            env=rf.env(),
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=(w,),
            **rf.popen_kwargs(),  # type: ignore[arg-type]
        )
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        return proc, f.read()


def test_report_fd_gets_one_record_the_command_cannot_reach(rf: Runner) -> None:
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    c = rf.confinement
    script = (
        f"ls /proc/self/fd | tr '\\n' ' '; echo; "
        f'echo \'{{"version": 1, "exit": 0}}\' >&{HIGH_FD} && echo FORGED; '
        f"(echo forged > /proc/1/fd/{HIGH_FD}) 2>/dev/null && echo VIA-PROC; "
        f"touch {outside}/new; exit 4"
    )
    proc, got = _run_with_fd(rf, ws, "--", *c.shell(script))
    checked = c.check(proc)
    assert proc.returncode == 4, proc.stderr
    assert "FORGED" not in checked.stdout and "VIA-PROC" not in checked.stdout
    assert str(HIGH_FD) not in checked.stdout.split()
    lines = got.splitlines()
    assert len(lines) == 1, got  # one record, and nothing else came through
    record: dict[str, Any] = json.loads(lines[0])
    assert (record["version"], record["outcome"], record["exit"]) == (1, "exited", 4)
    assert record["argv"] == c.shell(script) and record["signal"] is None
    refused = {"kind": "filesystem", "op": "openat", "path": f"{outside}/new",
               "rule": "outside writable roots"}  # fmt: skip
    assert refused in record["violations"]
    assert f"--writable {outside}" in [w["flag"] for w in record["widenings"]]
    assert f"openat {outside}/new (outside writable roots)" in record["messages"][0]
    assert record["messages"][0].startswith("refused ")


def test_report_file_in_the_workspace_is_never_written_through_a_planted_link(
    rf: Runner,
) -> None:
    ws = rf.mkdir()
    victim = ws / "victim"
    victim.write_text("keep\n")
    os.chown(victim, rf.uid, rf.gid)
    report = ws / "report.json"
    report.write_text("stale\n")
    os.chown(report, rf.uid, rf.gid)
    r = rf("run", "--report", str(report), "--", "sh", "-c", "cat report.json; exit 3", cwd=ws)
    assert r.returncode == 3 and r.stdout == ""  # emptied before the command ran
    assert json.loads(report.read_text())["exit"] == 3
    # The command swaps the report for a link to another file of the user's.
    swap = "rm report.json && ln -s victim report.json"
    r = rf("run", "--report", str(report), "--", "sh", "-c", swap, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert f"ringfence: the report {report} is not written" in r.stderr
    assert victim.read_text() == "keep\n"
    # A link already there: refused before anything runs.
    r = rf("run", "--report", str(report), "--", "touch", "ran", cwd=ws)
    assert r.returncode == 2 and "is a symbolic link" in r.stderr
    assert not (ws / "ran").exists() and victim.read_text() == "keep\n"


def test_a_report_is_never_written_through_a_linked_directory(rf: Runner) -> None:
    """A directory on the way to FILE that is a symbolic link (the repository's, or one an
    earlier command left in the workspace) could point anywhere the user may write: refused
    before anything runs. The directory is held for the run: a command that renames it and
    puts a link in its place redirects nothing."""
    ws = rf.mkdir()
    elsewhere = rf.mkdir()
    victim = elsewhere / "report.json"
    victim.write_text("precious\n")
    os.chown(victim, rf.uid, rf.gid)
    (ws / "out").symlink_to(elsewhere)
    r = rf("run", "--report", str(ws / "out" / "report.json"), "--", "touch", "ran", cwd=ws)
    assert r.returncode == 2 and f"passes through the symbolic link {ws / 'out'}" in r.stderr
    assert victim.read_text() == "precious\n" and not (ws / "ran").exists()
    (ws / "out").unlink()
    (ws / "real").mkdir()
    os.chown(ws / "real", rf.uid, rf.gid)
    swap = f"mv real moved && ln -s {elsewhere} real && echo $RINGFENCE_SANDBOX"
    report = ws / "real" / "report.json"
    r = rf("run", "--report", str(report), "--", "sh", "-c", swap, cwd=ws)
    assert r.returncode == 0 and r.stdout == "1\n", r.stderr
    assert victim.read_text() == "precious\n"
    assert json.loads((ws / "moved" / "report.json").read_text())["exit"] == 0


def test_report_dash_is_refused(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("run", "--report", "-", "--", "touch", "ran", cwd=ws)
    assert r.returncode == 2 and "--report -: stdout is the command's too" in r.stderr
    assert not (ws / "ran").exists()


def test_c_runs_a_shell_line_confined_and_the_report_says_how_it_ended(rf: Runner) -> None:
    ws = rf.mkdir()
    c = rf.confinement
    line = shlex.join(c.shell("echo one && echo two"))
    r = c.check(rf("run", "--report", str(ws / "r.json"), "-c", line, cwd=ws))
    assert r.returncode == 0 and r.stdout == "one\ntwo\n", r.stderr
    assert json.loads((ws / "r.json").read_text())["argv"][1:] == ["-c", line]
    r = rf("run", "--timeout", "0.5", "--report", str(ws / "r.json"), "-c", "sleep 30", cwd=ws)
    record = json.loads((ws / "r.json").read_text())
    assert (r.returncode, record["exit"], record["outcome"]) == (124, 124, "timed_out")
    assert record["duration"] is not None and record["duration"] >= 0.5


def test_verbose_traces_the_steps(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("run", "-v", "--", "true", cwd=ws)
    assert r.returncode == 0, r.stderr
    steps = [line.split("] ", 1)[1] for line in r.stderr.splitlines() if "[trace" in line]
    assert steps[0].startswith("resolved the policy: mode workspace-write, network off")
    assert steps[1:] == [
        "linux: host facts",
        "linux: compiled the plan",
        "the sandbox is up",
        "the command ended",
        "linux: closed",
    ]
