"""A kept one-shot request for the native launcher: the plan's image and every question the
compile asked, in the form ``launcher/entry.c`` asks them again.

Written by the usual path beside the Python entry (``<key>.n`` next to ``<key>``), sealed with
the same key; read by ``ringfence.native_oneshot``. It exists only when the native launcher
can ask every question the compile asked and do every effect again: anything else (a
derived question it does not know, a file whose content changed while it was kept, a state
directory that could not be made) leaves the request to the Python fast path.

Layout (little-endian): ``MAGIC``, then records ``u8 tag, u32 length, payload``; a string is
``u32 length, bytes``. Listings are sorted by their bytes, as the C side sorts what it sees.
"""

from __future__ import annotations

import marshal
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any

from ringfence.plancache import codec, facts

MAGIC = b"RFNE\x01\x00\x00\x00"
SUFFIX = ".n"

E_IMAGE, E_CHECK, E_DIR_OURS, E_TOUCH, E_OPTIONS, E_PLAN = 1, 2, 3, 4, 5, 6
Q = {
    "stat": 1,
    "lstat": 2,
    "readlink": 3,
    "listdir": 4,
    "scandir": 5,
    "read": 6,
    "read-nofollow": 7,
    "pwuid": 8,
    "pwnam": 9,
    "tmp-secrets": 11,
}
Q_ACCESS = 10
MAX_CONTENT = 1 << 20  # a file kept whole in the entry; larger: no native entry


class Unsupported(Exception):
    """A question or effect the native side cannot ask again: keep no native entry."""


def _record(tag: int, payload: bytes) -> bytes:
    return struct.pack("<BI", tag, len(payload)) + payload


def _s(value: str | bytes) -> bytes:
    raw = os.fsencode(value) if isinstance(value, str) else value
    return struct.pack("<I", len(raw)) + raw


def _err(answer: tuple[Any, ...]) -> bytes:
    return b"\x00" + struct.pack("<i", answer[1])


def _stat(answer: tuple[Any, ...]) -> bytes:
    if answer[0] == "err":
        return _err(answer)
    kind, mode, uid, gid, dev, ino, *rest = answer
    out = b"\x01" + struct.pack("<IIIIQQ", kind, mode, uid, gid, dev, ino)
    if stat.S_ISREG(kind):
        out += struct.pack("<QQQ", *rest)
    return out


def _listing(answer: tuple[Any, ...], kinds: bool) -> bytes:
    if answer[0] == "err":
        return _err(answer)
    items = []
    for item in answer[1]:
        if kinds:
            name, link, isdir, isfile = item
            items.append(
                (os.fsencode(name), (1 if link else 0) | (2 if isdir else 0) | (4 if isfile else 0))
            )
        else:
            items.append((os.fsencode(item), 0))
    items.sort()
    out = b"\x01" + struct.pack("<I", len(items))
    for name, flags in items:
        out += _s(name) + (bytes([flags]) if kinds else b"")
    return out


def _read(path: str, answer: tuple[Any, ...], nofollow: bool) -> bytes:
    """The file's whole content, read again now and kept only if it is what the compile read
    (its digest): the C side compares contents, not digests."""
    if answer[0] == "err":
        return _err(answer)
    if answer[0] == "not-a-file":
        return b"\x02" + struct.pack("<I", answer[1])
    if answer[0] != "content" or answer[2] > MAX_CONTENT:
        raise Unsupported(f"read {path}")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    try:
        data = os.read(fd, MAX_CONTENT + 1)
    finally:
        os.close(fd)
    if facts._read(path, nofollow) != answer or len(data) != answer[2]:
        raise Unsupported(f"{path} changed since the compile")
    return b"\x01" + _s(data)


def _passwd(answer: tuple[Any, ...]) -> bytes:
    if answer == ("missing",):
        return b"\x00"
    if answer[0] != "pw":
        raise Unsupported("passwd")
    name, passwd, uid, gid, gecos, home, shell = answer[1]
    return (
        b"\x01"
        + _s(name)
        + _s(passwd)
        + struct.pack("<II", uid, gid)
        + _s(gecos)
        + _s(home)
        + _s(shell)
    )


def _tmp_secrets(answer: tuple[Any, ...]) -> bytes:
    from ringfence.policy import defaults

    if answer[0] != "value":
        raise Unsupported("tmp-secrets")
    patterns = defaults.TMP_DENY_READ
    paths = sorted(os.fsencode(p) for p in answer[1])
    out = struct.pack("<I", len(patterns)) + b"".join(_s(p) for p in patterns)
    return out + struct.pack("<I", len(paths)) + b"".join(_s(p) for p in paths)


def _check(op: str, path: str, answer: tuple[Any, ...]) -> bytes:
    if op.startswith("access:"):
        if answer[0] != "access":
            raise Unsupported(op)
        body = struct.pack("<IB", int(op[7:]), 1) + (b"\x01" if answer[1] else b"\x00")
        return _record(E_CHECK, bytes([Q_ACCESS]) + _s(path) + body)
    code = Q.get(op)
    if code is None:
        raise Unsupported(op)
    if op in ("stat", "lstat"):
        body = _stat(answer)
    elif op == "readlink":
        body = _err(answer) if answer[0] == "err" else b"\x01" + _s(answer[1])
    elif op in ("listdir", "scandir"):
        body = _listing(answer, kinds=op == "scandir")
    elif op in ("read", "read-nofollow"):
        body = _read(path, answer, nofollow=op == "read-nofollow")
    elif op in ("pwuid", "pwnam"):
        body = _passwd(answer)
    else:
        body = _tmp_secrets(answer)
    return _record(E_CHECK, bytes([code]) + _s(path) + body)


def _effects(effects: tuple[tuple[str, tuple[Any, ...], Any], ...]) -> list[bytes]:
    """What each of the compile's effects left, to be found again (the Python fast path does
    them again; the native one checks they still hold and marks the workspace used)."""
    from ringfence.policy import caches, statedirs

    out: list[bytes] = []
    for name, args, was in effects:
        if name == "statedirs.prepare_workspace" and isinstance(was, str):
            base = args[0]
            tmp = os.path.join(was, "tmp")
            for d in (base, os.path.join(base, statedirs.WORKSPACES), was, tmp):
                out.append(_record(E_DIR_OURS, _s(d)))
            for d in (os.path.join(tmp, "upper"), os.path.join(tmp, "work")):
                out.append(_record(E_DIR_OURS, _s(d)))
            out.append(_record(E_TOUCH, _s(os.path.join(was, "workspace"))))
        elif name == "caches.ensure" and was is True:
            root = args[0]
            out += [
                _record(E_DIR_OURS, _s(d))
                for d in (root, *(os.path.join(root, t) for t in caches.TOOLS))
            ]
        else:
            raise Unsupported(f"effect {name} -> {was!r}")
    return out


def encode(
    image: bytes,
    answers: Mapping[facts.Question, facts.Answer],
    effects: tuple[tuple[str, tuple[Any, ...], Any], ...],
    options: Mapping[str, Any],
    *,
    audit: tuple[str, str, str],
    plan: Any,
) -> bytes | None:
    """The native entry, or None when some question or effect cannot be asked natively.
    ``audit``: the log's path, the plan's digest and its working directory (the parts of a
    clean command's record that the kept request fixes). ``plan`` goes in too (as
    ``codec`` encodes it): an end that is not clean is reported from it (native_result),
    never from the Python entry, which may have been pruned or replaced meanwhile."""
    timeout = options.get("timeout")
    try:
        checks = [_check(op, path, answer) for (op, path), answer in answers.items()]
        done = _effects(effects)
    except (Unsupported, OSError, ValueError, struct.error):
        return None
    if any("\0" in part for part in audit):
        return None
    on = 1 if options.get("audit") is not False else 0
    head = struct.pack("<dB", -1.0 if timeout is None else float(timeout), on)
    tail = b"\0".join(os.fsencode(part) for part in audit)
    # The options first: the Python side reads them without walking the entry.
    options_record = _record(E_OPTIONS, head + tail)
    try:
        kept = marshal.dumps((codec.encode(plan), dict(options)))
    except (ValueError, codec.CodecError):
        return None
    records = [MAGIC, options_record, _record(E_IMAGE, image), *checks, *done]
    return b"".join([*records, _record(E_PLAN, kept)])


def plan_of(data: bytes) -> tuple[Any, dict[str, Any]]:
    """The plan and the run's options an entry holds (see :func:`encode`)."""
    pos = len(MAGIC)
    while pos + 5 <= len(data):
        tag, length = struct.unpack_from("<BI", data, pos)
        if tag == E_PLAN:
            plan, options = marshal.loads(data[pos + 5 : pos + 5 + length])
            return codec.decode(plan), dict(options)
        pos += 5 + length
    raise ValueError("no plan in this native entry")
