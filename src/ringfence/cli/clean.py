"""``ringfence clean``: remove per-workspace state (tool caches, /tmp layers) safely."""

from __future__ import annotations

import argparse
import os
import sys

from ringfence import cleanup
from ringfence.errors import PolicyError
from ringfence.policy import paths, statedirs


def cmd_clean(ns: argparse.Namespace) -> int:
    home = os.environ.get("HOME")
    base = statedirs.cache_base(os.environ, os.path.realpath(home) if home else None)
    if base is None:
        raise PolicyError("clean: neither XDG_CACHE_HOME nor HOME is set; nothing to find")
    if ns.older_than is not None and ns.older_than < 0:
        raise PolicyError(f"clean: --older-than {ns.older_than}: give a number of days >= 0")
    workspace = None
    if not (ns.all or ns.gone or ns.older_than is not None):
        workspace = os.path.realpath(paths.absolute("--workspace", ns.workspace or os.getcwd()))
    chosen = cleanup.select(
        base, workspace=workspace, everything=ns.all, gone=ns.gone, older_than_days=ns.older_than
    )
    legacy = os.path.join(base, "cache")  # the one shared cache of ringfence < 0.2
    if ns.all and os.path.isdir(legacy) and not os.path.islink(legacy):
        chosen.append(cleanup.WorkspaceState(legacy, None, 0.0, cleanup.size_of(legacy)))
    busy = 0
    for st in chosen:
        busy += not _remove(base, st, dry_run=ns.dry_run)
    if busy:
        return 1
    if not chosen:
        print("nothing to remove", file=sys.stderr)
    return 0


def _remove(base: str, st: cleanup.WorkspaceState, *, dry_run: bool) -> bool:
    """Remove one workspace's state (or say what would go); False when a sandbox of it runs
    (it holds the state's lock), and then nothing is touched."""
    label = st.workspace or "(shared cache of an older ringfence)"
    if dry_run:
        print(f"would remove {st.path}  {label}  {st.size} bytes")
        return True
    lock = statedirs.try_exclusive(st.path) if st.workspace is not None else None
    if st.workspace is not None and lock is None:
        print(f"in use, kept {st.path}  {label} (a sandbox of it is running)", file=sys.stderr)
        return False
    try:
        if st.workspace is None:
            cleanup.remove_state(base, "cache")
        else:
            cleanup.remove_state(base, os.path.basename(st.path), statedirs.WORKSPACES)
    finally:
        if lock is not None:
            os.close(lock)
    print(f"removed {st.path}  {label}  {st.size} bytes")
    return True
