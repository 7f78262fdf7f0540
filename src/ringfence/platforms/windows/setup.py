"""``ringfence setup`` for Windows: a crash-safe, idempotent, fully reversible state machine.

The setup changes the machine (sandbox users, their stored credentials, ACEs on the
workspace roots, firewall rules), so it keeps a journal: before each change it writes what it
is about to do and what it needs to undo it (the ACL as it was, whether the user already
existed), then does it, then marks it done. Each journal write is atomic (a temporary file,
fsync, rename). A setup killed at any point is finished by running it again; ``uninstall``
undoes exactly what the journal says was done, newest first, and is itself resumable.

Codex's Windows sandbox was known for ACL changes that outlived uninstall and broke user
profiles: here an ACE is never placed on a profile root or a registry hive file, and
uninstall restores each ACL from the copy taken before the first change.
"""

from __future__ import annotations

import json
import ntpath
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows.rights import MASKS

HIVE_FILES = ("ntuser.dat", "ntuser.dat.log1", "ntuser.dat.log2", "usrclass.dat")


@dataclass(frozen=True)
class CreateUser:
    name: str
    kind: str = "create_user"


@dataclass(frozen=True)
class StoreSecret:
    """The user's password, kept with DPAPI (the API decides how)."""

    user: str
    kind: str = "store_secret"


@dataclass(frozen=True)
class AddAce:
    """One ACE on one path. ``rights`` names a mask in ``rights.MASKS``; ``inherit`` makes it
    apply to everything beneath (object and container inherit), otherwise to the path alone."""

    path: str
    sid: str
    rights: str
    deny: bool = False
    inherit: bool = True
    kind: str = "add_ace"


@dataclass(frozen=True)
class AddFirewallRule:
    """An outbound block rule for one local user (the Windows Firewall lets a block rule win
    over any allow rule, so "everything but the proxy port" is written as blocks of the rest).
    ``remote_addresses`` and ``remote_ports`` are comma-separated lists of ranges, as
    ``netsh``/``INetFwRule`` take them; an empty ``remote_ports`` means every port."""

    name: str
    user: str
    protocol: str  # "any" | "tcp" | "udp"
    remote_addresses: str
    remote_ports: str = ""
    kind: str = "add_firewall_rule"


Action = CreateUser | StoreSecret | AddAce | AddFirewallRule
_KINDS: dict[str, type[Any]] = {
    "create_user": CreateUser,
    "store_secret": StoreSecret,
    "add_ace": AddAce,
    "add_firewall_rule": AddFirewallRule,
}


class WinApi(Protocol):
    """The only door to Windows for the setup. The real one is ``win32.Win32Api`` (ctypes);
    tests use a simulated machine."""

    def user_exists(self, name: str) -> bool: ...
    def create_user(self, name: str) -> None: ...
    def delete_user(self, name: str) -> None: ...
    def secret_exists(self, user: str) -> bool: ...
    def store_secret(self, user: str) -> None: ...
    def delete_secret(self, user: str) -> None: ...
    def get_acl(self, path: str) -> str: ...  # an opaque copy (SDDL on Windows)
    def set_acl(self, path: str, acl: str) -> None: ...
    def add_ace(self, ace: AddAce) -> None: ...
    def firewall_rule_exists(self, name: str) -> bool: ...
    def add_firewall_rule(self, rule: AddFirewallRule) -> None: ...
    def delete_firewall_rule(self, name: str) -> None: ...
    def profile_roots(self) -> list[str]: ...
    def user_sid(self, name: str) -> str: ...
    def has_ace(self, ace: AddAce) -> bool: ...


def describe(action: Action) -> str:
    """One line a person can check before saying yes to an elevated prompt."""
    if isinstance(action, CreateUser):
        return f"create the local user {action.name} (a random password, not an administrator)"
    if isinstance(action, StoreSecret):
        return f"store the password of {action.user} with DPAPI, for this user only"
    if isinstance(action, AddAce):
        scope = "and everything beneath" if action.inherit else "(this object only)"
        verb = "deny" if action.deny else "allow"
        return f"{verb} {action.rights} to {action.sid} on {action.path} {scope}"
    ports = f" ports {action.remote_ports}" if action.remote_ports else ""
    return (
        f"firewall: block outbound {action.protocol} from {action.user} to "
        f"{action.remote_addresses}{ports}"
    )


def refuse_dangerous(action: Action, profile_roots: Iterable[str]) -> None:
    """No ACE on a user profile root or a registry hive file, whatever the plan says."""
    if not isinstance(action, AddAce):
        return
    path = ntpath.normcase(ntpath.normpath(action.path))
    roots = {ntpath.normcase(ntpath.normpath(r)) for r in profile_roots}
    if path in roots or ntpath.basename(path) in HIVE_FILES:
        raise PolicyError(
            f"setup: refusing to change the ACL of {action.path} (a user profile root or a "
            "registry hive file): grant a directory inside it instead"
        )


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` so that a reader (or the next run after a crash) sees the old or the new
    content, never a mix: a temporary file beside it, fsync, rename. The journals, the
    install state and the stored secrets all go through here."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ringfence-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Journal:
    """The setup's state on disk: entries of {action, undo, state: pending|done|undone}."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or data.get("version") != 1:
                raise SandboxError(f"{path}: not a ringfence setup journal (version 1)")
            self.entries = list(data["entries"])

    def save(self) -> None:
        data = {"version": 1, "entries": self.entries}
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def find(self, action: Action) -> dict[str, Any] | None:
        key = asdict(action)
        return next((e for e in self.entries if e["action"] == key), None)


def _action(data: dict[str, Any]) -> Action:
    cls = _KINDS[data["kind"]]
    action: Action = cls(**data)
    return action


def install(actions: list[Action], api: WinApi, journal_path: str) -> int:
    """Bring the machine to ``actions``; returns how many changes were made this run."""
    if any(isinstance(a, AddAce) for a in actions):
        roots = api.profile_roots()  # once per run: it reads the registry
        for action in actions:
            refuse_dangerous(action, roots)
    journal = Journal(journal_path)
    changed = 0
    for action in actions:
        entry = journal.find(action)
        if entry is not None and entry["state"] == "done":
            continue
        if entry is not None and entry["state"] == "pending":
            _roll_back(entry, api)  # a crash mid-change: back to the recorded state, then redo
        else:
            entry = {"action": asdict(action), "undo": _undo_info(action, api), "state": "pending"}
            journal.entries.append(entry)
        entry["state"] = "pending"
        journal.save()
        _do(action, entry["undo"], api)
        entry["state"] = "done"
        journal.save()
        changed += 1
    return changed


def uninstall(api: WinApi, journal_path: str) -> int:
    """Undo everything the journal says was done (or may have been), newest first."""
    if not os.path.exists(journal_path):
        return 0
    journal = Journal(journal_path)
    undone = 0
    for entry in reversed(journal.entries):
        if entry["state"] == "undone":
            continue
        _roll_back(entry, api)
        entry["state"] = "undone"
        journal.save()
        undone += 1
    os.unlink(journal_path)
    return undone


def _undo_info(action: Action, api: WinApi) -> dict[str, Any]:
    """What undoing needs, taken before the change."""
    if isinstance(action, CreateUser):
        return {"existed": api.user_exists(action.name)}
    if isinstance(action, StoreSecret):
        return {"existed": api.secret_exists(action.user)}
    if isinstance(action, AddAce):
        if action.rights not in MASKS:
            raise PolicyError(f"setup: unknown rights {action.rights!r} for {action.path}")
        return {"acl": api.get_acl(action.path)}
    return {"existed": api.firewall_rule_exists(action.name)}


def _do(action: Action, undo: dict[str, Any], api: WinApi) -> None:
    if isinstance(action, CreateUser):
        if not api.user_exists(action.name):
            api.create_user(action.name)
    elif isinstance(action, StoreSecret):
        if not api.secret_exists(action.user):
            api.store_secret(action.user)
    elif isinstance(action, AddAce):
        api.add_ace(action)
    elif not api.firewall_rule_exists(action.name):
        api.add_firewall_rule(action)


def _roll_back(entry: dict[str, Any], api: WinApi) -> None:
    """Return what ``entry`` touched to its recorded state (idempotent)."""
    action, undo = _action(entry["action"]), entry["undo"]
    if isinstance(action, AddAce):
        if api.get_acl(action.path) != undo["acl"]:
            api.set_acl(action.path, undo["acl"])
        return
    if undo.get("existed"):
        return  # it was there before us: not ours to remove
    if isinstance(action, CreateUser) and api.user_exists(action.name):
        api.delete_user(action.name)
    elif isinstance(action, StoreSecret) and api.secret_exists(action.user):
        api.delete_secret(action.user)
    elif isinstance(action, AddFirewallRule) and api.firewall_rule_exists(action.name):
        api.delete_firewall_rule(action.name)
