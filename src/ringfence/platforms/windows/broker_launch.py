"""How the broker is started: which interpreter, its command line, its working directory and
its minimal environment (what ``CreateProcessWithLogonW`` is given). Pure; tested on Linux."""

from __future__ import annotations

import ntpath
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ringfence.errors import SandboxError
from ringfence.platforms.windows.broker_wire import BROKER_MODULE
from ringfence.platforms.windows.cmdline import command_line


@dataclass(frozen=True)
class BrokerLaunch:
    """What CreateProcessWithLogonW is given for the broker."""

    application: str
    command_line: str
    cwd: str
    environment: dict[str, str]


_BROKER_ENV_KEEP = ("SystemRoot", "windir", "SystemDrive")


def broker_launch(
    python: str,
    package_root: str,
    base_env: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.isfile,
) -> BrokerLaunch:
    """``pythonw.exe`` beside ``python`` when there is one (no console window for the broker),
    ``-B -s -m ringfence.platforms.windows.broker``, started in ``package_root`` (the directory
    holding the ``ringfence`` package: never a writable root, which could plant a module),
    with ``PYTHONPATH`` set to it, user site-packages off, and a minimal environment.

    ``python`` must be the real interpreter (``sys._base_executable``), not a venv launcher:
    a launcher runs the interpreter as a child, whose handles the runner cannot reach (the
    broker's reply names its pid, and a mismatch is refused)."""
    if not ntpath.isabs(python) or not ntpath.isabs(package_root):
        raise SandboxError(
            f"windows: the broker needs absolute paths, not {python!r} and {package_root!r}"
        )
    folder, name = ntpath.split(python)
    windowless = ntpath.join(folder, "pythonw.exe")
    if name.lower() == "python.exe" and exists(windowless):
        python = windowless
    lower = {k.lower(): v for k, v in base_env.items()}
    env = {k: lower[k.lower()] for k in _BROKER_ENV_KEEP if k.lower() in lower}
    env.update(
        PYTHONPATH=package_root,
        PYTHONNOUSERSITE="1",
        PYTHONSAFEPATH="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUTF8="1",
    )
    argv = [python, "-B", "-s", "-m", BROKER_MODULE]
    return BrokerLaunch(python, command_line(argv), package_root, env)


def this_broker_launch() -> BrokerLaunch:
    """``broker_launch`` for the interpreter and ringfence package running this code."""
    import ringfence

    python = str(getattr(sys, "_base_executable", "") or sys.executable)
    package_root = ntpath.dirname(ntpath.dirname(ntpath.abspath(ringfence.__file__)))
    return broker_launch(python, package_root, os.environ)
