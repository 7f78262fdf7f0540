"""The Linux plan as data: everything the runner does, decided up front by the compiler
(plan.py). Kept apart from the compiler so that what runs a plan (the host side of a run,
the runner, a plan read back from the plan cache) does not import what compiles one."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from ringfence.digest import sha256_hex
from ringfence.platforms.linux import landlock, seccomp
from ringfence.platforms.linux.mountops import Hidden, MountOp
from ringfence.policy.model import Isolation, Mode, Network

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Device nodes the command may open for writing and ioctl (terminals, /dev/null).
DEVICE_PATHS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/ptmx")


@dataclass(frozen=True)
class LinuxPlan:
    """Everything the runner does, decided up front. An unsandboxed (full-access) plan has
    only the first group of fields."""

    sandboxed: bool
    env: Mapping[str, str]
    cwd: str
    uid: int
    gid: int
    network: Network
    mode: Mode
    isolation: Isolation = Isolation.NAMESPACES
    notes: tuple[str, ...] = ()
    scrubbed_env: tuple[str, ...] = ()
    # ringfence's per-workspace state directory (statedirs.py), locked while the sandbox runs
    state_dir: str | None = None
    # The variables ringfence itself sets (RINGFENCE_*, TMPDIR, caches, proxy): what a session
    # server adds to each client's own environment.
    sandbox_env: Mapping[str, str] = field(default_factory=dict)
    # The boundary (empty when not sandboxed).
    namespaces: tuple[str, ...] = ()
    mounts: tuple[MountOp, ...] = ()
    landlock: landlock.LandlockRuleset | None = None
    seccomp: seccomp.SeccompPolicy | None = None
    # (RLIMIT name without prefix, value) set on the command; (name, value) of
    # /proc/sys/user/<name> written inside the sandbox's user namespace by pid 1.
    rlimits: tuple[tuple[str, int], ...] = ()
    userns_limits: tuple[tuple[str, int], ...] = ()
    # Per-run cgroups: (controller, cgroup version, parent directory) where they are made,
    # (controller, limit) to set, and why a controller the host lacks is missing.
    cgroup_sites: tuple[tuple[str, int, str], ...] = ()
    cgroup_limits: tuple[tuple[str, int], ...] = ()
    cgroup_note: str = ""
    # network = allowlist: the port the filtering proxy listens on inside the sandbox's own
    # network namespace (the only way out), and the rules it applies.
    proxy_port: int | None = None
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    allow_local_targets: bool = False
    expose_ports: tuple[int, ...] = ()
    # (host port, port inside) pairs: the host's loopback HOST_PORT leads to the sandbox's
    # 127.0.0.1:PORT (network/publish.py on the host, network/publish_maker.py inside).
    publish: tuple[tuple[int, int], ...] = ()
    # The name guard: writable roots it watches, protected paths and name patterns, and the
    # git rules (see the gitguard package): their mode, the git directories made writable
    # only for git (a linked worktree's), and the core.hooksPath directories found at start.
    guard_roots: tuple[str, ...] = ()
    guard_paths: tuple[str, ...] = ()
    guard_names: tuple[str, ...] = ()
    guard_git: str = "off"
    guard_git_roots: tuple[str, ...] = ()
    guard_git_private_roots: tuple[str, ...] = ()  # the /tmp layer (guard_rules.py)
    guard_hooks_dirs: tuple[str, ...] = ()
    guard_global_hooks_path: str | None = None
    guard_home: str | None = None  # what ~/ means in the git configs the guard reads
    # a home directory inside a writable root: every hidden entry of it protected (guard_rules)
    guard_dot_dirs: tuple[str, ...] = ()
    # (mask target, the deny_read entry that hid it): what violation reports name as hidden.
    hidden: tuple[Hidden, ...] = ()
    # Unix sockets on disk: the guard refuses connect()/sendto()/sendmsg() to one unless it
    # lies beneath one of ``socket_roots`` (writable roots, git roots, the private /tmp and
    # /dev/shm) or at or beneath an ``allow_sockets`` entry (--allow-socket, and the target
    # of one that is a symlink). Empty without namespaces (reduced isolation cannot do it).
    socket_roots: tuple[str, ...] = ()
    allow_sockets: tuple[str, ...] = ()

    @property
    def guard_enabled(self) -> bool:
        """Whether the name guard (seccomp user notification) runs with the command."""
        return bool(
            self.guard_names or self.guard_paths or self.guard_git != "off" or self.socket_roots
        )

    def writable_places(self) -> tuple[str, ...]:
        """Where commands can create or change files: the paths Landlock lets them write
        (the writable roots, the private /tmp and /dev/shm), device nodes aside."""
        if self.landlock is None:
            return ()
        write = landlock.ACCESS_FS["WRITE_FILE"] | landlock.ACCESS_FS["MAKE_REG"]
        return tuple(
            r.path
            for r in self.landlock.rules
            if r.access & write and (not r.path.startswith("/dev/") or r.path == "/dev/shm")
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = _as_plain(self)
        d["guard_enabled"] = self.guard_enabled
        d["env"] = dict(self.env)
        d["sandbox_env"] = dict(self.sandbox_env)
        for m in d["mounts"]:  # a scrubbed copy: its size and digest, not its text
            if m["content"] is not None:
                m["content"] = f"{len(m['content'])} bytes, sha256 " + (sha256_hex(m["content"]))
        if self.landlock is not None:
            d["landlock"] = {
                "abi": self.landlock.abi,
                "handled": landlock.access_names(self.landlock.handled_fs),
                "rules": [
                    {"path": r.path, "access": landlock.access_names(r.access)}
                    for r in self.landlock.rules
                ],
            }
        return d


_ATOMS = (str, int, float, bytes, type(None), enum.Enum)


def _as_plain(obj: Any) -> Any:
    """``dataclasses.asdict``, to the same result, without deep-copying the immutable leaves
    (strings, numbers, enums) one by one: a plan of a thousand mounts is converted in a few
    milliseconds instead of tens (once per session, for the audit record's digest)."""
    if isinstance(obj, _ATOMS):
        return obj  # what deepcopy returns for these: the object itself
    if is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELD_NAMES.get(type(obj))
        if names is None:
            names = _FIELD_NAMES[type(obj)] = tuple(f.name for f in fields(obj))
        return {name: _as_plain(getattr(obj, name)) for name in names}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*[_as_plain(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_plain(v) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_as_plain(k), _as_plain(v)) for k, v in obj.items())
    return asdict(_Boxed(obj))["value"]  # anything else: exactly what asdict makes of it


@dataclass(frozen=True)
class _Boxed:
    value: Any


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
