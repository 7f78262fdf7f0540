"""The host /tmp entries the default deny-read patterns name.

Its own module because the plan cache asks it again on every cached run (``plancache.facts``):
the cache depends on which secrets lie in /tmp, not on everything else that comes and goes
there."""

from __future__ import annotations

import fnmatch
import os

from ringfence.policy import defaults


def secrets_in(tmp: str = "/tmp") -> tuple[str, ...]:
    """Top level only: one directory listing, however full /tmp is. Symlinks are left out:
    anyone can make one in /tmp, and following it would let another user choose what the
    sandbox hides (its target has its own policy anyway)."""
    try:
        names = [e.name for e in os.scandir(tmp) if not e.is_symlink()]
    except OSError:
        return ()
    pats = defaults.TMP_DENY_READ
    return tuple(
        sorted(os.path.join(tmp, n) for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats))
    )
