"""``reaper.in_pid_namespace_of``: the processes a runner kills one by one when an init did
not end its command's tree in time (it may be starved)."""

from __future__ import annotations

import os
import subprocess
import sys

from ringfence.platforms.linux import reaper


def test_the_processes_of_a_pid_namespace_are_found_and_the_init_left_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = reaper.in_pid_namespace_of(os.getpid())
        assert child.pid in found  # this test's own namespace: its child is in it
        assert os.getpid() not in found
    finally:
        child.kill()
        child.wait()
    assert reaper.in_pid_namespace_of(2**22 + 12345) == []  # no such process: nothing
