"""The effective policy, resolved in one order for every front end.

User config (and its profile) -> the caller's flags -> the project file (which may only
tighten) -> the managed ceiling (which may forbid or add, never loosen silently). The approval
policy rides along the same layers but is not a policy field: a flag wins over the files, and
the managed floor may raise it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ringfence.errors import UsageError
from ringfence.policy import config, paths
from ringfence.policy.model import Policy


@dataclass(frozen=True)
class PolicyRequest:
    """What a front end asks for. ``flags`` applies the caller's own settings on top of the
    user's config files (the CLI's flags). ``policy`` is a policy an API caller built whole:
    it takes the place of the user's config files and the flags (every field of it is set, so
    there is nothing to layer it over), and the project file and the managed ceiling apply to
    it as to the CLI's. ``workspace`` None: the policy's, else the current directory, unless
    that is home or above (then an error says to name one). ``user_config`` False: built-in
    defaults instead of the user's files; ``project_config`` False: no project file."""

    workspace: str | None = None
    cwd: str | None = None
    profile: str | None = None
    flags: Callable[[config.Settings], None] | None = None
    policy: Policy | None = None
    user_config: bool = True
    project_config: bool = True
    approval: str | None = None
    rules: str | None = None
    audit: bool = True


@dataclass(frozen=True)
class Resolved:
    """The validated policy, the command's working directory, the approval step's policy and
    rules file (both None: no approval step), and where each setting came from."""

    policy: Policy
    cwd: str
    approval: str | None = None
    rules: str | None = None
    settings: config.Settings = field(default_factory=config.Settings)
    ceiling: config.Ceiling | None = None


def resolve(req: PolicyRequest) -> Resolved:
    workspace = _workspace(req)
    cwd = paths.existing_dir("--cwd", req.cwd) if req.cwd else os.path.realpath(os.getcwd())
    settings = config.Settings()
    if req.policy is not None:
        if req.profile or req.flags is not None:
            raise UsageError(
                "a profile or flags are layered over the user's config, which a whole Policy "
                "replaces: give either the Policy or the profile, not both"
            )
        return _over_policy(req, req.policy, workspace, cwd)
    if req.user_config:
        config.load_user(settings, os.environ, req.profile)
    elif req.profile:
        raise UsageError(
            f"profile {req.profile!r} is a table of the user's config file, which is not read "
            "when config files are switched off"
        )
    if req.flags is not None:
        req.flags(settings)
    if req.project_config:
        config.apply_project(settings, workspace)
    in_files = settings.values.pop("approval", None), settings.values.pop("rules", None)
    policy = policy_from_settings(settings, workspace)
    policy, approval, ceiling = apply_ceiling(policy, req.approval or in_files[0], audit=req.audit)
    rules = req.rules or in_files[1]
    return Resolved(policy.validate(), cwd, approval, rules, settings, ceiling)


def _workspace(req: PolicyRequest) -> str:
    given = req.policy.workspace if req.policy is not None else ""
    if given and req.workspace and os.path.realpath(given) != os.path.realpath(req.workspace):
        raise UsageError(
            f"workspace {req.workspace} and the policy's workspace {given} differ: give one"
        )
    if given:
        return given  # the caller's policy, as it stands (it is validated with the rest)
    if req.workspace:
        return paths.existing_dir("--workspace", req.workspace)
    return paths.default_workspace(os.getcwd(), os.environ.get("HOME"))


def _over_policy(req: PolicyRequest, policy: Policy, workspace: str, cwd: str) -> Resolved:
    """The project file and the managed ceiling over a policy the caller built whole: only
    the fields the project file tightened change; the rest of the policy stays as given."""
    settings = config.Settings()
    for key, value in config.values_of(policy).items():
        settings.set(key, value, "policy")
    before = dict(settings.values)
    if req.project_config:
        config.apply_project(settings, workspace)
    in_file = settings.values.pop("approval", None)
    changed = {k: v for k, v in settings.values.items() if v != before.get(k)}
    for key in ("protected", "deny_read"):  # the caller's own entries stay as they were
        if key in changed:
            old = getattr(policy, key)
            new = [p for p in changed[key] if p not in old]
            changed[key] = [*old, *(paths.plain(key, os.path.expanduser(p)) for p in new)]
    fields = {k: v for k, v in config.policy_fields(changed).items() if k in changed}
    policy = replace(policy, workspace=workspace, **fields)
    policy, approval, ceiling = apply_ceiling(policy, req.approval or in_file, audit=req.audit)
    return Resolved(policy.validate(), cwd, approval, req.rules, settings, ceiling)


def apply_ceiling(
    policy: Policy, approval: str | None, *, audit: bool = True
) -> tuple[Policy, str | None, config.Ceiling | None]:
    """The managed file's additions and limits on ``policy`` and ``approval``: it binds every
    front end, the Python API included."""
    ceiling = config.load_ceiling()
    if ceiling is None:
        return policy, approval, None
    return ceiling.check(policy, audit=audit), ceiling.approval(approval), ceiling


def approval_floor(approval: str | None) -> str | None:
    """``approval`` raised to the managed file's floor, for a caller whose plan was already
    compiled under the ceiling."""
    ceiling = config.load_ceiling()
    return approval if ceiling is None else ceiling.approval(approval)


def policy_from_settings(settings: config.Settings, workspace: str) -> Policy:
    """Paths from config files are expanded (``~``) and checked like flags; a writable root
    reached through a link planted inside another writable area is refused."""
    v = settings.values
    for key in ("protected", "deny_read"):
        if key in v:
            v[key] = [paths.plain(key, os.path.expanduser(p)) for p in v[key]]
    if "allow_sockets" in v:  # a socket missing on this machine is skipped (explain notes it)
        v["allow_sockets"] = [
            paths.socket_path("allow_sockets", q)
            if os.path.lexists(q := os.path.expanduser(p))
            else paths.plain("allow_sockets", q)
            for p in v["allow_sockets"]
        ]
    if "writable_roots" in v:
        given = [
            paths.absolute("writable root", os.path.expanduser(w)) for w in v["writable_roots"]
        ]
        trusted = [workspace, *(os.path.realpath(g) for g in given)]
        v["writable_roots"] = [paths.writable_root("writable root", w, trusted) for w in given]
    return config.build_policy(settings, workspace)
