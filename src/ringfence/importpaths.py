"""Whether the Python that drives a session imports from where the sandbox may write.

ringfence's host side (and the caller's own code) imports modules on first use. A
top-level module (``termios``, ``json``, a third-party package) is looked up along
``sys.path``, whose first entry is the caller's script directory, or the working directory
under ``python -c``, ``-m``, a REPL or a notebook. When that lies in a writable root, a
command can leave ``termios.py`` there and the next import of it runs the command's code in
this process, with your rights, outside the sandbox. No sandbox can stop that from inside:
the caller is told, once per session, and can start Python with ``-P`` (or ``-I``), or from
outside the workspace.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Sequence

# Paths inside the sandbox that are not the host's: what a command writes there lands in the
# workspace's own layer, never in the host's directory of that name.
PRIVATE = ("/tmp", "/dev/shm")


def writable_entries(places: Iterable[str], path: Sequence[str], cwd: str) -> list[str]:
    """The ``path`` entries (``""``: ``cwd``) that lie in one of ``places``."""
    roots = [p.rstrip("/") or "/" for p in places if p not in PRIVATE]
    found = []
    for entry in path:
        where = os.path.realpath(entry or cwd)
        if any(where == r or where.startswith(r.rstrip("/") + "/") for r in roots):
            found.append(entry or cwd)
    return found


def warn_if_writable(places: Iterable[str]) -> None:
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    found = writable_entries(places, sys.path, cwd)
    if found:
        warnings.warn(
            f"Python imports from {found[0]!r}, which the sandbox may write: a module a "
            "command leaves there would run in this process, outside the sandbox, when it is "
            "first imported. Start Python with -P (or -I), or from outside the workspace.",
            RuntimeWarning,
            stacklevel=3,
        )
