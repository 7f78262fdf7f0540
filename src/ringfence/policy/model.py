"""The policy: what a sandboxed command may read, write and reach.

Pure data and validation, no OS calls beyond path canonicalisation helpers that the loader
calls explicitly. A ``Policy`` is immutable; every constructor path ends in ``validate()`` so a
bad value is refused with a message naming it before anything runs.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from ringfence.errors import PolicyError
from ringfence.policy import defaults, defaults_macos, defaults_windows

# Which platform's default lists a policy is compiled with (``protected_names``,
# ``deny_read_paths``): each keeps its secrets and start-up files in its own places.
Platform = Literal["linux", "macos", "windows"]
PLATFORMS: tuple[Platform, ...] = ("linux", "macos", "windows")


class Mode(StrEnum):
    """How much of the filesystem the command may change."""

    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    FULL_ACCESS = "full-access"


class Isolation(StrEnum):
    """How the boundary is built.

    ``namespaces`` (default): user, mount, pid, ipc, uts and net namespaces, read-only mounts,
    Landlock, seccomp. ``reduced``: for hosts without unprivileged user namespaces, Landlock +
    seccomp + process rules alone; it protects less (``ringfence explain`` lists what) and is
    only ever used when asked for.
    """

    NAMESPACES = "namespaces"
    REDUCED = "reduced"


class PathStyle(StrEnum):
    """Whose paths the policy holds: the policy model is the same everywhere, but a path is
    checked and compared as the platform that enforces it reads paths (``windows``: drive or
    UNC paths, case-insensitive, see ``winpaths``)."""

    POSIX = "posix"
    WINDOWS = "windows"

    @classmethod
    def native(cls) -> PathStyle:
        return cls.WINDOWS if os.name == "nt" else cls.POSIX


class Network(StrEnum):
    """Whether the command may use the network: not at all, freely, or only through the
    filtering proxy to the names the policy allows."""

    OFF = "off"
    ON = "on"
    ALLOWLIST = "allowlist"


@dataclass(frozen=True)
class EnvPolicy:
    """How the command's environment is rebuilt from the caller's.

    ``inherit`` copies the caller's variables minus those whose names look secret or that hand
    over an agent socket; ``keep`` rescues names from that scrub; ``unset`` removes more;
    ``set`` wins over everything.
    """

    inherit: bool = True
    keep: tuple[str, ...] = ()
    unset: tuple[str, ...] = ()
    set: Mapping[str, str] = field(default_factory=dict)


# Limits field -> the ``--limit`` key that sets it (the CLI parses these; compilers name them).
LIMIT_FLAGS: Mapping[str, str] = {
    "processes": "processes",
    "memory": "memory",
    "open_files": "open-files",
    "cpu_seconds": "cpu",
    "file_size": "file-size",
    "tmp_size": "tmp-size",
    "shm_size": "shm-size",
    "inotify_instances": "inotify-instances",
    "inotify_watches": "inotify-watches",
}


def changed_limits(limits: Limits) -> tuple[str, ...]:
    """The ``--limit`` keys whose values differ from the defaults: what the user asked for."""
    default = Limits()
    return tuple(
        flag
        for name, flag in LIMIT_FLAGS.items()
        if getattr(limits, name) != getattr(default, name)
    )


_SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int | str:
    """``512m``, ``2g``, ``1048576`` -> bytes; ``25%`` stays a share of RAM (tmpfs sizes)."""
    t = text.strip().lower()
    if t.endswith("%"):
        num = t[:-1]
        if num.isdigit() and 0 < int(num) <= 100:
            return f"{int(num)}%"
        raise PolicyError(f"limit: {text!r} is not a percentage between 1% and 100%")
    unit = t[-1:] if t[-1:] in _SIZE_SUFFIXES and not t[-1:].isdigit() else ""
    num = t[: len(t) - len(unit)]
    if not num.isdigit() or int(num) <= 0:
        raise PolicyError(f"limit: {text!r} is not a size (like 512m, 2g or 1048576)")
    return int(num) * _SIZE_SUFFIXES[unit]


@dataclass(frozen=True)
class Limits:
    """Resource limits for everything the command starts.

    ``processes`` is RLIMIT_NPROC set inside the sandbox's own user namespace, so it counts only
    the sandbox's processes (Linux >= 5.14), not the user's others; it does not bind a host-root
    user, whom the kernel exempts. ``None`` keeps what the caller has. Sizes are bytes, or for
    the tmpfs mounts a share of RAM like ``"25%"``.

    ``processes`` is also enforced by a per-run ``pids`` cgroup, and ``memory`` (all the
    sandbox's processes together, swap included) only by a ``memory`` cgroup, where the user
    may write one (``ringfence doctor`` says). A memory limit on a host without one is refused
    rather than silently not applied.
    """

    processes: int | None = 4096
    memory: int | None = None
    open_files: int | None = None
    file_size: int | None = None
    cpu_seconds: int | None = None
    # None: /tmp is the workspace's lasting layer on disk; a size: a private tmpfs of it
    tmp_size: int | str | None = None
    shm_size: int | str = "25%"
    # Kernel objects charged to the user across the namespace boundary, capped inside the
    # sandbox's user namespace (/proc/sys/user/*). None: half of the host user's own quota, so
    # a command that takes all it may still leaves the user's editor and file watchers theirs.
    inotify_instances: int | None = None
    inotify_watches: int | None = None

    def validate(self) -> None:
        for name in ("processes", "memory", "open_files", "file_size", "cpu_seconds"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise PolicyError(f"limit {name}: {value!r} must be a positive whole number")
        for name in ("tmp_size", "shm_size"):
            value = getattr(self, name)
            if value is None and name == "tmp_size":
                continue
            if isinstance(value, str):
                parse_size(value)
            elif not isinstance(value, int) or value <= 0:
                raise PolicyError(f"limit {name}: {value!r} must be a size or a percentage")
        for name in ("inotify_instances", "inotify_watches"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise PolicyError(f"limit {name}: {value!r} must be a positive whole number")


@dataclass(frozen=True)
class Policy:
    """Everything the boundary needs to know, independent of the platform that enforces it.

    Paths are absolute and normalised (see ``validate``). ``protected`` and ``deny_read`` hold
    the user's additions; the defaults are added by ``protected_names``/``deny_read_paths``
    unless switched off, so the defaults stay visible as defaults in ``explain``.
    """

    mode: Mode = Mode.WORKSPACE_WRITE
    workspace: str = ""
    writable_roots: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    deny_read: tuple[str, ...] = ()
    default_protected: bool = True
    default_deny_read: bool = True
    strict_git: bool = False
    network: Network | None = None  # None: off when sandboxed, on in full-access
    allow_sockets: tuple[str, ...] = ()
    # network = allowlist: names (``example.com``, ``*.example.com``, ``host:port``) the proxy
    # lets through, names it refuses (deny wins), and whether an allowed name may lead to a
    # local, private or metadata address.
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    allow_local_targets: bool = False
    # Host services reachable on purpose: 127.0.0.1:PORT inside reaches the host's
    # 127.0.0.1:PORT (a dev database, a local model server); nothing else on its loopback.
    expose_ports: tuple[int, ...] = ()
    # Servers inside reachable from the host (``--publish``): each entry ``PORT`` or
    # ``"HOST_PORT:PORT"``; the host's 127.0.0.1:HOST_PORT (and [::1]) leads to 127.0.0.1:PORT
    # inside. See ``published_ports`` and network/publish.py.
    publish: tuple[int | str, ...] = ()
    # Package-manager caches redirected to ringfence's own writable directory (see caches.py).
    tool_caches: bool = True
    env: EnvPolicy = field(default_factory=EnvPolicy)
    limits: Limits = field(default_factory=Limits)
    # Refuse to run unless the kernel's Landlock ABI is at least this (e.g. 6 for the signal
    # and abstract-socket scopes); 1 means any Landlock at all, which is always required.
    landlock_min_abi: int = 1
    isolation: Isolation = Isolation.NAMESPACES
    path_style: PathStyle = field(default_factory=PathStyle.native)

    def validate(self) -> Policy:
        """Refuse inconsistent or malformed values; return self so calls can chain."""
        if not self.workspace:
            raise PolicyError("policy: workspace is not set (give an absolute directory)")
        if self.path_style not in tuple(PathStyle):
            raise PolicyError(f"policy: path_style {self.path_style!r} is not posix or windows")
        check = _check_windows if self.path_style == PathStyle.WINDOWS else _check_abs
        check("workspace", self.workspace)
        for name, paths in (
            ("writable root", self.writable_roots),
            ("protected path", self.protected),
            ("deny-read path", self.deny_read),
            ("allowed socket", self.allow_sockets),
        ):
            for p in paths:
                check(name, p)
        own = sorted(k for k in self.env.set if k.startswith("RINGFENCE_"))
        if own:
            raise PolicyError(
                f"env: {', '.join(own)} is ringfence's own (RINGFENCE_SANDBOX tells a command "
                "and the tools it starts whether they are confined); drop it from --env or set"
            )
        if self.mode is Mode.READ_ONLY and self.writable_roots:
            raise PolicyError(
                "policy: mode read-only conflicts with writable roots "
                f"({', '.join(self.writable_roots)}); drop --writable or use workspace-write"
            )
        if self.mode is Mode.FULL_ACCESS:
            extra = [
                flag
                for flag, value in (
                    ("--writable", self.writable_roots),
                    ("--protect", self.protected),
                    ("--deny-read", self.deny_read),
                    ("--strict-git", self.strict_git),
                )
                if value
            ]
            if extra:
                raise PolicyError(
                    f"policy: mode full-access runs without a boundary, so {', '.join(extra)} "
                    "would not be enforced; drop them or choose another mode"
                )
            if self.network in (Network.OFF, Network.ALLOWLIST):
                raise PolicyError(
                    f"policy: mode full-access has no boundary, so the network cannot be "
                    f"{self.network.value}; use workspace-write with --network {self.network.value}"
                )
        if (self.allow_domains or self.deny_domains) and self.network is not Network.ALLOWLIST:
            raise PolicyError(
                "policy: allowed and denied domains need network = allowlist "
                "(--network allowlist); with the network off or on they would mean nothing"
            )
        if len(self.expose_ports) > 32:
            raise PolicyError("policy: at most 32 exposed ports")
        for port in self.expose_ports:
            if not isinstance(port, int) or not 0 < port < 65536:
                raise PolicyError(f"policy: exposed port {port!r} is not a port from 1 to 65535")
        if self.expose_ports and self.effective_network is Network.ON:
            raise PolicyError(
                "policy: exposed ports are for a sandbox with its own network (off or "
                "allowlist); with the network on, the host's loopback is already reachable"
            )
        _check_publish(self)
        if self.network is Network.ALLOWLIST:
            from ringfence.policy.netrules import NetRules

            NetRules.parse(self.allow_domains, self.deny_domains)  # every entry, or its error
        for name in (*self.env.keep, *self.env.unset, *self.env.set):
            if not name or "=" in name or "\0" in name:
                raise PolicyError(f"policy: invalid environment variable name {name!r}")
        for key, value in self.env.set.items():
            if "\0" in value:
                raise PolicyError(f"policy: environment value of {key} contains a NUL byte")
        self.limits.validate()
        if not isinstance(self.landlock_min_abi, int) or self.landlock_min_abi < 1:
            raise PolicyError(
                f"policy: landlock_min_abi {self.landlock_min_abi!r} must be a whole number >= 1"
            )
        return self

    @property
    def sandboxed(self) -> bool:
        return self.mode is not Mode.FULL_ACCESS

    @property
    def effective_network(self) -> Network:
        if self.network is not None:
            return self.network
        return Network.ON if self.mode is Mode.FULL_ACCESS else Network.OFF

    def published_ports(self) -> tuple[tuple[int, int], ...]:
        """``publish`` as (host port, port inside) pairs, in the order given."""
        return tuple(parse_publish(entry) for entry in self.publish)

    def writable_paths(self) -> tuple[str, ...]:
        """Writable roots in enforcement order: workspace first, duplicates removed."""
        if self.mode is Mode.READ_ONLY:
            return ()
        seen: dict[str, None] = {}
        for p in (self.workspace, *self.writable_roots):
            seen.setdefault(p, None)
        return tuple(seen)

    def platform_of(self, platform: Platform | None) -> Platform:
        """The platform whose defaults apply: the one asked for, else Windows for a policy of
        Windows paths and Linux for the rest. A POSIX policy is never given Windows lists,
        nor a Windows one POSIX lists."""
        if platform is None:
            return "windows" if self.path_style == PathStyle.WINDOWS else "linux"
        if platform not in PLATFORMS:
            raise PolicyError(f"policy: platform {platform!r} is not one of {', '.join(PLATFORMS)}")
        if (platform == "windows") != (self.path_style == PathStyle.WINDOWS):
            raise PolicyError(
                f"policy: a policy of {self.path_style.value} paths cannot take {platform}'s "
                "defaults; give paths in that platform's form"
            )
        return platform

    def protected_names(self, platform: Platform | None = None) -> tuple[str, ...]:
        """Relative name patterns protected at any depth under a writable root: the tool and
        git names everywhere, then ``platform``'s shell start-up files and (macOS, Windows)
        the places it starts programs from (see ``platform_of`` for the default)."""
        if not self.default_protected:
            return STRICT_NAMES if self.strict_git else ()
        plat = self.platform_of(platform)
        if plat == "macos":
            own = (*defaults_macos.SHELL_PROTECTED, *defaults_macos.PERSISTENCE_PROTECTED)
        elif plat == "windows":
            own = (*defaults_windows.SHELL_PROTECTED, *defaults_windows.PERSISTENCE_PROTECTED)
        else:
            own = defaults.SHELL_PROTECTED
        names = [*defaults.TOOL_PROTECTED, *own]
        names[:0] = defaults.STRICT_GIT_PROTECTED if self.strict_git else defaults.GIT_PROTECTED
        return tuple(names)

    def deny_read_paths(
        self,
        home: str | None,
        platform: Platform | None = None,
        *,
        folders: Mapping[str, str] | None = None,
    ) -> tuple[str, ...]:
        """Absolute paths to hide: the user's plus, when on, ``platform``'s defaults under
        ``home`` (see ``platform_of``). ``folders``: on Windows, where ``APPDATA`` and
        ``LOCALAPPDATA`` lie when not in their default places (``defaults_windows``)."""
        out = list(self.deny_read)
        plat = self.platform_of(platform)
        if self.default_deny_read and home:
            if plat == "windows":
                out.extend(defaults_windows.deny_read_paths(home, folders))
            elif plat == "macos":
                out.extend(posixpath.join(home, rel) for rel in defaults_macos.HOME_DENY_READ)
            else:
                out.extend(os.path.join(home, rel) for rel in defaults.HOME_DENY_READ)
        return tuple(dict.fromkeys(out))


STRICT_NAMES: tuple[str, ...] = defaults.STRICT_GIT_PROTECTED
MAX_PUBLISHED = 32


def parse_publish(entry: object) -> tuple[int, int]:
    """One ``publish`` entry as (host port, port inside): ``8080`` and ``"8080"`` give
    (8080, 8080), ``"18080:8080"`` gives (18080, 8080). The host side is always the host's
    loopback, so an address is refused rather than ignored."""
    text = str(entry).strip() if isinstance(entry, (int, str)) else ""
    parts = text.split(":") if not isinstance(entry, bool) else []
    if not 1 <= len(parts) <= 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise PolicyError(
            f"publish {entry!r}: give [HOST_PORT:]PORT, like 8080 or 18080:8080 (the host side "
            "is always the host's loopback, 127.0.0.1 and ::1)"
        )
    ports = [int(p) if len(p) <= 5 else 0 for p in parts]
    if not all(0 < p < 65536 for p in ports):
        raise PolicyError(f"publish {entry!r}: a port is a number from 1 to 65535")
    return ports[0], ports[-1]


def _check_publish(policy: Policy) -> None:
    """``publish``: well formed, each host port once, and only where the sandbox has a network
    of its own (with the network on, a server inside already listens on the host's loopback)."""
    if not policy.publish:
        return
    if len(policy.publish) > MAX_PUBLISHED:
        raise PolicyError(f"policy: at most {MAX_PUBLISHED} published ports")
    pairs = policy.published_ports()
    hosts = [h for h, _ in pairs]
    twice = sorted({h for h in hosts if hosts.count(h) > 1})
    if twice:
        raise PolicyError(
            f"publish: host port {twice[0]} is published twice; give each host port once"
        )
    if policy.effective_network is Network.ON:
        raise PolicyError(
            "policy: published ports are for a sandbox with its own network (off or allowlist); "
            "with the network on, a server inside listens on the host's loopback already"
        )
    both = sorted({p for pair in pairs for p in pair} & set(policy.expose_ports))
    if both:
        raise PolicyError(
            f"policy: port {both[0]} is both exposed (inside to host) and published (host to "
            "inside): connections would go round in a loop; use different ports"
        )


def _check_windows(what: str, path: str) -> None:
    from ringfence.policy import winpaths

    canonical = winpaths.normalize(f"policy: {what}", path)
    if canonical != path:
        raise PolicyError(f"policy: {what} {path!r} is not in canonical form; use {canonical!r}")


def _check_abs(what: str, path: str) -> None:
    if "\0" in path:
        raise PolicyError(f"policy: {what} {path!r} contains a NUL byte")
    if not os.path.isabs(path):
        raise PolicyError(f"policy: {what} {path!r} is relative; give an absolute path")
    if os.path.normpath(path) != path.rstrip("/") and path != "/":
        raise PolicyError(
            f"policy: {what} {path!r} is not normalised; use {os.path.normpath(path)!r}"
        )
