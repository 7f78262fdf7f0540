"""The mount steps of a Linux plan, typed: what each mount is and which attributes it gets.

The compiler (plan.py) decides every attribute here, once, with one constructor per kind of
mount; mounts.py applies exactly the fields it is given. ``why`` is for people (``ringfence
explain``, error messages) and nothing may decide by it; ``entry`` is the policy entry an op
enforces, for the reports that name it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from ringfence.policy.semantics import PrefixSet


class MountKind(StrEnum):
    """What a mount op makes."""

    BIND = "bind"  # source -> target, a clone of the host's tree
    TMPFS = "tmpfs"  # a fresh, empty tmpfs
    PROC = "proc"  # a fresh proc for the sandbox's pid namespace
    DEVPTS = "devpts"  # a private devpts instance
    MASK = "mask"  # an empty, unreadable directory or file over target
    SYMLINK = "symlink"  # a link created in a fresh tmpfs; source is the link text
    REMOUNT_RO = "remount_ro"  # make target's mount read-only once it is populated
    FILE = "file"  # a read-only file holding content, in a tmpfs of its own
    OVERLAY = "overlay"  # host target read-only below, the layer directory source above


@dataclass(frozen=True)
class MountOp:
    """One mount, made in plan order inside the sandbox's mount namespace.

    Attributes: ``readonly``, ``nosuid``, ``nodev``, ``noexec`` are the mount attributes set
    on it (a directory mask is made read-only once the whole view is built, since later
    mounts may need mount points inside it); ``recursive``: a bind takes the source's
    submounts too. ``create``: the mount point lies in a tmpfs this plan made, so it may be
    created there; nothing is ever created on the host. Make ops with the constructors below.
    """

    kind: MountKind
    target: str
    source: str | None = None
    readonly: bool = False
    nosuid: bool = True
    nodev: bool = True
    noexec: bool = False
    recursive: bool = False
    is_dir: bool = True
    mode: int = 0o755
    create: bool = False
    why: str = ""  # for people only
    size: str | None = None  # tmpfs size= option (bytes or a share of RAM like "25%")
    content: bytes | None = None  # kind FILE: the bytes of the read-only file made there
    entry: str | None = None  # the deny-read entry a mask hides, the file a copy replaces


class Hidden(NamedTuple):
    """A path the sandbox hides (a mask's target) and the deny-read entry that hid it: what
    violation reports name as hidden."""

    target: str
    entry: str


def bind(
    target: str, *, readonly: bool, why: str, is_dir: bool = True, source: str | None = None
) -> MountOp:
    """The host's ``source`` (``target`` itself unless given) over ``target``: nosuid and
    nodev, with its submounts when it is a directory."""
    return MountOp(
        MountKind.BIND,
        target,
        source=target if source is None else source,
        readonly=readonly,
        recursive=is_dir,
        is_dir=is_dir,
        why=why,
    )


def device(name: str) -> MountOp:
    """A host device node bound into the fresh /dev: the one bind that keeps device access
    (no nodev; no nosuid either, as it is a single node)."""
    path = f"/dev/{name}"
    return MountOp(
        MountKind.BIND, path, source=path, nosuid=False, nodev=False, is_dir=False, why="device"
    )


def tmpfs(target: str, *, mode: int, why: str, size: str | None = None) -> MountOp:
    return MountOp(MountKind.TMPFS, target, mode=mode, size=size, why=why)


def proc(target: str, *, why: str) -> MountOp:
    return MountOp(MountKind.PROC, target, noexec=True, why=why)


def devpts(target: str, *, why: str) -> MountOp:
    return MountOp(MountKind.DEVPTS, target, nodev=False, noexec=True, why=why)


def symlink(target: str, text: str, *, why: str) -> MountOp:
    return MountOp(
        MountKind.SYMLINK, target, source=text, nosuid=False, nodev=False, is_dir=False, why=why
    )


def remount_ro(target: str, *, why: str) -> MountOp:
    return MountOp(MountKind.REMOUNT_RO, target, readonly=True, nosuid=False, nodev=False, why=why)


def overlay(target: str, layer: str, *, why: str = "") -> MountOp:
    return MountOp(MountKind.OVERLAY, target, source=layer, why=why)


def mask(
    target: str, *, mode: int, why: str, is_dir: bool = True, entry: str | None = None
) -> MountOp:
    """An empty, read-only, unreadable (``mode``) directory or file over ``target``."""
    return MountOp(
        MountKind.MASK,
        target,
        readonly=True,
        noexec=True,
        is_dir=is_dir,
        mode=mode,
        why=why,
        entry=entry,
    )


def file_copy(target: str, content: bytes, *, mode: int, why: str, entry: str) -> MountOp:
    """A read-only file holding ``content`` over ``target`` (a scrubbed config file)."""
    return MountOp(
        MountKind.FILE,
        target,
        readonly=True,
        noexec=True,
        is_dir=False,
        mode=mode,
        content=content,
        why=why,
        entry=entry,
    )


class MountList:
    """Collects mount ops in order and tracks which targets are fresh (ours to create in)."""

    def __init__(self) -> None:
        self.ops: list[MountOp] = []
        self.fresh: list[str] = []
        self.targets: set[str] = set()
        # ``fresh`` as a set of prefixes: one lookup per component of a target, however many
        # masks a policy of many deny-read paths makes
        self._fresh = PrefixSet()

    def in_fresh(self, target: str) -> bool:
        """``target`` lies strictly beneath a fresh mount (``is_strictly_under``)."""
        return self._fresh.strictly_holds(target)

    def add(self, op: MountOp, *, fresh: bool = False) -> None:
        create = self.in_fresh(op.target)
        self.ops.append(op if op.create == create else replace(op, create=create))
        self.targets.add(op.target)
        if fresh:
            self.fresh.append(op.target)
            self._fresh.add(op.target)
