"""Emulating the calls that change names and file metadata (open with O_CREAT or for
writing, mkdir, mknod, symlink, link, rename, unlink, rmdir, chmod, chown, xattrs, truncate,
bind to a path): checked against the protected names and the git rules, then performed by
the guard itself on the directory fds it pinned, never let through to the kernel."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from ringfence.platforms.linux.gitguard.guard import GitGuard
from ringfence.platforms.linux.gitguard.layout import Unknown, is_dot_git
from ringfence.platforms.linux.guard_rules import (
    GuardRules,
    check_canonical,
    is_ancestor_of_protected_path,
    may_hold_protected,
    protected_by,
)
from ringfence.platforms.linux.nameguard.call import AT_FDCWD, Call, Handler
from ringfence.platforms.linux.nameguard.ctty import open_ctty
from ringfence.platforms.linux.nameguard.ffi import (
    SOCKADDR_MAX,
    SUN_PATH_MAX,
    bind_raw,
    check,
    fchownat,
    renameat2,
)
from ringfence.platforms.linux.nameguard.hardlinks import (
    HARD_LINKED,
    linked,
    plan_open,
    settled,
)
from ringfence.platforms.linux.nameguard.listener import Listener
from ringfence.platforms.linux.nameguard.resolve import Resolver
from ringfence.platforms.linux.nameguard.results import (
    DEFERRED,
    Fd,
    Magic,
    Refused,
    Reply,
    Resolved,
    Value,
)
from ringfence.platforms.linux.nameguard.sources import (
    links,
    read_checked_source,
    rename_in,
    replace_checked,
    same_file,
)
from ringfence.policy.gitdir import CHECKED_PATHS

# State git writes (a rebase's todo list, through a lock file and a rename, or in place) and
# acts on while the command runs, `exec` lines and all (`git rebase --exec 'make test'`):
# judged only when the command has ended, and moved aside then if it would run anything.
LATER: Final = frozenset(CHECKED_PATHS.values())

AT_SYMLINK_FOLLOW: Final = 0x400
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200
AT_EMPTY_PATH: Final = 0x1000
RENAME_NOREPLACE: Final = 1 << 0
RENAME_EXCHANGE: Final = 1 << 1
O_ACCMODE: Final = 0o3
DEV_TTY: Final = os.makedev(5, 0)
_CREAT_FLAGS: Final = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
FIFO_WAITS_MAX: Final = 64  # FIFO opens waiting at once (a thread and a descriptor each)


class FileCalls:
    """The guard's handlers for calls that change names or metadata."""

    def __init__(
        self,
        rules: GuardRules,
        git: GitGuard | None,
        resolver: Resolver,
        listener: Listener,
        event: Callable[[str, str, str], None],
    ) -> None:
        self.rules = rules
        self.git = git
        self.resolver = resolver
        self.listener = listener  # answers a FIFO open that finishes in a thread
        self.event = event  # (kind, path, detail)
        self._fifo_lock = threading.Lock()
        self._fifo_waits = 0  # FIFO opens waiting in a thread (FIFO_WAITS_MAX)

    def handlers(self) -> dict[str, Handler]:
        """Each syscall this class performs, with its arguments decoded."""
        o, m, ln, rn = self._open, self._mknod, self._link, self._rename
        fdcwd = AT_FDCWD
        return {
            "open": lambda c, s: o(
                c, s, dirfd=fdcwd, path_arg=0, flags=c.arg_uint(1), mode=c.arg_uint(2)
            ),
            "creat": lambda c, s: o(
                c, s, dirfd=fdcwd, path_arg=0, flags=_CREAT_FLAGS, mode=c.arg_uint(1)
            ),
            "openat": lambda c, s: o(
                c, s, dirfd=c.arg_int(0), path_arg=1, flags=c.arg_uint(2), mode=c.arg_uint(3)
            ),
            "mkdir": lambda c, s: self._mkdir(c, s, fdcwd, 0, c.arg_uint(1)),
            "mkdirat": lambda c, s: self._mkdir(c, s, c.arg_int(0), 1, c.arg_uint(2)),
            "mknod": lambda c, s: m(
                c, s, dirfd=fdcwd, path_arg=0, mode=c.arg_uint(1), dev=c.arg_uint(2)
            ),
            "mknodat": lambda c, s: m(
                c, s, dirfd=c.arg_int(0), path_arg=1, mode=c.arg_uint(2), dev=c.arg_uint(3)
            ),
            "symlink": lambda c, s: self._symlink(c, s, 0, fdcwd, 1),
            "symlinkat": lambda c, s: self._symlink(c, s, 0, c.arg_int(1), 2),
            "link": lambda c, s: ln(c, s, olddirfd=fdcwd, old=0, newdirfd=fdcwd, new=1, flags=0),
            "linkat": lambda c, s: ln(
                c,
                s,
                olddirfd=c.arg_int(0),
                old=1,
                newdirfd=c.arg_int(2),
                new=3,
                flags=c.arg_uint(4),
            ),
            "rename": lambda c, s: rn(c, s, olddirfd=fdcwd, old=0, newdirfd=fdcwd, new=1, flags=0),
            "renameat": lambda c, s: rn(
                c, s, olddirfd=c.arg_int(0), old=1, newdirfd=c.arg_int(2), new=3, flags=0
            ),
            "renameat2": lambda c, s: rn(
                c,
                s,
                olddirfd=c.arg_int(0),
                old=1,
                newdirfd=c.arg_int(2),
                new=3,
                flags=c.arg_uint(4),
            ),
            "unlink": lambda c, s: self._unlink(c, s, fdcwd, 0, 0),
            "unlinkat": lambda c, s: self._unlink(c, s, c.arg_int(0), 1, c.arg_uint(2)),
            "rmdir": lambda c, s: self._unlink(c, s, fdcwd, 0, AT_REMOVEDIR),
            "chmod": lambda c, s: self._chmod(c, fdcwd, 0, c.arg_uint(1), 0),
            "fchmod": lambda c, s: self._chmod(c, c.arg_int(0), None, c.arg_uint(1), 0),
            "fchmodat": lambda c, s: self._chmod(c, c.arg_int(0), 1, c.arg_uint(2), 0),
            "fchmodat2": lambda c, s: self._chmod(c, c.arg_int(0), 1, c.arg_uint(2), c.arg_uint(3)),
            "truncate": lambda c, s: self._truncate(c, 0, c.arg_long(1)),
            "chown": lambda c, s: self._chown(c, fdcwd, 0, (c.arg_uint(1), c.arg_uint(2)), 0),
            "lchown": lambda c, s: self._chown(
                c, fdcwd, 0, (c.arg_uint(1), c.arg_uint(2)), AT_SYMLINK_NOFOLLOW
            ),
            "fchown": lambda c, s: self._chown(
                c, c.arg_int(0), None, (c.arg_uint(1), c.arg_uint(2)), 0
            ),
            "fchownat": lambda c, s: self._chown(
                c, c.arg_int(0), 1, (c.arg_uint(2), c.arg_uint(3)), c.arg_uint(4)
            ),
            "setxattr": lambda c, s: self._xattr(c, 0, follow=True, value=True),
            "lsetxattr": lambda c, s: self._xattr(c, 0, follow=False, value=True),
            "fsetxattr": lambda c, s: self._xattr(c, None, follow=True, value=True),
            "removexattr": lambda c, s: self._xattr(c, 0, follow=True, value=False),
            "lremovexattr": lambda c, s: self._xattr(c, 0, follow=False, value=False),
            "fremovexattr": lambda c, s: self._xattr(c, None, follow=True, value=False),
            "bind": lambda c, s: self._bind(c),
        }

    # ------------------------------------------------------------------ decisions

    def _deny(self, path: str, rule: str | None) -> None:
        if rule is not None:
            raise Refused(path, rule)

    @contextlib.contextmanager
    def _told_for_the_call(self) -> Iterator[int]:
        """The names the git checks within tell the host (files left for the end check) are
        for the operation within: should it fail or be refused, they are taken back with what
        they noted (:meth:`GitGuard.undo_since`). Only the checks and the operation itself go
        within: once it is done, its names stay told whatever fails after."""
        mark = self.git.told_mark() if self.git is not None else 0
        try:
            yield mark
        except BaseException:
            if self.git is not None:
                self.git.undo_since(mark)
            raise
        if self.git is not None:
            self.git.call_done()

    def _git(self, path: str, ask: Callable[..., str | None], *args: Any, **kw: Any) -> None:
        """Ask the git rules (``ask(self.git, *args)``) about ``path``; a directory the guard
        cannot look into is refused (it cannot tell whether a git directory lies there)."""
        if self.git is None:
            return
        try:
            self._deny(path, ask(self.git, *args, **kw))
        except Unknown as exc:
            raise Refused(path, f"cannot tell whether it is in a git directory ({exc})") from None

    def _lstat_type(self, res: Resolved) -> int:
        return stat.S_IFMT(
            os.stat(res.kernel_name, dir_fd=res.parent_fd, follow_symlinks=False).st_mode
        )

    def _new_name_rule(self, path: str, kind: int) -> str | None:
        """A directory or symlink can bring names beneath it; anything else only itself."""
        if kind in (stat.S_IFDIR, stat.S_IFLNK):
            return may_hold_protected(self.rules, path)
        return protected_by(self.rules, path)

    def _removal_rule(self, path: str) -> str | None:
        return protected_by(self.rules, path) or is_ancestor_of_protected_path(self.rules, path)

    # ------------------------------------------------------------------ the calls

    def _open(
        self, call: Call, syscall: str, *, dirfd: int, path_arg: int, flags: int, mode: int
    ) -> Reply:
        path = call.read_path(path_arg)
        call.validate()
        # O_CREAT follows a symlink in the last component unless O_EXCL or O_NOFOLLOW.
        follow = not flags & (os.O_EXCL | os.O_NOFOLLOW)
        for _attempt in range(8):
            res = self.resolver.resolve(call, dirfd, path, follow_last=follow)
            writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC))
            if isinstance(res, Magic):
                self._deny_existing(res.fd, writes=writes)
                return self._open_object(call, f"/proc/self/fd/{res.fd}", None, flags, mode)
            if res.name in (".", ".."):
                raise OSError(errno.EISDIR, "is a directory")
            self._deny(res.path, protected_by(self.rules, res.path))
            try:
                self._lstat_type(res)
                exists = True
            except FileNotFoundError:
                exists = False
            how = plan_open(res, flags, mode, exists=exists, checked=self._checked)
            pointer = None
            with self._told_for_the_call() as mark:
                if exists and writes:
                    self._git(res.path, GitGuard.writing, res.path)
                elif not exists and flags & os.O_CREAT and self.git is not None:
                    self._git(res.path, GitGuard.creating, res.path, stat.S_IFREG)
                    pointer = self.git.checked_kind(res.path)
                if pointer is not None and self.git is not None:
                    # noted before it exists: the host must learn of it whatever happens next
                    self.git.note_pointer(res.path, pointer)  # its content is checked at the end
                if how.replace:  # truncated anyway: a new file takes the name (hardlinks.py)
                    os.unlink(res.kernel_name, dir_fd=res.parent_fd)
                os.umask(call.umask)
                # We followed the last component ourselves; O_NOFOLLOW makes sure the kernel
                # does not follow a symlink planted there since.
                extra = os.O_NOFOLLOW if follow else 0
                try:
                    reply = self._open_object(
                        call, res.kernel_name, res.parent_fd, how.flags | extra, how.mode
                    )
                except OSError as exc:
                    if (exc.errno == errno.ELOOP and extra) or (
                        exc.errno == errno.EEXIST and how.replace
                    ):
                        self._undo(mark)
                        continue  # a symlink (or a file) appeared after we looked: again
                    raise
                if not settled(reply, how):  # a file with other names took the name
                    self._undo(mark)
                    continue
            if pointer is not None and self.git is not None:
                self.git.pin_after(res.path)  # the file just made, by its inode too
                if is_dot_git(res.name):
                    self.git.created_dot_git.add(res.path)
            return reply
        raise OSError(errno.ELOOP, "the path kept changing")

    def _undo(self, mark: int) -> None:
        """Nothing was made: what the checks told the host is taken back."""
        if self.git is not None:
            self.git.undo_since(mark)

    def _checked(self, path: str) -> bool:
        """Whether git checks a regular file at ``path`` by content (never replaced)."""
        return self.git is not None and self.git.checked_kind(path) is not None

    def _deny_existing(
        self, fd: int, *, writes: bool = True, ask: Callable[..., str | None] = GitGuard.writing
    ) -> None:
        """Check an existing object reached through a magic link (or named by an fd) by its
        current path; ``writes``: it is about to be changed (as ``ask`` decides)."""
        real = self.resolver.fd_path(fd)
        st = os.fstat(fd)
        if not real.startswith("/") or st.st_nlink == 0:
            return  # a pipe, socket or deleted file: no name to protect
        try:
            check_canonical(real)
        except ValueError:
            raise Refused(real, "a file the guard cannot name") from None
        self._deny(real, protected_by(self.rules, real))
        if writes and linked(st):
            raise Refused(real, HARD_LINKED)  # its other names may lie outside (hardlinks.py)
        if writes:
            self._git(real, ask, real)

    def _open_object(
        self, call: Call, name: str, dir_fd: int | None, flags: int, mode: int
    ) -> Reply:
        """Open ``name`` for the caller without ever blocking the supervisor. ``dir_fd``
        None: ``name`` is one of our /proc/self/fd links, followed; else it is not followed."""
        user_nonblock = bool(flags & os.O_NONBLOCK)
        cloexec = bool(flags & os.O_CLOEXEC)
        ours = flags | os.O_NOCTTY | os.O_CLOEXEC
        try:
            probe: os.stat_result | None = os.stat(
                name, dir_fd=dir_fd, follow_symlinks=dir_fd is None
            )
        except FileNotFoundError:
            probe = None
        if probe is not None and stat.S_ISCHR(probe.st_mode) and probe.st_rdev == DEV_TTY:
            return open_ctty(call, ours, cloexec)
        try:
            fd = os.open(name, ours | os.O_NONBLOCK, mode & 0o7777, dir_fd=dir_fd)
        except OSError as exc:
            # A write-open of a FIFO without a reader: ENXIO now, a wait for the real call.
            fifo = probe is not None and stat.S_ISFIFO(probe.st_mode)
            if exc.errno == errno.ENXIO and fifo and not user_nonblock:
                return self._defer_fifo(call, name, dir_fd, ours, cloexec)
            raise
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == DEV_TTY:
            os.close(fd)
            return open_ctty(call, ours, cloexec)
        if stat.S_ISFIFO(st.st_mode) and not user_nonblock and (flags & O_ACCMODE) == os.O_RDONLY:
            os.close(fd)  # a blocking read-open waits for a writer: do that in a thread
            return self._defer_fifo(call, name, dir_fd, ours, cloexec)
        if not user_nonblock and not flags & os.O_PATH:  # (F_SETFL fails on O_PATH)
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        return Fd(fd, cloexec)

    def _defer_fifo(
        self, call: Call, name: str, dir_fd: int | None, flags: int, cloexec: bool
    ) -> Reply:
        """Open a FIFO (which blocks until a peer opens it) in a worker thread.

        The FIFO exists, so the worker drops O_CREAT: it never creates anything, and the
        check already made applies to whatever it opens at that name. If the caller dies
        first, the thread stays blocked until someone opens the FIFO's other end.
        """
        held: list[int] = []
        if dir_fd is None:
            # ``name`` is /proc/self/fd/N with N closed when this call ends: keep a dup.
            held.append(os.dup(int(name.rsplit("/", 1)[1])))
        else:
            # The FIFO itself, held: the worker reopens this one, never the name again (a
            # file with other names renamed there meanwhile got a writable descriptor).
            held.append(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd))
        if not stat.S_ISFIFO(os.fstat(held[0]).st_mode):
            os.close(held[0])
            raise OSError(errno.EAGAIN, "the FIFO was replaced")
        name, dir_fd = f"/proc/self/fd/{held[0]}", None
        notif_id = call.id
        wflags = flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)  # through our /proc link
        with self._fifo_lock:
            if self._fifo_waits >= FIFO_WAITS_MAX:
                os.close(held[0])  # each would hold a descriptor and a thread of the guard's
                raise OSError(errno.EAGAIN, "too many FIFO opens waiting for a peer")
            self._fifo_waits += 1

        def work() -> None:
            try:
                fd = os.open(name, wflags, dir_fd=dir_fd)
            except OSError as exc:
                self.listener.respond(notif_id, Value(error=exc.errno or errno.EIO))
            else:
                self.listener.respond(notif_id, Fd(fd, cloexec))
            finally:
                os.close(held[0])
                with self._fifo_lock:
                    self._fifo_waits -= 1

        try:  # the guard runs under the command's process limit: it may have used it up
            threading.Thread(target=work, name="nameguard-fifo", daemon=True).start()
        except RuntimeError:
            os.close(held[0])
            with self._fifo_lock:
                self._fifo_waits -= 1
            raise OSError(errno.EAGAIN, "no thread to wait for a FIFO's peer in") from None
        return DEFERRED

    def _mkdir(self, call: Call, syscall: str, dirfd: int, path_arg: int, mode: int) -> Reply:
        path = call.read_path(path_arg)
        call.validate()
        res = self.resolver.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        try:
            os.stat(res.name, dir_fd=res.parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:  # as the kernel answers, before any rule: `git init` again in a repository
            raise OSError(errno.EEXIST, "exists")  # makes its template's directories again
        self._deny(res.path, protected_by(self.rules, res.path))
        with self._told_for_the_call():
            self._git(res.path, GitGuard.creating, res.path, stat.S_IFDIR)
            os.umask(call.umask)
            os.mkdir(res.kernel_name, mode & 0o7777, dir_fd=res.parent_fd)
        if self.git is not None and is_dot_git(res.name):
            self.git.created_dot_git.add(res.path)
        return Value()

    def _mknod(
        self, call: Call, syscall: str, *, dirfd: int, path_arg: int, mode: int, dev: int
    ) -> Reply:
        path = call.read_path(path_arg)
        call.validate()
        res = self.resolver.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(res.path, protected_by(self.rules, res.path))
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        with self._told_for_the_call():
            self._git(res.path, GitGuard.creating, res.path, kind)
            if self.git is not None and (
                self.git.checked_kind(res.path) or self.git.content_kind(res.path)
            ):
                raise Refused(res.path, "a file git reads is made by open, not mknod (a FIFO?)")
            os.umask(call.umask)
            os.mknod(res.kernel_name, mode, dev, dir_fd=res.parent_fd)
        return Value()

    def _symlink(
        self, call: Call, syscall: str, target_arg: int, dirfd: int, path_arg: int
    ) -> Reply:
        target = call.read_path(target_arg)
        path = call.read_path(path_arg)
        call.validate()
        if target == "":
            raise OSError(errno.ENOENT, "empty symlink target")
        res = self.resolver.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, Magic) or res.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(res.path, may_hold_protected(self.rules, res.path))
        with self._told_for_the_call():
            self._git(res.path, GitGuard.creating, res.path, stat.S_IFLNK, symlink=target)
            os.symlink(target, res.kernel_name, dir_fd=res.parent_fd)
        if self.git is not None and is_dot_git(res.name):
            self.git.created_dot_git.add(res.path)
        return Value()

    def _link(
        self,
        call: Call,
        syscall: str,
        *,
        olddirfd: int,
        old: int,
        newdirfd: int,
        new: int,
        flags: int,
    ) -> Reply:
        old_path = call.read_path(old)
        new_path = call.read_path(new)
        call.validate()
        if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad linkat flags")
        src: Resolved | Magic
        if old_path == "" and flags & AT_EMPTY_PATH:
            src = Magic(call.target_fd(olddirfd))
        else:
            src = self.resolver.resolve(
                call, olddirfd, old_path, follow_last=bool(flags & AT_SYMLINK_FOLLOW)
            )
        link_text: str | None = None
        if isinstance(src, Magic):
            real = self.resolver.fd_path(src.fd)
            kind = stat.S_IFMT(os.fstat(src.fd).st_mode)
            if real.startswith("/") and os.fstat(src.fd).st_nlink:
                try:
                    check_canonical(real)
                except ValueError:
                    raise Refused(real, "a file the guard cannot name") from None
                self._deny(real, protected_by(self.rules, real))
                self._deny_alias(real)
            if kind == stat.S_IFLNK:
                link_text = os.readlink(f"/proc/self/fd/{src.fd}")
        else:
            if src.name in (".", ".."):
                raise OSError(errno.EPERM, "cannot link a directory")
            self._deny(src.path, protected_by(self.rules, src.path))
            self._deny_alias(src.path)
            kind = self._lstat_type(src)
            if kind == stat.S_IFLNK:
                link_text = os.readlink(src.kernel_name, dir_fd=src.parent_fd)
        dst = self.resolver.resolve(call, newdirfd, new_path, follow_last=False)
        if isinstance(dst, Magic) or dst.name in (".", ".."):
            raise OSError(errno.EEXIST, "exists")
        self._deny(dst.path, self._new_name_rule(dst.path, kind))
        if self.git is not None and kind == stat.S_IFREG and self.git.checked_kind(dst.path):
            raise Refused(dst.path, "a hard link would give a checked file a second name")
        with self._told_for_the_call():
            self._git(dst.path, GitGuard.creating, dst.path, kind, symlink=link_text)
            if isinstance(src, Magic):
                os.link(
                    f"/proc/self/fd/{src.fd}",
                    dst.kernel_name,
                    dst_dir_fd=dst.parent_fd,
                    follow_symlinks=True,
                )
            else:
                os.link(
                    src.kernel_name,
                    dst.kernel_name,
                    src_dir_fd=src.parent_fd,
                    dst_dir_fd=dst.parent_fd,
                    follow_symlinks=False,
                )
        return Value()

    def _deny_alias(self, path: str) -> None:
        """A hard link is a second name for the same file: refuse one for any file the git
        rules keep from changing (or check by content), or it could be written through the
        new name."""
        if self.git is None:
            return
        self._git(path, GitGuard.writing, path)
        if self.git.checked_kind(path) is not None:
            raise Refused(path, "a hard link would give a checked file a second name")

    def _rename(
        self,
        call: Call,
        syscall: str,
        *,
        olddirfd: int,
        old: int,
        newdirfd: int,
        new: int,
        flags: int,
    ) -> Reply:
        old_path = call.read_path(old)
        new_path = call.read_path(new)
        call.validate()
        src = self.resolver.resolve(call, olddirfd, old_path, follow_last=False)
        dst = self.resolver.resolve(call, newdirfd, new_path, follow_last=False)
        for side in (src, dst):
            if isinstance(side, Magic) or side.name in (".", ".."):
                raise OSError(errno.EBUSY, "cannot rename . or ..")
        assert isinstance(src, Resolved) and isinstance(dst, Resolved)
        self._deny(src.path, self._removal_rule(src.path))
        self._git(src.path, GitGuard.removing, src.path)
        kind = self._lstat_type(src)
        if kind == stat.S_IFDIR:
            self._deny(src.path, may_hold_protected(self.rules, src.path))
        self._deny(dst.path, self._new_name_rule(dst.path, kind))
        checked = self.git.content_kind(dst.path) if self.git is not None else None
        try:
            dst_kind: int | None = self._lstat_type(dst)
        except FileNotFoundError:
            dst_kind = None
        else:  # renaming onto an existing name removes it (a checked name is replaced)
            self._deny(dst.path, self._removal_rule(dst.path))
            if checked is None:
                self._git(dst.path, GitGuard.removing, dst.path, replaced=True)
        exchange = bool(flags & RENAME_EXCHANGE)
        if exchange:
            if dst_kind is None:
                raise OSError(errno.ENOENT, "nothing to exchange with")
            self._deny(src.path, self._new_name_rule(src.path, dst_kind))
        if dst_kind is not None and same_file(src, dst):
            # Two names of one file: the kernel does nothing and says so (rename(2)); nothing
            # moves, so nothing is carried (the first name stays noted as it is).
            if flags & RENAME_NOREPLACE:
                raise OSError(errno.EEXIST, "exists")
            call.validate()
            return Value()
        pointer = None
        if self.git is not None and checked is not None:
            if exchange or kind != stat.S_IFREG:
                raise Refused(dst.path, "replaced only by renaming a regular file onto it")
            return replace_checked(self.git, self.event, (call, src, dst), checked, flags)
        with self._told_for_the_call():
            if self.git is not None:
                pointer = self._git_rename(src, dst, kind, dst_kind if exchange else None)
            if self.git is not None and exchange:
                self.git.exchanging(src.path, dst.path)
            elif self.git is not None:
                self.git.moving(src.path, dst.path, is_dir=kind == stat.S_IFDIR)
            # The git checks above can take a while: a caller that is gone meanwhile (its
            # command ended, its tree was killed) gets nothing done in its name after its end.
            call.validate()
            check(
                renameat2(
                    src.parent_fd,
                    os.fsencode(src.kernel_name),
                    dst.parent_fd,
                    os.fsencode(dst.kernel_name),
                    flags,
                ),
                "renameat2",
            )
        if self.git is not None and exchange:
            self.git.exchanged(src.path, dst.path)
        elif self.git is not None:
            self.git.moved(src.path, dst.path, pointer=pointer, is_dir=kind == stat.S_IFDIR)
        return Value()

    def _git_rename(
        self, src: Resolved, dst: Resolved, kind: int, exchanged: int | None
    ) -> str | None:
        """The git rules for ``src`` (of file type ``kind``) arriving at ``dst`` and, for an
        exchange, ``dst`` (of type ``exchanged``) at ``src``. Returns the end-of-run check the
        arriving file gets, if its content matters to git."""
        assert self.git is not None
        self._git(dst.path, rename_in, src, dst.path, kind)
        if exchanged is not None:
            self._git(src.path, rename_in, dst, src.path, exchanged)
            for either in (src.path, dst.path):
                if self.git.checked_kind(either) or self.git.content_kind(either):
                    raise Refused(either, "a file checked by content is not exchanged")
        pointer = self.git.checked_kind(dst.path) if kind == stat.S_IFREG else None
        if pointer is not None and links(src) > 1:
            # its other name could write it after the check, or be renamed over it
            raise Refused(dst.path, "a file with other names is not renamed onto a checked name")
        if pointer is not None:
            if pointer not in LATER:  # a todo list is git's to act on while the command runs
                data = read_checked_source(src)
                self._deny(dst.path, self.git.content.pointer_problem(dst.path, pointer, data))
            self.git.note_pointer(dst.path, pointer)  # and again at the end
        return pointer

    def _existing_object(
        self,
        call: Call,
        dirfd: int,
        path_arg: int | None,
        flags: int,
        ask: Callable[..., str | None] = GitGuard.writing,
    ) -> int:
        """An O_PATH fd of the existing object a metadata call names, checked against the
        rules by its real path (the git rules: ``ask``). ``path_arg`` None means the call
        names the fd ``dirfd``."""
        if path_arg is None:
            call.validate()
            fd = call.target_fd(dirfd)
        else:
            path = call.read_path(path_arg)
            call.validate()
            if path == "" and flags & AT_EMPTY_PATH:
                fd = call.target_fd(dirfd)
            else:
                res = self.resolver.resolve(
                    call, dirfd, path, follow_last=not flags & AT_SYMLINK_NOFOLLOW
                )
                if isinstance(res, Magic):
                    fd = res.fd
                elif res.name in (".", ".."):
                    fd = call.own(os.open(".", os.O_PATH, dir_fd=res.parent_fd))
                else:
                    fd = call.own(
                        os.open(res.kernel_name, os.O_PATH | os.O_NOFOLLOW, dir_fd=res.parent_fd)
                    )
        self._deny_existing(fd, ask=ask)
        return fd

    def _chmod(self, call: Call, dirfd: int, path_arg: int | None, mode: int, flags: int) -> Reply:
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad fchmodat2 flags")
        fd = self._existing_object(
            call, dirfd, path_arg, flags, lambda g, path: g.changing_mode(path, mode)
        )
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EOPNOTSUPP, "cannot chmod a symlink")
        os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)
        return Value()

    def _chown(
        self, call: Call, dirfd: int, path_arg: int | None, owner: tuple[int, int], flags: int
    ) -> Reply:
        uid, gid = owner
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise OSError(errno.EINVAL, "bad fchownat flags")
        fd = self._existing_object(call, dirfd, path_arg, flags)
        # On the O_PATH fd itself (AT_EMPTY_PATH): a symlink is changed, not followed.
        check(fchownat(fd, b"", uid, gid, AT_EMPTY_PATH), "fchownat")
        return Value()

    def _xattr(self, call: Call, path_arg: int | None, *, follow: bool, value: bool) -> Reply:
        """setxattr/removexattr and their l/f forms: the object checked like any change."""
        if path_arg is None:
            name = call.read_path(1)
            blob = call.read_bytes(2, call.arg_uint(3)) if value else b""
            fd = self._existing_object(call, call.arg_int(0), None, 0)
        else:
            name = call.read_path(1)
            blob = call.read_bytes(2, call.arg_uint(3)) if value else b""
            nofollow = 0 if follow else AT_SYMLINK_NOFOLLOW
            fd = self._existing_object(call, AT_FDCWD, path_arg, nofollow)
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EPERM, "no extended attributes on a symlink")
        target = f"/proc/self/fd/{fd}"
        if value:
            os.setxattr(target, name, blob, call.arg_int(4))
        else:
            os.removexattr(target, name)
        return Value()

    def _bind(self, call: Call) -> Reply:
        """bind(): a unix socket path is a new directory entry like any other. The call is
        performed on the caller's own socket (pidfd_getfd) with the address bytes read once."""
        length = call.arg_uint(2)
        if length > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = call.read_bytes(1, length)
        call.validate()
        sock = call.own(call.socket_fd(call.arg_int(0)))
        family = int.from_bytes(addr[:2], sys.byteorder) if len(addr) >= 2 else -1
        path = addr[2:].split(b"\0", 1)[0] if family == socket.AF_UNIX else b""
        if not path:  # not a unix path (an inet port, an abstract or autobound name)
            check(bind_raw(sock, addr, len(addr)), "bind")
            return Value()
        res = self.resolver.resolve(call, AT_FDCWD, os.fsdecode(path), follow_last=False)
        if isinstance(res, Magic) or res.name in (".", ".."):
            raise OSError(errno.EADDRINUSE, "exists")
        self._deny(res.path, may_hold_protected(self.rules, res.path))
        self._git(res.path, GitGuard.creating, res.path, stat.S_IFSOCK)
        name = os.fsencode(res.name)
        if len(name) >= SUN_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, "socket name too long")
        local = family.to_bytes(2, sys.byteorder) + name + b"\0"
        os.umask(call.umask)
        os.fchdir(res.parent_fd)  # the name is bound in the directory we pinned
        try:
            check(bind_raw(sock, local, len(local)), "bind")
        finally:
            os.fchdir(self.resolver.view.root_fd)
        return Value()

    def _truncate(self, call: Call, path_arg: int, length: int) -> Reply:
        if length < 0:
            raise OSError(errno.EINVAL, "negative length")
        fd = self._existing_object(call, AT_FDCWD, path_arg, 0)
        os.truncate(f"/proc/self/fd/{fd}", length)
        return Value()

    def _unlink(self, call: Call, syscall: str, dirfd: int, path_arg: int, flags: int) -> Reply:
        path = call.read_path(path_arg)
        call.validate()
        if flags & ~AT_REMOVEDIR:
            raise OSError(errno.EINVAL, "bad unlinkat flags")
        res = self.resolver.resolve(call, dirfd, path, follow_last=False)
        if isinstance(res, Magic):
            raise OSError(errno.EPERM, "not removable")
        if res.name == ".":
            raise OSError(errno.EINVAL if flags & AT_REMOVEDIR else errno.EISDIR, ".")
        if res.name == "..":
            raise OSError(errno.ENOTEMPTY if flags & AT_REMOVEDIR else errno.EISDIR, "..")
        self._deny(res.path, self._removal_rule(res.path))
        self._git(res.path, GitGuard.removing, res.path)
        if flags & AT_REMOVEDIR:
            os.rmdir(res.kernel_name, dir_fd=res.parent_fd)
        else:
            os.unlink(res.kernel_name, dir_fd=res.parent_fd)
        if self.git is not None:
            self.git.moved(res.path, None, pointer=None, is_dir=bool(flags & AT_REMOVEDIR))
        return Value()
