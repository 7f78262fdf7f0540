"""The key of a cached plan: everything a one-shot request is, besides the file system.

The file system's part (config files, the workspace, home, /proc and /sys readings) is checked
answer by answer (``facts``); the key covers the rest, so that any change to it is a
different entry: the flags (every argument before ``--``), the working directory, the whole
environment, who is asking (user, groups), which kernel and boot (Landlock and seccomp
features, probes), which interpreter and which ringfence (its version here; its source files'
identities are among the answers).
"""

from __future__ import annotations

import os
import sys

try:  # the built-in module: hashlib loads OpenSSL first (~3 ms on the one-shot path)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

from ringfence.importplaces import import_places
from ringfence.version import __version__

TYPE_CHECKING = False  # not `typing`: the native one-shot path imports this module
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def directory(env: Mapping[str, str]) -> str | None:
    """``<ringfence's cache>/plans``, the cache base found as the host facts find it
    (hostfacts.gather: an absolute ``$HOME``, else the account's home; then statedirs), so
    that the directory is inside the state every namespaced sandbox has hidden."""
    home = env.get("HOME") or None
    if home and os.path.isabs(home):
        home = os.path.realpath(home)
    else:
        from ringfence.policy.paths import account_home

        home = account_home()
    base = env.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "ringfence", "plans")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return ""


def request_key(flags: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    h = blake2b(digest_size=20)

    def put(*parts: object) -> None:
        for p in parts:
            b = os.fsencode(p) if isinstance(p, str) else repr(p).encode()
            h.update(len(b).to_bytes(4, "little"))
            h.update(b)

    here = os.path.dirname(os.path.abspath(__file__))  # which ringfence: its install path
    put("ringfence plan", __version__, here, sys.version, sys.executable, cwd, _boot_id())
    put(*os.uname())
    # where this ringfence loads code from (a .pth file adds to it; python -m's dropped cwd)
    places = import_places()
    put(len(places), *places)
    put(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), tuple(sorted(os.getgroups())))
    put(len(flags), *flags)
    items = sorted(env.items())
    put(len(items))
    for k, v in items:
        put(k, v)
    return h.hexdigest()
