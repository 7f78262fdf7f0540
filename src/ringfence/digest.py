"""SHA-256 without ``hashlib``: ``import hashlib`` loads OpenSSL (a few milliseconds), which a
one-shot run would pay for one short digest (the audit record's policy digest, a workspace's
state directory name). The interpreter's built-in implementation gives the same digest."""

from __future__ import annotations

import importlib
from typing import Any


def _builtin_sha256() -> Any:
    for module in ("_sha2", "_sha256"):  # Python >= 3.12, then 3.11
        try:
            return importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
    import hashlib  # pragma: no cover - an interpreter built without either

    return hashlib.sha256


_SHA256 = _builtin_sha256()


def sha256_hex(data: bytes) -> str:
    return str(_SHA256(data).hexdigest())
