"""Configuration files: user settings, named profiles, an untrusted project file, a managed ceiling.

Layers, lowest first:

1. built-in defaults;
2. the user's ``$XDG_CONFIG_HOME/ringfence/config.toml`` and, with ``--profile NAME``, its
   ``[profiles.NAME]`` table on top;
3. command-line flags (scalars replace, lists add);
4. the project's ``.ringfence.toml`` in the workspace. It comes with the repository, so it is
   **untrusted**: it may only tighten (add protected or deny-read paths and denied domains, turn
   the network off or from on to an allowlist, lower limits, make git strict, choose read-only).
   Anything that would loosen the policy is refused, naming the key;
5. the managed ``/etc/ringfence/managed.toml``: a **ceiling** that nothing may exceed, not
   user config, not flags, not the Python API. A policy above it is refused, not clamped.

Every value remembers where it came from, for ``ringfence config show``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ringfence.errors import PolicyError
from ringfence.policy import semantics
from ringfence.policy.model import EnvPolicy, Isolation, Limits, Mode, Network, PathStyle, Policy

MANAGED_PATH = "/etc/ringfence/managed.toml"
PROJECT_NAME = ".ringfence.toml"

_LISTS = {
    "writable_roots": str,
    "protected": str,
    "deny_read": str,
    "allow_domains": str,
    "deny_domains": str,
    "allow_sockets": str,
    "expose_ports": int,
    "publish": str,  # "PORT" or "HOST_PORT:PORT"; a bare number is taken as "PORT"
}
_BOOLS = (
    "strict_git",
    "default_protected",
    "default_deny_read",
    "allow_local_targets",
    "tool_caches",
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": tuple(m.value for m in Mode),
    "network": tuple(n.value for n in Network),
    "isolation": tuple(i.value for i in Isolation),
    # Not policy fields: whether a command may run at all (see ringfence.approval).
    "approval": ("never-ask", "on-request", "untrusted"),
}
# How much needs a person: the project file may only raise it, the managed file sets a floor.
APPROVAL_ORDER = {"never-ask": 0, "on-request": 1, "untrusted": 2}
_INTS = ("landlock_min_abi",)
_STRINGS = ("rules",)  # the approval rules file (user config only)
_LIMIT_KEYS = {f.name for f in fields(Limits)}
_ENV_KEYS = {"inherit", "keep", "unset", "set"}
KEYS = {*_LISTS, *_BOOLS, *_CHOICES, *_INTS, *_STRINGS, "limits", "env"}
_NETWORK_ORDER = {"off": 0, "allowlist": 1, "on": 2}
_MODE_ORDER = {"read-only": 0, "workspace-write": 1, "full-access": 2}


class ConfigError(PolicyError):
    """A config file that is malformed or asks for something it may not; says file, line, key."""


@dataclass
class Settings:
    """Policy field values and, for each one set, where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source

    def add(self, key: str, items: list[Any], source: str) -> None:
        if not items:
            return
        old = list(self.values.get(key, []))
        self.values[key] = old + [i for i in items if i not in old]
        self.sources[key] = f"{self.sources[key]} + {source}" if key in self.sources else source


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE)
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _where(path: str, text: str, key: str) -> str:
    line = _line_of(text, key.rsplit(".", 1)[-1])
    return f"{path}:{line}: {key}" if line else f"{path}: {key}"


def read_toml(path: str) -> tuple[dict[str, Any], str] | None:
    """The parsed file and its text, None if it does not exist; ConfigError if malformed."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _check_value(key: str, value: Any, where: str) -> Any:
    """The value, type-checked; ConfigError naming file, line and key otherwise."""
    if key in _LISTS:
        kind = _LISTS[key]
        if key == "publish" and isinstance(value, list):
            value = [str(v) if type(v) is int else v for v in value]
        if not isinstance(value, list) or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where}: must be a list of {kind.__name__}s, not {value!r}")
        return list(value)
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, not {value!r}")
        return value
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise ConfigError(f"{where}: must be one of {', '.join(_CHOICES[key])}, not {value!r}")
        return value
    if key in _INTS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be a whole number, not {value!r}")
        return value
    if key in _STRINGS:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: must be a non-empty string, not {value!r}")
        return value
    if key == "limits":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a table like [limits]")
        for k, v in value.items():
            if k not in _LIMIT_KEYS:
                raise ConfigError(
                    f"{where}.{k}: unknown limit (known: {', '.join(sorted(_LIMIT_KEYS))})"
                )
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise ConfigError(f'{where}.{k}: must be a number or a size like "2g"')
        return dict(value)
    if key == "env":
        if not isinstance(value, dict) or not set(value) <= _ENV_KEYS:
            raise ConfigError(f"{where}: must be a table with {', '.join(sorted(_ENV_KEYS))}")
        return dict(value)
    raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(KEYS))})")


def _apply_table(
    settings: Settings, table: Mapping[str, Any], path: str, text: str, label: str
) -> None:
    for key, value in table.items():
        if key == "profiles":
            continue
        where = _where(path, text, key)
        checked = _check_value(key, value, where)
        settings.set(key, checked, f"{label} {path}")


def load_user(settings: Settings, env: Mapping[str, str], profile: str | None) -> str | None:
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    path = os.path.join(base, "ringfence", "config.toml")
    got = read_toml(path)
    if got is None:
        if profile:
            raise ConfigError(f"--profile {profile}: there is no user config file ({path})")
        return None
    data, text = got
    _apply_table(settings, data, path, text, "user")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{_where(path, text, 'profiles')}: must be tables [profiles.NAME]")
    if profile:
        if profile not in profiles or not isinstance(profiles[profile], dict):
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"--profile {profile}: no [profiles.{profile}] in {path} ({known})")
        _apply_table(settings, profiles[profile], path, text, f"profile {profile} in")
    return path


def apply_project(settings: Settings, workspace: str) -> str | None:
    """Tighten with the workspace's ``.ringfence.toml``; refuse any loosening."""
    path = os.path.join(workspace, PROJECT_NAME)
    if os.path.islink(path):
        raise ConfigError(f"{path}: the project file may not be a symlink")
    got = read_toml(path)
    if got is None:
        return None
    data, text = got
    label = f"project {path}"
    net_before = settings.values.get("network", "off")
    for key, value in data.items():
        where = _where(path, text, key)
        checked = _check_value(key, value, where)
        current = settings.values.get(key)
        if key in ("protected", "deny_read"):
            settings.add(key, [_project_path(p, workspace, where) for p in checked], label)
        elif key == "deny_domains":
            settings.add(key, checked, label)
        elif key == "strict_git" and checked is True:
            settings.set(key, True, label)
        elif key == "tool_caches" and checked is False:
            settings.set(key, False, label)
        elif (
            key == "mode" and _MODE_ORDER[checked] <= _MODE_ORDER[current or "workspace-write"]
        ) or (key == "network" and _narrower_network(checked, net_before)):
            settings.set(key, checked, label)
        elif key == "allow_domains" and net_before == "on" and data.get("network") == "allowlist":
            settings.set(key, checked, label)  # from the open network to this list: narrower
        elif key == "approval" and APPROVAL_ORDER[checked] >= APPROVAL_ORDER.get(current or "", -1):
            settings.set(key, checked, label)  # asking about more: tighter
        elif key == "landlock_min_abi" and checked >= (current or 1):
            settings.set(key, checked, label)
        elif key == "limits" and _lower_limits(checked, current or {}):
            merged = dict(current or {})
            merged.update(checked)
            settings.set(key, merged, label)
        else:
            raise ConfigError(
                f"{where}: the project file comes with the repository and may only tighten the "
                "policy; this would loosen it. Remove the key, or run with "
                "--ignore-project-config"
            )
    return path


def _project_path(path: str, workspace: str, where: str) -> str:
    """A ``protected``/``deny_read`` entry of the project file, absolute: a relative one is
    relative to the project (so a committed file can name files of its own repository) and may
    not climb out of it with ``..``: what it names outside must be spelled out absolutely."""
    if not path or path.startswith("~") or os.path.isabs(path):
        return path  # checked with the other layers' paths (policy_from_settings)
    joined = os.path.normpath(os.path.join(workspace, path))
    inside = semantics.is_under(
        joined, os.path.normpath(workspace), semantics.syntax_of(PathStyle.native())
    )
    if "\0" in path or not inside:
        raise ConfigError(
            f"{where}: {path!r} leaves the project; a relative path in the project file is "
            f"relative to the project ({workspace}) and must stay inside it"
        )
    return joined


def _narrower_network(new: str, current: str) -> bool:
    return _NETWORK_ORDER[new] <= _NETWORK_ORDER[current]


def _lower_limits(new: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    defaults = Limits()
    for key, value in new.items():
        old = current.get(key, getattr(defaults, key))
        if old is None:
            continue  # no limit before: any limit is lower
        if not isinstance(value, int) or not isinstance(old, int) or value > old:
            return False
    return True


@dataclass(frozen=True)
class Ceiling:
    """The managed file's limits on any policy."""

    path: str
    forbid_modes: tuple[str, ...] = ()
    max_network: str | None = None
    allowed_domains: tuple[str, ...] | None = None
    writable_within: tuple[str, ...] | None = None
    protected: tuple[str, ...] = ()
    deny_read: tuple[str, ...] = ()
    require_audit: bool = False
    min_landlock_abi: int = 1
    require_approval: str | None = None  # the least approval policy anything may run under
    forbid_publish: bool = False  # no server inside may be published on the host's loopback

    def approval(self, asked: str | None) -> str | None:
        """The approval policy to use: ``asked``, raised to ``require_approval``; a flag or
        API call asking for less is an error, never silently weakened or strengthened."""
        floor = self.require_approval
        if floor is None:
            return asked
        if asked is not None and APPROVAL_ORDER[asked] < APPROVAL_ORDER[floor]:
            raise ConfigError(
                f"managed policy {self.path}: require_approval is {floor}; approval {asked} "
                "asks a person less than that"
            )
        return asked or floor

    def permits_network(self, network: str) -> bool:
        """Whether a policy may run with ``network`` ("off", "allowlist", "on")."""
        return not self.max_network or _NETWORK_ORDER[network] <= _NETWORK_ORDER[self.max_network]

    def covers_domain(self, entry: str) -> bool:
        """Whether ``allowed_domains`` covers the allow entry ``entry`` (every port it means;
        a wildcard needs a wildcard at or above it). PolicyError for an invalid entry."""
        if self.allowed_domains is None:
            return True
        from ringfence.policy.netrules import NetRules, parse_rule

        ceiling = NetRules.parse(self.allowed_domains)
        rule = parse_rule(entry)
        probe = ("x." + rule.host) if rule.wildcard else rule.host
        covered = all(ceiling.decide(probe, p).allowed for p in rule.ports)
        if rule.wildcard:
            covered = covered and any(
                c.wildcard and (rule.host == c.host or rule.host.endswith("." + c.host))
                for c in ceiling.allow
            )
        return covered

    def check(self, policy: Policy, *, audit: bool = True) -> Policy:
        """``policy`` with the managed additions, or ConfigError naming what exceeds it."""
        src = f"managed policy {self.path}"
        if policy.mode.value in self.forbid_modes:
            raise ConfigError(f"{src}: forbid_modes forbids mode {policy.mode.value}")
        net = policy.effective_network.value
        if not self.permits_network(net):
            raise ConfigError(f"{src}: max_network is {self.max_network}; network {net} exceeds it")
        if net == "allowlist":
            for entry in policy.allow_domains:
                if not self.covers_domain(entry):
                    raise ConfigError(f"{src}: allowed_domains does not cover {entry!r}")
        if self.writable_within is not None:
            for root in policy.writable_paths():
                if not semantics.first_under(root, self.writable_within):
                    raise ConfigError(f"{src}: writable_within does not include {root}")
        if self.forbid_publish and policy.publish:
            raise ConfigError(
                f"{src}: forbid_publish forbids publishing ports of the sandbox on the host "
                "(--publish)"
            )
        if self.require_audit and not audit:
            raise ConfigError(f"{src}: require_audit forbids running without the audit log")
        if policy.landlock_min_abi < self.min_landlock_abi:
            policy = replace(policy, landlock_min_abi=self.min_landlock_abi)
        extra_p = tuple(p for p in self.protected if p not in policy.protected)
        extra_d = tuple(p for p in self.deny_read if p not in policy.deny_read)
        if extra_p or extra_d:
            policy = replace(
                policy,
                protected=(*policy.protected, *extra_p),
                deny_read=(*policy.deny_read, *extra_d),
            )
        return policy


_CEILING_KEYS = {
    "forbid_modes": list,
    "max_network": str,
    "allowed_domains": list,
    "writable_within": list,
    "protected": list,
    "deny_read": list,
    "require_audit": bool,
    "min_landlock_abi": int,
    "require_approval": str,
    "forbid_publish": bool,
}


def load_ceiling(path: str = MANAGED_PATH) -> Ceiling | None:
    got = read_toml(path)
    if got is None:
        return None
    data, text = got
    kwargs: dict[str, Any] = {"path": path}
    for key, value in data.items():
        where = _where(path, text, key)
        kind = _CEILING_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(_CEILING_KEYS))})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: must be a {kind.__name__}, not {value!r}")
        checked: Any = value
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: must be a list of strings")
            checked = tuple(value)
        if key == "max_network" and checked not in _NETWORK_ORDER:
            raise ConfigError(f"{where}: must be one of off, allowlist, on")
        if key == "require_approval" and checked not in APPROVAL_ORDER:
            raise ConfigError(f"{where}: must be one of never-ask, on-request, untrusted")
        if key == "forbid_modes" and not set(checked) <= set(_MODE_ORDER):
            raise ConfigError(f"{where}: modes are read-only, workspace-write, full-access")
        kwargs[key] = checked
    return Ceiling(**kwargs)


def build_policy(settings: Settings, workspace: str, path_style: PathStyle | None = None) -> Policy:
    """A Policy from layered values (paths already absolute, in ``path_style``, by default
    this machine's)."""
    kwargs: dict[str, Any] = {"workspace": workspace, **policy_fields(settings.values)}
    if path_style is not None:
        kwargs["path_style"] = path_style
    return Policy(**kwargs).validate()


def policy_fields(v: Mapping[str, Any]) -> dict[str, Any]:
    """The Policy fields that config values ``v`` set (paths already absolute); ``limits``
    and ``env`` in full, from their defaults."""
    kwargs: dict[str, Any] = {"limits": Limits(), "env": EnvPolicy()}
    if "limits" in v:
        from ringfence.policy.model import parse_size

        changes: dict[str, Any] = {}
        for k, val in v["limits"].items():
            changes[k] = parse_size(val) if isinstance(val, str) else val
        kwargs["limits"] = replace(Limits(), **changes)
    if "env" in v:
        e = v["env"]
        kwargs["env"] = EnvPolicy(
            inherit=bool(e.get("inherit", True)),
            keep=tuple(e.get("keep", ())),
            unset=tuple(e.get("unset", ())),
            set=dict(e.get("set", {})),
        )
    for key in (*_LISTS, *_BOOLS, *_INTS):
        if key in v:
            kwargs[key] = tuple(v[key]) if key in _LISTS else v[key]
    if "mode" in v:
        kwargs["mode"] = Mode(v["mode"])
    if "network" in v:
        kwargs["network"] = Network(v["network"])
    if "isolation" in v:
        kwargs["isolation"] = Isolation(v["isolation"])
    return kwargs


def values_of(policy: Policy) -> dict[str, Any]:
    """``policy`` as config values (the inverse of :func:`policy_fields`), for a layer over
    a policy a caller built whole (the Python API's): every field, as it stands."""
    v: dict[str, Any] = {key: list(getattr(policy, key)) for key in _LISTS}
    v.update({key: getattr(policy, key) for key in (*_BOOLS, *_INTS)})
    v["mode"] = policy.mode.value
    v["network"] = policy.effective_network.value
    v["isolation"] = policy.isolation.value
    v["limits"] = {f.name: getattr(policy.limits, f.name) for f in fields(Limits)}
    env = policy.env
    v["env"] = {
        "inherit": env.inherit,
        "keep": list(env.keep),
        "unset": list(env.unset),
        "set": dict(env.set),
    }
    return v
