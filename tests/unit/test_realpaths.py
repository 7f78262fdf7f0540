"""``RealPaths`` resolves as ``os.path.realpath`` does, on random trees full of links."""

from __future__ import annotations

import os
import random
import tempfile

import pytest

from ringfence.platforms.linux.realpaths import RealPaths

NAMES = ("a", "b", "c", "l1", "l2", "f")


def _tree(base: str, rng: random.Random) -> list[str]:
    """Directories, files and symlinks (absolute, relative, up-and-over, dangling, looping,
    to files), a few levels deep under ``base``; returns every path made."""
    made = [base]
    dirs = [base]
    for _ in range(60):
        parent = rng.choice(dirs)
        path = os.path.join(parent, rng.choice(NAMES) + str(rng.randrange(3)))
        if os.path.lexists(path):
            continue
        kind = rng.random()
        if kind < 0.35:
            os.mkdir(path)
            dirs.append(path)
        elif kind < 0.5:
            with open(path, "w"):
                pass
        else:
            target = rng.choice(
                [
                    rng.choice(made),  # absolute
                    os.path.relpath(rng.choice(made), parent),  # relative, often with ..
                    os.path.join(rng.choice(made), "missing", "deeper"),  # dangling
                    path,  # itself: a loop
                    os.path.join(rng.choice(made), ".."),
                ]
            )
            os.symlink(target, path)
        made.append(path)
    return made


@pytest.mark.parametrize("seed", range(40))
def test_matches_os_realpath(seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.realpath(tmp)
        made = _tree(base, rng)
        asks = list(made)
        for p in made:  # beneath everything: through links, files, loops, nowhere
            asks += [os.path.join(p, n) for n in ("x", "a0", "l10/y")]
        asks += ["/", base + "/", base + "//a0", base + "/./a0", base + "/a0/..", "rel/x"]
        real = RealPaths()
        order = asks[:]
        rng.shuffle(order)  # parents asked before and after their children
        for p in order:
            assert real(p) == os.path.realpath(p), p


def test_lstat_remembers_the_error_too(tmp_path: object) -> None:
    real = RealPaths()
    with pytest.raises(FileNotFoundError):
        real.lstat("/nonexistent-ringfence-path")
    with pytest.raises(FileNotFoundError):
        real.lstat("/nonexistent-ringfence-path")
    assert real.lstat("/").st_ino == os.lstat("/").st_ino
