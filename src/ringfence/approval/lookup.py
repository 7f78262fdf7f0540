"""Where a bare program name would be found: a known-safe name is only safe as the system's.

``untrusted`` runs ``ls`` without asking because ``ls`` only reads, but the sandbox runs
whatever ``ls`` the command's ``PATH`` finds first. A ``PATH`` that leads through a place
commands can write (the workspace, another writable root, the sandbox's ``/tmp`` or
``/dev/shm``) before the system's directory, or that has a relative entry (found from
wherever the command is at the time), may find a program the repository or an earlier command
put there, under any name. Such a name is not judged by its name (the person is asked).

Pure: the writable places come from the plan, the ``PATH`` from the command's environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ringfence.policy.semantics import first_under

DEFAULT_PATH = "/bin:/usr/bin"  # what a command without PATH is searched in (os.defpath)


def planted_reason(name: str, path_var: str | None, writable: Sequence[str]) -> str | None:
    """Why the program ``name`` (a bare name) might not be the system's, else None.

    The entries of ``path_var`` are read in order up to the first that holds an executable
    ``name`` on the host: any entry before it (or it) that is relative, or inside one of
    ``writable`` (as written or once its symlinks are resolved), is a place a command could
    have put one. Not found anywhere: the command fails as it would, so nothing is said."""
    if "/" in name or not name:
        return None
    for entry in (DEFAULT_PATH if path_var is None else path_var).split(":"):
        if not entry or not os.path.isabs(entry):
            return f"the command's PATH has a relative entry ({entry or 'empty'})"
        place = first_under(os.path.normpath(entry), writable) or first_under(
            os.path.realpath(entry), writable
        )
        if place is not None:
            return f"the command's PATH looks in {entry} (commands can write in {place})"
        candidate = os.path.join(entry, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return None
    return None


def checker(path_var: str | None, writable: Sequence[str]) -> Callable[[str], str | None]:
    """``planted_reason`` for one command's ``PATH`` and a plan's writable places."""
    places = tuple(os.path.normpath(w) for w in writable)
    return lambda name: planted_reason(name, path_var, places)


__all__ = ["checker", "planted_reason"]
