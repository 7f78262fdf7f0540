"""SIDs in their string form (``S-1-5-21-...``, ``S-1-15-3-...``), checked before any reaches
Windows: in an ACE, a firewall rule's user condition, a restricting SID of the command's token,
the broker's request. Pure; imports anywhere."""

from __future__ import annotations

import re

from ringfence.errors import PolicyError

SID_PATTERN = re.compile(r"S-1-\d{1,13}(-\d{1,10}){1,15}")


def check_sid(sid: str) -> str:
    """A SID in string form (``S-1-5-21-...``, ``S-1-15-3-...``), nothing else."""
    if not SID_PATTERN.fullmatch(sid):
        raise PolicyError(f"windows: {sid!r} is not a SID (S-1-N-N...)")
    return sid
