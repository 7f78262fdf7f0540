"""``ringfence clean``: remove the per-workspace state (tool caches, /tmp layers).

The state is kept so that a workspace's later commands find their /tmp files and a warm
package cache (offline installs work); it is only ever removed on request, or by age.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ringfence.policy import statedirs


@dataclass(frozen=True)
class WorkspaceState:
    path: str  # the state directory
    workspace: str | None  # the workspace it belongs to, as recorded
    last_used: float  # seconds since the epoch
    size: int  # bytes

    @property
    def gone(self) -> bool:
        return self.workspace is None or not os.path.isdir(self.workspace)


def size_of(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def states(base: str) -> Iterator[WorkspaceState]:
    """Every workspace's state under ``base`` (``$XDG_CACHE_HOME/ringfence``)."""
    root = os.path.join(base, statedirs.WORKSPACES)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if not e.is_dir(follow_symlinks=False):
            continue
        marker = os.path.join(e.path, "workspace")
        try:
            with open(marker, encoding="utf-8", errors="surrogateescape") as f:
                workspace: str | None = f.read(4096).rstrip("\n") or None
            used = os.lstat(marker).st_mtime
        except OSError:
            workspace, used = None, e.stat(follow_symlinks=False).st_mtime
        yield WorkspaceState(e.path, workspace, used, size_of(e.path))


def remove(path: str) -> None:
    """Remove a state directory, including the unreadable work directory overlayfs leaves."""

    def fix(func: object, p: str, exc: object) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
                shutil.rmtree(p, onerror=fix)
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass

    shutil.rmtree(path, onerror=fix)


def _chosen(
    st: WorkspaceState,
    *,
    wanted: str | None,
    everything: bool,
    gone: bool,
    older_than_days: float | None,
    now: float,
) -> bool:
    if everything or st.path == wanted:
        return True
    if gone and st.gone:
        return True
    return older_than_days is not None and now - st.last_used > older_than_days * 86400


def select(
    base: str,
    *,
    workspace: str | None = None,
    everything: bool = False,
    gone: bool = False,
    older_than_days: float | None = None,
) -> list[WorkspaceState]:
    """The states a ``clean`` call with these options removes."""
    now = time.time()
    wanted = statedirs.workspace_dir(base, workspace) if workspace is not None else None
    return [
        st
        for st in states(base)
        if _chosen(
            st,
            wanted=wanted,
            everything=everything,
            gone=gone,
            older_than_days=older_than_days,
            now=now,
        )
    ]
