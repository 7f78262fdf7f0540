"""A Linux plan as the native launcher reads it: a flat, length-prefixed byte image.

The native launcher (``launcher/*.c``, issue 18's last resort) builds the same boundary as
the Python runner without importing anything, so a one-shot run is not paid for in module
imports. It decides nothing: every path, flag, mode, rule and filter comes from the plan the
Python compiler made, encoded here once (the BPF programs already compiled), and the C side
only performs the steps in the order ``sandbox_side`` and ``command_init`` do.

Layout (little-endian): ``MAGIC``, then records of ``u8 tag, u32 length, payload``. A
string field is ``u32 length, bytes`` (``ABSENT`` as the length for None). The C side checks
every length against the image and refuses any string holding a NUL byte.

:func:`encode` also says what of the plan the native launcher does not do yet
(:attr:`Image.missing`): a plan is only ever run natively when that list is empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import struct
import sys
from dataclasses import dataclass

import ringfence
from ringfence.platforms.linux import bpf, landlock, seccomp
from ringfence.platforms.linux.mountops import MountKind, MountOp
from ringfence.platforms.linux.namespaces import CLONE_FLAGS
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.model import Isolation
from ringfence.policy.statedirs import GUARD_LOCK, LOCK, WORKSPACES

MAGIC = b"RFNI\x01\x00\x00\x00"
ABSENT = 0xFFFFFFFF

TAG_NAMESPACES = 1
TAG_IDS = 2
TAG_MOUNT = 3
TAG_LANDLOCK = 4
TAG_LANDLOCK_PATH = 5
TAG_LANDLOCK_PORT = 6
TAG_SECCOMP = 7
TAG_RLIMIT = 8
TAG_USERNS_LIMIT = 9
TAG_ENV = 10
TAG_CWD = 11
TAG_STATE_LOCK = 12
TAG_CGROUP = 13
TAG_GUARD_PYTHON = 14
TAG_GUARD_BOOT = 15
TAG_GUARD_RULES = 16
TAG_GUARD_BPF = 17
TAG_GUARD_LOCK = 18

MOUNT_KINDS = {
    MountKind.BIND: 1,
    MountKind.TMPFS: 2,
    MountKind.PROC: 3,
    MountKind.DEVPTS: 4,
    MountKind.MASK: 5,
    MountKind.SYMLINK: 6,
    MountKind.REMOUNT_RO: 7,
    MountKind.FILE: 8,
    MountKind.OVERLAY: 9,
}
CGROUP_CONTROLLERS = {"memory": 1, "pids": 2}
BIT_READONLY = 1
BIT_NOSUID = 2
BIT_NODEV = 4
BIT_NOEXEC = 8
BIT_RECURSIVE = 16
BIT_IS_DIR = 32
BIT_CREATE = 64


@dataclass(frozen=True)
class Image:
    """The encoded plan, and what of it the native launcher would leave out (empty: all of
    it is done natively)."""

    data: bytes
    missing: tuple[str, ...]


def _record(tag: int, payload: bytes) -> bytes:
    return struct.pack("<BI", tag, len(payload)) + payload


def _string(value: str | bytes | None) -> bytes:
    if value is None:
        return struct.pack("<I", ABSENT)
    raw = os.fsencode(value) if isinstance(value, str) else value
    return struct.pack("<I", len(raw)) + raw


def _mount(op: MountOp) -> bytes:
    bits = 0
    for flag, bit in (
        (op.readonly, BIT_READONLY),
        (op.nosuid, BIT_NOSUID),
        (op.nodev, BIT_NODEV),
        (op.noexec, BIT_NOEXEC),
        (op.recursive, BIT_RECURSIVE),
        (op.is_dir, BIT_IS_DIR),
        (op.create, BIT_CREATE),
    ):
        if flag:
            bits |= bit
    head = struct.pack("<BBI", MOUNT_KINDS[op.kind], bits, op.mode)
    why = f"{op.why}" or None  # for the launcher's error messages only (as mounts.py's)
    return head + b"".join(_string(v) for v in (op.target, op.source, op.size, op.content, why))


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(ringfence.__file__)))


def _guard_python() -> str:
    """The base interpreter itself, not a virtualenv's link to it: no ``pyvenv.cfg`` is read."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _guard_code() -> tuple[str, ...]:
    """Every path whose contents decide what the guard's supervisor runs: the interpreter
    (and the virtualenv the host runs in), the standard library, ringfence."""
    import sysconfig

    stdlib = sysconfig.get_path("stdlib")
    platstdlib = sysconfig.get_path("platstdlib")
    paths = {
        _guard_python(),
        sys.executable,
        sys.prefix,
        sys.base_prefix,
        stdlib,
        platstdlib,
        os.path.join(platstdlib, "lib-dynload"),
        _package_parent(),
        os.path.dirname(os.path.abspath(ringfence.__file__)),
    }
    return tuple(sorted(paths | {os.path.realpath(p) for p in paths}))


# Landlock rights that change what a path holds (all but execute, read and ioctl).
_CHANGING = ~(
    landlock.ACCESS_FS["EXECUTE"]
    | landlock.ACCESS_FS["READ_FILE"]
    | landlock.ACCESS_FS["READ_DIR"]
    | landlock.ACCESS_FS["IOCTL_DEV"]
)


def guard_code_changeable(plan: LinuxPlan) -> str | None:
    """A path of the guard's code (:func:`_guard_code`) that the command could change, if
    any. The Python runner's supervisor is forked from code loaded before the sandbox
    existed; the native stub executes the interpreter from the sandbox's view after the
    command has started, so a file the command (or an earlier one, in the lasting /tmp layer
    or a writable root) changed would be what runs with the guard's rights."""
    if plan.landlock is None:
        return None
    places = [r.path for r in plan.landlock.rules if r.access & _CHANGING]
    for code in _guard_code():
        for place in places:
            if code == place or code.startswith(place.rstrip("/") + "/"):
                return code
    return None


def _guard(plan: LinuxPlan) -> list[bytes]:
    """The name guard's records: how the stub starts the Python supervisor (the base
    interpreter, isolated, ringfence after the standard library on its path), its rules, the
    filter, the lock."""
    from ringfence.platforms.linux import steps
    from ringfence.platforms.linux.nameguard.filter import build_filter

    boot = (
        f"import sys; sys.path.append({_package_parent()!r}); "
        "from ringfence.platforms.linux.guard_exec import main; main()"
    )
    names = bool(plan.guard_names or plan.guard_paths or plan.guard_git != "off")
    made = steps.guard_rules_of(plan)
    rules = json.dumps({f.name: getattr(made, f.name) for f in dataclasses.fields(made) if f.init})
    out = [
        _record(TAG_GUARD_PYTHON, os.fsencode(_guard_python())),
        _record(TAG_GUARD_BOOT, boot.encode()),
        _record(TAG_GUARD_RULES, rules.encode()),
        _record(TAG_GUARD_BPF, bpf.encode(build_filter(names=names))),
    ]
    if plan.state_dir and os.path.basename(os.path.dirname(plan.state_dir)) == WORKSPACES:
        lock = os.path.join(os.path.dirname(os.path.dirname(plan.state_dir)), GUARD_LOCK)
        out.append(_record(TAG_GUARD_LOCK, os.fsencode(lock)))
    return out


def missing(plan: LinuxPlan) -> tuple[str, ...]:
    """What the native launcher does not do for ``plan`` (yet): the Python runner runs it."""
    gaps = []
    if not plan.sandboxed:
        gaps.append("full access (nothing to build)")
    if plan.isolation is not Isolation.NAMESPACES or not plan.namespaces:
        gaps.append("reduced isolation")
    for needed in ("user", "mount", "pid"):
        if plan.sandboxed and needed not in plan.namespaces:
            gaps.append(f"no {needed} namespace")
    if plan.proxy_port is not None or plan.expose_ports or plan.publish:
        gaps.append("network relays (proxy, exposed or published ports)")
    if plan.guard_enabled and (code := guard_code_changeable(plan)) is not None:
        gaps.append(f"the name guard's code can be changed inside the sandbox: {code}")
    return tuple(gaps)


def encode(plan: LinuxPlan) -> Image:
    """``plan`` as the native launcher reads it. Raises ValueError for a plan it cannot hold
    at all (not sandboxed, no Landlock ruleset, a name without a number here)."""
    if not plan.sandboxed or plan.landlock is None or plan.seccomp is None:
        raise ValueError("only a sandboxed plan with Landlock and seccomp has an image")
    flags = 0
    for name in plan.namespaces:
        flags |= CLONE_FLAGS[name]
    out = [MAGIC, _record(TAG_NAMESPACES, struct.pack("<Q", flags))]
    out.append(_record(TAG_IDS, struct.pack("<II", plan.uid, plan.gid)))
    out += [_record(TAG_MOUNT, _mount(op)) for op in plan.mounts]
    rules = plan.landlock
    out.append(
        _record(
            TAG_LANDLOCK,
            struct.pack("<IQQQ", rules.abi, rules.handled_fs, rules.handled_net, rules.scoped),
        )
    )
    for rule in rules.rules:
        head = struct.pack("<QB", rule.access, 1 if rule.required else 0)
        out.append(_record(TAG_LANDLOCK_PATH, head + os.fsencode(rule.path)))
    for access, port in rules.net_ports:
        out.append(_record(TAG_LANDLOCK_PORT, struct.pack("<QQ", access, port)))
    out.append(_record(TAG_SECCOMP, bpf.encode(seccomp.build_program(plan.seccomp))))
    for name, value in plan.rlimits:
        which = getattr(resource, f"RLIMIT_{name}")
        out.append(_record(TAG_RLIMIT, struct.pack("<IQ", which, value)))
    # As planned: a session's runner raises the pid and mount namespace quotas for the
    # namespaces it makes per command (sandbox_side._session_quotas); one native command
    # makes none after its own.
    for quota_name, quota in plan.userns_limits:
        out.append(_record(TAG_USERNS_LIMIT, struct.pack("<Q", quota) + quota_name.encode()))
    for key, text in plan.env.items():
        out.append(_record(TAG_ENV, os.fsencode(f"{key}={text}")))
    out.append(_record(TAG_CWD, os.fsencode(plan.cwd)))
    limits = dict(plan.cgroup_limits)
    for controller, version, parent in plan.cgroup_sites if limits else ():
        if controller in limits:  # as cgroups.RunCgroup.create: a site per limited controller
            head = struct.pack("<BBQ", CGROUP_CONTROLLERS[controller], version, limits[controller])
            out.append(_record(TAG_CGROUP, head + os.fsencode(parent)))
    if plan.state_dir:  # held shared while the sandbox runs (statedirs.hold)
        out.append(_record(TAG_STATE_LOCK, os.fsencode(os.path.join(plan.state_dir, LOCK))))
    if plan.guard_enabled:
        out += _guard(plan)
    return Image(b"".join(out), missing(plan))


__all__ = ["MAGIC", "Image", "encode", "missing"]
