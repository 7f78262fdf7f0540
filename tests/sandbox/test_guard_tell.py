"""The name guard tells the host itself of each file left for its end-of-command check
(guard_tell.py), so a command that stops its init from relaying (review 19: a starved init, or
one killed at the deadline with records still queued) cannot keep a pointer file from being
moved aside.

Each test stops the command's init (SIGSTOP: it relays nothing from then on), has the command
rename a directory holding a pointer file, then kills the init. Only the guard's own line can
have told the host the new name: the file must be moved aside there.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.sandbox.conftest import Runner, parent_pid, pid_of

from ringfence import Session
from ringfence.platforms.linux import native
from ringfence.policy.model import Policy

SCRIPT = (
    "import os, sys, time\n"
    "os.makedirs('sub')\n"
    "open('sub/.git', 'w').write('gitdir: /etc\\n')\n"
    "open('ready', 'w').write(sys.argv[1])\n"
    "while not os.path.exists('go'): time.sleep(0.02)\n"
    "os.rename('sub', 'moved')\n"
    "try: os.rename('moved', 'other')\n"  # a repository there: not empty, nothing done
    "except OSError: pass\n"
    "open('done', 'w').write(sys.argv[1])\n"
    "time.sleep(60)\n"
)


def _command(marker: str) -> list[str]:
    return ["/usr/bin/python3", "-c", SCRIPT, marker]


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _stop_init_then_rename(ws: Path, marker: str) -> int:
    """Once the command has made its pointer: stop its init, let it rename the directory, and
    return the init's pid (still stopped)."""
    ready = ws / "ready"
    _wait_for(lambda: ready.exists() and ready.read_text() == marker, "the command did not start")
    pid = pid_of(_command(marker))
    assert pid is not None
    init = parent_pid(pid)
    assert init not in (os.getpid(), os.getppid(), 1), init  # never stop anything but it
    os.kill(init, signal.SIGSTOP)  # it relays nothing more to the host
    (ws / "go").touch()
    done = ws / "done"
    _wait_for(lambda: done.exists() and done.read_text() == marker, "the rename did not happen")
    return init


def _nested_repo(ws: Path, uid: int, gid: int) -> None:
    """``other``, a repository of the user's: its ``.git`` the command may not remove."""
    subprocess.run(["git", "init", "-q", str(ws / "other")], check=True)
    for p in (ws / "other", *(ws / "other").rglob("*")):
        os.chown(p, uid, gid, follow_symlinks=False)


def _moved_aside(ws: Path) -> None:
    pointer = ws / "moved" / ".git"
    assert not pointer.exists(), pointer.read_text()
    assert (ws / "moved" / ".git.ringfence-refused").read_text() == "gitdir: /etc\n"
    # the failed rename's name was taken back: the host left the repository alone
    assert (ws / "other" / ".git" / "HEAD").is_file()
    assert not (ws / "other" / ".git.ringfence-refused").exists()


def test_a_renamed_pointer_is_moved_aside_when_the_init_relayed_nothing(ws: Path) -> None:
    """The Python runner: the guard's message on the session's socket names the new place."""
    marker = f"rftell{secrets.token_hex(6)}"
    _nested_repo(ws, os.getuid(), os.getgid())
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        proc = s.spawn(_command(marker))
        init = _stop_init_then_rename(ws, marker)
        os.kill(init, signal.SIGKILL)
        proc.wait(30)
    _moved_aside(ws)


@pytest.mark.skipif(not native.available(), reason="the native launcher was not built here")
def test_a_renamed_pointer_is_moved_aside_when_pid_1_relayed_nothing(rf: Runner) -> None:
    """The native launcher: the guard's pipe to the host names the new place."""
    rf.needs_native_guard()
    ws = rf.mkdir()
    env = {"RINGFENCE_NATIVE": "explain"}
    # A user's very first run makes ringfence's state while its compile looks (as in
    # test_native_oneshot.py): made first, elsewhere.
    rf("run", "--", "true", cwd=rf.mkdir(), env=env)
    for _ in range(2):  # the first keeps the request, the second shows it is taken
        kept = rf("run", "--", "/usr/bin/python3", "-c", "pass", cwd=ws, env=env)
        assert kept.returncode == 0, kept.stderr
    assert "not run by the native launcher" not in kept.stderr, kept.stderr
    marker = f"rftell{secrets.token_hex(6)}"
    _nested_repo(ws, rf.uid, rf.gid)
    proc = rf.popen("run", "--", *_command(marker), cwd=ws, env=env)
    try:
        init = _stop_init_then_rename(ws, marker)
        os.kill(init, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    except (AssertionError, subprocess.TimeoutExpired):
        proc.kill()
        proc.communicate()
        raise
    assert "not run by the native launcher" not in err, err
    assert "the sandbox's init was killed" in err and "refused git file" in err, err
    _moved_aside(ws)
