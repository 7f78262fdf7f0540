"""The ``subprocess.Popen`` arguments a run request may carry beyond argv, env, cwd and stdio
(``executable``, ``umask``, ``pass_fds``; the host checks them in ``ringfence.popen_args``),
on the sandbox side: checked again, and the caller's extra descriptors put in place.

Runs inside the sandbox (imported at top level by ``sandbox_side``). ``pass_fds``: the extra
descriptors arrive at whatever numbers SCM_RIGHTS gave them and must sit at the numbers the
caller asked for in the command. The init's own descriptors (the session socket, the control
pipe, the guard's socket...) may hold such a number: that one is filled in the command's child
only, just before exec (the init keeps its own); every other number is filled in the init
before the spawn, so that no descriptor the spawn makes (its error pipe) can take a wanted
number and be overwritten.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ringfence.errors import SandboxError


def request_fields(msg: dict[str, Any]) -> tuple[str | None, int, tuple[int, ...]]:
    """``executable``, ``umask`` and ``pass_fds`` of a run request; ValueError if malformed
    (the runner takes nothing on trust)."""
    executable = msg.get("executable")
    if executable is not None and (
        not isinstance(executable, str) or not executable or "\0" in executable
    ):
        raise ValueError("executable must be a non-empty string")
    umask = msg.get("umask", -1)
    if not isinstance(umask, int) or isinstance(umask, bool) or not -1 <= umask <= 0o777:
        raise ValueError("umask must be -1 or 0..0o777")
    numbers = msg.get("pass_fds") or []
    if (
        not isinstance(numbers, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 3 for n in numbers)
        or len(set(numbers)) != len(numbers)
    ):
        raise ValueError("pass_fds must be distinct descriptor numbers from 3 up")
    return executable, umask, tuple(numbers)


@dataclass
class Staged:
    """The caller's extra descriptors: placed in the init at their numbers (closed once the
    command holds them), and those to move in the child: (descriptor, wanted number)."""

    placed: list[int]
    in_child: list[tuple[int, int]]

    def close(self) -> None:
        """In the init, once the command is started: it alone holds them now, so the caller
        sees EOF on a pipe when the command lets go of it."""
        for fd in [*self.placed, *(fd for fd, _ in self.in_child)]:
            os.close(fd)
        self.placed, self.in_child = [], []

    def child_step(self, first: Callable[[], None] | None) -> Callable[[], None] | None:
        """The command's child's last step before exec: ``first`` (taking the pty as its
        terminal), then the moves. None when there is nothing to do (the spawn is then a
        vfork)."""
        if not self.in_child:
            return first
        moves = list(self.in_child)

        def step() -> None:
            if first is not None:
                first()
            for fd, number in moves:
                os.dup2(fd, number, inheritable=True)

        return step


def stage(received: Sequence[int], wanted: Sequence[int]) -> Staged:
    """Take ``received`` (closed here) to the ``wanted`` numbers, in order."""
    if len(received) != len(wanted):
        for fd in received:
            os.close(fd)
        raise SandboxError("pass_fds: the request's descriptors do not match its numbers")
    if not wanted:
        return Staged([], [])
    top = max(wanted) + 1
    moved: list[int] = []
    try:
        for fd in received:  # above every wanted number: no placement below can hit one
            moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top))
    except OSError as e:
        for fd in moved:
            os.close(fd)
        raise SandboxError(
            f"pass_fds: cannot give the command descriptor {max(wanted)}: {e.strerror} (the "
            "policy's open_files limit caps the descriptor numbers a command may have)"
        ) from None
    finally:
        for fd in received:
            os.close(fd)
    staged = Staged([], [])
    for fd, number in zip(moved, wanted, strict=True):
        if _is_open(number):  # one of the init's own: only the child's copy is replaced
            staged.in_child.append((fd, number))
        else:
            os.dup2(fd, number, inheritable=False)
            os.close(fd)
            staged.placed.append(number)
    return staged


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


__all__ = ["Staged", "request_fields", "stage"]
