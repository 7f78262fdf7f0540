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

from ringfence.importplaces import import_places
from ringfence.linkchain import link_chain

# Paths inside the sandbox that are not the host's: what a command writes there lands in the
# workspace's own layer, never in the host's directory of that name.
PRIVATE = ("/tmp", "/dev/shm")


def writable_entries(places: Iterable[str], path: Sequence[str], cwd: str) -> list[str]:
    """The ``path`` entries (``""``: ``cwd``) that a command with these writable ``places``
    could change: the entry, or a symlink on its way (a command can re-aim one it owns), lies
    in a writable place, or a writable place lies inside it (a package directory made
    writable)."""
    roots = [p.rstrip("/") or "/" for p in places if p not in PRIVATE]
    found = []
    for entry in path:
        seen = _on_the_way(os.path.join(cwd, entry or "."))
        if any(_within(s, r) or _package_in(r, s) for s in seen for r in roots):
            found.append(entry or cwd)
    return found


def _package_in(root: str, entry: str) -> bool:
    """Whether writable ``root`` lies inside import place ``entry`` as (part of) a package
    imported from there: anything in a ``site-packages`` (or ``dist-packages``), else a
    top-level name this process has imported. (A workspace below the directory of your
    script is not one: its name is imported from nowhere.)"""
    if entry == "/" or not root.startswith(entry.rstrip("/") + "/"):
        return False
    if os.path.basename(entry) in ("site-packages", "dist-packages"):
        return True
    top = root[len(entry.rstrip("/")) + 1 :].split("/", maxsplit=1)[0]
    return top.removesuffix(".py") in sys.modules


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _on_the_way(path: str) -> list[str]:
    """``path`` as written, every symlink met while resolving it, and where it ends."""
    return [os.path.normpath(path), *link_chain(path)]  # (the walk resolves ".." as the kernel)


def writable_imports(places: Iterable[str], cwd: str = "/") -> list[str]:
    """Where this process loads code from (importplaces.py) that these writable ``places``
    reach (``writable_entries``)."""
    return writable_entries(places, import_places(), cwd)


def warn_if_writable(places: Iterable[str]) -> None:
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    found = writable_imports(places, cwd)
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
    found = writable_imports(places)  # the CLI drops the cwd (importplaces.note_dropped)
    if found:
        _told.add(found[0])
        sys.stderr.write(f"ringfence: {front_end_warning(found[0])}\n")
