"""Where cached plans live, and how one is written and read back.

The directory is ``<ringfence cache>/plans`` (``~/.cache/ringfence/plans``): inside ringfence's
own state, which every namespaced sandbox has hidden (a sandbox can neither read a plan, and
learn what it does not protect, nor write one). Reduced isolation hides nothing, and a
writable root may contain this directory; so every entry is sealed (``seal.py``: a keyed
digest with a key in the user's kernel keyring, which no sandbox can reach) over its request
key and bytes, and an entry whose seal does not match is never used. Entries are also read
with the care any state file gets: a private regular file of this user's, not through a link,
decoded without running code (``codec.py``).

An entry is keyed by the request (see ``key``) and holds the file-system answers the compile
depended on; a lookup returns it only when every answer is still the same.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import time
from dataclasses import dataclass
from typing import Any

from ringfence.plancache import codec, facts, seal, sealed

FORMAT = 2
MAX_ENTRIES = 64  # one per distinct request; the oldest are dropped
MAX_BYTES = sealed.MAX_BYTES


@dataclass(frozen=True)
class Entry:
    """One cached request: the plan, how to run it, and what it was compiled from."""

    plan: Any
    options: dict[str, Any]
    answers: dict[facts.Question, facts.Answer]
    effects: tuple[tuple[str, tuple[Any, ...], Any], ...]


def load(dirpath: str, key: str, secret: bytes) -> Entry | None:
    """The entry for ``key`` if there is a sound one sealed with ``secret`` (its answers are
    not checked here). Anything else, however malformed, is None: a miss."""
    data = sealed.unsealed(dirpath, key, key, secret)
    if data is None:
        return None  # missing, not private, or not written by ringfence for this request
    try:
        return _parse(key, data)
    except Exception:
        return None


def _parse(key: str, data: bytes) -> Entry | None:
    fmt, stored_key, plan, options, answers, effects = marshal.loads(data)
    if fmt != FORMAT or stored_key != key or not isinstance(options, dict):
        return None
    table: dict[facts.Question, facts.Answer] = {}
    for question, answer in answers:
        op, path = question
        if not isinstance(op, str) or not isinstance(path, str) or not isinstance(answer, tuple):
            return None
        table[(op, path)] = answer
    return Entry(codec.decode(plan), dict(options), table, tuple(effects))


def save(dirpath: str, key: str, entry: Entry, secret: bytes) -> None:
    """Write ``entry`` sealed with ``secret``, atomically (a private file renamed into place);
    errors are ignored: the cache is only ever a speed-up."""
    try:
        data = marshal.dumps(
            (
                FORMAT,
                key,
                codec.encode(entry.plan),
                entry.options,
                tuple(entry.answers.items()),
                entry.effects,
            )
        )
    except (ValueError, codec.CodecError):
        return
    write_sealed(dirpath, key, key, data, secret)


def write_sealed(dirpath: str, key: str, name: str, data: bytes, secret: bytes) -> None:
    """``data`` sealed for ``key`` as ``dirpath/name``, atomically (a private file renamed
    into place); errors are ignored: the cache is only ever a speed-up."""
    if len(data) > MAX_BYTES or not sealed.private_dir(dirpath, create=True):
        return
    tmp = os.path.join(dirpath, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, seal.seal(key, data, secret) + data)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(dirpath, name))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    _prune(dirpath)


def _prune(dirpath: str) -> None:
    try:
        with os.scandir(dirpath) as it:
            found = [(e.stat(follow_symlinks=False).st_mtime, e.path) for e in it]
    except OSError:
        return
    if len(found) <= MAX_ENTRIES:
        return
    found.sort()
    for _, path in found[: len(found) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            os.unlink(path)


def touch(dirpath: str, key: str) -> None:
    """Mark an entry used, so pruning drops the least recently used."""
    with contextlib.suppress(OSError):
        now = time.time()
        os.utime(os.path.join(dirpath, key), (now, now), follow_symlinks=False)
