"""The symlinks met while resolving a path, hop by hop: each one could re-point the path.

Used where ringfence asks "could a command change what this path leads to?": the host facts
protect every link on the way to a file the host reads (hostfacts.py), and the imports check
counts an entry whose way runs through a link the sandbox may re-aim (importpaths.py). Its
own module: importpaths runs on every one-shot run and must not import the host facts.
"""

from __future__ import annotations

import os


def link_chain(path: str, limit: int = 40) -> list[str]:
    """Every symlink met resolving ``path``, hop by hop (in its parents too), then where it
    ends: replacing any one of them re-points the whole chain, so each is protected.
    Resolved one component at a time as the kernel does (``lnk/..`` is the parent of where
    ``lnk`` leads, not the directory holding ``lnk``)."""
    out: list[str] = []
    pending = [p for p in path.split("/") if p]
    cur = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            hops += 1
            out.append(nxt)
            if hops > limit:
                return out  # a loop: what was met is protected, nothing resolves further
            try:
                target = os.readlink(nxt)
            except OSError:
                return out
            if target.startswith("/"):
                cur = "/"
            pending[:0] = [p for p in target.split("/") if p]
            continue
        cur = nxt
    out.append(cur)
    return out
