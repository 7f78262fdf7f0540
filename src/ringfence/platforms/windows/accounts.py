"""Local accounts with ctypes (netapi32, and advapi32 for the SID of a name): the sandbox
users created, checked, given a password, deleted.

NOT RUN ON WINDOWS. Written against the documented signatures and type-checked with ``mypy
--platform win32``; every call is unverified until it runs on Windows.

Users: ``NetUserAdd`` level 1 with ``USER_PRIV_USER`` (never an administrator), a random
throwaway password and ``UF_DONT_EXPIRE_PASSWD``; ``set_password`` sets the real one
(``NetUserSetInfo`` level 1003), which ``win32.Win32Api.store_secret`` then stores with DPAPI.
``user_exists`` refuses an existing account of that name that has administrator privilege.
Deleting a user also deletes the profile its first logon made (``profiles.delete_profile``).
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes

from ringfence.errors import SandboxError
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.dll import bind, check_bool, check_status, load_dll, win_error
from ringfence.platforms.windows.profiles import delete_profile
from ringfence.platforms.windows.sids import check_sid

USER_PRIV_USER = 1
USER_PRIV_ADMIN = 2
UF_SCRIPT = 0x0001
UF_PASSWD_CANT_CHANGE = 0x0040
UF_DONT_EXPIRE_PASSWD = 0x10000
NERR_SUCCESS = 0
NERR_USER_NOT_FOUND = 2221


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


class _NetCalls:
    """The netapi32/advapi32/kernel32 functions ``LocalAccounts`` uses, with prototypes."""

    def __init__(self) -> None:
        W = wintypes
        P = ctypes.POINTER
        adv, k32, net = load_dll("advapi32"), load_dll("kernel32"), load_dll("netapi32")
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


class LocalAccounts:
    """The machine's local accounts (part of ``win32.Win32Api``)."""

    def __init__(self) -> None:
        self._api = _NetCalls()

    def user_exists(self, name: str) -> bool:
        secret_store.check_user_name(name)
        buf = ctypes.c_void_p()
        status = self._api.NetUserGetInfo(None, name, 1, ctypes.byref(buf))
        if status == NERR_USER_NOT_FOUND:
            return False
        check_status("NetUserGetInfo", status, name)
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
        check_status("NetUserAdd", status, f"{name}, field {parm_err.value}")

    def delete_user(self, name: str) -> None:
        """The account, then its profile (made by the broker's first logon: a folder under
        C:\\Users and a ProfileList entry), which would otherwise outlive uninstall."""
        name = secret_store.check_user_name(name)
        sid = self.user_sid(name) if self.user_exists(name) else None
        status = self._api.NetUserDel(None, name)
        if status != NERR_USER_NOT_FOUND:
            check_status("NetUserDel", status, name)
        if sid is not None:
            delete_profile(sid, name)

    def set_password(self, user: str, password: str) -> None:
        """The account's password (NetUserSetInfo level 1003); the caller stores it."""
        info = USER_INFO_1003(usri1003_password=password)
        parm_err = wintypes.DWORD()
        status = self._api.NetUserSetInfo(
            None,
            secret_store.check_user_name(user),
            1003,
            ctypes.byref(info),
            ctypes.byref(parm_err),
        )
        check_status("NetUserSetInfo(1003)", status, user)

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
        check_bool(
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
        check_bool(
            "ConvertSidToStringSidW",
            self._api.ConvertSidToStringSidW(sid, ctypes.byref(text)),
            name,
        )
        try:
            return check_sid(text.value or "")
        finally:
            self._api.LocalFree(ctypes.cast(text, ctypes.c_void_p))
