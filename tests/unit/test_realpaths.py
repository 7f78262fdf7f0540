"""``RealPaths`` resolves as ``os.path.realpath`` does, on random trees full of links."""

from __future__ import annotations

import os
import random
import tempfile

import pytest

from ringfence.platforms.linux import realpaths
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


def test_a_listed_directory_answers_as_lstat(monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``LIST_AFTER`` lookups in one directory it is listed once and missing names are
    answered from the listing: the same successes and failures as ``os.lstat``, links and
    all; a directory over ``LIST_MAX`` entries, or one that cannot be listed, is not."""
    monkeypatch.setattr(realpaths, "LIST_MAX", 30)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.realpath(tmp)
        small, big = os.path.join(base, "small"), os.path.join(base, "big")
        os.mkdir(small)
        os.mkdir(big)
        for i in range(0, 20, 2):
            with open(os.path.join(small, f"n{i}"), "w"):
                pass
        os.symlink("n0", os.path.join(small, "n1"))
        os.symlink("/nowhere", os.path.join(small, "n3"))
        for i in range(40):
            os.mkdir(os.path.join(big, f"n{i}"))
        real = RealPaths()
        for d in (small, big):
            for i in range(50):
                p = os.path.join(d, f"n{i}")
                try:
                    want: object = os.lstat(p).st_ino
                except OSError:
                    want = None
                try:
                    got: object = real.lstat(p).st_ino
                except OSError:
                    got = None
                assert got == want, p
                assert real(p) == os.path.realpath(p), p
        assert real._names[small] is not None and "n1" in (real._names[small] or ())
        assert real._names[big] is None  # too big: asked name by name
