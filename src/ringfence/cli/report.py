"""Where ``ringfence run --report FILE`` / ``--report-fd N`` puts the run's record, safely.

The record (``RunResult.to_dict``, docs/report.md) must not be something the sandboxed
command can forge or redirect:

- ``--report-fd N``: ringfence writes to a descriptor the command never gets (the command is
  given only its stdin, stdout and stderr; N must be 3 or more). N is made close-on-exec here.
- ``--report FILE``: the file is opened on the host, possibly in the workspace the command
  can write to. Before the run it is created (or opened) without following a symbolic link
  as its last component (O_NOFOLLOW), without blocking on a FIFO, and refused unless it is a
  regular file with no other hard link; then it is emptied, and its identity (device, inode)
  kept. After the run it is opened again the same way and written only if it is still that
  very file: a command that replaced it with a link to somewhere else gets nothing written
  anywhere, and ringfence says so.
- ``--report -`` is refused: stdout is the command's too, and it could print a look-alike
  record (``--report-fd 3 3>&1`` is the explicit way to accept that).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ringfence.errors import PolicyError

_FILE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class ReportSink:
    """One run's report destination: a file (``path`` and the identity it had when the run
    started) or a descriptor ``fd`` ringfence keeps for itself."""

    path: str | None = None
    identity: tuple[int, int] | None = None
    fd: int | None = None
    # the file's directory, held from before the run (for the CLI's life: one per run)
    dir_fd: int | None = None

    @classmethod
    def of(cls, report: str | None, report_fd: int | None) -> ReportSink | None:
        """The sink the flags ask for (None: no report), checked before anything runs; a
        destination ringfence will not write to is a usage error."""
        if report is not None and report_fd is not None:
            raise PolicyError("give either --report FILE or --report-fd N, not both")
        if report_fd is not None:
            return cls(fd=_checked_fd(report_fd))
        if report is None:
            return None
        if report == "-":
            raise PolicyError(
                "--report -: stdout is the command's too, and it could print a look-alike "
                "report; use --report FILE or --report-fd N (a descriptor the command does "
                "not get; --report-fd 3 3>&1 if you accept sharing stdout)"
            )
        if not report:
            raise PolicyError("--report: the file name is empty")
        path = os.path.abspath(report)
        dir_fd = _open_dir(path)
        try:
            fd = _open_file(path, create=True, dir_fd=dir_fd)
            try:
                st = os.fstat(fd)
                os.ftruncate(fd, 0)  # a stale report must never pass for this run's
            finally:
                os.close(fd)
        except BaseException:
            os.close(dir_fd)
            raise
        return cls(path=path, identity=(st.st_dev, st.st_ino), dir_fd=dir_fd)

    def write(self, record: Mapping[str, Any]) -> str | None:
        """Write ``record`` as one line of JSON; why it could not be written, if so."""
        data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        if self.fd is not None:
            try:
                _write_all(self.fd, data)
            except OSError as e:
                return f"cannot write the report to descriptor {self.fd}: {e.strerror}"
            finally:
                os.close(self.fd)
                self.fd = None
            return None
        assert self.path is not None and self.dir_fd is not None
        try:
            fd = _open_file(self.path, create=False, dir_fd=self.dir_fd)
        except (OSError, PolicyError) as e:
            return f"the report {self.path} is not written: {e}"
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.identity:
                return (
                    f"the report {self.path} is not written: the file was replaced while the "
                    "command ran"
                )
            os.ftruncate(fd, 0)
            _write_all(fd, data)
        except OSError as e:
            return f"cannot write the report {self.path}: {e.strerror}"
        finally:
            os.close(fd)
        return None


def _checked_fd(fd: int) -> int:
    if fd < 3:
        raise PolicyError(
            f"--report-fd {fd}: descriptors 0, 1 and 2 are the command's; use 3 or more"
        )
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        raise PolicyError(f"--report-fd {fd}: no such open descriptor") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise PolicyError(f"--report-fd {fd}: the descriptor is not open for writing")
    os.set_inheritable(fd, False)  # never passed on to anything ringfence starts
    return fd


def _open_dir(path: str) -> int:
    """The directory that holds ``path``, reached through no symbolic link at all (one the
    workspace holds could have been planted by an earlier sandboxed command, or by the
    repository, to make ringfence write elsewhere with the user's rights), and held open for
    the run: renaming it, or something above it, while the command runs redirects nothing."""
    from ringfence.policy.paths import symlinks_on_path

    parent = os.path.dirname(path)
    links = symlinks_on_path(parent)
    if links:
        raise PolicyError(
            f"--report {path}: the way there passes through the symbolic link {links[0]}; "
            f"give the real path {os.path.join(os.path.realpath(parent), os.path.basename(path))}"
        )
    try:
        return os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise PolicyError(f"--report {path}: {parent}: {e.strerror}") from None


def _open_file(path: str, *, create: bool, dir_fd: int) -> int:
    """``path`` (its last component, in ``dir_fd``) opened for writing, never through a
    symbolic link, FIFO or device, and never a file with another hard link (a name the
    command could have made for a file of the user's); blocking again once it is known to be
    a regular file."""
    try:
        fd = os.open(
            os.path.basename(path),
            _FILE_FLAGS | (os.O_CREAT if create else 0),
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PolicyError(
                f"--report {path}: is a symbolic link; ringfence does not write through one"
            ) from None
        if e.errno == errno.ENXIO:  # a FIFO (or socket-like device) with no reader
            raise PolicyError(f"--report {path}: is not a regular file") from None
        raise PolicyError(f"--report {path}: {e.strerror}") from None
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink > 1:
        why = "has another hard link; ringfence writes only a file with one name"
    if why is not None:
        os.close(fd)
        raise PolicyError(f"--report {path}: {why}")
    os.set_blocking(fd, True)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking pipe the caller gave us: wait for room
            select.select([], [fd], [])
