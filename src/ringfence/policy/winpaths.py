"""Windows paths in a policy: one spelling per file, or a refusal (pure: no OS calls).

Windows reaches one file by many names: ``C:/x`` and ``C:\\x``; ``\\\\?\\C:\\x``; ``C:\\X``
(NTFS compares names case-insensitively); ``C:\\x.`` and ``C:\\x `` (Win32 strips trailing dots
and spaces, ``\\\\?\\`` does not); ``C:\\x::$DATA`` (the unnamed data stream);
``C:\\x:y`` (an alternate data stream of the same file). A policy that protects ``.git`` must
not be passed by the same directory under another name, so a policy holds each path in one
canonical spelling, compares with ``key`` (case-folded), and refuses spellings whose meaning
depends on the API that opens them (trailing dots and spaces, streams, device namespaces,
reserved device names, drive-relative paths).
"""

from __future__ import annotations

import re

from ringfence.errors import PolicyError
from ringfence.policy.semantics import WINDOWS

RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"com{i}" for i in (*range(1, 10), "¹", "²", "³")}
    | {f"lpt{i}" for i in (*range(1, 10), "¹", "²", "³")}
)
_DRIVE = re.compile(r"^[A-Za-z]:$")
_BAD_CHARS = re.compile(r'[\x00-\x1f"*<>?|]')


def normalize(what: str, path: str) -> str:
    """The canonical spelling of absolute Windows path ``path``: ``C:\\a\\b`` (upper-case drive,
    backslashes, no ``.``/``..``/empty components, no trailing separator) or
    ``\\\\server\\share\\a``; ``\\\\?\\`` prefixes are removed when what follows is an ordinary
    path. Anything ambiguous is refused with a ``PolicyError`` naming ``what``."""
    if not path:
        raise PolicyError(f"{what}: empty path")
    p = path.replace("/", "\\")
    if p.startswith("\\\\?\\") or p.startswith("\\??\\"):
        rest = p[4:]
        if rest[:4].upper() == "UNC\\":
            p = "\\\\" + rest[4:]
        elif _DRIVE.match(rest[:2]) and rest[2:3] == "\\":
            p = rest
        else:
            raise PolicyError(
                f"{what}: {path!r} is a device or volume path; give a drive path like C:\\dir"
            )
    elif p.startswith("\\\\.\\"):
        raise PolicyError(f"{what}: {path!r} names a device; give a drive path like C:\\dir")
    if p.startswith("\\\\"):
        parts = p[2:].split("\\")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise PolicyError(f"{what}: {path!r} is not a \\\\server\\share path")
        _check_components(what, path, parts[:2])
        head, parts = "\\\\" + parts[0] + "\\" + parts[1], parts[2:]
    elif _DRIVE.match(p[:2]):
        if p[2:3] != "\\":
            raise PolicyError(
                f"{what}: {path!r} is relative to the current directory of drive {p[:2]}; "
                f"give {p[:2]}\\..."
            )
        head, parts = p[0].upper() + ":", p[3:].split("\\")
        if parts == [""]:
            parts = []
    else:
        raise PolicyError(f"{what}: {path!r} is relative; give an absolute path like C:\\dir")
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise PolicyError(f"{what}: {path!r} climbs above its root with '..'")
            out.pop()
            continue
        out.append(part)
    _check_components(what, path, out)
    if head.endswith(":"):
        return head + "\\" + "\\".join(out)
    return "\\".join([head, *out])


def _check_components(what: str, path: str, parts: list[str]) -> None:
    for part in parts:
        if ":" in part:
            raise PolicyError(
                f"{what}: {path!r} names an alternate data stream ({part!r}); protect or grant "
                "the file itself"
            )
        if _BAD_CHARS.search(part):
            raise PolicyError(f"{what}: {path!r} has a character Windows does not allow in names")
        if part.endswith((".", " ")):
            raise PolicyError(
                f"{what}: {path!r} has a name ending in a dot or space ({part!r}), which Windows "
                "strips for some callers and not others; give it without"
            )
        if part.split(".")[0].rstrip(" ").casefold() in RESERVED:
            raise PolicyError(f"{what}: {path!r} uses the reserved device name {part!r}")


def key(path: str) -> str:
    """What two spellings of the same canonical path share (NTFS names are case-insensitive).
    Whether one lies under another: ``semantics.is_under(path, root, semantics.WINDOWS)``."""
    return WINDOWS.key(path)


def join(base: str, rel: str) -> str:
    """``base`` (canonical) joined with a ``/``-separated relative name from the defaults."""
    return normalize("path", base + "\\" + rel.replace("/", "\\"))


def parent(path: str) -> str:
    """The directory holding ``path`` (canonical in, canonical out); a root is its own."""
    head, _, tail = path.rpartition("\\")
    if not tail or not head:
        return path
    if head.endswith(":"):
        return head + "\\"
    if head.startswith("\\\\") and head.count("\\") < 3:
        return path  # \\server\share is a root
    return head
