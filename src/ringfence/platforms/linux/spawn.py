"""A command's start from its init with ``posix_spawn``, for the common request.

``subprocess.Popen``'s Python path (argument and environment encoding, the error pipe, the
executable list) runs cold on every command's critical path, in an init that has just been
forked or has sat idle: from a process idle for 20 ms, ``Popen(["true"])`` returned after
~310 us and ``posix_spawn`` after ~170 us on the 2-vCPU VM. glibc's ``posix_spawnp`` does the
same work in C (a vfork-style clone, the PATH search, the exec error returned directly).

It is used for requests that need nothing in the child beyond stdio (no terminal to take as
controlling tty, no ``pass_fds``); the rest go through ``Popen`` as they did before. What ``Popen``
does in its child is done here so the command starts the same: its own session (setsid),
SIGPIPE and SIGXFSZ no longer ignored and an empty signal mask, its cwd and umask (set in the
init, which only waits for the command from now on), the PATH of the command's own
environment, and no descriptor but its stdio: every descriptor of the init from 3 up is made
close-on-exec first (``close_range(CLOSE_RANGE_CLOEXEC)``), so none can leak into the command
even if something opened it inheritable. One difference remains: glibc's spawn leaves its two
internal signals (32 and 33) ignored in the child, which no setting can undo (docs/api.md).

Runs inside the sandbox (imported at top level by ``command_init``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from ringfence.platforms.linux.libc import syscall

CLOSE_RANGE_CLOEXEC = 1 << 2
ALL_FDS = 0xFFFFFFFF
# The signals Python ignores and Popen's restore_signals gives back their default: the init
# ignores them as its interpreter does. Handled signals are reset by the spawn itself, and any
# other disposition is inherited, as with subprocess.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class CwdError(OSError):
    """The command's working directory could not be entered (not the program's fault)."""


def start(
    argv: Sequence[str],
    *,
    executable: str | None,
    env: Mapping[str, str],
    cwd: str,
    stdio: Sequence[int],
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    child_step: Callable[[], None] | None = None,
) -> int:
    """Start the command; its pid. OSError as ``Popen`` raises it when the program cannot be
    executed (the PATH searched as the command's ``env`` has it); :class:`CwdError` when the
    working directory cannot be entered. ``child_step`` runs in the child just before exec
    (taking a terminal, placing descriptors): that, extra descriptors or stdio below 3 take
    ``Popen``; anything else ``posix_spawnp``."""
    if child_step is not None or pass_fds or len(stdio) != 3 or min(stdio) < 3:
        proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            cwd=cwd,
            env=env,
            start_new_session=True,  # no terminal of the init's: TIOCSTI reaches nothing
            preexec_fn=child_step,  # noqa: PLW1509 - the init is single-threaded
            umask=umask,
            pass_fds=pass_fds,
        )
        proc.returncode = 0  # reaped by the init's own loop, not by Popen
        return proc.pid
    try:
        os.chdir(cwd)
    except OSError as e:
        raise CwdError(e.errno, e.strerror, cwd) from None
    # The init's own umask again afterwards: it may serve another command, whose request
    # leaves the umask as it was (-1).
    restore = os.umask(umask) if umask >= 0 else -1
    path = env.get("PATH")
    if path is None:
        os.environ.pop("PATH", None)  # glibc's default, as os.defpath for Popen
    else:
        os.environ["PATH"] = path
    try:
        syscall("close_range", 3, ALL_FDS, CLOSE_RANGE_CLOEXEC)
        return os.posix_spawnp(
            executable or argv[0],
            list(argv),
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(stdio)],
            setsid=True,
            setsigmask=(),
            setsigdef=RESTORED_SIGNALS,
        )
    finally:
        if restore >= 0:
            os.umask(restore)


def warm_up(path: str, env: Mapping[str, str]) -> None:
    """The spawn's own path up to an exec that fails at once (see ``command_init._warm_up``)."""
    try:
        os.posix_spawn(path, [path], env, setsid=True, setsigmask=(), setsigdef=RESTORED_SIGNALS)
    except OSError:
        pass


__all__ = ["CwdError", "start", "warm_up"]
