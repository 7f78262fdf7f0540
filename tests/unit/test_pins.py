"""How many files the name guard can hold for the end-of-command check (pins.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

PROBE = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
from ringfence.platforms.linux.gitguard.pins import Pins
print(Pins()._cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _cap(soft: int, hard: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(soft=soft, hard=hard)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_the_soft_limit_is_raised_to_hold_them_all() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need = 2 * 4096 + 256  # a descriptor of each file and of its directory
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is below what the guard asks for")
    assert _cap(256, hard) == (4096, need)


def test_a_low_hard_limit_holds_fewer_and_says_so() -> None:
    assert _cap(300, 400) == ((400 - 256) // 2, 400)
    assert _cap(100, 200) == (0, 200)  # none: every file that would wait is refused
