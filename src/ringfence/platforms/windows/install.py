"""``ringfence setup`` and the per-workspace grants, on top of the journal in ``setup.py``.

Two journals, because two different principals change the machine:

- the *setup journal* (``%ProgramData%\\ringfence``), written by the elevated, once-per-machine
  setup: sandbox users, their stored passwords, firewall rules; and ``install.json``, the
  capability SID and the users' SIDs the compiler needs;
- the *grants journal* (``%LOCALAPPDATA%\\ringfence``), written unelevated by the runner the
  first time a workspace is used: the plan's ACEs. A user may change the ACLs of their own
  files, so commands never need elevation, and the slow part (an inheritable ACE walks the
  tree once) happens once per root, not per command.

``uninstall`` undoes the grants first, then the setup, each from its journal, and deletes
the install state: every ACE, rule, secret and user ringfence added, and nothing it found.
Before each command ``ensure_grants`` also checks that the deny ACEs are still in place: an
ACL reset by another tool must not turn a protected path writable (fail closed: it is put
back, or the command does not run).

Not run on Windows yet: tested against a simulated machine only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ringfence.errors import SandboxError
from ringfence.network.proxy_env import PROXY_PORT
from ringfence.platforms.windows import setup
from ringfence.platforms.windows.plan import (
    OFFLINE_USER,
    ONLINE_USER,
    WindowsInstall,
    WindowsPlan,
    setup_actions,
)
from ringfence.platforms.windows.setup import WinApi

INSTALL_FILE = "install.json"
SETUP_JOURNAL = "setup-journal.json"
GRANTS_JOURNAL = "grants-journal.json"


@dataclass(frozen=True)
class Places:
    """Where the state lives: ``machine`` (ProgramData, written elevated) and ``user``
    (LocalAppData, the runner's)."""

    machine: str
    user: str

    @classmethod
    def default(cls, environ: dict[str, str] | None = None) -> Places:
        env = os.environ if environ is None else environ
        program_data, local = env.get("ProgramData"), env.get("LOCALAPPDATA")
        if not program_data or not local:
            raise SandboxError(
                "setup: %ProgramData% or %LOCALAPPDATA% is not set; run from a normal "
                "Windows session"
            )
        return cls(os.path.join(program_data, "ringfence"), os.path.join(local, "ringfence"))


def load_install(places: Places) -> WindowsInstall | None:
    path = os.path.join(places.machine, INSTALL_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return WindowsInstall.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise SandboxError(
            f"{path}: unreadable ({e}); run `ringfence setup` again to repair it"
        ) from e


def run_setup(
    api: WinApi, places: Places, *, proxy_port: int = PROXY_PORT
) -> tuple[WindowsInstall, int]:
    """Bring the machine to a complete install; returns it and how many changes were made.
    A second run changes nothing; a run after a crash finishes the first."""
    os.makedirs(places.machine, exist_ok=True)
    previous = load_install(places)
    capability = previous.capability_sid if previous else WindowsInstall.new_capability_sid()
    if previous and previous.proxy_port != proxy_port:
        raise SandboxError(
            f"setup: installed with proxy port {previous.proxy_port}; run "
            "`ringfence setup --uninstall` first to change it"
        )
    actions = setup_actions(OFFLINE_USER, ONLINE_USER, proxy_port)
    changed = setup.install(actions, api, os.path.join(places.machine, SETUP_JOURNAL))
    install = WindowsInstall(
        capability_sid=capability,
        offline_sid=api.user_sid(OFFLINE_USER),
        online_sid=api.user_sid(ONLINE_USER),
        proxy_port=proxy_port,
    )
    if install != previous:
        data = json.dumps(install.to_dict(), indent=1, sort_keys=True).encode()
        setup.write_atomic(os.path.join(places.machine, INSTALL_FILE), data)
    return install, changed


def run_uninstall(api: WinApi, places: Places) -> int:
    """Undo the grants, then the setup; returns how many changes were undone."""
    undone = setup.uninstall(api, os.path.join(places.user, GRANTS_JOURNAL))
    undone += setup.uninstall(api, os.path.join(places.machine, SETUP_JOURNAL))
    state = os.path.join(places.machine, INSTALL_FILE)
    if os.path.exists(state):
        os.unlink(state)
    return undone


def ensure_grants(plan: WindowsPlan, api: WinApi, places: Places) -> int:
    """Put the plan's ACEs in place (journaled, unelevated) and check the deny ACEs are still
    there; returns how many ACEs were added. Raises if a deny ACE cannot be restored."""
    os.makedirs(places.user, exist_ok=True)
    added = setup.install(list(plan.aces), api, os.path.join(places.user, GRANTS_JOURNAL))
    for ace in plan.aces:
        if ace.deny and not api.has_ace(ace):
            api.add_ace(ace)  # the journal's undo copy (the ACL before ringfence) still holds
            added += 1
            if not api.has_ace(ace):
                raise SandboxError(
                    f"the deny entry ringfence placed on {ace.path} is gone and cannot be "
                    "restored; not running the command"
                )
    return added
