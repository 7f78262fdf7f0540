"""The window station and desktop a sandboxed command starts on, and the grant of access to
them (UNTESTED on Windows; not called by the run yet).

A process needs access to the window station and desktop it is started on (user32 is set up
in every process that loads it; console programs get their console through it). With
``lpDesktop`` NULL, CreateProcessWithLogonW documents that it adds the account to the
inherited window station and desktop itself, so the broker and the command (which inherits
the broker's desktop) should start without this. What that grant covers is not documented
precisely; if the write-restricted command is refused its desktop, the restricting SIDs (the
capability SID) need an entry too: that is what ``grant_window_access`` does.

Hazard, either way: a process on the real user's desktop at the same integrity level can
send input and window messages to the real user's windows (UIPI only protects higher
integrity levels), e.g. type into a terminal. A separate desktop for sandboxed commands
(CreateDesktopW by the runner, named in the broker's lpDesktop and the command's) closes
that; it is not written. Window-station ACLs live only as long as the logon session: a
grant is made per session (by the runner), not once by setup.
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes
from dataclasses import dataclass

from ringfence.errors import PolicyError
from ringfence.platforms.windows.dacl import (
    DACL_SECURITY_INFORMATION,
    EXPLICIT_ACCESS_W,
    GRANT_ACCESS,
    NO_INHERITANCE,
    NO_MULTIPLE_TRUSTEE,
    TRUSTEE_IS_SID,
    TRUSTEE_IS_UNKNOWN,
    TRUSTEE_W,
)
from ringfence.platforms.windows.dll import (
    bind,
    check_bool,
    check_status,
    load_dll,
    require_windows,
)
from ringfence.platforms.windows.sids import check_sid

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
                check_bool("ConvertStringSidToSidW", to_sid(grant.sid, ctypes.byref(psid)))
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
            check_status("GetSecurityInfo", status, kind)
            check_status(
                "SetEntriesInAclW", set_entries(len(mine), entries, dacl, ctypes.byref(new)), kind
            )
            status = set_info(
                handle, SE_WINDOW_OBJECT, DACL_SECURITY_INFORMATION, None, None, new, None
            )
            check_status("SetSecurityInfo", status, kind)
        finally:
            for pointer in (new, sd, *psids):
                if pointer.value:
                    local_free(pointer)

    access = READ_CONTROL | WRITE_DAC
    station_handle = open_station(station, False, access)
    check_bool("OpenWindowStationW", station_handle, station)
    try:
        merge(int(station_handle), "winsta")
    finally:
        close_station(station_handle)
    desktop_handle = open_desktop(desktop, 0, False, access)
    check_bool("OpenDesktopW", desktop_handle, desktop)
    try:
        merge(int(desktop_handle), "desktop")
    finally:
        close_desktop(desktop_handle)
