"""How many files the name guard can hold for the end-of-command check (pins.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from ringfence.platforms.linux.gitguard.pins import SPARE_FDS

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
    need = 2 * 4096 + SPARE_FDS  # a descriptor of each file and of its directory
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is below what the guard asks for")
    assert _cap(256, hard) == (4096, need)


def test_a_low_hard_limit_holds_fewer_and_says_so() -> None:
    assert SPARE_FDS == 512  # the guard's own, waiting FIFO opens and socket calls
    assert _cap(300, 1000) == ((1000 - 512) // 2, 1000)
    assert _cap(100, 400) == (0, 400)  # none: every file that would wait is refused
