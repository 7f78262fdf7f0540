"""Reading and sealing the plan cache's files, with nothing heavier than ``os``: what the
Python entries (``store``) and the native ones (``ringfence.native_oneshot``, which must not
pay for imports) share. A file is used only when it is a private regular file of ours in a
private directory of ours, and its seal (a keyed BLAKE2b over its request key and bytes, the
key from the user's keyring: ``seal.secret``) is right.

Imports only ``os`` and ``_blake2``: not ``from __future__`` (see entry.py)."""

import os

try:  # the built-in module: hashlib loads OpenSSL first (~3 ms on the one-shot path)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

SEAL_BYTES = 32
MAX_BYTES = 1 << 22
_IFMT, _IFDIR, _IFREG = 0o170000, 0o040000, 0o100000


def private_dir(path: str, create: bool = False) -> bool:
    """``path`` is a directory of ours that no one else may read or write (made so if
    ``create``)."""
    if create:
        try:
            os.makedirs(path, mode=0o700)
        except OSError:  # there already, or a read-only home: no cache, the run goes on
            pass
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_mode & _IFMT) == _IFDIR and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def read_private(path: str) -> "bytes | None":
    """The bytes of ``path`` if it is a regular file of ours that no one else can read (not
    through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & _IFMT) != _IFREG or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        return os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def seal(key: str, data: bytes, secret_key: bytes) -> bytes:
    h = blake2b(key=secret_key, digest_size=SEAL_BYTES)
    h.update(key.encode())
    h.update(b"\0")
    h.update(data)
    return h.digest()


def same(a: bytes, b: bytes) -> bool:
    """Compare two seals in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b, strict=True):
        diff |= x ^ y
    return diff == 0


def unsealed(dirpath: str, name: str, key: str, secret: bytes) -> "bytes | None":
    """The bytes of ``dirpath/name`` past its seal for ``key``, if every rule above holds."""
    if not private_dir(dirpath):
        return None
    raw = read_private(os.path.join(dirpath, name))
    if raw is None or len(raw) <= SEAL_BYTES:
        return None
    mac, data = raw[:SEAL_BYTES], raw[SEAL_BYTES:]
    return data if same(mac, seal(key, data, secret)) else None
