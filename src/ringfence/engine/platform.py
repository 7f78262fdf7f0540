"""Which platform this is: the only place ringfence asks ``sys.platform`` (besides leaf
modules that call one platform's system interfaces)."""

from __future__ import annotations

import sys

from ringfence.errors import UnsupportedError

PLATFORMS = ("linux", "macos", "windows")


def host_platform() -> str:
    """ "linux", "macos", "windows", or the raw ``sys.platform`` of a host with no backend."""
    return {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)


def require_linux() -> None:
    """Refuse, with what to do instead, where the Linux plan cannot be run: the session API,
    ``explain``, the MCP server and the session server are Linux-only so far."""
    name = host_platform()
    if name == "windows":
        raise UnsupportedError(
            "this is the Linux plan; on Windows, `ringfence explain --platform windows` shows "
            "what would be enforced and `ringfence run` runs a command (never yet run on "
            "Windows: docs/platforms.md)"
        )
    if name != "linux":
        raise UnsupportedError(
            f"this command is Linux-only so far ({sys.platform}); see docs/platforms.md"
        )
