"""DACLs as data: what one ``AddAce`` becomes in an ``EXPLICIT_ACCESS_W``, the journal's SDDL
copies of a DACL checked and parsed, and the layouts of ``TRUSTEE_W`` and
``EXPLICIT_ACCESS_W`` (shared by the file ACLs, the window-station grant and the broker's
default DACL).

Pure and tested on Linux, but for the structures, which are header layouts (``wintypes``
imports on any platform) that have never been handed to Windows.

ACLs are kept as SDDL (``D:`` part only): a lossless, printable copy for the journal, and a
copy that is anything but a DACL is refused (an SD without a DACL would be written back as a
NULL DACL, which grants everyone everything).
"""

from __future__ import annotations

import ctypes
import re
from ctypes import wintypes
from dataclasses import dataclass

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows.rights import MASKS
from ringfence.platforms.windows.setup import AddAce
from ringfence.platforms.windows.sids import check_sid

GRANT_ACCESS = 1
DENY_ACCESS = 3
NO_INHERITANCE = 0
OBJECT_INHERIT_ACE = 0x1
CONTAINER_INHERIT_ACE = 0x2
SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000
UNPROTECTED_DACL_SECURITY_INFORMATION = 0x20000000
SE_DACL_PROTECTED = 0x1000
SDDL_REVISION_1 = 1
TRUSTEE_IS_SID = 0
TRUSTEE_IS_UNKNOWN = 0
NO_MULTIPLE_TRUSTEE = 0


@dataclass(frozen=True)
class AceFields:
    """What one ``AddAce`` becomes in an ``EXPLICIT_ACCESS_W``."""

    mask: int
    mode: int  # GRANT_ACCESS | DENY_ACCESS
    inheritance: int  # NO_INHERITANCE | OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE


def ace_fields(ace: AddAce) -> AceFields:
    """The mask by name from ``rights.MASKS``; deny or grant; inherit to files and directories
    below, or to the object alone."""
    if ace.rights not in MASKS:
        raise PolicyError(f"windows: unknown rights {ace.rights!r} for {ace.path}")
    check_sid(ace.sid)
    return AceFields(
        mask=MASKS[ace.rights],
        mode=DENY_ACCESS if ace.deny else GRANT_ACCESS,
        inheritance=(OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE) if ace.inherit else NO_INHERITANCE,
    )


def dacl_protection_flag(control: int) -> int:
    """Keep a DACL's inheritance state when writing it back: protected stays protected
    (no ACEs from the parent), unprotected keeps inheriting."""
    if control & SE_DACL_PROTECTED:
        return PROTECTED_DACL_SECURITY_INFORMATION
    return UNPROTECTED_DACL_SECURITY_INFORMATION


def check_dacl_sddl(sddl: str) -> str:
    """A journal copy must be a DACL (``D:``) and nothing else: an SD without a DACL would be
    written back as a NULL DACL, which grants everyone everything."""
    if not sddl.startswith("D:") or "\0" in sddl or re.search(r"(^|\))[OGS]:", sddl):
        raise SandboxError(f"windows: not a DACL in SDDL form: {sddl[:80]!r}")
    return sddl


# SDDL access-right codes (sddl.h), file generic rights mapped through the file generic mapping.
_SDDL_RIGHTS = {
    "FA": 0x1F01FF, "FR": 0x120089, "FW": 0x120116, "FX": 0x1200A0,
    "GA": 0x1F01FF, "GR": 0x120089, "GW": 0x120116, "GX": 0x1200A0,
    "RC": 0x20000, "SD": 0x10000, "WD": 0x40000, "WO": 0x80000,
    "CC": 0x1, "DC": 0x2, "LC": 0x4, "SW": 0x8, "RP": 0x10, "WP": 0x20, "DT": 0x40,
    "LO": 0x80, "CR": 0x100,
}  # fmt: skip


@dataclass(frozen=True)
class SddlAce:
    """One ACE of an SDDL DACL, as ConvertSecurityDescriptorToStringSecurityDescriptorW
    writes it: ``(type;flags;rights;object_guid;inherit_object_guid;sid[;...])``."""

    type: str
    flags: frozenset[str]
    mask: int
    sid: str


def parse_sddl_mask(text: str) -> int:
    """``0x1301bf`` or a run of two-letter codes (``FRFX``, ``CCDCLCSWRPWPDTLOCRSDRCWDWO``)."""
    if text.lower().startswith("0x"):
        return int(text, 16)
    if len(text) % 2 or any(text[i : i + 2] not in _SDDL_RIGHTS for i in range(0, len(text), 2)):
        raise SandboxError(f"windows: unknown SDDL access rights {text!r}")
    mask = 0
    for i in range(0, len(text), 2):
        mask |= _SDDL_RIGHTS[text[i : i + 2]]
    return mask


def parse_sddl_dacl(sddl: str) -> list[SddlAce]:
    """The ACEs of a ``D:`` SDDL string, top-level parentheses only (a conditional ACE's
    expression has parentheses of its own, and is skipped as a whole)."""
    check_dacl_sddl(sddl)
    aces: list[SddlAce] = []
    depth, start = 0, -1
    for i, ch in enumerate(sddl):
        if ch == "(":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SandboxError(f"windows: unbalanced SDDL: {sddl[:80]!r}")
            if depth == 0:
                parts = sddl[start:i].split(";")
                if len(parts) < 6:
                    raise SandboxError(f"windows: malformed ACE in SDDL: {sddl[start:i]!r}")
                if parts[0] in ("A", "D"):
                    flags = frozenset(parts[1][j : j + 2] for j in range(0, len(parts[1]), 2))
                    aces.append(SddlAce(parts[0], flags, parse_sddl_mask(parts[2]), parts[5]))
    if depth:
        raise SandboxError(f"windows: unbalanced SDDL: {sddl[:80]!r}")
    return aces


def sddl_has_ace(sddl: str, ace: AddAce) -> bool:
    """Does the DACL hold ``ace`` as an explicit entry: same type and SID, not inherited, the
    same inheritance to children, and at least the mask (SetEntriesInAclW merges masks)?"""
    fields = ace_fields(ace)
    want_type = "D" if ace.deny else "A"
    want_flags = {"OI", "CI"} if ace.inherit else set()
    for entry in parse_sddl_dacl(sddl):
        if (
            entry.type == want_type
            and entry.sid.upper() == ace.sid.upper()
            and not entry.flags & {"ID", "IO", "NP"}
            and entry.flags & {"OI", "CI"} == want_flags
            and entry.mask & fields.mask == fields.mask
        ):
            return True
    return False


# --- structures (layouts of the Windows headers) ---------------------------------------------


class TRUSTEE_W(ctypes.Structure):
    _fields_ = [
        ("pMultipleTrustee", ctypes.c_void_p),
        ("MultipleTrusteeOperation", ctypes.c_int),
        ("TrusteeForm", ctypes.c_int),
        ("TrusteeType", ctypes.c_int),
        ("ptstrName", ctypes.c_void_p),  # a PSID when TrusteeForm is TRUSTEE_IS_SID
    ]


class EXPLICIT_ACCESS_W(ctypes.Structure):
    _fields_ = [
        ("grfAccessPermissions", wintypes.DWORD),
        ("grfAccessMode", ctypes.c_int),
        ("grfInheritance", wintypes.DWORD),
        ("Trustee", TRUSTEE_W),
    ]
