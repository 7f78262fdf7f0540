"""Resource limits hold inside the sandbox and leave the user's other processes alone."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import Runner

from ringfence.platforms.linux import cgroups

pytestmark = pytest.mark.sandbox

FORK_BOMB = """
import os, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError as e:
    print("refused after", n, e.errno)
else:
    print("forked", n)
"""


def test_process_limit_stops_a_fork_bomb(rf: Runner) -> None:
    if rf.uid == 0 and "pids" not in _cgroup_controllers(rf):
        pytest.skip("the kernel exempts host root from RLIMIT_NPROC and there is no pids cgroup")
    ws = rf.mkdir()
    r, pid = _run(rf, "run", "--limit", "processes=40", "--", "python3", "-c", FORK_BOMB, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused after"), r.stdout
    assert int(r.stdout.split()[2]) < 40
    assert r.stdout.split()[3] == "11"  # EAGAIN (for root: the pids cgroup, which binds root)
    assert _leftover_cgroups(pid) == []
    # The count is the sandbox's alone: the same user outside keeps forking freely.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


NO_THREAD_LEFT = """
import os, signal, sys, time
os.mkfifo("fifo")
kids = []
try:
    while True:  # every process the limit allows, the name guard's threads included
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
except OSError:
    pass
try:  # a blocking FIFO open waits in a thread of the guard's: none can be made now
    os.open("fifo", os.O_RDONLY | os.O_CREAT)
except OSError as e:
    print("fifo", e.errno)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
with open("after", "w") as f:  # the guard still answers
    f.write(sys.argv[1])
print("after ok")
"""


def test_the_guard_outlives_a_command_that_uses_up_its_processes(rf: Runner) -> None:
    """The name guard runs under the command's process limit: a command that leaves it no
    thread got its guard killed (an outside review), ending the command without the
    end-of-command check. Now the call that needed a thread fails with EAGAIN."""
    if rf.uid == 0 and "pids" not in _cgroup_controllers(rf):
        pytest.skip("the kernel exempts host root from RLIMIT_NPROC and there is no pids cgroup")
    ws = rf.mkdir()
    cmd = ["python3", "-c", NO_THREAD_LEFT, rf.nonce]
    r, _ = _run(rf, "run", "--limit", "processes=40", "--", *cmd, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["fifo 11", "after ok"], (r.stdout, r.stderr)
    assert (ws / "after").read_text() == rf.nonce


def test_private_tmp_has_a_size(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "head -c 3000000 /dev/zero > /tmp/big; echo status=$?; "
        "head -c 3000000 /dev/zero > /dev/shm/big; echo shm=$?",
        "--limit",
        "tmp-size=1m",
        "--limit",
        "shm-size=2m",
    )
    assert "status=1" in r.stdout and "shm=1" in r.stdout, r.stdout
    assert "No space left on device" in r.stderr


def test_file_size_and_cpu_limits(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "head -c 200000 /dev/zero > big", "--limit", "file-size=100k")
    assert r.returncode == 128 + 25  # SIGXFSZ
    assert (ws / "big").stat().st_size == 100 * 1024
    r = rf.confined(ws, ["python3", "-c", "while True: pass"], "--limit", "cpu=1", timeout=30)
    assert r.returncode == 128 + 24  # SIGXCPU


def test_kernel_quotas_are_capped_in_the_sandbox_namespace(rf: Runner) -> None:
    ws = rf.mkdir()
    probe = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 1000 and libc.inotify_init() >= 0:
    n += 1
print("inotify", n, ctypes.get_errno())
print("userns", open("/proc/sys/user/max_user_namespaces").read().strip())
"""
    r = rf.confined(ws, ["python3", "-c", probe], "--limit", "inotify-instances=8")
    assert r.returncode == 0, r.stderr
    assert "inotify 8 24" in r.stdout, r.stdout  # EMFILE after 8
    assert "userns 0" in r.stdout


def _cgroup_controllers(rf: Runner) -> set[str]:
    """The controllers ringfence finds for this runner's user (asked as that user)."""
    code = "from ringfence.platforms.linux import cgroups; print(*cgroups.discover()[0])"
    env = {"PYTHONPATH": rf.src_copy, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [rf.python, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    ).stdout
    return set(out.split())


def _leftover_cgroups(pid: int) -> list[str]:
    """The cgroups the ringfence process ``pid`` made that are still there: only this test's
    own, so another ringfence running on the machine does not count."""
    sites, _ = cgroups.discover()
    return [
        name
        for site in sites.values()
        for name in os.listdir(site.parent)
        if name.startswith(f"ringfence-{pid}-")
    ]


def _run(rf: Runner, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """``rf(*args)``, also returning the ringfence process's pid (its cgroups carry it)."""
    proc = rf.popen(*args, cwd=cwd)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


MEMORY_HOG = """
import sys
blocks = []
for i in range(int(sys.argv[1])):
    blocks.append(bytearray(1 << 20))  # touched: bytearray zero-fills
print("allocated", len(blocks), "MiB", flush=True)
"""


def test_memory_limit_is_enforced_or_refused(rf: Runner) -> None:
    ws = rf.mkdir()
    marker = ws / "ran"
    script = f"open({str(marker)!r}, 'w').close()\n" + MEMORY_HOG
    run = ("run", "--limit", "memory=64m", "--", "python3", "-c", script)
    if "memory" not in _cgroup_controllers(rf):
        # fail closed: no cgroup to enforce it, so nothing runs at all
        r = rf(*run, "10", cwd=ws)
        assert r.returncode == 125, r.stderr
        assert "memory limit needs a cgroup" in r.stderr
        assert not marker.exists()
        return
    r = rf(*run, "300", cwd=ws)
    assert r.returncode == 128 + signal.SIGKILL, (r.stdout, r.stderr)
    assert "allocated" not in r.stdout
    assert "the memory limit (64 MiB) was reached" in r.stderr
    assert marker.exists()
    # below the cap the same program runs to the end
    r, pid = _run(rf, *run, "16", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "allocated 16 MiB" in r.stdout
    assert _leftover_cgroups(pid) == []
