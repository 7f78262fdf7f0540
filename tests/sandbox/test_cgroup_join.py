"""A sandbox's processes are in its run's cgroups before anything of it starts.

The session's runner joins its cgroup v1 hierarchies itself, by writing "0" to their ``tasks``
files (``cgroups.join_self``), which moves only the writing thread; the host writing the
runner's pid to ``cgroup.procs`` waited out an RCU grace period. These tests need a v1
hierarchy this user may write (root here) and skip without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ringfence import Limits, Policy, Session
from ringfence.platforms.linux import cgroups

pytestmark = pytest.mark.sandbox

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _v1_pids_parent() -> str:
    site = cgroups.discover()[0].get("pids")
    if site is None or site.version != 1:
        pytest.skip("no cgroup v1 pids hierarchy this user may write")
    return site.parent


def _membership(pid: int, tid: int) -> str:
    text = Path(f"/proc/{pid}/task/{tid}/cgroup").read_text()
    return cgroups.parse_membership(text).get("pids", "")


JOIN = """
import os, sys, threading, time
from ringfence.platforms.linux.cgroups import join_self
threads = int(sys.argv[2])
stop = threading.Event()
for _ in range(threads - 1):
    threading.Thread(target=stop.wait, daemon=True).start()
join_self([os.path.join(sys.argv[1], "tasks")])
print(" ".join(sorted(os.listdir("/proc/self/task"))), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_join_self_moves_every_thread(threads: int, tmp_path: Path) -> None:
    """One thread joins by ``tasks``; a process with more joins whole, by ``cgroup.procs``
    (writing "0" to ``tasks`` from it would leave its other threads outside)."""
    parent = _v1_pids_parent()
    name = f"ringfence-test-join-{os.getpid()}-{threads}"
    directory = os.path.join(parent, name)
    os.mkdir(directory)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(JOIN), directory, str(threads)],
            env={**os.environ, "PYTHONPATH": SRC},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            tids = [int(t) for t in proc.stdout.readline().split()]
            assert len(tids) == threads
            where = {tid: _membership(proc.pid, tid) for tid in tids}
            assert set(where.values()) == {"/" + name}, where
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    finally:
        os.rmdir(directory)


FORK_BOMB = """
import os, time
with open("/proc/self/cgroup") as f:
    print([l.split(":", 2)[2].strip() for l in f if ":pids:" in l][0])
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError as e:
    print("refused after", n, e.errno)
"""


def test_a_session_runner_started_by_the_api_holds_its_cap(tmp_path: Path) -> None:
    """The API's runner (a fresh interpreter, not a fork) joins its cgroup before anything
    starts: its command is in this session's pids cgroup, and the cap holds."""
    _v1_pids_parent()
    policy = Policy(workspace=str(tmp_path), limits=Limits(processes=40))
    with Session(policy, config=False) as s:
        r = s.run(["python3", "-c", FORK_BOMB], capture_output=True, text=True, timeout=120)
    where, said = r.stdout.splitlines()[:2]
    assert where.startswith(f"/ringfence-{os.getpid()}-"), r.stdout
    assert said.startswith("refused after"), (r.stdout, r.stderr)
    assert int(said.split()[2]) < 40 and said.split()[3] == "11"
