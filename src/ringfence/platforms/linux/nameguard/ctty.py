"""``/dev/tty`` for the command: its own controlling terminal, never the guard's.

The guard runs in another session, so opening ``/dev/tty`` itself would give the guard's
terminal (or none). The command's is found among its own descriptors and reopened here.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import stat
from collections.abc import Iterator

from ringfence.platforms.linux.nameguard.call import Call
from ringfence.platforms.linux.nameguard.results import Fd, Reply

# Descriptors looked at for the terminal, past stdin, stdout and stderr: the guard holds a
# lock every sandbox's guard takes while it looks, and a command may hold 20,000 of them
# (about 48 ms of stat calls each time it opened /dev/tty: an outside review).
WALK_MAX = 256
STDIO = ("0", "1", "2")


def _candidates(call: Call) -> Iterator[str]:
    """stdin, stdout and stderr first (where a terminal almost always is), then at most
    WALK_MAX other descriptors of the caller's, lowest first. The kernel lists them in that
    order, one entry at a time: the listing stops there, however many the caller holds."""
    yield from STDIO
    with os.scandir(call.own(os.open("fd", os.O_RDONLY, dir_fd=call.proc_fd))) as entries:
        others = (e.name for e in entries if e.name not in STDIO)
        yield from itertools.islice(others, WALK_MAX)


def open_ctty(call: Call, flags: int, cloexec: bool) -> Reply:
    """The caller's controlling terminal, from one of its descriptors that is it."""
    if flags & os.O_CREAT and flags & os.O_EXCL:
        raise OSError(errno.EEXIST, "exists")
    stat_line = os.read(call.own(os.open("stat", os.O_RDONLY, dir_fd=call.proc_fd)), 4096).decode(
        "ascii", "replace"
    )
    tty_nr = int(stat_line.rsplit(")", 1)[1].split()[4])
    if tty_nr == 0:
        raise OSError(errno.ENXIO, "no controlling terminal")
    for entry in _candidates(call):
        try:
            st = os.stat(f"fd/{entry}", dir_fd=call.proc_fd)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == tty_nr:
            # Held first (O_PATH: no effect, never blocks), checked, then reopened: the
            # number may hold another file by now (O_TRUNC would have emptied it, a
            # FIFO would have blocked every guard).
            pin = call.own(os.open(f"fd/{entry}", os.O_PATH | os.O_CLOEXEC, dir_fd=call.proc_fd))
            got = os.fstat(pin)
            if not stat.S_ISCHR(got.st_mode) or got.st_rdev != tty_nr:
                raise OSError(errno.EAGAIN, "the terminal's descriptor changed")
            drop = (
                os.O_CREAT
                | os.O_EXCL
                | os.O_NOFOLLOW
                | os.O_TRUNC
                | (os.O_TMPFILE & ~os.O_DIRECTORY)
            )
            keep = flags & ~drop
            fd = os.open(f"/proc/self/fd/{pin}", keep | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not flags & os.O_NONBLOCK:
                    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
                    fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
            except OSError:
                os.close(fd)
                raise
            return Fd(fd, cloexec)
    raise OSError(errno.ENXIO, "controlling terminal not found among the caller's fds")
