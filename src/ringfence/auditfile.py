"""The audit log's file and its lines, without the JSON and regular-expression modules.

One implementation of how a record is appended (under an exclusive lock that also serialises
rotation, in one ``write`` to a file opened with O_APPEND) for ``audit.AuditLog`` and for the
native one-shot path (``native_oneshot``), which writes its record without importing ``json``
or ``re`` (a few milliseconds on every call): :func:`command_line` spells a command's record
exactly as ``json.dumps(record, sort_keys=True)`` does (a unit test holds them together).
"""

import fcntl
import math
import os
import time

MAX_BYTES = 10 << 20
KEEP = 3  # audit.jsonl.1 .. .3

# Every pattern audit.redact replaces needs one of these (case aside): an argument with none
# of them is written as it is, without loading the patterns.
REDACTION_HINTS = (
    "gh", "github_pat_", "glpat-", "xox", "sk-", "akia", "eyj", "pass", "pwd", "token",
    "secret", "key", "auth", "://", "bearer",
)  # fmt: skip


def needs_redaction(arg: str) -> bool:
    """False only when ``audit.redact`` would change nothing: no hint in the argument, and
    nothing beyond ASCII (its patterns ignore case the way ``re`` folds it, where the long
    s, U+017F, is an 's' and the dotless i, U+0131, an 'i')."""
    if not arg.isascii():
        return True
    low = arg.lower()
    return any(hint in low for hint in REDACTION_HINTS)


def iso_utc(when: float) -> str:
    """``when`` in UTC as ``datetime.isoformat(timespec="milliseconds")`` writes it, without
    importing datetime (its C module costs every one-shot run a few milliseconds)."""
    frac, whole = math.modf(when)  # rounded to microseconds as datetime.fromtimestamp does
    seconds, micro = int(whole), round(frac * 1_000_000)
    if micro >= 1_000_000:
        seconds, micro = seconds + 1, micro - 1_000_000
    elif micro < 0:
        seconds, micro = seconds - 1, micro + 1_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{micro // 1000:03d}+00:00"  # isoformat truncates to milliseconds


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def json_str(text: str) -> str:
    """``json.dumps(text)`` (ensure_ascii): the same bytes, without the json module."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def command_line(
    *,
    argv: list[str],
    cwd: str | None,
    duration: float,
    returncode: int,
    signal: int | None,
    policy: str,
    plan: str,
    session: str,
    when: float,
) -> str:
    """A clean command's record (ran to its end, nothing refused, found or tried), as
    ``json.dumps(audit.command_record(...), sort_keys=True)`` writes it. ``argv`` is
    redacted already."""
    arg_list = ", ".join(json_str(a) for a in argv)
    fields = [
        ("approval", "null"),
        ("argv", f"[{arg_list}]"),
        ("created", "[]"),
        ("cwd", "null" if cwd is None else json_str(cwd)),
        ("duration", repr(round(duration, 4))),
        ("error", "null"),
        ("exit", str(returncode)),
        ("messages", "[]"),
        ("network", "[]"),
        ("outcome", '"exited"' if signal is None else '"signaled"'),
        ("plan", json_str(plan)),
        ("policy", json_str(policy)),
        ("session", json_str(session)),
        ("signal", "null" if signal is None else str(signal)),
        ("time", json_str(iso_utc(when))),
        ("timed_out", "false"),
        ("type", '"command"'),
        ("version", "1"),
        ("violations", "[]"),
        ("widenings", "[]"),
    ]
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields) + "}"


def append(path: str, line: bytes, max_bytes: int = MAX_BYTES) -> None:
    """Append one record line (``\\n``-terminated), atomically; rotate first when full."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd, size = _open_locked(path, flags)
    except FileNotFoundError:  # the first record: its directory is made then, not each time
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, size = _open_locked(path, flags)
    try:
        if size and size + len(line) > max_bytes:
            fd = _rotate(path, fd, flags)
        elif size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a writer died mid-line: end its torn line first
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)  # closing releases the lock


def _open_locked(path: str, flags: int) -> tuple[int, int]:
    """The current file, opened and locked, and its size. A writer that waited while
    another rotated finds its file renamed away and opens the new one."""
    while True:
        fd = os.open(path, flags, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (current.st_dev, current.st_ino):
            return fd, st.st_size
        os.close(fd)


def _rotate(path: str, fd: int, flags: int) -> int:
    """Shift audit.jsonl -> .1 -> .2 ... while holding the lock; return the new file's fd,
    locked."""
    for i in range(KEEP - 1, 0, -1):
        try:
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
        except FileNotFoundError:
            pass
    os.replace(path, f"{path}.1")
    new = os.open(path, flags, 0o600)
    fcntl.flock(new, fcntl.LOCK_EX)
    os.close(fd)
    return new
