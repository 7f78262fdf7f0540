"""The plan cache's seal: a keyed digest over every entry, with a key no sandbox can read.

A kept plan decides what the next sandbox allows, so an entry written by anyone but ringfence
must never be used. The directory is hidden from namespaced sandboxes, but reduced isolation
hides nothing and may be given a writable root that contains it; a file-based secret would be
readable there too. The key therefore lives in the user's kernel keyring (``@u``), which
every sandbox is refused by seccomp (``add_key``, ``request_key`` and ``keyctl`` are denied
in both isolation modes). Without a usable keyring (a container whose own seccomp profile
refuses keyctl, for one) there is no key, and no cache: the run compiles as it always did.

The digest is keyed BLAKE2b (a MAC by design) over the entry's own key and its bytes, so an
entry cannot be forged, altered, or moved to another request's name.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ringfence.plancache.sealed import SEAL_BYTES, same, seal
from ringfence.platforms.linux.libc import syscall

_DESCRIPTION = b"ringfence:plan-cache-seal"
_KEY_TYPE = b"user"
_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_SETPERM = 5
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11
_POS_ALL = 0x3F000000
_USR_ALL = 0x003F0000  # this user only: no group or other rights

_cached: list[bytes | None] = []


def _read(key_id: int) -> bytes | None:
    buf = ctypes.create_string_buffer(64)
    n = syscall("keyctl", _KEYCTL_READ, key_id, buf, ctypes.c_size_t(64), 0)
    return buf.raw[:n] if n == SEAL_BYTES else None


def _find() -> int:
    return syscall("keyctl", _KEYCTL_SEARCH, _KEY_SPEC_USER_KEYRING, _KEY_TYPE, _DESCRIPTION, 0)


def _make() -> int:
    secret = os.urandom(SEAL_BYTES)
    key_id = syscall(
        "add_key",
        _KEY_TYPE,
        _DESCRIPTION,
        secret,
        ctypes.c_size_t(SEAL_BYTES),
        _KEY_SPEC_USER_KEYRING,
    )
    syscall("keyctl", _KEYCTL_SETPERM, key_id, _POS_ALL | _USR_ALL, 0, 0)
    return key_id


def secret() -> bytes | None:
    """This user's sealing key (made on first use), or None where keyrings are unusable."""
    if _cached:
        return _cached[0]
    found: bytes | None = None
    try:
        try:
            key_id = _find()
        except OSError as e:
            if e.errno not in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED):
                raise
            key_id = _make()
        found = _read(key_id)
    except (OSError, KeyError, AttributeError):  # no keyring here (or an unknown machine)
        found = None
    _cached.append(found)
    return found


__all__ = ["SEAL_BYTES", "same", "seal", "secret"]
