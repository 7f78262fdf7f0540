"""``Win32Api``: the setup's ``WinApi`` on a real Windows machine, assembled from one native
module per Win32 area.

NOT RUN ON WINDOWS. Nothing behind this class has been executed on Windows: it was written
against the documented Win32 signatures and type-checked with ``mypy --platform win32``. The
pure parts (rule validation, the PowerShell argv and environment, the mask and inheritance
mapping, the SDDL checks, the propagation-hazard scan) are tested on Linux; every ctypes call
is unverified until it runs on Windows.

The module imports anywhere; the DLLs are loaded only when a ``Win32Api`` is built, and
building one off Windows raises :class:`UnsupportedError`.

Where each part lives, and the choices made there:

- ``accounts.py``: the sandbox users (netapi32): plain users, never administrators; an
  existing account of that name with administrator privilege is refused.
- ``dpapi.py``: the passwords, set on the account, then stored with DPAPI
  (``secrets.SecretStore``) for the same person's unelevated run to read.
- ``file_acls.py`` (over ``dacl.py``): ACLs as SDDL copies for the journal, one ACE merged at
  a time, and the propagation-hazard scan that refuses inheritable grants reaching outside.
- ``firewall.py``: ``New-NetFirewallRule -LocalUser`` through Windows PowerShell, every field
  checked first and passed as data.
- ``profiles.py``: the profile roots setup must never put an ACE on; a deleted user's profile.
"""

from __future__ import annotations

import os

from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.accounts import LocalAccounts
from ringfence.platforms.windows.dll import require_windows
from ringfence.platforms.windows.dpapi import secret_store_for
from ringfence.platforms.windows.file_acls import FileAcls
from ringfence.platforms.windows.firewall import Firewall
from ringfence.platforms.windows.profiles import profile_roots
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule, WinApi


class Win32Api:
    """``setup.WinApi`` with ctypes. Must run elevated (users, ACLs, firewall rules) as the
    person whose unelevated run will later read the stored passwords."""

    def __init__(self, local_app_data: str | None = None, system_root: str | None = None) -> None:
        require_windows("ringfence's Windows setup (Win32Api)")
        self._accounts = LocalAccounts()
        self._acls = FileAcls()
        self._secrets = secret_store_for(local_app_data)
        self._firewall = Firewall(system_root or os.environ.get("SYSTEMROOT", ""))

    # users

    def user_exists(self, name: str) -> bool:
        return self._accounts.user_exists(name)

    def create_user(self, name: str) -> None:
        self._accounts.create_user(name)

    def delete_user(self, name: str) -> None:
        self._accounts.delete_user(name)

    def user_sid(self, name: str) -> str:
        return self._accounts.user_sid(name)

    # secrets

    def secret_exists(self, user: str) -> bool:
        return self._secrets.exists(user)

    def store_secret(self, user: str) -> None:
        """A new password: set on the account first, then stored (a crash in between leaves no
        file, and the journal redoes both)."""
        password = secret_store.generate_password()
        self._accounts.set_password(user, password)
        self._secrets.save(user, password)

    def delete_secret(self, user: str) -> None:
        self._secrets.delete(user)

    def load_secret(self, user: str) -> str:
        return self._secrets.load(user)

    # ACLs

    def get_acl(self, path: str) -> str:
        return self._acls.get_acl(path)

    def set_acl(self, path: str, acl: str) -> None:
        self._acls.set_acl(path, acl)

    def add_ace(self, ace: AddAce) -> None:
        self._acls.add_ace(ace)

    def has_ace(self, ace: AddAce) -> bool:
        return self._acls.has_ace(ace)

    # firewall

    def firewall_rule_exists(self, name: str) -> bool:
        return self._firewall.rule_exists(name)

    def add_firewall_rule(self, rule: AddFirewallRule) -> None:
        self._firewall.add_rule(rule, self.user_sid)

    def delete_firewall_rule(self, name: str) -> None:
        self._firewall.delete_rule(name)

    # profiles

    def profile_roots(self) -> list[str]:
        return profile_roots()


def _conforms(api: Win32Api) -> WinApi:
    """mypy proves here that Win32Api implements setup.WinApi."""
    return api
