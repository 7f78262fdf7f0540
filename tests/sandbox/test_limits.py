"""Resource limits hold inside the sandbox and leave the user's other processes alone."""

from __future__ import annotations

import os

import pytest
from conftest import Runner

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
    if rf.uid == 0:
        pytest.skip("the kernel exempts host root from RLIMIT_NPROC (documented limit)")
    ws = rf.mkdir()
    r = rf("run", "--limit", "processes=40", "--", "python3", "-c", FORK_BOMB, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused after"), r.stdout
    assert int(r.stdout.split()[2]) < 40
    assert r.stdout.split()[3] == "11"  # EAGAIN
    # The count is the sandbox's alone: the same user outside keeps forking freely.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def test_private_tmp_has_a_size(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.sh(
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
    r = rf.sh(ws, "head -c 200000 /dev/zero > big", "--limit", "file-size=100k")
    assert r.returncode == 128 + 25  # SIGXFSZ
    assert (ws / "big").stat().st_size == 100 * 1024
    r = rf("run", "--limit", "cpu=1", "--", "python3", "-c", "while True: pass", cwd=ws, timeout=30)
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
    r = rf("run", "--limit", "inotify-instances=8", "--", "python3", "-c", probe, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "inotify 8 24" in r.stdout, r.stdout  # EMFILE after 8
    assert "userns 0" in r.stdout
