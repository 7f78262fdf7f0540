"""From the command line's flags to the engine's requests: policy settings, limits, the
command itself, and the approval gate."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Sequence

from ringfence.engine.approval import ApprovalGate, Approver
from ringfence.engine.resolve import PolicyRequest, Resolved, resolve
from ringfence.errors import PolicyError
from ringfence.policy import config, paths
from ringfence.policy.model import LIMIT_FLAGS, Limits, parse_size


def resolve_flags(ns: argparse.Namespace) -> Resolved:
    """The effective policy for these flags: user config (and ``--profile``), the flags, the
    project file, the managed ceiling (see engine/resolve.py)."""
    return resolve(
        PolicyRequest(
            workspace=ns.workspace,
            cwd=ns.cwd,
            profile=ns.profile,
            flags=functools.partial(apply_flags, ns),
            project_config=not ns.ignore_project_config,
            approval=getattr(ns, "approval", None),
            rules=getattr(ns, "rules", None),
            audit=not getattr(ns, "no_audit", False),
        )
    )


def gate_of(resolved: Resolved, approver: Approver | None = None) -> ApprovalGate | None:
    """The approval gate the resolved settings ask for (None: no approval step)."""
    return ApprovalGate.build(resolved.approval, resolved.rules, approver)


def apply_flags(
    ns: argparse.Namespace,
    s: config.Settings,
    path: Callable[[str, str], str] | None = None,
) -> None:
    """Flags the user gave, on top of the config files: scalars replace, lists add. ``path``
    reads every path flag instead of this machine's rules (Windows paths, for explain)."""
    for key, value in (
        ("mode", ns.mode),
        ("network", ns.network),
        ("isolation", ns.isolation),
        ("landlock_min_abi", ns.landlock_min_abi),
    ):
        if value is not None:
            s.set(key, value, "flag")
    for key, flag_on, value in (
        ("default_protected", ns.no_default_protect, False),
        ("default_deny_read", ns.no_default_deny_read, False),
        ("strict_git", ns.strict_git, True),
        ("allow_local_targets", ns.allow_local_targets, True),
        ("tool_caches", ns.no_tool_caches, False),
    ):
        if flag_on:
            s.set(key, value, "flag")
    for key, items in (
        ("writable_roots", [(path or paths.absolute)("--writable", w) for w in ns.writable]),
        ("protected", [(path or paths.plain)("--protect", p) for p in ns.protect]),
        ("deny_read", [(path or paths.plain)("--deny-read", p) for p in ns.deny_read]),
        (
            "allow_sockets",
            [(path or paths.socket_path)("--allow-socket", p) for p in ns.allow_socket],
        ),
        ("allow_domains", list(ns.allow_domain)),
        ("deny_domains", list(ns.deny_domain)),
        ("expose_ports", list(ns.expose_port)),
        ("publish", list(ns.publish)),
    ):
        s.add(key, items, "flag")
    if ns.limit:
        merged = dict(s.values.get("limits", {}))
        merged.update(limit_changes(ns.limit))
        s.set("limits", merged, "flag")
    env_flags = ns.clean_env or ns.keep_env or ns.unset_env or ns.env
    if env_flags:
        env = dict(s.values.get("env", {}))
        if ns.clean_env:
            env["inherit"] = False
        env["keep"] = [*env.get("keep", []), *ns.keep_env]
        env["unset"] = [*env.get("unset", []), *ns.unset_env]
        sets = dict(env.get("set", {}))
        for item in ns.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise PolicyError(f"--env: {item!r} is not K=V")
            sets[key] = value
        env["set"] = sets
        s.set("env", env, "flag")


_LIMIT_KEYS = {flag: name for name, flag in LIMIT_FLAGS.items()}
_LIFTABLE = {"processes", "memory", "open_files", "cpu_seconds", "file_size"}


def limits_from_args(items: Sequence[str]) -> Limits:
    """``--limit KEY=VALUE`` flags on top of the default limits."""
    return dataclasses.replace(Limits(), **limit_changes(items))  # type: ignore[arg-type]


def limit_changes(items: Sequence[str]) -> dict[str, int | str | None]:
    """``--limit KEY=VALUE`` flags as {Limits field: value}."""
    changes: dict[str, int | str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        field_name = _LIMIT_KEYS.get(key.strip())
        if not sep or field_name is None:
            raise PolicyError(
                f"--limit: {item!r} is not KEY=VALUE with KEY one of {', '.join(_LIMIT_KEYS)}"
            )
        value = value.strip()
        if value.lower() in ("none", "unlimited"):
            if field_name not in _LIFTABLE:
                raise PolicyError(f"--limit: {key} cannot be lifted, give a value")
            changes[field_name] = None
        elif field_name in ("tmp_size", "shm_size", "file_size", "memory"):
            size = parse_size(value)
            if field_name in ("file_size", "memory") and isinstance(size, str):
                raise PolicyError(f"--limit: {key} takes a size, not a percentage")
            changes[field_name] = size
        elif value.isdigit() and int(value) > 0:
            changes[field_name] = int(value)
        else:
            raise PolicyError(f"--limit: {key}={value!r} must be a positive whole number")
    return changes


def command_of(ns: argparse.Namespace, *, required: bool) -> list[str]:
    """The command the flags name: ``-- CMD [ARGS...]``, or ``-c LINE`` where the subcommand
    has it (run, check)."""
    argv = list(ns.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    has_line = hasattr(ns, "script")
    if has_line and ns.script is not None:
        if argv:
            raise PolicyError("give either -c LINE or -- CMD [ARGS...], not both")
        if not ns.script.strip():
            raise PolicyError("-c: the command line is empty")
        return shell_line(ns.script)
    if required and not argv:
        usage = f"ringfence {ns.command} [flags] -- CMD [ARGS...]"
        raise PolicyError(
            f"no command given: use `{usage}`" + (" or `-c LINE`" if has_line else "")
        )
    if argv and not argv[0]:
        raise PolicyError("the command name is empty")
    return argv


def shell_line(line: str) -> list[str]:
    """The argv that runs a shell command line: bash where the host has it (agents write
    bash), sh otherwise. ``check -c`` and ``run -c`` agree on it."""
    import shutil

    return ["bash" if shutil.which("bash") else "sh", "-c", line]
