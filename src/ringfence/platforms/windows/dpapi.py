"""DPAPI with ctypes (crypt32): the sandbox users' passwords protected in the calling user's
scope, and the secret store (``secrets.SecretStore``) built on it, which the elevated setup
writes and the unelevated run reads (the same person, so the same DPAPI keys).

NOT RUN ON WINDOWS: written against the documented signatures, type-checked with ``mypy
--platform win32``; unverified until it runs on Windows. The store itself is tested on Linux
with a stand-in for DPAPI.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import wintypes
from typing import Any

from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.dll import bind, check_bool, load_dll, require_windows

CRYPTPROTECT_UI_FORBIDDEN = 0x1


class DATA_BLOB(ctypes.Structure):
    _fields_ = [("cbData", wintypes.DWORD), ("pbData", ctypes.POINTER(ctypes.c_ubyte))]


class _CryptCalls:
    """The crypt32/kernel32 functions DPAPI needs, with prototypes."""

    def __init__(self) -> None:
        W = wintypes
        P = ctypes.POINTER
        k32, crypt = load_dll("kernel32"), load_dll("crypt32")
        self.LocalFree = bind(k32, "LocalFree", W.HLOCAL, W.HLOCAL)
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


def _blob(data: bytes) -> tuple[DATA_BLOB, Any]:
    buf = (ctypes.c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0")
    return DATA_BLOB(len(data), ctypes.cast(buf, ctypes.POINTER(ctypes.c_ubyte))), buf


def _take_blob(api: _CryptCalls, blob: DATA_BLOB) -> bytes:
    try:
        return ctypes.string_at(blob.pbData, blob.cbData)
    finally:
        api.LocalFree(ctypes.cast(blob.pbData, ctypes.c_void_p))


def _dpapi(name: str, data: bytes, entropy: bytes, api: _CryptCalls | None) -> bytes:
    """CryptProtectData or CryptUnprotectData: the same call shape, one blob in, one out."""
    api = api or _CryptCalls()
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
    check_bool(name, ok)
    return _take_blob(api, out)


def dpapi_protect(data: bytes, entropy: bytes, api: _CryptCalls | None = None) -> bytes:
    """CryptProtectData in the calling user's scope (no CRYPTPROTECT_LOCAL_MACHINE): only the
    same user's logon, elevated or not, can unprotect it."""
    return _dpapi("CryptProtectData", data, entropy, api)


def dpapi_unprotect(blob: bytes, entropy: bytes, api: _CryptCalls | None = None) -> bytes:
    return _dpapi("CryptUnprotectData", blob, entropy, api)


def secret_store_for(local_app_data: str | None = None) -> secret_store.SecretStore:
    """The DPAPI store under ``%LOCALAPPDATA%\\ringfence\\secrets`` of the calling user."""
    require_windows("the DPAPI secret store")
    base = local_app_data or os.environ.get("LOCALAPPDATA", "")
    return secret_store.SecretStore(
        secret_store.secrets_directory(base), dpapi_protect, dpapi_unprotect
    )
