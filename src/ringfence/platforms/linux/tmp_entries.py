"""The host /tmp entries the default deny-read patterns name.

Its own module because the plan cache asks it again on every cached run (``plancache.facts``):
the cache depends on which secrets lie in /tmp, not on everything else that comes and goes
there."""

from __future__ import annotations

import fnmatch
import os

from ringfence.policy import defaults

_WILD = frozenset("*?[")


def secrets_in(tmp: str = "/tmp") -> tuple[str, ...]:
    """Top level only: one directory listing, however full /tmp is. Symlinks are left out:
    anyone can make one in /tmp, and following it would let another user choose what the
    sandbox hides (its target has its own policy anyway)."""
    try:
        names = [e.name for e in os.scandir(tmp) if not e.is_symlink()]
    except OSError:
        return ()
    return tuple(sorted(os.path.join(tmp, n) for n in names if matches(n)))


def matches(name: str, patterns: tuple[str, ...] = defaults.TMP_DENY_READ) -> bool:
    """``fnmatchcase`` against each pattern, without compiling a regular expression for the
    common shapes (a literal name, a literal prefix then ``*``): this runs on every cached
    one-shot run, over every entry of /tmp."""
    for p in patterns:
        star = p.endswith("*")
        head = p[:-1] if star else p
        if not _WILD.intersection(head):
            if name.startswith(head) if star else name == p:
                return True
        elif fnmatch.fnmatchcase(name, p):
            return True
    return False
