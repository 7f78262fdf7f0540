"""The ctypes ground every native module of the Windows backend stands on: loading a DLL,
binding a function with its prototype, and turning a failed call into a :class:`SandboxError`
that names the call, the code and Windows's text for it.

NOT RUN ON WINDOWS (see docs/platforms.md). The module imports anywhere; ``load_dll`` off
Windows raises :class:`UnsupportedError`, so a native class built on Linux is a typed refusal.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from ringfence.errors import SandboxError, UnsupportedError

# The Net API returns its own codes (2100+), which FormatMessage without netmsg.dll does not know.
_NET_ERRORS = {
    2220: "the group name could not be found",
    2221: "the user name could not be found",
    2224: "the account already exists",
    2226: "this operation is only allowed on the primary domain controller",
    2245: "the password does not meet the password policy requirements",
}


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


def check_bool(api: str, ok: int, detail: str = "") -> None:
    """Functions that return a BOOL (or a handle) and set the last error: 0 is failure."""
    if not ok:
        raise win_error(api, detail=detail)


def check_status(api: str, status: int, detail: str = "") -> None:
    """Functions that return the error code instead of setting the last error."""
    if status != 0:
        raise win_error(api, status, detail)


def last_error() -> int:
    """``GetLastError`` of the last call made through a ``use_last_error`` DLL (0 off Windows)."""
    if sys.platform == "win32":
        return ctypes.get_last_error()
    return 0
