"""Descriptors 0, 1 and 2 of a process that runs ringfence are never ringfence's own.

A process started with stdin, stdout or stderr closed gives those numbers to the next
descriptors it opens: ringfence's session socket, its state lock or the sandbox's resolver
socket would sit at 0-2, and a command handed "your" stdio (every CLI run, ``stdin=None`` in
the API) would receive them. The session socket lets its holder start commands of its own,
unapproved and unaudited, and read other commands' exit reports. So ringfence fills a closed
0, 1 or 2 with /dev/null before it opens anything (the CLI at its entry, a session when it
starts), and hands a command descriptor *i* of yours only if it is open and inheritable, as
``subprocess`` would (a close-on-exec descriptor never reaches a child): otherwise /dev/null.

Imported by the CLI's entry: only ``os``.
"""

import os


def reserve() -> None:
    """Open /dev/null on each of 0, 1 and 2 that is closed (inheritable, as stdio is)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            else:
                os.set_inheritable(fd, True)


def inheritable(fd: int) -> bool:
    """Whether a child of this process would inherit ``fd`` (open, not close-on-exec)."""
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


def hand_over(fd: int) -> int:
    """A private copy of ``fd`` to hand a command (the caller closes it), or -1 if a child of
    this process would not inherit ``fd``. The copy is what is sent: another thread closing
    ``fd`` meanwhile cannot put something else at that number in its place."""
    if not inheritable(fd):
        return -1
    try:
        return os.dup(fd)  # close-on-exec, as Python makes every descriptor
    except OSError:
        return -1


__all__ = ["hand_over", "inheritable", "reserve"]
