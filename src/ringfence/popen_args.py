"""The ``subprocess.Popen`` arguments beyond stdio, checked once for ``Session.spawn``/``run``
(and their asyncio mirrors): those a sandboxed command can honour become fields of the run
request; those it cannot are refused with a sentence that says why, never silently dropped.

Honoured: ``executable`` (the program to run instead of ``args[0]``), ``umask`` (set in the
command's child just before exec), ``pass_fds`` (more of the caller's descriptors, at the same
numbers, handed over like stdio), ``bufsize`` (the caller's ends of ``PIPE``\\ s),
``universal_newlines`` (``text``'s old name). ``start_new_session=True`` and
``close_fds=True`` describe what every sandboxed command gets anyway; their opposites cannot
be had, and say so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ringfence.platforms.linux.protocol import MAX_FDS

MAX_PASS_FDS = MAX_FDS - 3  # what one request can carry besides stdin, stdout and stderr


@dataclass(frozen=True)
class PopenArgs:
    """The checked arguments: request fields for the runner, and the caller's side."""

    executable: str | None = None
    umask: int = -1  # -1: the command inherits the session's umask
    pass_fds: tuple[int, ...] = ()
    bufsize: int = 0
    text: bool = False

    def fields(self) -> dict[str, Any]:
        """What the run request carries (nothing for what was left at its default)."""
        out: dict[str, Any] = {}
        if self.executable is not None:
            out["executable"] = self.executable
        if self.umask != -1:
            out["umask"] = self.umask
        if self.pass_fds:
            out["pass_fds"] = list(self.pass_fds)
        return out


def check(
    *,
    executable: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
    pass_fds: Iterable[int] = (),
    umask: int = -1,
    bufsize: int = 0,
    text: bool = False,
    universal_newlines: bool | None = None,
    start_new_session: bool = True,
    close_fds: bool = True,
) -> PopenArgs:
    """The arguments checked, as ``subprocess.Popen`` would take them; ValueError or TypeError
    with the reason for any a sandboxed command cannot have."""
    if not start_new_session:
        raise ValueError(
            "start_new_session=False cannot be had: every sandboxed command starts a session "
            "of its own, so no terminal of yours is its controlling terminal and it cannot "
            "push keystrokes into one (TIOCSTI); signal it with send_signal(), terminate() "
            "or kill()"
        )
    if not close_fds:
        raise ValueError(
            "close_fds=False cannot be had: the sandbox's runner starts the command, not this "
            "process, so it never inherits this process's descriptors; name the ones it "
            "needs in pass_fds"
        )
    if universal_newlines is not None and bool(universal_newlines) != bool(text) and text:
        raise ValueError(
            "text and universal_newlines (its old name) disagree: pass one or the other"
        )
    if not isinstance(bufsize, int) or isinstance(bufsize, bool):
        raise TypeError(f"bufsize must be an integer, not {type(bufsize).__name__}")
    if not isinstance(umask, int) or isinstance(umask, bool):
        raise TypeError(f"umask must be an integer, not {type(umask).__name__}")
    if umask != -1 and not 0 <= umask <= 0o777:
        raise ValueError(f"umask {umask:#o} is not a file mode mask (0 to 0o777, or -1)")
    program = None
    if executable is not None:
        program = os.fsdecode(executable)
        if not program or "\0" in program:
            raise ValueError("executable is empty or contains a NUL byte")
    return PopenArgs(
        executable=program,
        umask=umask,
        pass_fds=_pass_fds(pass_fds),
        bufsize=bufsize,
        text=bool(text or universal_newlines),
    )


def _pass_fds(given: Iterable[int]) -> tuple[int, ...]:
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise TypeError("pass_fds must be a collection of descriptor numbers")
    fds = []
    for fd in given:
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"pass_fds: {fd!r} is not a descriptor number")
        if fd < 3:
            raise ValueError(
                f"pass_fds: {fd} is stdin, stdout or stderr; give those as stdin=, stdout= "
                "or stderr="
            )
        try:
            os.fstat(fd)
        except OSError:
            raise ValueError(f"pass_fds: descriptor {fd} is not open in this process") from None
        fds.append(fd)
    out = tuple(sorted(set(fds)))
    if len(out) > MAX_PASS_FDS:
        raise ValueError(
            f"pass_fds: {len(out)} descriptors; one command can be handed at most {MAX_PASS_FDS}"
        )
    return out


__all__ = ["MAX_PASS_FDS", "PopenArgs", "check"]
