"""File and directory ACLs with ctypes (advapi32): read a DACL as SDDL, write one back, merge
one ACE; and the propagation-hazard scan that guards every inheritable grant.

NOT RUN ON WINDOWS. The scan is tested on Linux; every ctypes call is unverified until it runs
on Windows (written against the documented signatures, type-checked with ``mypy --platform
win32``).

- ``set_acl`` restores the protected/unprotected state of the DACL too (``PROTECTED_``/
  ``UNPROTECTED_DACL_SECURITY_INFORMATION``), so uninstall re-inherits exactly as before.
- Propagation: ``add_ace`` relies on ``SetNamedSecurityInfoW`` to propagate an inheritable ACE
  to everything below. That walk cannot be told to skip reparse points, and an ACL belongs to
  a file, not to one of its names: a hard link inside a writable root to a file outside it
  would get the sandbox's write ACE. So before granting an inheritable ACE, ``add_ace`` scans
  the tree and refuses if it finds a reparse point (junction, symlink, mount point) or a file
  with more than one link. The scan and the change are not atomic: the setup is meant to run
  while no sandboxed command runs (a command started later cannot change what was granted).
"""

from __future__ import annotations

import ctypes
import os
import stat
from ctypes import wintypes

from ringfence.errors import SandboxError
from ringfence.platforms.windows.dacl import (
    DACL_SECURITY_INFORMATION,
    EXPLICIT_ACCESS_W,
    GRANT_ACCESS,
    NO_MULTIPLE_TRUSTEE,
    SDDL_REVISION_1,
    SE_FILE_OBJECT,
    TRUSTEE_IS_SID,
    TRUSTEE_IS_UNKNOWN,
    TRUSTEE_W,
    ace_fields,
    check_dacl_sddl,
    dacl_protection_flag,
    sddl_has_ace,
)
from ringfence.platforms.windows.dll import bind, check_bool, check_status, load_dll
from ringfence.platforms.windows.setup import AddAce
from ringfence.platforms.windows.sids import check_sid

FILE_ATTRIBUTE_REPARSE_POINT = 0x400


def propagation_hazards(root: str, limit: int = 20) -> list[str]:
    """Paths under ``root`` (itself included) where an inherited ACE would reach outside it:
    reparse points (junctions, symlinks, mount points; not descended into) and files with
    more than one hard link. At most ``limit`` of them, each with the reason."""
    found: list[str] = []

    def check(path: str) -> bool:
        """Report ``path`` if hazardous; True if it is a directory to descend into."""
        st = os.stat(path, follow_symlinks=False)
        attributes = int(getattr(st, "st_file_attributes", 0))
        if stat.S_ISLNK(st.st_mode) or attributes & FILE_ATTRIBUTE_REPARSE_POINT:
            found.append(f"{path} (a reparse point)")
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        if st.st_nlink > 1:
            found.append(f"{path} (a file with {st.st_nlink} hard links)")
        return False

    stack = [root] if check(root) else []
    while stack and len(found) < limit:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if check(entry.path):
                    stack.append(entry.path)
                if len(found) >= limit:
                    break
    return found[:limit]


class _AclCalls:
    """The advapi32/kernel32 functions ``FileAcls`` uses, with prototypes."""

    def __init__(self) -> None:
        W = wintypes
        P = ctypes.POINTER
        adv, k32 = load_dll("advapi32"), load_dll("kernel32")
        self.LocalFree = bind(k32, "LocalFree", W.HLOCAL, W.HLOCAL)
        self.GetNamedSecurityInfoW = bind(
            adv,
            "GetNamedSecurityInfoW",
            W.DWORD,
            W.LPCWSTR,
            ctypes.c_int,
            W.DWORD,
            P(ctypes.c_void_p),
            P(ctypes.c_void_p),
            P(ctypes.c_void_p),
            P(ctypes.c_void_p),
            P(ctypes.c_void_p),
        )
        self.SetNamedSecurityInfoW = bind(
            adv,
            "SetNamedSecurityInfoW",
            W.DWORD,
            W.LPWSTR,
            ctypes.c_int,
            W.DWORD,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        self.ConvertSecurityDescriptorToStringSecurityDescriptorW = bind(
            adv,
            "ConvertSecurityDescriptorToStringSecurityDescriptorW",
            W.BOOL,
            ctypes.c_void_p,
            W.DWORD,
            W.DWORD,
            P(W.LPWSTR),
            P(W.ULONG),
        )
        self.ConvertStringSecurityDescriptorToSecurityDescriptorW = bind(
            adv,
            "ConvertStringSecurityDescriptorToSecurityDescriptorW",
            W.BOOL,
            W.LPCWSTR,
            W.DWORD,
            P(ctypes.c_void_p),
            P(W.ULONG),
        )
        self.GetSecurityDescriptorDacl = bind(
            adv,
            "GetSecurityDescriptorDacl",
            W.BOOL,
            ctypes.c_void_p,
            P(W.BOOL),
            P(ctypes.c_void_p),
            P(W.BOOL),
        )
        self.GetSecurityDescriptorControl = bind(
            adv, "GetSecurityDescriptorControl", W.BOOL, ctypes.c_void_p, P(W.WORD), P(W.DWORD)
        )
        self.SetEntriesInAclW = bind(
            adv,
            "SetEntriesInAclW",
            W.DWORD,
            W.ULONG,
            P(EXPLICIT_ACCESS_W),
            ctypes.c_void_p,
            P(ctypes.c_void_p),
        )
        self.ConvertStringSidToSidW = bind(
            adv, "ConvertStringSidToSidW", W.BOOL, W.LPCWSTR, P(ctypes.c_void_p)
        )


class FileAcls:
    """The DACLs of files and directories, by path (part of ``win32.Win32Api``)."""

    def __init__(self) -> None:
        self._api = _AclCalls()

    def _sid(self, sid: str) -> ctypes.c_void_p:
        psid = ctypes.c_void_p()
        check_bool(
            "ConvertStringSidToSidW",
            self._api.ConvertStringSidToSidW(check_sid(sid), ctypes.byref(psid)),
            sid,
        )
        return psid

    def _get_dacl(self, path: str) -> tuple[ctypes.c_void_p, ctypes.c_void_p]:
        """(the security descriptor to LocalFree, the DACL inside it)."""
        dacl, sd = ctypes.c_void_p(), ctypes.c_void_p()
        status = self._api.GetNamedSecurityInfoW(
            path,
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            None,
            None,
            ctypes.byref(dacl),
            None,
            ctypes.byref(sd),
        )
        check_status("GetNamedSecurityInfoW", status, path)
        return sd, dacl

    def _control(self, sd: ctypes.c_void_p) -> int:
        control, revision = wintypes.WORD(), wintypes.DWORD()
        check_bool(
            "GetSecurityDescriptorControl",
            self._api.GetSecurityDescriptorControl(
                sd, ctypes.byref(control), ctypes.byref(revision)
            ),
        )
        return int(control.value)

    def get_acl(self, path: str) -> str:
        sd, _dacl = self._get_dacl(path)
        try:
            text = wintypes.LPWSTR()
            check_bool(
                "ConvertSecurityDescriptorToStringSecurityDescriptorW",
                self._api.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    sd, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, ctypes.byref(text), None
                ),
                path,
            )
            try:
                return check_dacl_sddl(text.value or "")
            finally:
                self._api.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            self._api.LocalFree(sd)

    def set_acl(self, path: str, acl: str) -> None:
        """Write back a copy taken by ``get_acl``. Inherited ACEs in it are recomputed from the
        parent by SetNamedSecurityInfoW (unless the DACL is protected), which also propagates
        the restored DACL to everything below that inherits."""
        sd = ctypes.c_void_p()
        check_bool(
            "ConvertStringSecurityDescriptorToSecurityDescriptorW",
            self._api.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                check_dacl_sddl(acl), SDDL_REVISION_1, ctypes.byref(sd), None
            ),
            path,
        )
        try:
            present, defaulted, dacl = wintypes.BOOL(), wintypes.BOOL(), ctypes.c_void_p()
            check_bool(
                "GetSecurityDescriptorDacl",
                self._api.GetSecurityDescriptorDacl(
                    sd, ctypes.byref(present), ctypes.byref(dacl), ctypes.byref(defaulted)
                ),
            )
            if not present.value or not dacl.value:
                raise SandboxError(f"windows: refusing to write a NULL DACL on {path}")
            flags = DACL_SECURITY_INFORMATION | dacl_protection_flag(self._control(sd))
            status = self._api.SetNamedSecurityInfoW(
                path, SE_FILE_OBJECT, flags, None, None, dacl, None
            )
            check_status("SetNamedSecurityInfoW", status, path)
        finally:
            self._api.LocalFree(sd)

    def add_ace(self, ace: AddAce) -> None:
        """Merge one ACE into the path's DACL (SetEntriesInAclW keeps the canonical order:
        deny before allow) and write it with SetNamedSecurityInfoW, which propagates an
        inheritable ACE to everything below (see the module docstring for the hazards, which
        are refused here for grants)."""
        fields = ace_fields(ace)
        if fields.mode == GRANT_ACCESS:
            hazards = propagation_hazards(ace.path) if ace.inherit else []
            if not ace.inherit and os.stat(ace.path).st_nlink > 1 and not os.path.isdir(ace.path):
                hazards = [f"{ace.path} (a file with more than one hard link)"]
            if hazards:
                raise SandboxError(
                    f"windows: refusing to grant {ace.rights} on {ace.path}: an inherited ACE "
                    "would reach outside it through " + "; ".join(hazards)
                )
        psid = self._sid(ace.sid)
        try:
            sd, old = self._get_dacl(ace.path)
            try:
                ea = EXPLICIT_ACCESS_W(
                    grfAccessPermissions=fields.mask,
                    grfAccessMode=fields.mode,
                    grfInheritance=fields.inheritance,
                    Trustee=TRUSTEE_W(
                        None, NO_MULTIPLE_TRUSTEE, TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN, psid
                    ),
                )
                new = ctypes.c_void_p()
                status = self._api.SetEntriesInAclW(1, ctypes.byref(ea), old, ctypes.byref(new))
                check_status("SetEntriesInAclW", status, ace.path)
                try:
                    flags = DACL_SECURITY_INFORMATION | dacl_protection_flag(self._control(sd))
                    status = self._api.SetNamedSecurityInfoW(
                        ace.path, SE_FILE_OBJECT, flags, None, None, new, None
                    )
                    check_status("SetNamedSecurityInfoW", status, ace.path)
                finally:
                    self._api.LocalFree(new)
            finally:
                self._api.LocalFree(sd)
        finally:
            self._api.LocalFree(psid)

    def has_ace(self, ace: AddAce) -> bool:
        """Is ``ace`` in the path's DACL as an explicit entry (read back as SDDL)?"""
        return sddl_has_ace(self.get_acl(ace.path), ace)
