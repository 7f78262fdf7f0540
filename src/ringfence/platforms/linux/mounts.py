"""Build the sandbox's filesystem view from a plan's mount ops, with the new mount API.

Runs as pid 1 of the sandbox, inside its own user and mount namespaces, so nothing here
touches the host's mount table. Two rules make planted symlinks harmless:
* every host source is taken (``open_tree`` clone) before the view is assembled, opened with
  ``RESOLVE_NO_SYMLINKS`` — the compiler already resolved legitimate links, so a link that
  appears now was planted and the run is refused;
* every target is opened inside the new root with ``RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS``.
Mount points are only ever created inside tmpfs instances this code mounted itself; the
cloned host tree is read-only, so even a bug here could not create a file on the host.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ringfence.errors import InternalError, SandboxError
from ringfence.platforms.linux.libc import (
    RESOLVE_IN_ROOT,
    RESOLVE_NO_SYMLINKS,
    libc_call,
    openat2,
    syscall,
)
from ringfence.platforms.linux.mountops import MountKind, MountOp

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def attributes(op: MountOp, *, readonly: bool = True) -> int:
    """The MOUNT_ATTR_* bits the plan set on ``op`` (without read-only when told: a directory
    mask is sealed once the view is built)."""
    attrs = MOUNT_ATTR_RDONLY if op.readonly and readonly else 0
    if op.nosuid:
        attrs |= MOUNT_ATTR_NOSUID
    if op.nodev:
        attrs |= MOUNT_ATTR_NODEV
    if op.noexec:
        attrs |= MOUNT_ATTR_NOEXEC
    return attrs


class MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def set_attr(fd: int, attr_set: int, *, recursive: bool) -> None:
    attr = MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    syscall(
        "mount_setattr", fd, b"", flags, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))
    )


def clone_tree(fd: int, *, recursive: bool = True) -> int:
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
    if recursive:
        flags |= AT_RECURSIVE
    return syscall("open_tree", fd, b"", flags)


def attach(tree_fd: int, target_fd: int) -> None:
    syscall(
        "move_mount",
        tree_fd,
        b"",
        target_fd,
        b"",
        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
    )


def new_fs(
    fstype: str,
    options: Sequence[tuple[str, str | None]],
    attrs: int,
    *,
    source: str | None = None,
) -> int:
    """A detached mount of a fresh filesystem instance (tmpfs, proc, devpts, overlay)."""
    fs = syscall("fsopen", fstype.encode(), FSOPEN_CLOEXEC)
    try:
        syscall("fsconfig", fs, FSCONFIG_SET_STRING, b"source", (source or fstype).encode(), 0)
        for key, value in options:
            if value is None:
                syscall("fsconfig", fs, FSCONFIG_SET_FLAG, key.encode(), None, 0)
            else:
                syscall("fsconfig", fs, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
        syscall("fsconfig", fs, FSCONFIG_CMD_CREATE, None, None, 0)
        return syscall("fsmount", fs, FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs)


def _host_source(path: str) -> int:
    """O_PATH fd of a host path, refusing any symlink on the way."""
    try:
        return openat2(AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SandboxError(
                f"refusing to mount {path}: a symlink appeared on its path since the policy was "
                "compiled (possibly planted by an earlier command); inspect it and run again"
            ) from None
        raise SandboxError(f"cannot open mount source {path}: {os.strerror(e.errno or 0)}") from e


OVERLAY_ATTEMPTS = 6  # the last waits 80 ms; all together 155 ms
TURN_WAIT = 2.0  # seconds a mount waits for another sandbox's turn on the layer


def _take_turn(fd: int) -> None:
    """The layer's lock, waited for at most TURN_WAIT: a command in reduced isolation can
    reach the layer and hold the lock (review 19), which must not stall every other sandbox
    of the workspace; past the wait the mount goes on, and its retries remain."""
    deadline = time.monotonic() + TURN_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)


def overlay_tree(op: MountOp) -> int:
    """A detached overlay of the host's ``op.target`` (read-only, below) and the layer
    directory ``op.source`` (``upper``/``work``), made while the host view is intact.

    Every directory is opened without following symlinks and handed to overlayfs as
    ``/proc/self/fd/N``, so what was checked is what is mounted. ``userxattr`` is what
    overlayfs needs in a user namespace; ``index=off`` because two sandboxes of one workspace
    may use the layer at once (overlayfs then warns in the kernel log, and each sees the
    other's changes late, never the host's files changed).
    """
    assert op.source is not None
    fds = [
        _host_source(op.target),
        _host_source(os.path.join(op.source, "upper")),
        _host_source(os.path.join(op.source, "work")),
    ]
    # Sandboxes of one workspace mount its layer one at a time: overlayfs empties and remakes
    # work/work as it mounts, and one that mounted meanwhile failed (ENOENT, EINVAL).
    # Best effort: where the layer's file system has no locks, the retries below remain.
    try:
        turn = openat2(
            fds[2], ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS
        )
        fds.append(turn)
        _take_turn(turn)
    except OSError:
        pass
    try:
        lower, upper, work = (f"/proc/self/fd/{fd}" for fd in fds[:3])
        options = [
            ("lowerdir", lower),
            ("upperdir", upper),
            ("workdir", work),
            ("userxattr", None),
            ("index", "off"),
        ]
        try:
            for attempt in range(OVERLAY_ATTEMPTS):
                try:
                    return new_fs("overlay", options, attributes(op), source="ringfence-tmp")
                except OSError as e:
                    # another sandbox of this workspace mounting the same layer at this
                    # moment (one without the turn-taking above: an older ringfence)
                    if e.errno not in (errno.ENOENT, errno.EINVAL) or (
                        attempt == OVERLAY_ATTEMPTS - 1
                    ):
                        raise
                    time.sleep(0.005 * 2**attempt)
            raise AssertionError("unreachable")
        except OSError as e:
            raise SandboxError(
                f"cannot mount this workspace's /tmp layer ({op.source}) over the host's "
                f"{op.target}: {os.strerror(e.errno or 0)}. The layer's file system must "
                "support overlayfs upper directories (ext4, xfs, btrfs; tmpfs on Linux >= 6.6); "
                "point XDG_CACHE_HOME at one, or run `ringfence doctor`"
            ) from e
    finally:
        for fd in fds:
            os.close(fd)


class _Assembler:
    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.fresh_masks: list[int] = []
        self.empty_src: int | None = None

    def target(self, op: MountOp) -> int:
        rel = op.target.lstrip("/") or "."
        try:
            return openat2(
                self.root_fd, rel, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS
            )
        except OSError as e:
            if e.errno != errno.ENOENT or not op.create:
                if e.errno == errno.ELOOP:
                    raise SandboxError(
                        f"refusing to mount on {op.target}: it is or passes through a symlink"
                    ) from None
                raise SandboxError(
                    f"cannot open mount point {op.target}: {os.strerror(e.errno or 0)}"
                ) from e
        self._create(op)
        return openat2(
            self.root_fd, rel, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS
        )

    def _create(self, op: MountOp) -> None:
        """Create the mount point (and missing parents) inside one of our own tmpfs mounts."""
        parts = [p for p in op.target.split("/") if p]
        cur = os.dup(self.root_fd)
        try:
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                try:
                    nxt = openat2(
                        cur, name, os.O_PATH | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS | RESOLVE_IN_ROOT
                    )
                except FileNotFoundError:
                    # only in a fresh tmpfs: the compiler set create=True for these alone
                    if last and not op.is_dir and op.kind is not MountKind.SYMLINK:
                        fd = os.open(
                            name,
                            os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                            0o600,
                            dir_fd=cur,
                        )
                        os.close(fd)
                    elif last and op.kind is MountKind.SYMLINK:
                        return
                    else:
                        os.mkdir(name, 0o755, dir_fd=cur)
                    nxt = openat2(
                        cur, name, os.O_PATH | os.O_CLOEXEC, RESOLVE_NO_SYMLINKS | RESOLVE_IN_ROOT
                    )
                os.close(cur)
                cur = nxt
        finally:
            os.close(cur)

    def parent_and_name(self, path: str) -> tuple[int, str]:
        parent, name = os.path.split(path)
        rel = parent.lstrip("/") or "."
        fd = openat2(
            self.root_fd,
            rel,
            os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
        )
        return fd, name

    def empty_file(self) -> int:
        if self.empty_src is None:
            scratch = new_fs(
                "tmpfs", [("mode", "0000"), ("size", "4k")], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
            )
            fd = os.open("empty", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0, dir_fd=scratch)
            os.close(fd)
            self.empty_src = scratch
        return self.empty_src

    def empty_file_clone(self) -> int:
        return syscall(
            "open_tree", self.empty_file(), b"empty", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
        )


FD_MARGIN = 256  # descriptors besides the held sources: the runner's own, and phase 3's


@contextmanager
def _fd_room(held: int) -> Iterator[None]:
    """Phase 1 holds one descriptor per host source until phase 3 attaches it: a policy with a
    thousand protected paths needs more than the usual soft limit of 1,024. Raise the soft
    RLIMIT_NOFILE (never above the hard one) while the view is built, and put it back so the
    commands get the limit they would have had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = held + FD_MARGIN
    if soft == resource.RLIM_INFINITY or soft >= want:
        yield
        return
    raised = want if hard == resource.RLIM_INFINITY else min(hard, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def build_view(ops: Sequence[MountOp]) -> int:
    """Assemble the sandbox view described by ``ops``; return an fd of its root.

    The caller pivots into it. Host sources are cloned first (phase 1), the clone of ``/`` is
    attached over this namespace's ``/tmp`` as a staging point (phase 2), then ops run in order.
    """
    if not ops or ops[0].kind is not MountKind.BIND or ops[0].target != "/":
        raise InternalError("a plan must start with the read-only root")
    held = sum(1 for op in ops if op.kind is MountKind.OVERLAY or op.kind is MountKind.BIND)
    with _fd_room(held):
        try:
            return _build_view(ops)
        except (OSError, SandboxError) as e:
            cause = e if isinstance(e, OSError) else e.__cause__
            if not isinstance(cause, OSError) or cause.errno != errno.EMFILE:
                raise
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            raise SandboxError(
                f"the sandbox's view has {held} host paths to bind, more than this process may "
                f"hold open while it builds the view (hard RLIMIT_NOFILE {hard}): raise the hard "
                "limit (`ulimit -Hn`), or protect a directory instead of many paths in it "
                "(everything beneath a protected path is protected)"
            ) from e


def _build_view(ops: Sequence[MountOp]) -> int:
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    # Phase 1: take every host source while the host view is intact.
    root_src = _host_source("/")
    root_tree = clone_tree(root_src)
    os.close(root_src)
    set_attr(root_tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, recursive=True)
    sources: dict[int, int] = {}
    for i, op in enumerate(ops[1:], start=1):
        if op.kind is MountKind.OVERLAY:
            sources[i] = overlay_tree(op)
            continue
        if op.kind is not MountKind.BIND or op.source is None:
            continue
        src = _host_source(op.source)
        try:
            tree = clone_tree(src, recursive=op.recursive)
        finally:
            os.close(src)
        attrs = attributes(op)
        if attrs:  # a device node alone keeps suid and device access
            set_attr(tree, attrs, recursive=True)
        sources[i] = tree
    # Phase 2: attach the new root at a staging point in this (private) namespace.
    stage = os.open("/tmp", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    attach(root_tree, stage)
    os.close(stage)
    asm = _Assembler(root_tree)
    for i, op in enumerate(ops[1:], start=1):
        if _vanished(asm, op):
            continue
        try:
            _apply(asm, op, sources.pop(i, None))
        except OSError as e:
            raise SandboxError(
                f"mount step {op.kind} {op.target} ({op.why}) failed: {os.strerror(e.errno or 0)}"
            ) from e
    for fd in asm.fresh_masks:  # directory masks the plan made read-only: sealed now
        set_attr(fd, MOUNT_ATTR_RDONLY, recursive=False)
        os.close(fd)
    if asm.empty_src is not None:
        os.close(asm.empty_src)
    return root_tree


def _vanished(asm: _Assembler, op: MountOp) -> bool:
    """A host /tmp entry the plan masks (a credential cache, say) that is gone by now: there
    is nothing left to hide, and the run goes on. /tmp is everyone's: its entries come and go
    between the compile and the mounts, and only their owner or root may remove them (the
    sticky bit), so no one else can uncover a secret this way. Anywhere else a mask target
    that vanished still fails the run."""
    if op.kind is not MountKind.MASK or op.create or os.path.dirname(op.target) != "/tmp":
        return False
    try:
        fd = openat2(
            asm.root_fd,
            op.target.lstrip("/"),
            os.O_PATH | os.O_CLOEXEC,
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
        )
    except FileNotFoundError:
        return True
    os.close(fd)
    return False


def _apply(asm: _Assembler, op: MountOp, source_tree: int | None) -> None:
    if op.kind is MountKind.SYMLINK:
        assert op.source is not None
        parent, name = asm.parent_and_name(op.target)
        try:
            os.symlink(op.source, name, dir_fd=parent)
        finally:
            os.close(parent)
        return
    if op.kind is MountKind.REMOUNT_RO:
        fd = asm.target(op)
        try:
            set_attr(fd, attributes(op), recursive=False)
        finally:
            os.close(fd)
        return
    tree: int
    keep_open = False
    if op.kind in (MountKind.BIND, MountKind.OVERLAY):
        assert source_tree is not None
        tree = source_tree
    elif op.kind is MountKind.TMPFS:
        options: list[tuple[str, str | None]] = [("mode", f"{op.mode:o}")]
        if op.size is not None:
            options.append(("size", op.size))
        tree = new_fs("tmpfs", options, attributes(op))
    elif op.kind is MountKind.PROC:
        tree = new_fs("proc", [], attributes(op))
    elif op.kind is MountKind.DEVPTS:
        tree = new_fs(
            "devpts",
            [("newinstance", None), ("ptmxmode", "0666"), ("mode", "0620")],
            attributes(op),
        )
    elif op.kind is MountKind.MASK:
        if op.is_dir:
            # Later ops may need mount points inside: read-only once the view is built.
            tree = new_fs(
                "tmpfs",
                [("mode", f"{op.mode:04o}"), ("size", "64k")],
                attributes(op, readonly=False),
            )
            keep_open = op.readonly
        else:
            tree = asm.empty_file_clone()
            set_attr(tree, attributes(op), recursive=False)
    elif op.kind is MountKind.FILE:
        tree = _file_tree(op)
    else:
        raise InternalError(f"unknown mount kind {op.kind!r}")
    target = asm.target(op)
    try:
        attach(tree, target)
    finally:
        os.close(target)
    if keep_open:
        asm.fresh_masks.append(tree)
    else:
        os.close(tree)


def _file_tree(op: MountOp) -> int:
    """A detached, read-only mount of one file holding ``op.content``, made in a tmpfs of its
    own (sized to fit) in this namespace: nothing is written on the host, and the copy cannot
    be changed from inside (read-only mount, no write bits)."""
    content = op.content or b""
    size = str(len(content) + 8192)
    scratch = new_fs(
        "tmpfs",
        [("mode", "0700"), ("size", size), ("nr_inodes", "4")],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
    try:
        fd = os.open(
            "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=scratch
        )
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, op.mode & 0o444)
        finally:
            os.close(fd)
        tree = syscall("open_tree", scratch, b"file", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    finally:
        os.close(scratch)
    set_attr(tree, attributes(op), recursive=False)
    return tree


def mount_proc(path: str) -> None:
    """A fresh proc on top of ``path``: for a process that just made a pid namespace (and a
    mount namespace to hold the view), so /proc shows that namespace's processes only."""
    tree = new_fs("proc", [], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
    try:
        target = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            attach(tree, target)
        finally:
            os.close(target)
    finally:
        os.close(tree)


def pivot_into(root_fd: int) -> None:
    """Make ``root_fd`` this namespace's root and drop every trace of the host view."""
    os.fchdir(root_fd)
    syscall("pivot_root", b".", b".")
    libc_call("umount2", b".", MNT_DETACH)
    os.chdir("/")
    os.close(root_fd)
