"""The sandbox users' passwords at rest: generated here, kept as DPAPI blobs in one directory.

NOT RUN ON WINDOWS: this module is pure Python (the DPAPI calls are passed in), tested on
Linux with a stand-in for DPAPI; the real ``protect``/``unprotect`` are in ``dpapi.py``.

Where: ``%LOCALAPPDATA%\\ringfence\\secrets\\<user>.dpapi`` of the person who runs the setup.
The blob is protected with DPAPI in *user* scope (not machine scope), so only that person's
logon can decrypt it: the elevated setup writes it and the same person's unelevated runner
reads it (elevation does not change the DPAPI master key), while the sandbox users, another
local user or a copy of the file on another machine cannot. The entropy names the sandbox user,
so a blob copied to another user's file name does not decrypt as that user's password.

Each write is atomic (a temporary file in the same directory, fsync, rename), so a crash leaves
the old blob or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import string
from collections.abc import Callable
from dataclasses import dataclass

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows.setup import write_atomic

# Local account names: at most 20 characters; ours are plain ASCII and cannot look like a path.
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,19}")
_SYMBOLS = "!#%&()*+,-./:;<=>?@[]^_{|}~"

Protect = Callable[[bytes, bytes], bytes]  # (data, entropy) -> blob


def check_user_name(name: str) -> str:
    """A local user name we are willing to put in a file name and hand to the Net API."""
    if not _USER.fullmatch(name) or name.endswith("."):
        raise PolicyError(
            f"windows: {name!r} is not a sandbox user name (1-20 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, not ending with a dot)"
        )
    return name


def generate_password(length: int = 32) -> str:
    """A random password that meets any complexity policy: every character class present,
    ~190 bits from ``secrets``. Nobody types it; it exists only to be stored with DPAPI."""
    if length < 16:
        raise ValueError("a sandbox user's password has at least 16 characters")
    alphabet = string.ascii_letters + string.digits + _SYMBOLS
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, _SYMBOLS)
    while True:
        password = "".join(_random.choice(alphabet) for _ in range(length))
        if all(any(c in cls for c in password) for cls in classes):
            return password


def entropy_for(user: str) -> bytes:
    """The DPAPI optional entropy: binds a blob to the user it was made for."""
    return b"ringfence sandbox user password\0" + user.encode("ascii")


@dataclass(frozen=True)
class SecretStore:
    """The directory of DPAPI blobs, one per sandbox user.

    ``protect`` and ``unprotect`` are DPAPI's CryptProtectData/CryptUnprotectData on Windows
    (``dpapi.dpapi_protect``/``dpapi.dpapi_unprotect``); tests pass a stand-in.
    """

    directory: str
    protect: Protect
    unprotect: Protect

    def path(self, user: str) -> str:
        return os.path.join(self.directory, check_user_name(user) + ".dpapi")

    def exists(self, user: str) -> bool:
        return os.path.isfile(self.path(user))

    def save(self, user: str, password: str) -> None:
        blob = self.protect(password.encode("utf-8"), entropy_for(user))
        write_atomic(self.path(user), blob)

    def load(self, user: str) -> str:
        path = self.path(user)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise SandboxError(
                f"windows: no stored password for {user} ({path}): run `ringfence setup` again"
            ) from None
        try:
            return self.unprotect(blob, entropy_for(user)).decode("utf-8")
        except UnicodeDecodeError:
            raise SandboxError(f"windows: {path} does not hold a password") from None

    def delete(self, user: str) -> None:
        try:
            os.unlink(self.path(user))
        except FileNotFoundError:
            pass


def secrets_directory(local_app_data: str) -> str:
    """``%LOCALAPPDATA%\\ringfence\\secrets`` (``local_app_data`` must be absolute)."""
    if not os.path.isabs(local_app_data):
        raise SandboxError(f"windows: LOCALAPPDATA is not an absolute path: {local_app_data!r}")
    return os.path.join(local_app_data, "ringfence", "secrets")
