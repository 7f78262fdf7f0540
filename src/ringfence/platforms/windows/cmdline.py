"""The two strings CreateProcess is given besides the program: the command line (quoted so the
program's C runtime parses back exactly the argv) and the environment block. Pure, tested on
Linux against a reimplementation of CommandLineToArgvW; shared by the run, the broker's
request and the broker's own launch."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from ringfence.errors import PolicyError


def command_line(argv: Sequence[str]) -> str:
    """The one string CreateProcess takes, quoted so that CommandLineToArgvW and the MS C
    runtime give back exactly ``argv`` (``subprocess.list2cmdline`` follows those rules).

    Refused: an empty argv, NUL anywhere (it would end the string), and an ``argv[0]`` with a
    ``"`` or a trailing backslash (the program name is parsed by a simpler rule that has no
    escapes; no Windows file name contains ``"``)."""
    if not argv:
        raise PolicyError("windows: empty command")
    for arg in argv:
        if "\0" in arg:
            raise PolicyError(f"windows: NUL in a command argument: {arg!r}")
    if '"' in argv[0] or argv[0].endswith("\\") or not argv[0]:
        raise PolicyError(f"windows: bad program name {argv[0]!r}")
    return subprocess.list2cmdline(list(argv))


def environment_block(env: Mapping[str, str]) -> bytes:
    """``name=value\\0...\\0\\0`` in UTF-16LE, sorted case-insensitively by name as
    CreateProcess documents (uppercase, ordinal: not the locale's order).

    Refused: an empty name, ``=`` or NUL in a name, NUL in a value, and two names that differ
    only in case (Windows would keep one of them, and which one is not ours to guess)."""
    seen: dict[str, str] = {}
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise PolicyError(f"windows: bad environment variable name {name!r}")
        if "\0" in value:
            raise PolicyError(f"windows: NUL in the value of {name}")
        key = name.upper()
        if key in seen:
            raise PolicyError(
                f"windows: environment variables {seen[key]!r} and {name!r} differ only in case"
            )
        seen[key] = name
    entries = [f"{name}={env[name]}" for name in sorted(env, key=str.upper)]
    text = "".join(entry + "\0" for entry in entries) + "\0"
    if not entries:
        text = "\0\0"
    return text.encode("utf-16-le", "surrogatepass")
