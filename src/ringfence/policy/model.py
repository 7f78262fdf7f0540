"""The policy: what a sandboxed command may read, write and reach.

Pure data and validation, no OS calls beyond path canonicalisation helpers that the loader
calls explicitly. A ``Policy`` is immutable; every constructor path ends in ``validate()`` so a
bad value is refused with a message naming it before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ringfence.errors import PolicyError
from ringfence.policy import defaults


class Mode(StrEnum):
    """How much of the filesystem the command may change."""

    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    FULL_ACCESS = "full-access"


class Network(StrEnum):
    """Whether the command may use the network at all."""

    OFF = "off"
    ON = "on"


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
    env: EnvPolicy = field(default_factory=EnvPolicy)

    def validate(self) -> Policy:
        """Refuse inconsistent or malformed values; return self so calls can chain."""
        if not self.workspace:
            raise PolicyError("policy: workspace is not set (give an absolute directory)")
        _check_abs("workspace", self.workspace)
        for name, paths in (
            ("writable root", self.writable_roots),
            ("protected path", self.protected),
            ("deny-read path", self.deny_read),
            ("allowed socket", self.allow_sockets),
        ):
            for p in paths:
                _check_abs(name, p)
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
            if self.network is Network.OFF:
                raise PolicyError(
                    "policy: mode full-access has no boundary, so the network cannot be off; "
                    "use workspace-write with --network off"
                )
        for name in (*self.env.keep, *self.env.unset, *self.env.set):
            if not name or "=" in name or "\0" in name:
                raise PolicyError(f"policy: invalid environment variable name {name!r}")
        for key, value in self.env.set.items():
            if "\0" in value:
                raise PolicyError(f"policy: environment value of {key} contains a NUL byte")
        return self

    @property
    def sandboxed(self) -> bool:
        return self.mode is not Mode.FULL_ACCESS

    @property
    def effective_network(self) -> Network:
        if self.network is not None:
            return self.network
        return Network.ON if self.mode is Mode.FULL_ACCESS else Network.OFF

    def writable_paths(self) -> tuple[str, ...]:
        """Writable roots in enforcement order: workspace first, duplicates removed."""
        if self.mode is Mode.READ_ONLY:
            return ()
        seen: dict[str, None] = {}
        for p in (self.workspace, *self.writable_roots):
            seen.setdefault(p, None)
        return tuple(seen)

    def protected_names(self) -> tuple[str, ...]:
        """Relative name patterns protected at any depth under a writable root."""
        if not self.default_protected:
            return STRICT_NAMES if self.strict_git else ()
        names = [*defaults.TOOL_PROTECTED, *defaults.SHELL_PROTECTED]
        names[:0] = defaults.STRICT_GIT_PROTECTED if self.strict_git else defaults.GIT_PROTECTED
        return tuple(names)

    def deny_read_paths(self, home: str | None) -> tuple[str, ...]:
        """Absolute paths to hide: the user's plus, when on, the defaults under ``home``."""
        out = list(self.deny_read)
        if self.default_deny_read and home:
            out.extend(os.path.join(home, rel) for rel in defaults.HOME_DENY_READ)
        return tuple(dict.fromkeys(out))


STRICT_NAMES: tuple[str, ...] = defaults.STRICT_GIT_PROTECTED


def _check_abs(what: str, path: str) -> None:
    if "\0" in path:
        raise PolicyError(f"policy: {what} {path!r} contains a NUL byte")
    if not os.path.isabs(path):
        raise PolicyError(f"policy: {what} {path!r} is relative; give an absolute path")
    if os.path.normpath(path) != path.rstrip("/") and path != "/":
        raise PolicyError(
            f"policy: {what} {path!r} is not normalised; use {os.path.normpath(path)!r}"
        )
