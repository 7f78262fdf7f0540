"""User profiles (userenv, the registry's ProfileList): the profile a sandbox user's first
logon creates, deleted with the user; and every profile root, which setup must never put an
ACE on.

NOT RUN ON WINDOWS: written against the documented signatures, type-checked with ``mypy
--platform win32``; unverified until it runs on Windows.
"""

from __future__ import annotations

import sys
from ctypes import wintypes

from ringfence.errors import UnsupportedError
from ringfence.platforms.windows.dll import bind, last_error, load_dll, win_error

ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3


def delete_profile(sid: str, name: str) -> None:
    """DeleteProfileW for ``sid`` (its folder under C:\\Users and its ProfileList entry); a
    profile that is not there (the user never logged on) is not an error. ``name`` is for
    the error message."""
    userenv = load_dll("userenv")
    delete = bind(
        userenv,
        "DeleteProfileW",
        wintypes.BOOL,
        wintypes.LPCWSTR,
        wintypes.LPCWSTR,
        wintypes.LPCWSTR,
    )
    if not delete(sid, None, None):
        code = last_error()
        if code not in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
            raise win_error("DeleteProfileW", code, name)


def profile_roots() -> list[str]:
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
