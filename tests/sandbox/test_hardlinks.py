"""A file with a name outside the writable roots and another in the workspace (a hard link, as
uv, pnpm, ccache or ``cp -al`` make them) is not changed through the workspace's name.

Landlock and the read-only mounts judge a write by the name it goes through. An outside review
appended to a package file of a uv-built ``.venv`` in the workspace, which shared its inode
with uv's cache and with ringfence's own tool environment, and the host's next ``ringfence``
ran the payload. The name guard now refuses a change to a file with other names, except an
open that truncates it anyway, which gets a new file under the workspace's name.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

ORIGINAL = "original content\n"

# Each line: a change through the workspace's name, and what it printed.
PROBE = r"""
try_() { if "$@" 2>/dev/null; then echo "$1: done"; else echo "$1: refused"; fi; }
try_ sh -c 'echo appended >> linked'
try_ sh -c 'echo rewritten > linked2'
try_ chmod 0600 linked
try_ python3 -c 'import os; os.truncate("linked", 0)'
try_ python3 -c 'import os; os.chown("linked", os.getuid(), os.getgid())'
try_ sh -c 'echo appended >> alone'
"""


def _setup(rf: Runner) -> tuple[Path, Path, Path]:
    ws, outside = rf.mkdir(), rf.mkdir("outside-")
    for name in ("linked", "linked2"):
        source = outside / name
        source.write_text(ORIGINAL)
        source.chmod(0o754)
        os.chown(source, rf.uid, rf.gid)
        os.link(source, ws / name)  # made before the sandbox, as an installer makes them
    alone = ws / "alone"
    alone.write_text(ORIGINAL)
    os.chown(alone, rf.uid, rf.gid)
    return ws, outside, alone


def _check(rf: Runner, ws: Path, outside: Path, alone: Path, out: str) -> None:
    assert "sh: refused" in out.splitlines()[0], out  # the append
    assert out.splitlines()[1] == "sh: done", out  # the truncating write, on a new file
    assert "chmod: refused" in out and out.count("python3: refused") == 2, out
    assert out.splitlines()[-1] == "sh: done", out  # a file with one name is written
    # outside: untouched, content and mode
    for name in ("linked", "linked2"):
        assert (outside / name).read_text() == ORIGINAL
        assert stat.S_IMODE((outside / name).stat().st_mode) == 0o754
    # the workspace's name now has its own file, with the old file's mode
    new = (ws / "linked2").stat()
    assert (ws / "linked2").read_text() == f"rewritten-{rf.nonce}\n"
    assert new.st_nlink == 1 and stat.S_IMODE(new.st_mode) == 0o754
    assert (outside / "linked2").stat().st_nlink == 1
    assert alone.read_text() == ORIGINAL + f"appended-{rf.nonce}\n"


def test_a_file_with_an_outside_name_is_not_changed_through_the_workspace(rf: Runner) -> None:
    ws, outside, alone = _setup(rf)
    probe = PROBE.replace("appended", f"appended-{rf.nonce}").replace(
        "rewritten", f"rewritten-{rf.nonce}"
    )
    r = rf.sh(ws, probe)
    assert r.returncode == 0, r.stderr
    _check(rf, ws, outside, alone, r.stdout)
    assert "a file with other names (hard links)" in r.stderr  # the report says why


def test_the_native_launcher_keeps_the_rule(rf: Runner) -> None:
    """The same request a second time is run by the native launcher, whose name guard is
    started on the first call it decides."""
    rf.needs_native_guard()
    ws, outside, alone = _setup(rf)
    probe = PROBE.replace("appended", f"appended-{rf.nonce}").replace(
        "rewritten", f"rewritten-{rf.nonce}"
    )
    explain = {"RINGFENCE_NATIVE": "explain"}  # part of the request: the same both times
    first = rf.sh(ws, "true", env=explain)  # keeps the plan
    assert first.returncode == 0, first.stderr
    r = rf.sh(ws, probe, env=explain)
    assert r.returncode == 0, r.stderr
    assert "not run by the native launcher" not in r.stderr, r.stderr
    _check(rf, ws, outside, alone, r.stdout)


RACE = r"""
import os, sys, threading, time
hits = 0
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    os.mkfifo("f")
    pinned = os.open("f", os.O_PATH)
    os.link("linked", "t")
    got = {}

    def writer():
        try:
            got["fd"] = os.open("f", os.O_WRONLY)
        except OSError as e:
            got["err"] = e.errno

    th = threading.Thread(target=writer)
    th.start()
    os.rename("t", "f")  # a name with other names takes the FIFO's place
    reader = os.open(f"/proc/self/fd/{pinned}", os.O_RDONLY | os.O_NONBLOCK)
    th.join(5)
    fd = got.get("fd")
    if fd is not None:
        if not os.path.stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"PWNED")
            hits += 1
        os.close(fd)
    os.close(reader)
    os.close(pinned)
    os.unlink("f")
print("hits", hits)
"""


def test_a_fifo_open_waiting_for_a_peer_opens_that_fifo(rf: Runner) -> None:
    """A write-open of a FIFO without a reader waits in a thread of the guard's, which opened
    the name again: a file with other names renamed there meanwhile came back writable (an
    outside review, most runs within a second). The thread now opens the FIFO it was given."""
    ws, outside, _ = _setup(rf)
    r = rf("run", "--", "python3", "-c", RACE, "3", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hits 0", r.stdout
    assert (outside / "linked").read_text() == ORIGINAL


FLAGS = r"""
import errno, os
def attempt(flags):
    try:
        os.close(os.open("linked", flags, 0o600))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print(attempt(os.O_RDONLY | os.O_TRUNC))
print(attempt(os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC))
print(attempt(os.O_PATH | os.O_TRUNC))
print(attempt(os.O_WRONLY | os.O_DIRECTORY | os.O_TRUNC))
print(os.path.exists("linked"), os.stat("linked").st_nlink)
"""


def test_opens_that_write_nothing_or_fail_leave_the_name(rf: Runner) -> None:
    """Only an open that writes, and would have truncated the file, replaces it: one that
    reads, or fails as it is (EEXIST, ENOTDIR), must not lose the workspace's name."""
    ws, outside, _ = _setup(rf)
    r = rf("run", "--", "python3", "-c", FLAGS, cwd=ws)
    assert r.returncode == 0, r.stderr
    got = r.stdout.split()
    assert got[:2] == ["EACCES", "EEXIST"] and got[3:] == ["ENOTDIR", "True", "2"], got
    assert got[2] in ("ok", "EBADF"), got  # O_PATH: the guard cannot hand one over (EBADF)
    assert (outside / "linked").read_text() == ORIGINAL


# The parent's side of the probes below: it reads the child's terminal until the child is
# gone (a pty's master must be read, or the child blocks writing to it), then reaps it.
WAIT_FOR_THE_CHILD = """
while True:
    try:
        if not os.read(master, 1024):
            break
    except OSError:
        break
os.waitpid(pid, 0)
"""

TTY_RACE = (
    r"""
import os, pty, sys, threading, time
pid, master = pty.fork()
if pid == 0:  # a session of its own, the terminal its controlling one
    tty = os.dup2(0, 30)  # after 20 in the guard's look through the fds
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the terminal is first at 20, where the swapper puts it
    linked = os.open(sys.argv[3], os.O_RDONLY)  # a read-only open: never the guard's
    stop = time.monotonic() + float(sys.argv[1])
    hits = 0
    # /dev/tty itself, or a descriptor of it (opened read-only: not the guard's) reopened
    path = "/dev/tty" if sys.argv[4] == "name" else f"/proc/self/fd/{os.open('/dev/tty', 0)}"

    def swap():
        while time.monotonic() < stop:
            os.dup2(tty, 20)
            os.dup2(linked, 20)

    threading.Thread(target=swap, daemon=True).start()
    while time.monotonic() < stop:
        try:
            fd = os.open(path, int(sys.argv[2]))
        except OSError:
            continue
        if not os.path.stat.S_ISCHR(os.fstat(fd).st_mode):
            os.write(fd, b"PWNED")
            hits += 1
        os.close(fd)
    with open("hits", "w") as f:
        f.write(str(hits))
    os._exit(0)
"""
    + WAIT_FOR_THE_CHILD
    + r"""
print("hits", open("hits").read())
"""
)


def test_dev_tty_opens_the_terminal_not_what_took_its_number(rf: Runner) -> None:
    """``/dev/tty`` is opened again from one of the caller's descriptors that is its
    terminal; another thread could dup2 a file with an outside name (or a protected one)
    onto that number between the guard's look and its open (an outside review: a writable
    descriptor within seconds). What is opened is checked to be the terminal."""
    ws, outside, _ = _setup(rf)
    (ws / "repo").mkdir()
    subprocess.run(["git", "init", "-q", str(ws / "repo")], check=True)
    config = (ws / "repo/.git/config").read_text()
    for dirpath, _, files in os.walk(ws / "repo"):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            os.chown(name, rf.uid, rf.gid)
    tries = [
        (os.O_WRONLY | os.O_APPEND, "name"),
        (os.O_WRONLY | os.O_CREAT | os.O_EXCL, "name"),
        (os.O_WRONLY | os.O_TRUNC, "fd"),  # truncated by the open itself, before any check
    ]
    # a file with an outside name; a file the guard alone keeps from being written in place
    for target in ("linked", "repo/.git/config"):
        for flags, how in tries:
            argv = ["python3", "-c", TTY_RACE, "2", str(flags), target, how]
            r = rf("run", "--", *argv, cwd=ws)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == "hits 0", (target, flags, r.stdout)
            assert (outside / "linked").read_text() == ORIGINAL, (target, flags)
            assert (ws / "repo/.git/config").read_text() == config, (target, flags)


MANY_FDS = (
    r"""
import os, pty, resource
pid, master = pty.fork()
if pid == 0:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), min(hard, 8192)))
    null = os.open("/dev/null", os.O_RDWR)
    tty = os.dup(0)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for _ in range(4000):
        os.dup(null)
    os.dup2(tty, 6000)  # the terminal only past the descriptors the guard looks at
    os.close(tty)
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
        said = "opened"
    except OSError as e:
        said = os.strerror(e.errno)
    with open("said", "w") as f:
        f.write(said)
    os._exit(0)
"""
    + WAIT_FOR_THE_CHILD
    + r"""
print(open("said").read())
"""
)


def test_dev_tty_looks_at_a_bounded_number_of_descriptors(rf: Runner) -> None:
    """The guard looks for the terminal among the caller's descriptors while it holds a
    lock every sandbox's guard takes: a command with thousands of them stalled the others
    (an outside review). stdin, stdout and stderr come first, then at most a few hundred."""
    ws = rf.mkdir()
    r = rf("run", "--", "python3", "-c", MANY_FDS, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "No such device or address", r.stdout  # not past the bound
