"""Where ringfence keeps its own state, and which of it one workspace's sandbox may touch.

Everything lives under ``$XDG_CACHE_HOME/ringfence`` (default ``~/.cache/ringfence``), one
directory per workspace::

    workspaces/<name>-<hash>/
        workspace      the workspace's path, for ``ringfence clean``
        cache/<tool>   the package-manager caches of that workspace's sandboxes
        tmp/upper      what its sandboxes wrote to /tmp (the overlay's upper layer)
        tmp/work       overlayfs' work directory

Per workspace, because a store that two projects can write is a channel between them: a cargo
``config.toml`` or a poisoned wheel planted by project A would run in project B's build with
B's rights. Inside every sandbox the whole of ringfence's state (this tree, the audit log,
session sockets) is hidden, and only the running workspace's cache is mounted back.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping

from ringfence.digest import sha256_hex

WORKSPACES = "workspaces"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_base(env: Mapping[str, str], home: str | None) -> str | None:
    """``$XDG_CACHE_HOME/ringfence`` (absolute values only), else ``~/.cache/ringfence``."""
    base = env.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "ringfence")


def state_base(env: Mapping[str, str], home: str | None) -> str | None:
    """``$XDG_STATE_HOME/ringfence``: the audit log."""
    base = env.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):
        if not home:
            return None
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "ringfence")


def workspace_key(workspace: str) -> str:
    """A directory name that is stable for one workspace path and distinct between two."""
    digest = sha256_hex(workspace.encode("utf-8", "surrogateescape"))[:16]
    name = _UNSAFE.sub("_", os.path.basename(workspace.rstrip("/")) or "root")[:40]
    return f"{name}-{digest}"


def workspace_dir(base: str, workspace: str) -> str:
    return os.path.join(base, WORKSPACES, workspace_key(workspace))


def prepare_workspace(base: str, workspace: str) -> str | None:
    """Create (private to the user) the workspace's state directory and its parts; return it,
    or None when that is not possible (no writable cache directory)."""
    ws = workspace_dir(base, workspace)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        for sub in (os.path.join(base, WORKSPACES), ws, os.path.join(ws, "tmp")):
            os.makedirs(sub, mode=0o700, exist_ok=True)
        upper = os.path.join(ws, "tmp", "upper")
        try:
            os.mkdir(upper, 0o700)
        except FileExistsError:
            pass  # made before, or by a sandbox of this workspace starting at this moment
        else:
            os.chmod(upper, 0o1777)  # /tmp inside; reachable only through the 0700 parents
        os.makedirs(os.path.join(ws, "tmp", "work"), mode=0o700, exist_ok=True)
        marker = os.path.join(ws, "workspace")
        if os.path.exists(marker):
            os.utime(marker)  # last used: `ringfence clean --older-than` reads it
        else:
            with open(marker, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(workspace + "\n")
    except OSError:
        return None
    return ws


LOCK = "lock"
GUARD_LOCK = "guard.lock"


def open_guard_lock(state_dir: str) -> int | None:
    """``<cache base>/guard.lock``, beside ``workspaces/``: the name guards of all of the
    user's sandboxes take turns on it (each through an open file description of its own), so
    a check one guard makes cannot be undone by what another sandbox's guard does in the
    same instant, whatever workspaces and writable roots they share. None when it cannot be
    opened (the guards then take turns within their own session only)."""
    parent = os.path.dirname(state_dir)
    if os.path.basename(parent) != WORKSPACES:
        return None
    try:
        return os.open(
            os.path.join(os.path.dirname(parent), GUARD_LOCK),
            os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
    except OSError:
        return None


def _lock_fd(state_dir: str) -> int:
    return os.open(
        os.path.join(state_dir, LOCK),
        os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
        0o600,
    )


def hold(state_dir: str) -> int | None:
    """A shared lock on a workspace's state, held (as the returned fd) while a sandbox uses
    it, so that ``ringfence clean`` leaves a layer alone that a running overlay still has
    mounted. None when the lock file cannot be opened (the run goes on)."""
    try:
        fd = _lock_fd(state_dir)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def try_exclusive(state_dir: str) -> int | None:
    """The lock for removing a workspace's state, or None while a sandbox holds it."""
    fd = _lock_fd(state_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
