"""A command's init killed before its guard's end-of-command check (review 18: a command
that outlives its timeout can starve its init until the runner kills it): the files the
guard left for that check are moved aside all the same, because the init told the host of
each as it came."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

from tests.sandbox.conftest import parent_pid

from ringfence import Session
from ringfence.policy.model import Policy


def _pid_with(marker: str) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"python" in cmdline:
            return int(entry)
    return None


def test_files_waiting_for_the_check_are_moved_aside_when_the_init_is_killed(ws: Path) -> None:
    marker = f"rfkill{secrets.token_hex(6)}"
    pointer = ws / "sub" / ".git"
    script = (
        "import os, time\n"
        "os.makedirs('sub', exist_ok=True)\n"
        "open('sub/.git', 'w').write('gitdir: /etc\\n')\n"
        "time.sleep(60)\n"
    )
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        proc = s.spawn(["/usr/bin/python3", "-c", script, marker])
        deadline = time.monotonic() + 20
        pid = None
        while time.monotonic() < deadline and (pid is None or not pointer.exists()):
            pid = _pid_with(marker)
            time.sleep(0.05)
        assert pid is not None and pointer.exists(), "the command did not start"
        os.kill(parent_pid(pid), signal.SIGKILL)  # its init: no end check, no report
        proc.wait(30)
    assert not pointer.exists(), pointer.read_text()
    assert (ws / "sub" / ".git.ringfence-refused").exists()
