"""The name guards' turns: one lock file for all of a user's sandboxes, waited on boundedly."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ringfence.platforms.linux.nameguard.supervisor import take_turn
from ringfence.policy import statedirs


def test_the_lock_lies_beside_the_workspaces(tmp_path: Path) -> None:
    state = statedirs.prepare_workspace(str(tmp_path / "rf"), "/some/project")
    assert state is not None
    fd = statedirs.open_guard_lock(state)
    assert fd is not None
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "rf" / statedirs.GUARD_LOCK)
        assert os.stat(tmp_path / "rf" / statedirs.GUARD_LOCK).st_mode & 0o777 == 0o600
    finally:
        os.close(fd)
    assert statedirs.open_guard_lock(str(tmp_path / "elsewhere")) is None  # not a state dir


def test_a_turn_held_elsewhere_is_waited_for_boundedly(tmp_path: Path) -> None:
    path = tmp_path / "guard.lock"
    path.touch()
    mine, theirs = os.open(path, os.O_RDONLY), os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(theirs, fcntl.LOCK_EX)
        assert take_turn(mine, wait=0.05) is False
        fcntl.flock(theirs, fcntl.LOCK_UN)
        assert take_turn(mine, wait=0.05) is True
        assert take_turn(theirs, wait=0.05) is False  # mine now: theirs waits
    finally:
        os.close(mine)
        os.close(theirs)
