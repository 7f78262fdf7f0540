"""Per-run cgroups: a memory cap and a process cap that hold for every process of the sandbox.

rlimits are per process (memory) or per user (RLIMIT_NPROC, which also counts the user's
processes outside, and which the kernel never applies to root). A cgroup counts exactly the
sandbox's tree, whoever the user is. ringfence never needs root for this: it uses a cgroup the
user may already write to (cgroup v2 delegated by systemd, or a v1 hierarchy the user owns or,
as root, any hierarchy) and says in ``doctor`` when there is none. Discovery and the per-run
cgroup's life are here; the plan decides the limits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ringfence.platforms.linux.libc import write_file

CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class Site:
    """Where per-run cgroups for one controller are made: a writable parent directory."""

    controller: str
    version: int  # 1 or 2
    parent: str


@dataclass(frozen=True)
class Mount:
    path: str
    version: int
    controllers: frozenset[str]


def parse_mounts(mountinfo: str) -> list[Mount]:
    """cgroup mounts from /proc/self/mountinfo text (v1 controllers from the super options)."""
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, superopts = rfields[0], rfields[2]
        path = fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            found.append(Mount(path, 2, frozenset()))
        elif fstype == "cgroup":
            opts = frozenset(o for o in superopts.split(",") if o in CONTROLLERS)
            if opts:
                found.append(Mount(path, 1, opts))
    return found


def parse_membership(proc_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup text -> {controller or "": path}; "" is the v2 (unified) path."""
    where: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if names == "":
            where[""] = path
        for name in names.split(","):
            if name in CONTROLLERS:
                where[name] = path
    return where


def _writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK) and os.access(
        os.path.join(directory, "cgroup.procs"), os.W_OK
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return ""


def _v2_site(mount: Mount, own: str, controller: str) -> Site | None:
    """The nearest writable ancestor of our cgroup that hands ``controller`` to its children.

    A cgroup that enables a controller for its children holds no processes of its own, so this
    is a delegated subtree's root (systemd ``Delegate=yes``) or, for root, the root cgroup.
    Moving a process needs write access to the common ancestor, which such a parent is.
    """
    rel = own.strip("/")
    while True:
        directory = os.path.join(mount.path, rel) if rel else mount.path
        enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        if controller in enabled and _writable(directory):
            return Site(controller, 2, directory)
        if not rel:
            return None
        rel = os.path.dirname(rel)


def discover(
    mountinfo: str | None = None, proc_cgroup: str | None = None
) -> tuple[dict[str, Site], str]:
    """Usable sites per controller, and why the missing ones are missing (for doctor)."""
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    mounts = parse_mounts(mountinfo)
    member = parse_membership(proc_cgroup)
    sites: dict[str, Site] = {}
    why: list[str] = []
    for controller in CONTROLLERS:
        v1 = next((m for m in mounts if m.version == 1 and controller in m.controllers), None)
        if v1 is not None:
            own = member.get(controller, "/").strip("/")
            directory = os.path.join(v1.path, own) if own else v1.path
            if _writable(directory):
                sites[controller] = Site(controller, 1, directory)
            else:
                why.append(f"{controller}: cgroup v1 {directory} is not writable by you")
            continue
        v2 = next((m for m in mounts if m.version == 2), None)
        if v2 is None or "" not in member:
            why.append(f"{controller}: no cgroup hierarchy has this controller")
            continue
        site = _v2_site(v2, member[""], controller)
        if site is not None:
            sites[controller] = site
        else:
            why.append(
                f"{controller}: no delegated cgroup v2 subtree (run under "
                "`systemd-run --user --scope -p Delegate=yes`)"
            )
    return sites, "; ".join(why)


class RunCgroup:
    """The cgroups of one run: made before the runner starts, removed when the sandbox is gone."""

    def __init__(self, dirs: Mapping[str, tuple[int, str]]) -> None:
        self.dirs = dict(dirs)  # controller -> (version, directory)

    @classmethod
    def create(cls, sites: Iterable[tuple[str, int, str]], limits: Mapping[str, int]) -> RunCgroup:
        name = f"ringfence-{os.getpid()}-{os.urandom(4).hex()}"
        made: dict[str, tuple[int, str]] = {}
        by_dir: dict[str, str] = {}
        try:
            for controller, version, parent in sites:
                if controller not in limits:
                    continue
                prune_stale(parent)
                directory = os.path.join(parent, name)
                if directory not in by_dir.values():
                    os.mkdir(directory, 0o755)
                by_dir[controller] = directory
                made[controller] = (version, directory)
                _apply(controller, version, directory, limits[controller])
        except OSError as e:
            cls(made).remove()
            raise OSError(e.errno, f"cannot set up the sandbox's cgroup: {e}") from e
        return cls(made)

    def join(self, pid: int) -> None:
        """Move ``pid`` (the runner, before it starts anything) into the cgroups it does not
        join itself: the v2 ones (see ``join_self``)."""
        seen: set[str] = set()
        for version, directory in self.dirs.values():
            if version != 1 and directory not in seen:
                seen.add(directory)
                write_file(os.path.join(directory, "cgroup.procs"), str(pid))

    def tasks_files(self) -> list[str]:
        """The v1 cgroups' ``tasks`` files, which the runner joins by itself (``join_self``)."""
        return sorted({os.path.join(d, "tasks") for v, d in self.dirs.values() if v == 1})

    def oom_kills(self) -> int:
        """How many processes the memory cap killed."""
        if "memory" not in self.dirs:
            return 0
        version, directory = self.dirs["memory"]
        text = _read(
            os.path.join(directory, "memory.events" if version == 2 else "memory.oom_control")
        )
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self) -> None:
        """Kill anything left (reduced isolation has no pid namespace to do it) and rmdir."""
        for _, directory in set(self.dirs.values()):
            deadline = time.monotonic() + 5.0
            while True:
                for pid in _read(os.path.join(directory, "cgroup.procs")).split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)


def join_self(tasks: Iterable[str]) -> None:
    """Move this process into the v1 cgroups whose ``tasks`` files are given.

    Writing a pid to ``cgroup.procs`` (what ``RunCgroup.join`` does for v2) takes the kernel's
    global threadgroup lock for writing, which waits out an RCU grace period: 10-30 ms on the
    2-vCPU VM. A thread that writes "0" to a v1 ``tasks`` file moves only itself and skips
    that lock (~0.05 ms). Only that thread moves, so a process with more than one thread
    writes its pid to ``cgroup.procs`` instead, and waits."""
    single = len(os.listdir("/proc/self/task")) == 1
    for tasks_file in tasks:
        path = tasks_file if single else os.path.join(os.path.dirname(tasks_file), "cgroup.procs")
        try:
            write_file(path, "0" if single else str(os.getpid()))
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror}: {path!r}") from e


_OURS = re.compile(r"ringfence-(\d+)-[0-9a-f]{8}")


def prune_stale(parent: str) -> None:
    """Remove empty cgroups left by a ringfence that was SIGKILLed (it could not clean up).

    Only ours (by name), only when the ringfence that made them is gone, and only empty ones:
    rmdir of a cgroup that still holds a process fails with EBUSY and it stays.
    """
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        m = _OURS.fullmatch(name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its ringfence still runs
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):  # no such pid can exist: not ours to judge
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(parent, name))


def _apply(controller: str, version: int, directory: str, value: int) -> None:
    join = os.path.join
    if controller == "pids":
        write_file(join(directory, "pids.max"), str(value))
    elif version == 2:
        write_file(join(directory, "memory.max"), str(value))
        # swap would let the command exceed the cap by paging out; the whole tree goes on OOM
        for knob, setting in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            if os.path.exists(join(directory, knob)):
                write_file(join(directory, knob), setting)
    else:
        write_file(join(directory, "memory.limit_in_bytes"), str(value))
        if os.path.exists(join(directory, "memory.memsw.limit_in_bytes")):
            write_file(join(directory, "memory.memsw.limit_in_bytes"), str(value))
