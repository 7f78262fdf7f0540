"""A simulated Windows machine for the setup, grants and command tests (imported by them; not
a test module itself): users, DPAPI secrets, ACLs as SDDL-like strings, firewall rules, and a
crash after a chosen number of changes."""

from __future__ import annotations

import copy
from typing import Any

from ringfence.platforms.windows.facts import Entry
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule
from ringfence.policy import winpaths


class Crash(Exception):
    """The power went out."""


class Machine:
    """A simulated Windows: users, DPAPI secrets, ACLs (SDDL-like strings), firewall rules."""

    def __init__(self) -> None:
        self.users = {"alice", "ringfence-online"}  # one sandbox user existed before us
        self.secrets: set[str] = set()
        self.acls = {
            "C:\\work": "D:(A;;FA;;;alice)",
            "C:\\work\\.git\\hooks": "D:(A;;FA;;;alice)",
            "C:\\Users\\alice": "D:(A;;FA;;;alice)",
            "C:\\work-tmp": "D:(A;;FA;;;alice)",
            "C:\\work\\.git": "D:(A;;FA;;;alice)",
        }
        self.rules: dict[str, tuple[str, str]] = {}
        self.budget: int | None = None  # changes allowed before the crash

    def state(self) -> dict[str, Any]:
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "budget"})

    def tick(self) -> None:
        if self.budget is not None:
            if self.budget == 0:
                raise Crash
            self.budget -= 1

    def user_exists(self, name: str) -> bool:
        return name in self.users

    def create_user(self, name: str) -> None:
        self.tick()
        self.users.add(name)

    def delete_user(self, name: str) -> None:
        self.tick()
        self.users.discard(name)

    def secret_exists(self, user: str) -> bool:
        return user in self.secrets

    def store_secret(self, user: str) -> None:
        self.tick()
        self.secrets.add(user)

    def delete_secret(self, user: str) -> None:
        self.tick()
        self.secrets.discard(user)

    def get_acl(self, path: str) -> str:
        return self.acls.get(path, "D:")

    def set_acl(self, path: str, acl: str) -> None:
        self.tick()
        self.acls[path] = acl

    def add_ace(self, ace: AddAce) -> None:
        self.tick()
        self.acls[ace.path] = self.get_acl(ace.path) + self.ace_text(ace)

    def firewall_rule_exists(self, name: str) -> bool:
        return name in self.rules

    def add_firewall_rule(self, rule: AddFirewallRule) -> None:
        self.tick()
        self.rules[rule.name] = (rule.user, rule.remote_addresses)

    def delete_firewall_rule(self, name: str) -> None:
        self.tick()
        self.rules.pop(name, None)

    def profile_roots(self) -> list[str]:
        return ["C:\\Users\\alice"]

    def user_sid(self, name: str) -> str:
        if name not in self.users:
            raise KeyError(name)
        return f"S-1-5-21-9-9-9-{1000 + sorted(self.users).index(name)}"

    def has_ace(self, ace: AddAce) -> bool:
        return self.ace_text(ace) in self.get_acl(ace.path)

    @staticmethod
    def ace_text(ace: AddAce) -> str:
        kind = "D" if ace.deny else "A"
        return f"({kind};{'OICI' if ace.inherit else ''};{ace.rights};;;{ace.sid})"


class Tree:
    """Directories and files by canonical path, case-insensitive; ``links`` are junctions."""

    def __init__(self, dirs: list[str], files: list[str], links: dict[str, str]) -> None:
        self.dirs = {winpaths.key(d): d for d in dirs}
        self.files = {winpaths.key(f): f for f in files}
        self.links = {winpaths.key(k): v for k, v in links.items()}
        self.listed: list[str] = []

    def realpath(self, path: str) -> str:
        parts = path.split("\\")
        cur = parts[0] + "\\"
        for part in parts[1:]:
            if not part:
                continue
            cur = winpaths.normalize("p", cur + "\\" + part)
            cur = self.links.get(winpaths.key(cur), cur)
        return cur

    def exists(self, path: str) -> bool:
        k = winpaths.key(path)
        return k in self.dirs or k in self.files or k in self.links

    def is_reparse(self, path: str) -> bool:
        return winpaths.key(path) in self.links

    def entries(self, path: str) -> list[Entry]:
        self.listed.append(path)
        here = winpaths.key(path)
        out = []
        for k in [*self.dirs, *self.files, *self.links]:
            if k != here and winpaths.parent(k) == here:
                name = (self.dirs.get(k) or self.files.get(k) or k).rsplit("\\", 1)[-1]
                is_link = k in self.links
                out.append(Entry(name, k in self.dirs or is_link, is_link))
        return out
