"""What the name guard's answers are made of: a refusal and its report, the replies a
notification gets, and what a path resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Denial:
    """One refused operation, for violation reports."""

    pid: int
    syscall: str
    path: str
    rule: str
    by: str = "guard"  # the guard's own rule, or "kernel": the call we made for it was refused


class Refused(Exception):
    """The guard refuses a call (EACCES) and reports it as a :class:`Denial`."""

    def __init__(self, path: str, rule: str, by: str = "guard") -> None:
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule
        self.by = by  # "guard" (a protected name) or "socket" (a unix socket rule)


@dataclass(frozen=True)
class Value:
    """Answer the call with a return value or an errno."""

    val: int = 0
    error: int = 0


@dataclass(frozen=True)
class Fd:
    """Answer the call with a new fd in the caller (SECCOMP_IOCTL_NOTIF_ADDFD)."""

    fd: int  # the supervisor's fd; closed after injection
    cloexec: bool


class Deferred:
    """A worker thread will answer this notification (a FIFO open that may block)."""


class Continue:
    """Let the kernel run the call itself (SECCOMP_USER_NOTIF_FLAG_CONTINUE): only where no
    change the caller can make after the check matters (see ``SocketCalls._sendmsg``)."""


DEFERRED: Final = Deferred()
CONTINUE: Final = Continue()
Reply = Value | Fd | Deferred | Continue


@dataclass
class Resolved:
    """The parent directory (pinned) and final name a path names, as the kernel would see it."""

    parent_fd: int
    name: str  # one component; "." or ".." when the path ends so
    trailing_slash: bool
    parent_path: str

    @property
    def path(self) -> str:
        if self.name in (".", ".."):
            return self.parent_path
        return self.parent_path.rstrip("/") + "/" + self.name

    @property
    def kernel_name(self) -> str:
        """The name to hand the emulating *at() call; a trailing slash keeps its meaning."""
        return self.name + "/" if self.trailing_slash else self.name


@dataclass
class Magic:
    """A /proc magic link the path ends in; ``fd`` is an O_PATH fd of what it points to."""

    fd: int
