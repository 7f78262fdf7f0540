"""Seatbelt profile language (SBPL): quoting, and a structural check of a whole profile.

The compiler only ever builds profiles from the pieces here, and every profile it emits is
checked: balanced forms, strings closed, and only operations and filters on a known list, so a
path that contains ``"``, ``)`` or ``;`` cannot end a form early and add a rule of its own.

The one modifier accepted is ``(with message "TEXT")``, as the last item of a ``deny`` rule:
Seatbelt appends TEXT to the denial it logs, which is how a session's violations are told apart
(``monitor.py``). Given the tag, :func:`check` insists that every deny rule carries exactly it.
"""

from __future__ import annotations

import re

# Operations the compiler may use (Apple's names; see docs/platforms.md for the meaning).
OPERATIONS = frozenset(
    {
        "default", "process-exec", "process-fork", "process-info*", "signal", "sysctl-read",
        "mach-lookup", "ipc-posix-shm", "ipc-posix-sem", "file-read*", "file-read-metadata",
        "file-write*", "file-write-data", "file-write-unlink", "file-write-create",
        "file-ioctl", "network*", "network-outbound", "network-inbound", "network-bind",
        "pseudo-tty", "system-socket", "user-preference-read", "iokit-open",
    }
)  # fmt: skip
FILTERS = frozenset(
    {"subpath", "literal", "regex", "path-literal", "target", "remote", "local", "global-name"}
)
_TOP = frozenset({"version", "allow", "deny"})
_ERE_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


class ProfileError(ValueError):
    """A generated profile is malformed: a bug in the compiler, never shipped to sandbox-exec."""


def string(value: str) -> str:
    """An SBPL string literal."""
    if "\0" in value or "\n" in value:
        raise ProfileError(
            f"a path with a NUL byte or newline cannot be put in a profile: {value!r}"
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_literal(pattern: str) -> str:
    """An SBPL regex literal ``#"..."`` (POSIX extended syntax)."""
    if "\0" in pattern or "\n" in pattern:
        raise ProfileError("a regex with a NUL byte or newline cannot be put in a profile")
    return '#"' + pattern.replace('"', '\\"') + '"'


def ere_escape(text: str) -> str:
    """``text`` matched literally inside a POSIX extended regular expression."""
    return _ERE_SPECIAL.sub(r"\\\1", text)


def ere_caseless(text: str) -> str:
    """``text`` matched literally and in any letter case (``.git`` -> ``\\.[gG][iI][tT]``):
    macOS volumes are case-insensitive by default, so ``.GIT/hooks`` is ``.git/hooks``."""
    out = []
    for c in text:
        low, up = c.lower(), c.upper()
        if low != up and len(low) == len(up) == 1:
            out.append(f"[{low}{up}]")
        else:
            out.append(ere_escape(c))
    return "".join(out)


def tokens(text: str) -> list[str]:
    """``(``, ``)``, atoms and whole string/regex literals; comments dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n":
            i += 1
        elif c == ";":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "()":
            out.append(c)
            i += 1
        elif c == '"' or text.startswith('#"', i):
            start = i
            i += 2 if c == "#" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise ProfileError(f"a string starting at offset {start} is not closed")
            i += 1
            out.append(text[start:i])
        else:
            start = i
            while i < n and text[i] not in ' \t\n();"':
                i += 1
            out.append(text[start:i])
    return out


def check(text: str, tag: str | None = None) -> None:
    """Raise :class:`ProfileError` unless ``text`` is a well-formed profile of known forms;
    with ``tag``, also unless every deny rule ends with ``(with message TAG)``."""
    toks = tokens(text)
    pos = 0

    def form(depth: int) -> list[object]:
        nonlocal pos
        if toks[pos] != "(":
            raise ProfileError(f"expected '(' at token {pos}")
        pos += 1
        items: list[object] = []
        while pos < len(toks) and toks[pos] != ")":
            items.append(form(depth + 1) if toks[pos] == "(" else toks[pos])
            if not isinstance(items[-1], list):
                pos += 1
        if pos >= len(toks):
            raise ProfileError("unbalanced parentheses: a form is not closed")
        pos += 1
        return items

    forms = []
    while pos < len(toks):
        if toks[pos] == ")":
            raise ProfileError(f"unbalanced parentheses: ')' without '(' at token {pos}")
        forms.append(form(0))
    if not forms or forms[0] != ["version", "1"]:
        raise ProfileError("a profile starts with (version 1)")
    for f in forms:
        head = f[0] if f else None
        if head not in _TOP:
            raise ProfileError(f"unknown top-level form {head!r}")
        if head in ("allow", "deny"):
            body = f[1:]
            message = _modifier(body)
            if message is not None:
                if head != "deny":
                    raise ProfileError(f"(with message ...) on a rule that is not a deny: {f!r}")
                body = body[:-1]
            if tag is not None and head == "deny" and message != string(tag):
                raise ProfileError(f"a deny rule without the session tag {tag!r}: {f!r}")
            ops = [x for x in body if isinstance(x, str)]
            if not ops or any(op not in OPERATIONS for op in ops):
                raise ProfileError(f"unknown operation in {f!r}")
            if any(isinstance(x, str) for x in body[len(ops) :]):
                raise ProfileError(f"an operation after a filter in {f!r}")
            for flt in (x for x in body if isinstance(x, list)):
                _check_filter(flt)


def _modifier(body: list[object]) -> str | None:
    """The message literal of a trailing ``(with message "...")``; None when there is none.
    Any other use of ``with`` (elsewhere in the rule, another modifier, a second one) is
    refused: only what the compiler emits passes."""
    withs = [i for i, x in enumerate(body) if isinstance(x, list) and x[:1] == ["with"]]
    if not withs:
        return None
    last = body[-1]
    if withs != [len(body) - 1] or not isinstance(last, list):
        raise ProfileError(f"(with ...) only once, as the last item of a rule: {body!r}")
    if (
        len(last) != 3
        or last[1] != "message"
        or not isinstance(last[2], str)
        or not last[2].startswith('"')
    ):
        raise ProfileError(f'only (with message "TEXT") is accepted, not {last!r}')
    return last[2]


def _check_filter(flt: list[object]) -> None:
    head = flt[0] if flt else None
    if head not in FILTERS:
        raise ProfileError(f"unknown filter {head!r}")
    for arg in flt[1:]:
        if isinstance(arg, list):
            _check_filter(arg)
