"""``Win32Api``: the setup's ``WinApi`` on a real Windows machine, with ctypes.

NOT RUN ON WINDOWS. Nothing in this module has been executed on Windows: it was written
against the documented Win32 signatures and type-checked with ``mypy --platform win32``. The
pure parts (rule validation, the PowerShell argv and environment, the mask and inheritance
mapping, the SDDL checks, the propagation-hazard scan) are tested on Linux; every ctypes call
is unverified until it runs on Windows.

The module imports anywhere; the DLLs are loaded only when a ``Win32Api`` is built, and
building one off Windows raises :class:`UnsupportedError`.

Choices, and why:

- Users: ``NetUserAdd`` level 1 with ``USER_PRIV_USER`` (never an administrator), a random
  throwaway password and ``UF_DONT_EXPIRE_PASSWD``; ``store_secret`` sets the real password
  (``NetUserSetInfo`` level 1003) and stores it with DPAPI (``secrets.SecretStore``).
  ``user_exists`` refuses an existing account of that name that has administrator privilege.
- ACLs as SDDL (``D:`` part only): a lossless, printable copy for the journal. ``set_acl``
  restores the protected/unprotected state of the DACL too (``PROTECTED_``/
  ``UNPROTECTED_DACL_SECURITY_INFORMATION``), so uninstall re-inherits exactly as before.
- Firewall rules: ``New-NetFirewallRule -LocalUser <SDDL>`` through Windows PowerShell by
  absolute path. ``netsh advfirewall`` cannot filter by local user, and driving
  ``INetFwRule3.LocalUserAuthorizedList`` through COM vtables in ctypes is a lot of
  unverifiable pointer code. The script is a constant; every rule field travels in an
  environment variable (data, never parsed as PowerShell), and is first checked against
  strict patterns (no wildcards, which ``-Name`` would expand).
- Propagation: ``add_ace`` relies on ``SetNamedSecurityInfoW`` to propagate an inheritable ACE
  to everything below. That walk cannot be told to skip reparse points, and an ACL belongs to
  a file, not to one of its names: a hard link inside a writable root to a file outside it
  would get the sandbox's write ACE. So before granting an inheritable ACE, ``add_ace`` scans
  the tree and refuses if it finds a reparse point (junction, symlink, mount point) or a file
  with more than one link. The scan and the change are not atomic: the setup is meant to run
  while no sandboxed command runs (a command started later cannot change what was granted).
"""

from __future__ import annotations

import base64
import ctypes
import ipaddress
import ntpath
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from ctypes import wintypes
from dataclasses import dataclass
from typing import Any

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.rights import MASKS
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule, WinApi

# --- constants (documented values; shared with runner.py) -----------------------------------

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
FILE_ATTRIBUTE_REPARSE_POINT = 0x400

USER_PRIV_USER = 1
USER_PRIV_ADMIN = 2
UF_SCRIPT = 0x0001
UF_PASSWD_CANT_CHANGE = 0x0040
UF_DONT_EXPIRE_PASSWD = 0x10000
NERR_SUCCESS = 0
NERR_USER_NOT_FOUND = 2221
CRYPTPROTECT_UI_FORBIDDEN = 0x1
CREATE_NO_WINDOW = 0x08000000

# The Net API returns its own codes (2100+), which FormatMessage without netmsg.dll does not know.
_NET_ERRORS = {
    2220: "the group name could not be found",
    2221: "the user name could not be found",
    2224: "the account already exists",
    2226: "this operation is only allowed on the primary domain controller",
    2245: "the password does not meet the password policy requirements",
}

SID_PATTERN = re.compile(r"S-1-\d{1,13}(-\d{1,10}){1,15}")
# Rule names: what plan.py emits ("ringfence offline: not loopback"); no wildcard or quote.
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:()-]{0,127}")
_PROTOCOLS = {"any": "Any", "tcp": "TCP", "udp": "UDP"}
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


# --- pure pieces -----------------------------------------------------------------------------


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


def check_sid(sid: str) -> str:
    """A SID in string form (``S-1-5-21-...``, ``S-1-15-3-...``), nothing else."""
    if not SID_PATTERN.fullmatch(sid):
        raise PolicyError(f"windows: {sid!r} is not a SID (S-1-N-N...)")
    return sid


def user_condition_sddl(sid: str) -> str:
    """The ``-LocalUser`` condition of a firewall rule: an SDDL security descriptor granting
    "connect" (CC) to that one user; the rule then applies to that user's traffic only."""
    return f"O:LSD:(A;;CC;;;{check_sid(sid)})"


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


def _check_ports(ports: str) -> tuple[str, ...]:
    out = []
    for part in ports.split(","):
        m = _PORT_RANGE.fullmatch(part)
        lo = int(m.group(1)) if m else 0
        hi = int(m.group(2)) if m and m.group(2) else lo
        if not m or not 1 <= lo <= hi <= 65535:
            raise PolicyError(f"windows: bad remote port range {part!r} (N or N-M, 1-65535)")
        out.append(part)
    return tuple(out)


def _check_addresses(addresses: str) -> tuple[str, ...]:
    out = []
    for part in addresses.split(","):
        try:
            if "/" in part:
                ipaddress.ip_network(part, strict=True)
            elif "-" in part:
                lo_s, hi_s = part.split("-")
                lo, hi = ipaddress.ip_address(lo_s), ipaddress.ip_address(hi_s)
                if lo.version != hi.version or lo > hi:  # type: ignore[operator]
                    raise ValueError(part)
            else:
                ipaddress.ip_address(part)
        except ValueError:
            raise PolicyError(
                f"windows: bad remote address {part!r} (an address, a CIDR network or A-B)"
            ) from None
        out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class FirewallFields:
    """An ``AddFirewallRule`` checked and split into what ``New-NetFirewallRule`` takes."""

    name: str
    protocol: str  # Any | TCP | UDP
    remote_addresses: tuple[str, ...]
    remote_ports: tuple[str, ...]


def check_firewall_rule(rule: AddFirewallRule) -> FirewallFields:
    """Strict patterns for every field, before anything reaches PowerShell."""
    if not _RULE_NAME.fullmatch(rule.name):
        raise PolicyError(
            f"windows: bad firewall rule name {rule.name!r} "
            "(letters, digits, space and . _ : ( ) -; no wildcards or quotes)"
        )
    secret_store.check_user_name(rule.user)
    if rule.protocol not in _PROTOCOLS:
        raise PolicyError(f"windows: bad protocol {rule.protocol!r} (any, tcp, udp)")
    ports = _check_ports(rule.remote_ports) if rule.remote_ports else ()
    if ports and rule.protocol == "any":
        raise PolicyError(f"windows: rule {rule.name!r}: ports need protocol tcp or udp")
    return FirewallFields(
        name=rule.name,
        protocol=_PROTOCOLS[rule.protocol],
        remote_addresses=_check_addresses(rule.remote_addresses),
        remote_ports=ports,
    )


# The scripts are constants: every value comes from an environment variable, never from text
# pasted into the script. `NetSecurity\` pins the module; -Name takes the exact name.
FIREWALL_ADD_SCRIPT = r"""$ErrorActionPreference = 'Stop'
$p = @{
  Name = $env:RINGFENCE_FW_NAME; DisplayName = $env:RINGFENCE_FW_NAME; Group = 'ringfence'
  Direction = 'Outbound'; Action = 'Block'; Enabled = 'True'; Profile = 'Any'
  Protocol = $env:RINGFENCE_FW_PROTOCOL
  RemoteAddress = [string[]]($env:RINGFENCE_FW_REMOTE_ADDRESSES -split ',')
  LocalUser = $env:RINGFENCE_FW_LOCAL_USER
}
if ($env:RINGFENCE_FW_REMOTE_PORTS) {
  $p.RemotePort = [string[]]($env:RINGFENCE_FW_REMOTE_PORTS -split ',')
}
NetSecurity\New-NetFirewallRule @p | Out-Null
"""
FIREWALL_EXISTS_SCRIPT = r"""$ErrorActionPreference = 'Stop'
$r = NetSecurity\Get-NetFirewallRule -Name $env:RINGFENCE_FW_NAME -ErrorAction SilentlyContinue
if ($r) { exit 0 } else { exit 3 }
"""
FIREWALL_DELETE_SCRIPT = r"""$ErrorActionPreference = 'Stop'
NetSecurity\Remove-NetFirewallRule -Name $env:RINGFENCE_FW_NAME
"""
FIREWALL_ABSENT_EXIT = 3


def powershell_path(system_root: str) -> str:
    return ntpath.join(system_root, "System32", "WindowsPowerShell", "v1.0", "powershell.exe")


def powershell_argv(system_root: str, script: str) -> list[str]:
    """Windows PowerShell by absolute path, no profile, the script base64-encoded (UTF-16LE),
    so no quoting layer of the command line ever sees it."""
    if not ntpath.isabs(system_root):
        raise SandboxError(f"windows: SystemRoot is not absolute: {system_root!r}")
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [
        powershell_path(system_root),
        "-NoLogo",
        "-NoProfile",
        "-NonInteractive",
        "-EncodedCommand",
        encoded,
    ]


_KEEP_ENV = ("SystemRoot", "windir", "SystemDrive", "TEMP", "TMP", "USERPROFILE", "LOCALAPPDATA")


def powershell_env(base: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """A small environment: what PowerShell needs to start, ``PSModulePath`` pinned to the
    system modules (no user module can shadow ``NetSecurity``), and the rule's fields."""
    lower = {k.lower(): v for k, v in base.items()}
    env = {k: lower[k.lower()] for k in _KEEP_ENV if k.lower() in lower}
    root = lower.get("systemroot")
    if not root:
        raise SandboxError("windows: SystemRoot is not set")
    env["PSModulePath"] = ntpath.join(root, "System32", "WindowsPowerShell", "v1.0", "Modules")
    for key, value in params.items():
        if not key.startswith("RINGFENCE_FW_") or "\0" in value:
            raise SandboxError(f"windows: bad PowerShell parameter {key!r}")
        env[key] = value
    return env


def firewall_params(fields: FirewallFields, user_sid: str) -> dict[str, str]:
    return {
        "RINGFENCE_FW_NAME": fields.name,
        "RINGFENCE_FW_PROTOCOL": fields.protocol,
        "RINGFENCE_FW_REMOTE_ADDRESSES": ",".join(fields.remote_addresses),
        "RINGFENCE_FW_REMOTE_PORTS": ",".join(fields.remote_ports),
        "RINGFENCE_FW_LOCAL_USER": user_condition_sddl(user_sid),
    }


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


# --- structures (layouts of the Windows headers; wintypes imports on any platform) -----------


class USER_INFO_1(ctypes.Structure):
    _fields_ = [
        ("usri1_name", wintypes.LPWSTR),
        ("usri1_password", wintypes.LPWSTR),
        ("usri1_password_age", wintypes.DWORD),
        ("usri1_priv", wintypes.DWORD),
        ("usri1_home_dir", wintypes.LPWSTR),
        ("usri1_comment", wintypes.LPWSTR),
        ("usri1_flags", wintypes.DWORD),
        ("usri1_script_path", wintypes.LPWSTR),
    ]


class USER_INFO_1003(ctypes.Structure):
    _fields_ = [("usri1003_password", wintypes.LPWSTR)]


class DATA_BLOB(ctypes.Structure):
    _fields_ = [("cbData", wintypes.DWORD), ("pbData", ctypes.POINTER(ctypes.c_ubyte))]


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


# --- the DLLs --------------------------------------------------------------------------------


def require_windows(what: str) -> None:
    if sys.platform != "win32":
        raise UnsupportedError(f"{what} needs Windows (this is {sys.platform})")


def load_dll(name: str) -> Any:
    """``ctypes.WinDLL`` with ``use_last_error``, so errors are read with get_last_error."""
    if sys.platform == "win32":  # also narrows for mypy: WinDLL exists only there
        return ctypes.WinDLL(name, use_last_error=True)
    raise UnsupportedError(f"loading {name} needs Windows (this is {sys.platform})")


def bind(dll: Any, name: str, restype: Any, *argtypes: Any) -> Any:
    """One function with its prototype, so ctypes converts (and checks) every argument."""
    fn = getattr(dll, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


def error_text(code: int) -> str:
    if code in _NET_ERRORS:
        return _NET_ERRORS[code]
    if sys.platform == "win32":
        return ctypes.FormatError(code).strip()
    return f"error {code}"


def win_error(api: str, code: int | None = None, detail: str = "") -> SandboxError:
    """A SandboxError naming the call, the code and Windows's text for it."""
    if code is None:
        code = 0
        if sys.platform == "win32":
            code = ctypes.get_last_error()
    where = f" ({detail})" if detail else ""
    return SandboxError(f"windows: {api}{where} failed: [{code}] {error_text(code)}")


def _check_bool(api: str, ok: int, detail: str = "") -> None:
    if not ok:
        raise win_error(api, detail=detail)


def _check_status(api: str, status: int, detail: str = "") -> None:
    """Functions that return the error code instead of setting the last error."""
    if status != 0:
        raise win_error(api, status, detail)


ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3


class _Advapi:
    """The advapi32/kernel32/netapi32/crypt32 functions Win32Api uses, with prototypes."""

    def __init__(self) -> None:
        W = wintypes
        P = ctypes.POINTER
        adv, k32 = load_dll("advapi32"), load_dll("kernel32")
        net, crypt = load_dll("netapi32"), load_dll("crypt32")
        self.LocalFree = bind(k32, "LocalFree", W.HLOCAL, W.HLOCAL)
        self.NetUserAdd = bind(
            net, "NetUserAdd", W.DWORD, W.LPCWSTR, W.DWORD, ctypes.c_void_p, P(W.DWORD)
        )
        self.NetUserDel = bind(net, "NetUserDel", W.DWORD, W.LPCWSTR, W.LPCWSTR)
        self.NetUserGetInfo = bind(
            net, "NetUserGetInfo", W.DWORD, W.LPCWSTR, W.LPCWSTR, W.DWORD, P(ctypes.c_void_p)
        )
        self.NetUserSetInfo = bind(
            net,
            "NetUserSetInfo",
            W.DWORD,
            W.LPCWSTR,
            W.LPCWSTR,
            W.DWORD,
            ctypes.c_void_p,
            P(W.DWORD),
        )
        self.NetApiBufferFree = bind(net, "NetApiBufferFree", W.DWORD, ctypes.c_void_p)
        self.CryptProtectData = bind(
            crypt,
            "CryptProtectData",
            W.BOOL,
            P(DATA_BLOB),
            W.LPCWSTR,
            P(DATA_BLOB),
            ctypes.c_void_p,
            ctypes.c_void_p,
            W.DWORD,
            P(DATA_BLOB),
        )
        self.CryptUnprotectData = bind(
            crypt,
            "CryptUnprotectData",
            W.BOOL,
            P(DATA_BLOB),
            P(W.LPWSTR),
            P(DATA_BLOB),
            ctypes.c_void_p,
            ctypes.c_void_p,
            W.DWORD,
            P(DATA_BLOB),
        )
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
        self.ConvertSidToStringSidW = bind(
            adv, "ConvertSidToStringSidW", W.BOOL, ctypes.c_void_p, P(W.LPWSTR)
        )
        self.LookupAccountNameW = bind(
            adv,
            "LookupAccountNameW",
            W.BOOL,
            W.LPCWSTR,
            W.LPCWSTR,
            ctypes.c_void_p,
            P(W.DWORD),
            W.LPWSTR,
            P(W.DWORD),
            P(ctypes.c_int),
        )


# --- DPAPI (also used by the runner) ---------------------------------------------------------


def _blob(data: bytes) -> tuple[DATA_BLOB, Any]:
    buf = (ctypes.c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0")
    return DATA_BLOB(len(data), ctypes.cast(buf, ctypes.POINTER(ctypes.c_ubyte))), buf


def _take_blob(api: _Advapi, blob: DATA_BLOB) -> bytes:
    try:
        return ctypes.string_at(blob.pbData, blob.cbData)
    finally:
        api.LocalFree(ctypes.cast(blob.pbData, ctypes.c_void_p))


def _dpapi(name: str, data: bytes, entropy: bytes, api: _Advapi | None) -> bytes:
    """CryptProtectData or CryptUnprotectData: the same call shape, one blob in, one out."""
    api = api or _Advapi()
    data_in, keep1 = _blob(data)
    ent, keep2 = _blob(entropy)
    out = DATA_BLOB()
    description = "ringfence" if name == "CryptProtectData" else None
    fn = api.CryptProtectData if name == "CryptProtectData" else api.CryptUnprotectData
    ok = fn(
        ctypes.byref(data_in),
        description,
        ctypes.byref(ent),
        None,
        None,
        CRYPTPROTECT_UI_FORBIDDEN,
        ctypes.byref(out),
    )
    del keep1, keep2
    _check_bool(name, ok)
    return _take_blob(api, out)


def dpapi_protect(data: bytes, entropy: bytes, api: _Advapi | None = None) -> bytes:
    """CryptProtectData in the calling user's scope (no CRYPTPROTECT_LOCAL_MACHINE): only the
    same user's logon, elevated or not, can unprotect it."""
    return _dpapi("CryptProtectData", data, entropy, api)


def dpapi_unprotect(blob: bytes, entropy: bytes, api: _Advapi | None = None) -> bytes:
    return _dpapi("CryptUnprotectData", blob, entropy, api)


def secret_store_for(local_app_data: str | None = None) -> secret_store.SecretStore:
    """The DPAPI store under ``%LOCALAPPDATA%\\ringfence\\secrets`` of the calling user."""
    require_windows("the DPAPI secret store")
    base = local_app_data or os.environ.get("LOCALAPPDATA", "")
    return secret_store.SecretStore(
        secret_store.secrets_directory(base), dpapi_protect, dpapi_unprotect
    )


# --- Win32Api --------------------------------------------------------------------------------


class Win32Api:
    """``setup.WinApi`` with ctypes. Must run elevated (users, ACLs, firewall rules) as the
    person whose unelevated runner will later read the stored passwords."""

    def __init__(self, local_app_data: str | None = None, system_root: str | None = None) -> None:
        require_windows("ringfence's Windows setup (Win32Api)")
        self._api = _Advapi()
        self._secrets = secret_store_for(local_app_data)
        self._system_root = system_root or os.environ.get("SYSTEMROOT", "")
        if not ntpath.isabs(self._system_root):
            raise SandboxError(f"windows: SystemRoot is not absolute: {self._system_root!r}")

    # users

    def user_exists(self, name: str) -> bool:
        secret_store.check_user_name(name)
        buf = ctypes.c_void_p()
        status = self._api.NetUserGetInfo(None, name, 1, ctypes.byref(buf))
        if status == NERR_USER_NOT_FOUND:
            return False
        _check_status("NetUserGetInfo", status, name)
        try:
            priv = ctypes.cast(buf, ctypes.POINTER(USER_INFO_1)).contents.usri1_priv
        finally:
            self._api.NetApiBufferFree(buf)
        if priv != USER_PRIV_USER:
            raise SandboxError(
                f"windows: the existing account {name} is not a plain user (privilege {priv}): "
                "refusing to use it as a sandbox user"
            )
        return True

    def create_user(self, name: str) -> None:
        """A plain user with a throwaway password; ``store_secret`` sets the real one."""
        info = USER_INFO_1(
            usri1_name=secret_store.check_user_name(name),
            usri1_password=secret_store.generate_password(),
            usri1_password_age=0,
            usri1_priv=USER_PRIV_USER,
            usri1_home_dir=None,
            usri1_comment="ringfence sandbox user",
            usri1_flags=UF_SCRIPT | UF_DONT_EXPIRE_PASSWD | UF_PASSWD_CANT_CHANGE,
            usri1_script_path=None,
        )
        parm_err = wintypes.DWORD()
        status = self._api.NetUserAdd(None, 1, ctypes.byref(info), ctypes.byref(parm_err))
        _check_status("NetUserAdd", status, f"{name}, field {parm_err.value}")

    def delete_user(self, name: str) -> None:
        """The account, then its profile (made by the broker's first logon: a folder under
        C:\\Users and a ProfileList entry), which would otherwise outlive uninstall."""
        name = secret_store.check_user_name(name)
        sid = self.user_sid(name) if self.user_exists(name) else None
        status = self._api.NetUserDel(None, name)
        if status != NERR_USER_NOT_FOUND:
            _check_status("NetUserDel", status, name)
        if sid is not None:
            userenv = load_dll("userenv")
            delete_profile = bind(
                userenv,
                "DeleteProfileW",
                wintypes.BOOL,
                wintypes.LPCWSTR,
                wintypes.LPCWSTR,
                wintypes.LPCWSTR,
            )
            if not delete_profile(sid, None, None):
                code = 0
                if sys.platform == "win32":
                    code = ctypes.get_last_error()
                if code not in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
                    raise win_error("DeleteProfileW", code, name)

    # secrets

    def secret_exists(self, user: str) -> bool:
        return self._secrets.exists(user)

    def store_secret(self, user: str) -> None:
        """A new password: set on the account first, then stored (a crash in between leaves no
        file, and the journal redoes both)."""
        password = secret_store.generate_password()
        info = USER_INFO_1003(usri1003_password=password)
        parm_err = wintypes.DWORD()
        status = self._api.NetUserSetInfo(
            None,
            secret_store.check_user_name(user),
            1003,
            ctypes.byref(info),
            ctypes.byref(parm_err),
        )
        _check_status("NetUserSetInfo(1003)", status, user)
        self._secrets.save(user, password)

    def delete_secret(self, user: str) -> None:
        self._secrets.delete(user)

    def load_secret(self, user: str) -> str:
        return self._secrets.load(user)

    # ACLs

    def _sid(self, sid: str) -> ctypes.c_void_p:
        psid = ctypes.c_void_p()
        _check_bool(
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
        _check_status("GetNamedSecurityInfoW", status, path)
        return sd, dacl

    def _control(self, sd: ctypes.c_void_p) -> int:
        control, revision = wintypes.WORD(), wintypes.DWORD()
        _check_bool(
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
            _check_bool(
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
        _check_bool(
            "ConvertStringSecurityDescriptorToSecurityDescriptorW",
            self._api.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                check_dacl_sddl(acl), SDDL_REVISION_1, ctypes.byref(sd), None
            ),
            path,
        )
        try:
            present, defaulted, dacl = wintypes.BOOL(), wintypes.BOOL(), ctypes.c_void_p()
            _check_bool(
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
            _check_status("SetNamedSecurityInfoW", status, path)
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
                _check_status("SetEntriesInAclW", status, ace.path)
                try:
                    flags = DACL_SECURITY_INFORMATION | dacl_protection_flag(self._control(sd))
                    status = self._api.SetNamedSecurityInfoW(
                        ace.path, SE_FILE_OBJECT, flags, None, None, new, None
                    )
                    _check_status("SetNamedSecurityInfoW", status, ace.path)
                finally:
                    self._api.LocalFree(new)
            finally:
                self._api.LocalFree(sd)
        finally:
            self._api.LocalFree(psid)

    def has_ace(self, ace: AddAce) -> bool:
        """Is ``ace`` in the path's DACL as an explicit entry (read back as SDDL)?"""
        return sddl_has_ace(self.get_acl(ace.path), ace)

    # firewall

    def user_sid(self, name: str) -> str:
        """The SID of a local account (LookupAccountNameW, then its string form)."""
        secret_store.check_user_name(name)
        sid_size, dom_size, use = wintypes.DWORD(0), wintypes.DWORD(0), ctypes.c_int()
        self._api.LookupAccountNameW(
            None,
            name,
            None,
            ctypes.byref(sid_size),
            None,
            ctypes.byref(dom_size),
            ctypes.byref(use),
        )
        if not sid_size.value:
            raise win_error("LookupAccountNameW", detail=name)
        sid = ctypes.create_string_buffer(sid_size.value)
        domain = ctypes.create_unicode_buffer(dom_size.value + 1)
        _check_bool(
            "LookupAccountNameW",
            self._api.LookupAccountNameW(
                None,
                name,
                sid,
                ctypes.byref(sid_size),
                domain,
                ctypes.byref(dom_size),
                ctypes.byref(use),
            ),
            name,
        )
        text = wintypes.LPWSTR()
        _check_bool(
            "ConvertSidToStringSidW",
            self._api.ConvertSidToStringSidW(sid, ctypes.byref(text)),
            name,
        )
        try:
            return check_sid(text.value or "")
        finally:
            self._api.LocalFree(ctypes.cast(text, ctypes.c_void_p))

    def _powershell(self, script: str, params: Mapping[str, str]) -> int:
        argv = powershell_argv(self._system_root, script)
        env = powershell_env(os.environ, params)
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
                stdin=subprocess.DEVNULL,
                creationflags=CREATE_NO_WINDOW,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxError(f"windows: running {argv[0]} failed: {e}") from None
        if done.returncode not in (0, FIREWALL_ABSENT_EXIT):
            text = done.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise SandboxError(
                f"windows: PowerShell ({params.get('RINGFENCE_FW_NAME', '')}) failed with "
                f"exit {done.returncode}: {text}"
            )
        return done.returncode

    def firewall_rule_exists(self, name: str) -> bool:
        if not _RULE_NAME.fullmatch(name):
            raise PolicyError(f"windows: bad firewall rule name {name!r}")
        params = {"RINGFENCE_FW_NAME": name}
        return self._powershell(FIREWALL_EXISTS_SCRIPT, params) == 0

    def add_firewall_rule(self, rule: AddFirewallRule) -> None:
        fields = check_firewall_rule(rule)
        params = firewall_params(fields, self.user_sid(rule.user))
        if self._powershell(FIREWALL_ADD_SCRIPT, params) != 0:
            raise SandboxError(f"windows: New-NetFirewallRule {rule.name!r} did not succeed")

    def delete_firewall_rule(self, name: str) -> None:
        if not _RULE_NAME.fullmatch(name):
            raise PolicyError(f"windows: bad firewall rule name {name!r}")
        if self._powershell(FIREWALL_DELETE_SCRIPT, {"RINGFENCE_FW_NAME": name}) != 0:
            raise SandboxError(f"windows: Remove-NetFirewallRule {name!r} did not succeed")

    # profiles

    def profile_roots(self) -> list[str]:
        """Every ``ProfileImagePath`` under HKLM\\...\\ProfileList, plus the profiles directory,
        the Default and Public profiles: the roots setup must never put an ACE on."""
        if sys.platform != "win32":
            raise UnsupportedError("profile_roots needs Windows")
        import winreg

        key_path = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList"
        roots: list[str] = []
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key_path) as key:
            for value in ("ProfilesDirectory", "Default", "Public"):
                try:
                    roots.append(winreg.QueryValueEx(key, value)[0])
                except OSError:
                    pass
            index = 0
            while True:
                try:
                    sub = winreg.EnumKey(key, index)
                except OSError:
                    break
                index += 1
                try:
                    with winreg.OpenKey(key, sub) as profile:
                        roots.append(winreg.QueryValueEx(profile, "ProfileImagePath")[0])
                except OSError:
                    continue
        return [winreg.ExpandEnvironmentStrings(str(r)) for r in roots if r]


def _conforms(api: Win32Api) -> WinApi:
    """mypy proves here that Win32Api implements setup.WinApi."""
    return api


# --- the window station and desktop (UNTESTED on Windows; not called by the runner) ----------
#
# A process needs access to the window station and desktop it is started on (user32 is set up
# in every process that loads it; console programs get their console through it). With
# ``lpDesktop`` NULL, CreateProcessWithLogonW documents that it adds the account to the
# inherited window station and desktop itself, so the broker and the command (which inherits
# the broker's desktop) should start without this. What that grant covers is not documented
# precisely; if the write-restricted command is refused its desktop, the restricting SIDs (the
# capability SID) need an entry too: that is what ``grant_window_access`` does.
#
# Hazard, either way: a process on the real user's desktop at the same integrity level can
# send input and window messages to the real user's windows (UIPI only protects higher
# integrity levels), e.g. type into a terminal. A separate desktop for sandboxed commands
# (CreateDesktopW by the runner, named in the broker's lpDesktop and the command's) closes
# that; it is not written. Window-station ACLs live only as long as the logon session: a
# grant is made per session (by the runner), not once by setup.

SE_WINDOW_OBJECT = 7
READ_CONTROL = 0x20000
WRITE_DAC = 0x40000
# WINSTA_ENUMDESKTOPS | WINSTA_READATTRIBUTES | WINSTA_ACCESSGLOBALATOMS | WINSTA_ENUMERATE;
# not the clipboard, screen reading, attribute writes, desktop creation or ExitWindows.
WINDOW_STATION_ACCESS = 0x1 | 0x2 | 0x20 | 0x100 | READ_CONTROL
# DESKTOP_READOBJECTS | DESKTOP_CREATEWINDOW | DESKTOP_CREATEMENU | DESKTOP_ENUMERATE;
# not hooks, journal record/playback, WRITEOBJECTS or SWITCHDESKTOP.
DESKTOP_ACCESS = 0x1 | 0x2 | 0x4 | 0x40 | READ_CONTROL


@dataclass(frozen=True)
class WindowGrant:
    """One allow entry to merge into a window station's or desktop's DACL."""

    object: str  # "winsta" | "desktop"
    sid: str
    mask: int


def window_grants(sids: list[str] | tuple[str, ...]) -> list[WindowGrant]:
    """The entries ``grant_window_access`` adds: for each SID (the sandbox users' and the
    capability SID, so that both checks of a write-restricted token pass), the window station
    and the desktop, with the rights above and nothing more."""
    if not sids:
        raise PolicyError("windows: no SID to grant the window station and desktop to")
    out: list[WindowGrant] = []
    for sid in dict.fromkeys(check_sid(s) for s in sids):
        out.append(WindowGrant("winsta", sid, WINDOW_STATION_ACCESS))
        out.append(WindowGrant("desktop", sid, DESKTOP_ACCESS))
    return out


def grant_window_access(
    sids: list[str] | tuple[str, ...], station: str = "WinSta0", desktop: str = "Default"
) -> None:
    """UNTESTED: merge ``window_grants(sids)`` into the DACLs of ``station`` and ``desktop``
    (OpenWindowStationW/OpenDesktopW with READ_CONTROL | WRITE_DAC, GetSecurityInfo,
    SetEntriesInAclW, SetSecurityInfo). Run as the interactive user, in the session whose
    desktop the commands use; the grant ends with that logon session."""
    require_windows("granting window station access")
    grants = window_grants(sids)
    W, P, V = wintypes, ctypes.POINTER, ctypes.c_void_p
    user32, adv, k32 = load_dll("user32"), load_dll("advapi32"), load_dll("kernel32")
    open_station = bind(user32, "OpenWindowStationW", W.HANDLE, W.LPCWSTR, W.BOOL, W.DWORD)
    open_desktop = bind(user32, "OpenDesktopW", W.HANDLE, W.LPCWSTR, W.DWORD, W.BOOL, W.DWORD)
    close_station = bind(user32, "CloseWindowStation", W.BOOL, W.HANDLE)
    close_desktop = bind(user32, "CloseDesktop", W.BOOL, W.HANDLE)
    get_info = bind(
        adv, "GetSecurityInfo", W.DWORD, W.HANDLE, ctypes.c_int, W.DWORD, V, V, P(V), V, P(V)
    )
    set_info = bind(adv, "SetSecurityInfo", W.DWORD, W.HANDLE, ctypes.c_int, W.DWORD, V, V, V, V)
    set_entries = bind(adv, "SetEntriesInAclW", W.DWORD, W.ULONG, P(EXPLICIT_ACCESS_W), V, P(V))
    to_sid = bind(adv, "ConvertStringSidToSidW", W.BOOL, W.LPCWSTR, P(V))
    local_free = bind(k32, "LocalFree", W.HLOCAL, W.HLOCAL)

    def merge(handle: int, kind: str) -> None:
        mine = [g for g in grants if g.object == kind]
        psids: list[ctypes.c_void_p] = []
        sd, dacl, new = V(), V(), V()
        try:
            entries = (EXPLICIT_ACCESS_W * len(mine))()
            for entry, grant in zip(entries, mine, strict=True):
                psid = V()
                _check_bool("ConvertStringSidToSidW", to_sid(grant.sid, ctypes.byref(psid)))
                psids.append(psid)
                entry.grfAccessPermissions = grant.mask
                entry.grfAccessMode = GRANT_ACCESS
                entry.grfInheritance = NO_INHERITANCE
                entry.Trustee = TRUSTEE_W(
                    None, NO_MULTIPLE_TRUSTEE, TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN, psid
                )
            status = get_info(
                handle,
                SE_WINDOW_OBJECT,
                DACL_SECURITY_INFORMATION,
                None,
                None,
                ctypes.byref(dacl),
                None,
                ctypes.byref(sd),
            )
            _check_status("GetSecurityInfo", status, kind)
            _check_status(
                "SetEntriesInAclW", set_entries(len(mine), entries, dacl, ctypes.byref(new)), kind
            )
            status = set_info(
                handle, SE_WINDOW_OBJECT, DACL_SECURITY_INFORMATION, None, None, new, None
            )
            _check_status("SetSecurityInfo", status, kind)
        finally:
            for pointer in (new, sd, *psids):
                if pointer.value:
                    local_free(pointer)

    access = READ_CONTROL | WRITE_DAC
    station_handle = open_station(station, False, access)
    _check_bool("OpenWindowStationW", station_handle, station)
    try:
        merge(int(station_handle), "winsta")
    finally:
        close_station(station_handle)
    desktop_handle = open_desktop(desktop, 0, False, access)
    _check_bool("OpenDesktopW", desktop_handle, desktop)
    try:
        merge(int(desktop_handle), "desktop")
    finally:
        close_desktop(desktop_handle)
