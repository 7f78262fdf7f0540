"""Where this process loads code from: what the imports check (importpaths.py) looks at.

Its own small module, without ``from __future__`` and with nothing beyond ``os`` and ``sys``:
the ``run --session`` client imports it on every call to send the list to the server (see
session_client.py), and ``python -m ringfence`` notes here the working directory it took off
``sys.path``.
"""

import os
import sys

_dropped: list[str] = []  # the working directory ``python -m ringfence`` took off sys.path


def import_places() -> list[str]:
    """Where this process loads code from: ``sys.path``; the bytecode cache prefix when one
    is set (``PYTHONPYCACHEPREFIX``: every module's ``.pyc`` is read from there, ringfence's
    own read-only ones too); the working directory ``python -m ringfence`` started in (Python
    imported ``ringfence`` from there first); and the dynamic loader's ``LD_LIBRARY_PATH``
    and ``LD_PRELOAD`` (``ctypes`` loads ``libffi`` late)."""
    places = [*sys.path, *_dropped]
    if sys.pycache_prefix:
        places.append(sys.pycache_prefix)
    loader = os.environ.get("LD_LIBRARY_PATH", "")
    places += loader.split(":") if loader else []  # an empty entry: the working directory
    preload = os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
    places += [os.path.dirname(lib) for lib in preload]
    if all(p.startswith("/") for p in places):
        return places
    try:  # "" (python -c, a REPL) and relative entries: where this process runs
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    return [os.path.join(cwd, p) if p else cwd for p in places]


def note_dropped(cwd: str) -> None:
    """``python -m ringfence`` took ``cwd`` off ``sys.path`` (it is still where it started)."""
    _dropped.append(cwd)
