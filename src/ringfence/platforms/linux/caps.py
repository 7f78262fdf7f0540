"""Drop every capability for good before the command is executed.

Inside its user namespace the runner holds all capabilities, and a uid-0 process regains them
on exec. Clearing the bounding set, locking the securebits that stop root from regaining
them, and zeroing the sets leaves the command with none, whatever uid it runs as.
"""

from __future__ import annotations

import ctypes
import errno

from ringfence.platforms.linux.libc import syscall

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS, NO_CAP_AMBIENT_RAISE, each with its lock bit.
_SECUREBITS = (
    (1 << 0)
    | (1 << 1)  # NOROOT + locked
    | (1 << 2)
    | (1 << 3)  # NO_SETUID_FIXUP + locked
    | (1 << 5)  # KEEP_CAPS locked (off)
    | (1 << 6)
    | (1 << 7)  # NO_CAP_AMBIENT_RAISE + locked
)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_all(*, unprivileged_ok: bool = False, bounding: bool = True) -> None:
    """Irreversibly remove all capabilities from this process and what it executes.

    ``unprivileged_ok``: for reduced isolation, where an ordinary user has no CAP_SETPCAP to
    clear the bounding set or lock securebits. There is nothing to lock then: such a process
    holds no capability, and no_new_privs stops exec from granting any.
    ``bounding=False``: the bounding set was already cleared (by a session's per-command init,
    ahead of time, see :func:`drop_bounding`).
    """
    if bounding:
        drop_bounding(unprivileged_ok=unprivileged_ok)
    try:
        syscall("prctl", PR_SET_SECUREBITS, ctypes.c_ulong(_SECUREBITS), 0, 0, 0)
    except OSError as e:
        if not (e.errno == errno.EPERM and unprivileged_ok):
            raise
    syscall("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall("capset", ctypes.byref(header), ctypes.byref(data))


def drop_bounding(*, unprivileged_ok: bool = False) -> None:
    """Clear the bounding set: nothing executed later can gain a capability. The caller keeps
    the capabilities it holds now (a per-command init still needs none after its mounts)."""
    cap = 0
    while True:
        try:
            syscall("prctl", PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
        except OSError as e:
            if e.errno == errno.EINVAL:
                break  # past the last capability this kernel knows
            if e.errno == errno.EPERM and unprivileged_ok:
                break
            raise
        cap += 1


CAP_SYS_PTRACE = 19


def keep_only(cap: int, *, bounding: bool = True) -> None:
    """Keep ``cap`` (effective and permitted) and drop every other capability.

    For the name guard's supervisor, which must read the memory of every process of the
    command's tree (Yama's ptrace_scope=1 would otherwise allow only ancestors) and needs no
    other privilege: its file operations stay subject to ordinary permissions and Landlock.
    ``bounding=False``: the bounding set is empty already (a session's runner cleared it).
    """
    last = 0
    while bounding:
        try:
            if last != cap:
                syscall("prctl", PR_CAPBSET_DROP, ctypes.c_ulong(last), 0, 0, 0)
        except OSError as e:
            if e.errno == errno.EINVAL:
                break
            raise
        last += 1
    syscall("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[cap // 32].effective = data[cap // 32].permitted = 1 << (cap % 32)
    syscall("capset", ctypes.byref(header), ctypes.byref(data))
