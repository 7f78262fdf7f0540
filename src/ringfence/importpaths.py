"""Whether the Python that drives a session imports from where the sandbox may write.

ringfence's host side (and the caller's own code) imports modules on first use. A
top-level module (``termios``, ``json``, a third-party package) is looked up along
``sys.path``, whose first entry is the caller's script directory, or the working directory
under ``python -c``, ``-m``, a REPL or a notebook. When that lies in a writable root, a
command can leave ``termios.py`` there and the next import of it runs the command's code in
this process, with your rights, outside the sandbox. No sandbox can stop that from inside:
the caller is told, once per session, and can start Python with ``-P`` (or ``-I``), or from
outside the workspace.

ringfence's own commands (``ringfence run``, ``mcp``, ``session start``) are told the same of
their own ``sys.path``: a ``ringfence`` installed in a virtualenv inside the workspace imports
that environment's other packages, its ``.pth`` files and its ``bin/`` (a console script's
first entry), all of which a command can write (ringfence's own files there are read-only,
hostfacts.own_code_paths). The next start of ringfence would run what a command left there.
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


def import_places() -> list[str]:
    """Where this Python imports from: ``sys.path``, and the bytecode cache prefix when one
    is set (``PYTHONPYCACHEPREFIX``: every module's ``.pyc`` is read from there, ringfence's
    own read-only ones too)."""
    prefix = sys.pycache_prefix
    return [*sys.path, prefix] if prefix else list(sys.path)


def warn_if_writable(places: Iterable[str]) -> None:
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    found = writable_entries(places, import_places(), cwd)
    if found:
        warnings.warn(
            f"Python imports from {found[0]!r}, which the sandbox may write: a module a "
            "command leaves there would run in this process, outside the sandbox, when it is "
            "first imported. Start Python with -P (or -I), or from outside the workspace.",
            RuntimeWarning,
            stacklevel=3,
        )


_told: set[str] = set()  # the entries this process has told of


def front_end_warning(entry: str) -> str:
    """What ringfence's own commands say when they import from ``entry``, a writable place."""
    return (
        f"warning: ringfence imports Python modules from {entry!r}, which commands in this "
        "sandbox can write: what a command leaves there runs with your rights when ringfence "
        "next imports from it (later in this run, or at its next start). Install ringfence "
        "outside the workspace (pipx, or uv tool install)."
    )


def tell_front_end(places: Iterable[str]) -> None:
    """ringfence's own commands: a line on stderr, once per process (a ``RuntimeWarning``
    would name a source line of ringfence, which the user can do nothing about)."""
    if _told:
        return
    found = writable_entries(places, import_places(), "/")  # the CLI drops the cwd
    if found:
        _told.add(found[0])
        sys.stderr.write(f"ringfence: {front_end_warning(found[0])}\n")
