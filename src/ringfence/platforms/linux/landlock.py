"""Landlock: the kernel's own allow-list of file hierarchies, applied to one process tree.

Landlock is the layer that still holds when a mount namespace cannot be created or is
misconfigured: it is stackable, needs no privilege, and once ``landlock_restrict_self`` returns
the calling process and everything it later executes can never widen it again. That is why this
module has two halves:

* a **pure** half (rights table, :class:`LandlockRuleset`, :func:`build_ruleset`) that compilers
  and ``ringfence explain`` use on any OS without touching the kernel, and
* a **kernel** half (:func:`abi_version`, :func:`restrict_self`) that the runner calls in the
  forked child right before ``exec``, so the runner itself stays outside the domain.

Every right the running ABI knows is *handled* (denied unless a rule grants it): a right that
is left unhandled is silently allowed everywhere, which is how a sandbox fails open without
anyone noticing. Constants and struct layouts follow ``include/uapi/linux/landlock.h`` and
``Documentation/userspace-api/landlock.rst``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.linux.libc import syscall

__all__ = [
    "ACCESS_FS",
    "ACCESS_NET",
    "DEVICE_ACCESS",
    "FILE_ACCESS",
    "READ_ACCESS",
    "SCOPE",
    "LandlockRuleset",
    "PathRule",
    "abi_version",
    "access_names",
    "build_ruleset",
    "fs_rights_for_abi",
    "restrict_self",
]

# --- rights table (pure) -----------------------------------------------------------------------

#: Filesystem rights by their kernel name without the ``LANDLOCK_ACCESS_FS_`` prefix, in bit order.
ACCESS_FS: dict[str, int] = {
    "EXECUTE": 1 << 0,
    "WRITE_FILE": 1 << 1,
    "READ_FILE": 1 << 2,
    "READ_DIR": 1 << 3,
    "REMOVE_DIR": 1 << 4,
    "REMOVE_FILE": 1 << 5,
    "MAKE_CHAR": 1 << 6,
    "MAKE_DIR": 1 << 7,
    "MAKE_REG": 1 << 8,
    "MAKE_SOCK": 1 << 9,
    "MAKE_FIFO": 1 << 10,
    "MAKE_BLOCK": 1 << 11,
    "MAKE_SYM": 1 << 12,
    "REFER": 1 << 13,  # ABI 2: link/rename into another directory
    "TRUNCATE": 1 << 14,  # ABI 3: truncate(2), ftruncate(2), open(O_TRUNC)
    "IOCTL_DEV": 1 << 15,  # ABI 5: ioctl(2) on character and block devices
}

#: Network rights (ABI 4), ``LANDLOCK_ACCESS_NET_*``; used through ``LandlockRuleset.handled_net``.
ACCESS_NET: dict[str, int] = {"BIND_TCP": 1 << 0, "CONNECT_TCP": 1 << 1}

#: IPC scopes (ABI 6), ``LANDLOCK_SCOPE_*``; used through ``LandlockRuleset.scoped``.
SCOPE: dict[str, int] = {"ABSTRACT_UNIX_SOCKET": 1 << 0, "SIGNAL": 1 << 1}

# The ABI that first knew each right that was added after ABI 1. ABI 4 added networking,
# ABI 6 scoping and ABI 7 audit-logging flags: none of them added a filesystem right.
_FS_ADDED_IN: dict[str, int] = {"REFER": 2, "TRUNCATE": 3, "IOCTL_DEV": 5}
_NET_ABI = 4
_SCOPE_ABI = 6

READ_ACCESS: int = ACCESS_FS["EXECUTE"] | ACCESS_FS["READ_FILE"] | ACCESS_FS["READ_DIR"]

#: The rights that mean something on a non-directory. The kernel rejects a rule on a file that
#: carries any other right with EINVAL, so rules on files are masked to this set.
FILE_ACCESS: int = (
    ACCESS_FS["EXECUTE"]
    | ACCESS_FS["WRITE_FILE"]
    | ACCESS_FS["READ_FILE"]
    | ACCESS_FS["TRUNCATE"]
    | ACCESS_FS["IOCTL_DEV"]
)

#: What a device node (or a directory of them, like /dev/pts) needs to be used as a terminal or
#: a sink: read, write, truncate (shells open ``> /dev/null`` with O_TRUNC) and ioctl (termios).
DEVICE_ACCESS: int = (
    READ_ACCESS | ACCESS_FS["WRITE_FILE"] | ACCESS_FS["TRUNCATE"] | ACCESS_FS["IOCTL_DEV"]
)


def fs_rights_for_abi(abi: int) -> int:
    """Mask of every filesystem right that Landlock ABI ``abi`` knows (0 for ``abi < 1``).

    Asking the kernel to handle a right it does not know fails with EINVAL, so the handled set
    must be exactly what the running ABI offers: no more (refused) and no less (fails open).
    """
    if abi < 1:
        return 0
    mask = 0
    for name, bit in ACCESS_FS.items():
        if abi >= _FS_ADDED_IN.get(name, 1):
            mask |= bit
    return mask


def access_names(mask: int) -> list[str]:
    """Names of the filesystem rights set in ``mask``, in bit order (for ``explain`` output).

    Bits that are not a known right are shown as ``0x...`` so nothing is hidden from the reader.
    """
    names = [name for name, bit in ACCESS_FS.items() if mask & bit]
    unknown = mask & ~fs_rights_for_abi(max(_FS_ADDED_IN.values()))
    if unknown:
        names.append(hex(unknown))
    return names


# --- ruleset model (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class PathRule:
    """Grant ``access`` beneath ``path`` (the file itself when ``path`` is not a directory).

    ``access`` is what the policy asks for; at enforcement it is masked by the ruleset's handled
    rights (and by :data:`FILE_ACCESS` for a non-directory). A missing ``required`` path is an
    error, because silently dropping a grant would change what the command sees; a missing
    optional path (a device that this host does not have) is skipped.
    """

    path: str
    access: int
    required: bool = True

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise PolicyError(
                f"Landlock rule path {self.path!r} is not absolute; "
                "give an absolute path so the rule cannot depend on the working directory"
            )


@dataclass(frozen=True)
class LandlockRuleset:
    """Everything :func:`restrict_self` needs, decided in advance so it can be shown and tested.

    ``handled_net`` (ABI 4) and ``scoped`` (ABI 6) are applied when non-zero; with
    ``handled_net`` set, a TCP bind/connect is allowed only by a ``net_ports`` rule
    ``(access, port)``.
    """

    abi: int
    handled_fs: int
    rules: tuple[PathRule, ...]
    handled_net: int = 0
    scoped: int = 0
    net_ports: tuple[tuple[int, int], ...] = ()


def build_ruleset(
    abi: int,
    *,
    read_paths: Sequence[str],
    write_paths: Sequence[str],
    device_paths: Sequence[str] = (),
) -> LandlockRuleset:
    """Compile path lists into a ruleset for Landlock ABI ``abi``; pure, no syscalls.

    Every right the ABI knows is handled. ``read_paths`` may be read and executed,
    ``write_paths`` get every handled right, ``device_paths`` get :data:`DEVICE_ACCESS`.
    Read and write paths are required (a missing one is an error at enforcement); device paths
    are optional because hosts and containers differ in which device nodes exist. A path given
    more than once gets the union of its grants, in first-seen order.
    """
    if abi < 1:
        raise UnsupportedError(
            "Landlock is not available on this kernel (ABI version 0): the filesystem layer "
            "cannot be enforced. Use Linux >= 5.13 built with CONFIG_SECURITY_LANDLOCK=y and "
            "'landlock' in the lsm= boot parameter (check with `ringfence doctor`)."
        )
    handled = fs_rights_for_abi(abi)
    grants: dict[str, tuple[int, bool]] = {}
    for paths, access, required in (
        (read_paths, READ_ACCESS, True),
        (write_paths, handled, True),
        (device_paths, DEVICE_ACCESS, False),
    ):
        for path in paths:
            old_access, old_required = grants.get(path, (0, False))
            grants[path] = (old_access | (access & handled), old_required or required)
    rules = tuple(PathRule(path, access, required) for path, (access, required) in grants.items())
    return LandlockRuleset(abi=abi, handled_fs=handled, rules=rules)


# --- kernel interface ----------------------------------------------------------------------------

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38


class NetPortAttr(ctypes.Structure):
    """``struct landlock_net_port_attr`` (ABI 4), packed like the kernel's."""

    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


class RulesetAttr(ctypes.Structure):
    """``struct landlock_ruleset_attr``; the kernel reads only the ``size`` bytes we pass."""

    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    )


class PathBeneathAttr(ctypes.Structure):
    """``struct landlock_path_beneath_attr``: packed, 12 bytes."""

    _pack_ = 1
    _fields_ = (
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    )


def ruleset_attr_size(handled_net: int, scoped: int) -> int:
    """Bytes of ``landlock_ruleset_attr`` to pass: only as far as the last field we use.

    The kernel accepts any size from 8 bytes (the first field) up, treating missing fields as
    zero, and refuses a larger size than it knows with E2BIG only if the unknown tail is
    non-zero. Passing just what we fill keeps old kernels working and makes an unknown
    non-zero field fail loudly instead of being ignored.
    """
    if scoped:
        return ctypes.sizeof(RulesetAttr)
    if handled_net:
        return RulesetAttr.scoped.offset
    return RulesetAttr.handled_access_net.offset


def abi_version() -> int:
    """The Landlock ABI version of the running kernel, or 0 when Landlock is absent or disabled.

    ENOSYS (kernel without Landlock) and EOPNOTSUPP (built in but not enabled at boot) both mean
    "no Landlock here", which callers report via ``doctor``; only unexpected errors raise.
    """
    try:
        version = syscall(
            "landlock_create_ruleset",
            ctypes.c_void_p(None),
            ctypes.c_size_t(0),
            ctypes.c_uint32(_CREATE_RULESET_VERSION),
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise SandboxError(f"Landlock ABI probe failed: {os.strerror(exc.errno or 0)}") from exc
    except KeyError:  # an architecture libc.py has no syscall numbers for
        return 0
    return int(version)


def _check_kernel(ruleset: LandlockRuleset) -> None:
    """Refuse (fail closed) when the kernel offers less than the ruleset was built for."""
    kernel = abi_version()
    need = ruleset.abi
    if ruleset.handled_net:
        need = max(need, _NET_ABI)
    if ruleset.scoped:
        need = max(need, _SCOPE_ABI)
    if kernel < need:
        raise UnsupportedError(
            f"this policy needs Landlock ABI {need} but the kernel offers ABI {kernel}: "
            "run on a newer kernel, or loosen the policy so it does not need that layer"
        )


def _open_rule_paths(rules: Sequence[PathRule]) -> list[tuple[int, int, PathRule]]:
    """Open every rule path with O_PATH; return ``(fd, access, rule)`` for each path found.

    ``access`` is the rule's access, masked to :data:`FILE_ACCESS` for a non-directory. O_PATH
    needs no read permission and has no device-open side effects. Symlinks are followed on
    purpose: Landlock rules attach to inodes, so a rule for ``/dev/stdin`` must land on what it
    points to. On any error every fd opened so far is closed.
    """
    opened: list[tuple[int, int, PathRule]] = []
    try:
        for rule in rules:
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                if not rule.required:
                    continue
                raise SandboxError(
                    f"Landlock rule path {rule.path!r} does not exist; create it or remove "
                    "it from the policy (nothing was restricted)"
                ) from None
            except OSError as exc:
                raise _step_error(f"open of rule path {rule.path!r}", exc) from exc
            try:
                mode = os.fstat(fd).st_mode
            except OSError as exc:
                os.close(fd)
                raise _step_error(f"fstat of rule path {rule.path!r}", exc) from exc
            access = rule.access if stat.S_ISDIR(mode) else rule.access & FILE_ACCESS
            opened.append((fd, access, rule))
    except BaseException:
        _close_all(fd for fd, _, _ in opened)
        raise
    return opened


def _close_all(fds: Iterable[int]) -> None:
    """Close each fd, ignoring errors: cleanup must not mask the error that got us here."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def restrict_self(ruleset: LandlockRuleset) -> None:
    """Confine the calling process (and every later child) to ``ruleset``. Irreversible.

    Meant for the forked child right before ``exec``: :func:`create_ruleset` then
    :func:`restrict_with`. Every fd opened here is closed before returning.
    """
    fd = create_ruleset(ruleset)
    try:
        restrict_with(fd)
    finally:
        os.close(fd)


def create_ruleset(ruleset: LandlockRuleset) -> int:
    """Build the kernel ruleset once and return its fd (O_CLOEXEC), to restrict many children.

    Steps: check the kernel's ABI covers the ruleset (else :class:`UnsupportedError`); open
    every rule path (a missing required path raises :class:`SandboxError` before anything
    irreversible has happened); create the ruleset and add one path-beneath rule per path.
    """
    _check_kernel(ruleset)
    opened = _open_rule_paths(ruleset.rules)
    ruleset_fd = -1
    try:
        attr = RulesetAttr(ruleset.handled_fs, ruleset.handled_net, ruleset.scoped)
        try:
            ruleset_fd = syscall(
                "landlock_create_ruleset",
                ctypes.byref(attr),
                ctypes.c_size_t(ruleset_attr_size(ruleset.handled_net, ruleset.scoped)),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            raise _step_error("landlock_create_ruleset", exc) from exc

        for fd, access, rule in opened:
            allowed = access & ruleset.handled_fs
            if not allowed:
                # The kernel refuses an empty grant (ENOMSG); granting nothing is the default.
                continue
            beneath = PathBeneathAttr(allowed, fd)
            try:
                syscall(
                    "landlock_add_rule",
                    ctypes.c_int(ruleset_fd),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                )
            except OSError as exc:
                raise _step_error(
                    f"landlock_add_rule for {rule.path!r} ({'|'.join(access_names(allowed))})",
                    exc,
                ) from exc
        for access, port in ruleset.net_ports:
            attr_port = NetPortAttr(access & ruleset.handled_net, port)
            try:
                syscall(
                    "landlock_add_rule",
                    ctypes.c_int(ruleset_fd),
                    ctypes.c_int(_RULE_NET_PORT),
                    ctypes.byref(attr_port),
                    ctypes.c_uint32(0),
                )
            except OSError as exc:
                raise _step_error(f"landlock_add_rule for TCP port {port}", exc) from exc
    except BaseException:
        if ruleset_fd >= 0:
            os.close(ruleset_fd)
        raise
    finally:
        _close_all([fd for fd, _, _ in opened])
    return ruleset_fd


def restrict_with(ruleset_fd: int) -> None:
    """``no_new_privs`` (the kernel demands it for unprivileged callers, and we want it for
    everyone: a set-uid binary must not run outside the domain's intent), then enter a new
    domain made from ``ruleset_fd``."""
    try:
        syscall(
            "prctl",
            ctypes.c_int(_PR_SET_NO_NEW_PRIVS),
            ctypes.c_ulong(1),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    except OSError as exc:
        raise _step_error("prctl(PR_SET_NO_NEW_PRIVS)", exc) from exc
    try:
        syscall("landlock_restrict_self", ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise SandboxError(
                "Landlock refused a nested domain (EPERM): this runs inside a ringfence "
                "sandbox whose name guard forbids nesting (its emulated file calls would "
                "bypass the inner rules). Run the outer sandbox with --no-default-protect, "
                "or run this outside it"
            ) from exc
        raise _step_error("landlock_restrict_self", exc) from exc


def _step_error(step: str, exc: OSError) -> SandboxError:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    return SandboxError(f"Landlock step {step} failed: {os.strerror(code)} ({name})")
