"""How a guarded call's path is resolved for the command: the parent directory (pinned
as an fd) and final name the kernel would reach, walked component by component so that
``/proc/self``, magic links and symlinks mean what they mean for the caller, not for the
guard; and the canonical path that the rules are asked about."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections import deque
from typing import Final

from ringfence.platforms.linux import libc
from ringfence.platforms.linux.guard_rules import check_canonical
from ringfence.platforms.linux.nameguard.call import Call, GuardView
from ringfence.platforms.linux.nameguard.ffi import check, fstatfs
from ringfence.platforms.linux.nameguard.results import Magic, Refused, Resolved

MAXSYMLINKS: Final = 40  # the kernel's limit per lookup
PROC_SUPER_MAGIC: Final = 0x9FA0
PROC_ROOT_INO: Final = 1


class Resolver:
    """Resolves paths for callers, from the guard's own root and procfs."""

    def __init__(self, view: GuardView, *, proc_dev: int, protected_symlinks: bool) -> None:
        self.view = view
        self.proc_dev = proc_dev  # the guard's own procfs (its pid namespace's)
        self._protected_symlinks = protected_symlinks
        self._have_openat2 = True

    def _fs_magic(self, fd: int) -> int:
        buf = ctypes.create_string_buffer(256)
        check(fstatfs(fd, buf), "fstatfs")
        return int(ctypes.c_long.from_buffer(buf).value)

    def _is_proc_root(self, fd: int) -> bool:
        st = os.fstat(fd)
        if st.st_ino != PROC_ROOT_INO or self._fs_magic(fd) != PROC_SUPER_MAGIC:
            return False
        if st.st_dev != self.proc_dev:
            # Another procfs instance may number pids differently: "self" there is not ours
            # to rewrite.
            raise Refused("/proc", "a procfs other than the guard's own")
        return True

    def fd_path(self, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def _dir_path(self, fd: int) -> str:
        path = self.fd_path(fd)
        if os.fstat(fd).st_nlink == 0:
            raise OSError(errno.ENOENT, "directory was removed")
        try:
            check_canonical(path)
        except ValueError:
            raise Refused(path, "a directory the guard cannot name") from None
        return path

    def _check_magic_owner(self, call: Call, dir_fd: int) -> None:
        """Follow a /proc magic link only for the caller's own thread group.

        The supervisor may open other processes' /proc/PID/fd entries that the command may
        not (including its own); following those would make it a confused deputy.
        """
        path = self.fd_path(dir_fd)
        m = re.search(r"/(\d+)(?:/task/(\d+))?(?:/[a-z_]+)?$", path)
        if m is None:
            raise Refused(path, "a /proc link outside a process directory")
        pid = m.group(2) or m.group(1)
        try:
            os.stat(f"task/{pid}", dir_fd=call.proc_fd)
        except FileNotFoundError:
            raise Refused(path, "a /proc link of another process") from None

    def _check_protected_symlink(self, dir_fd: int, link: os.stat_result) -> None:
        """fs.protected_symlinks: the kernel check we would skip by reading the link ourselves."""
        if not self._protected_symlinks:
            return
        parent = os.fstat(dir_fd)
        sticky_world = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
        if sticky_world and link.st_uid not in (os.geteuid(), parent.st_uid):
            raise OSError(errno.EACCES, "protected_symlinks")

    def _fast_dirs(self, call: Call, cur: int, comps: deque[str]) -> int | None:
        """Open all but the last component in one openat2 when no symlink is on the way."""
        if not self._have_openat2 or len(comps) < 2:
            return None
        middle = "/".join(list(comps)[:-1])
        try:
            fd = libc.openat2(
                cur, middle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, libc.RESOLVE_NO_SYMLINKS
            )
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                self._have_openat2 = False
                return None
            if exc.errno in (errno.ELOOP, errno.EXDEV, errno.EAGAIN):
                return None  # a symlink somewhere: walk component by component
            raise
        call.own(fd)
        last = comps[-1]
        comps.clear()
        comps.append(last)
        return fd

    def resolve(self, call: Call, dirfd: int, path: str, *, follow_last: bool) -> Resolved | Magic:
        """Resolve ``path`` exactly as the kernel would (see ``_resolve``); the call then
        names the absolute path, should a report need it."""
        res = self._resolve(call, dirfd, path, follow_last=follow_last)
        if isinstance(res, Resolved) and (call.path is None or not call.path.startswith("/")
                                           or call.path == path):  # fmt: skip
            call.path = res.path
        return res

    def _resolve(self, call: Call, dirfd: int, path: str, *, follow_last: bool) -> Resolved | Magic:
        """Resolve ``path`` exactly as the kernel would for the caller.

        We walk component by component with O_PATH|O_NOFOLLOW and read symlinks ourselves,
        because letting the kernel follow them here would resolve ``/proc/self`` (and
        ``/dev/stdout`` -> ``/proc/self/fd/1``) to the supervisor. ``self`` and
        ``thread-self`` at a procfs root become the caller's ids; other symlinks inside
        procfs are magic links bound to an object, which the kernel follows correctly for
        us as long as they belong to the caller.
        """
        if path == "":
            raise OSError(errno.ENOENT, "empty path")
        cur = call.base_fd(dirfd, path)
        if path.startswith("/"):
            cur = self.view.root_fd
        trailing = path.endswith("/")
        comps: deque[str] = deque(c for c in path.split("/") if c)
        if not comps:
            return Resolved(cur, ".", trailing, self._dir_path(cur))
        fast = self._fast_dirs(call, cur, comps)
        if fast is not None:
            cur = fast
        links = 0
        while comps:
            c = comps.popleft()
            last = not comps
            if c in {".", ".."}:
                if last:
                    return Resolved(cur, c, trailing, self._dir_path(cur))
                if c == "..":
                    cur = self._dotdot(call, cur)
                continue
            if c in ("self", "thread-self") and self._is_proc_root(cur):
                links += 1
                if links > MAXSYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks")
                repl = str(call.tgid) if c == "self" else f"{call.tgid}/task/{call.tid}"
                comps.extendleft(reversed(repl.split("/")))
                continue
            if last and not follow_last:
                return Resolved(cur, c, trailing, self._dir_path(cur))
            try:
                fd = call.own(os.open(c, os.O_PATH | os.O_NOFOLLOW, dir_fd=cur))
            except FileNotFoundError:
                if last:
                    return Resolved(cur, c, trailing, self._dir_path(cur))
                raise
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks")
                if self._fs_magic(cur) == PROC_SUPER_MAGIC and not self._is_proc_root(cur):
                    self._check_magic_owner(call, cur)
                    target_fd = call.own(os.open(c, os.O_PATH, dir_fd=cur))
                    if last:
                        return Magic(target_fd)
                    if not stat.S_ISDIR(os.fstat(target_fd).st_mode):
                        raise OSError(errno.ENOTDIR, "not a directory")
                    cur = target_fd
                    continue
                self._check_protected_symlink(cur, st)
                target = os.readlink("", dir_fd=fd)
                if target == "":
                    raise OSError(errno.ENOENT, "empty symlink")
                if target.startswith("/"):
                    cur = self.view.root_fd
                new = [x for x in target.split("/") if x]
                if last:
                    trailing = trailing or target.endswith("/")
                    if not new:
                        return Resolved(cur, ".", trailing, self._dir_path(cur))
                comps.extendleft(reversed(new))
                continue
            if last:
                return Resolved(cur, c, trailing, self._dir_path(cur))
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "not a directory")
            cur = fd
        raise AssertionError("unreachable")

    def _dotdot(self, call: Call, cur: int) -> int:
        st = os.fstat(cur)
        if (st.st_dev, st.st_ino) == self.view.root_id:
            return cur  # ".." of the root is the root, as for the kernel
        return call.own(os.open("..", os.O_PATH | os.O_DIRECTORY, dir_fd=cur))
