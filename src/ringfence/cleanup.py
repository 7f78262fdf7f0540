"""``ringfence clean``: remove the per-workspace state (tool caches, /tmp layers).

The state is kept so that a workspace's later commands find their /tmp files and a warm
package cache (offline installs work); it is only ever removed on request, or by age.
"""

from __future__ import annotations

import contextlib
import os
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


def _open_nofollow(parent_fd: int, name: str) -> int:
    return os.open(
        name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
    )


def open_base(base: str, *subdirs: str) -> int:
    """``base`` (``$XDG_CACHE_HOME/ringfence``) and then ``subdirs`` opened as directories,
    the last component of ``base`` and each subdirectory without following a symlink: a
    sandbox whose writable root holds the cache directory could have replaced one with a link
    to the user's files, which clean must never walk into."""
    parent, name = os.path.split(os.path.abspath(base))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in (name, *subdirs):
        try:
            nxt = _open_nofollow(fd, part)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def states(base: str) -> Iterator[WorkspaceState]:
    """Every workspace's state under ``base`` (``$XDG_CACHE_HOME/ringfence``): directories
    with the marker ringfence wrote; anything else there is left alone."""
    try:
        wfd = open_base(base, statedirs.WORKSPACES)
    except OSError:
        return
    try:
        entries = sorted(os.scandir(wfd), key=lambda e: e.name)
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            try:
                dfd = _open_nofollow(wfd, e.name)
            except OSError:
                continue
            try:
                mfd = os.open("workspace", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue  # no marker: not ours to remove
            finally:
                os.close(dfd)
            try:
                workspace = os.read(mfd, 4096).decode("utf-8", "surrogateescape").rstrip("\n")
                used = os.fstat(mfd).st_mtime
            finally:
                os.close(mfd)
            if not workspace:
                continue
            path = os.path.join(base, statedirs.WORKSPACES, e.name)
            yield WorkspaceState(path, workspace, used, size_of(path))
    finally:
        os.close(wfd)


def remove_state(base: str, name: str, *subdirs: str) -> None:
    """Remove ``name`` in ``base``/``subdirs``, reached without following a symlink."""
    fd = open_base(base, *subdirs)
    try:
        _remove_at(fd, name)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Remove a state directory, including the unreadable work directory overlayfs leaves.

    Only through file descriptors, never by a joined path: the tree is what sandboxes wrote
    (their /tmp layer and caches), and a path string could be turned into a symlink to
    elsewhere between two calls. Each directory is opened without following a symlink, made
    searchable through its own descriptor if it is not, and emptied from that descriptor.
    """
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_at(pfd, name)
    finally:
        os.close(pfd)


def _open_dir(parent_fd: int, name: str) -> int | None:
    """The directory ``name`` in ``parent_fd`` opened for listing, or None when ``name`` is
    not a directory (a symlink included: never followed)."""
    pathfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        if not stat.S_ISDIR(os.fstat(pathfd).st_mode):
            return None
        magic = f"/proc/self/fd/{pathfd}"  # this very inode, whatever the name is now
        try:
            return os.open(magic, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            os.chmod(magic, stat.S_IRWXU)
            return os.open(magic, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(pathfd)


def _remove_at(parent_fd: int, name: str) -> None:
    """Depth first without recursion (a sandbox may nest directories deeper than Python's
    stack): one open descriptor per level, closed on the way back up."""
    first = _open_or_unlink(parent_fd, name)
    if first is None:
        return
    # (directory fd, its entries still to visit, its parent fd, its name there)
    stack = [(first, iter(list(os.scandir(first))), parent_fd, name)]
    try:
        while stack:
            dfd, entries, pfd, dname = stack[-1]
            entry = next(entries, None)
            if entry is not None:
                child = _open_or_unlink(dfd, entry.name)
                if child is not None:
                    stack.append((child, iter(list(os.scandir(child))), dfd, entry.name))
                continue
            stack.pop()
            os.close(dfd)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(dname, dir_fd=pfd)
    finally:
        for dfd, *_ in stack:
            os.close(dfd)


def _open_or_unlink(parent_fd: int, name: str) -> int | None:
    """``name`` opened as a directory, or removed (anything else) and None."""
    try:
        dfd = _open_dir(parent_fd, name)
    except FileNotFoundError:
        return None
    if dfd is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
    return dfd


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
