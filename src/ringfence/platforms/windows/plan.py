"""Policy → WindowsPlan (pure: no I/O; the same inputs give the same plan).

How the boundary is built on Windows (the design OpenAI published for Codex):

- Commands run as a local sandbox user, ``ringfence-offline`` or ``ringfence-online``, made
  by ``ringfence setup``. Their token is *write-restricted* with a capability SID that is
  random per install: a write must pass the ACL check for the user and again for the
  capability, so a place the capability is not granted cannot be written even where the
  user could.
- Writable roots (and the command's private temporary directory) get inheritable allow
  ACEs for the capability and both sandbox users; read-only roots get read ACEs for the
  users (they are other accounts: the real user's profile is not theirs to read).
- Protected paths get inheritable deny ACEs for both users (a write must pass the user's
  check too, so that is enough); the directories between a
  protected path and its root get ``DELETE`` denied on themselves and ``FILE_DELETE_CHILD``
  denied on their parents, the two ways Windows lets an object be renamed or removed.
  Explicit ACEs sit on the object and beat inherited ones, so a deny on ``.git\\hooks`` holds
  under an allow on the workspace; the compiler refuses the one shape where that order would
  flip (a root inside a protected or hidden path).
- ACEs attach to files that exist. Protected *names* (``.git\\hooks`` at any depth) are
  enforced for the matches the runner found before the command (``WindowsFacts.found``);
  a match created by the command itself is not covered (see ``docs/platforms.md``).
- Paths reach the compiler resolved (junctions and symlinks followed by the runner,
  ``WindowsFacts.realpaths``), in canonical spelling (``policy.winpaths``), and are compared
  case-insensitively. ACEs are never placed on a drive root, a user profile root or one of
  its ancestors, or a registry hive file.
- Network: ``off`` and ``allowlist`` run as the offline user, whose firewall rules block
  every outbound connection except TCP to the loopback proxy port (the Windows Firewall lets
  block rules win over allow rules, so the exception is written as blocks of everything
  else); ``on`` runs as the online user.

Not run on Windows yet: plans are compiled and property-tested on Linux only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ringfence.errors import PolicyError, UnenforceableError
from ringfence.network.proxy_env import PROXY_PORT
from ringfence.platforms.windows.setup import (
    HIVE_FILES,
    Action,
    AddAce,
    AddFirewallRule,
    CreateUser,
    StoreSecret,
)
from ringfence.policy import defaults_windows, semantics, winpaths
from ringfence.policy.model import Mode, Network, PathStyle, Policy, changed_limits
from ringfence.policy.semantics import WINDOWS

OFFLINE_USER = "ringfence-offline"
ONLINE_USER = "ringfence-online"
_SID = re.compile(r"^S-1-\d+(-\d+)+$")
LOOPBACK = "127.0.0.0-127.255.255.255,::1"
NOT_LOOPBACK = (
    "0.0.0.0-126.255.255.255,128.0.0.0-255.255.255.255,"
    "::,::2-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
)


@dataclass(frozen=True)
class WindowsInstall:
    """What ``ringfence setup`` made and stored: the capability SID (random per install, so
    no other program's grants can include it), the sandbox users' SIDs, the proxy port."""

    capability_sid: str
    offline_sid: str
    online_sid: str
    proxy_port: int = PROXY_PORT
    offline_user: str = OFFLINE_USER
    online_user: str = ONLINE_USER
    example: bool = False  # placeholders, for ``explain`` on a machine without an install

    def __post_init__(self) -> None:
        for name in ("capability_sid", "offline_sid", "online_sid"):
            if not _SID.match(getattr(self, name)):
                raise PolicyError(f"windows install: {name} {getattr(self, name)!r} is not a SID")
        if not 1024 <= self.proxy_port <= 65535:
            raise PolicyError(f"windows install: proxy port {self.proxy_port} is not 1024-65535")

    @staticmethod
    def new_capability_sid() -> str:
        """``S-1-15-3-`` (a capability) and 128 random bits: unguessable, unique per install."""
        return "S-1-15-3-" + "-".join(str(secrets.randbits(32)) for _ in range(4))

    @classmethod
    def placeholder(cls) -> WindowsInstall:
        return cls(
            capability_sid="S-1-15-3-0-0-0-0",
            offline_sid="S-1-5-21-0-0-0-1001",
            online_sid="S-1-5-21-0-0-0-1002",
            example=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowsInstall:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"windows install: unknown keys {sorted(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class WindowsFacts:
    """What the compiler needs to know about the machine, gathered by the runner on Windows.

    ``realpaths`` maps a canonical path to where its junctions and symlinks lead; ``found``
    lists existing paths matching protected names under the writable roots; ``existing`` is
    the set of policy paths that exist (``None``: assume all do, as ``explain`` does);
    ``path_dirs`` are the PATH directories, read-granted when they lie in the user's
    profile so the user's own tools start; ``folders`` says where ``APPDATA`` and
    ``LOCALAPPDATA`` are when they are not in their default places under ``home`` (the
    default hidden paths are placed in both, see ``policy.defaults_windows``).
    """

    home: str
    temp: str
    profile_roots: tuple[str, ...] = ()
    realpaths: Mapping[str, str] = field(default_factory=dict)
    found: tuple[str, ...] = ()
    existing: frozenset[str] | None = None
    path_dirs: tuple[str, ...] = ()
    folders: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowsPlan:
    sandboxed: bool
    user: str = ""
    user_sid: str = ""
    restricting_sids: tuple[str, ...] = ()
    network: str = "off"
    proxy_port: int | None = None
    writable: tuple[str, ...] = ()
    read_roots: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    protected_names: tuple[str, ...] = ()
    deny_read: tuple[str, ...] = ()
    aces: tuple[AddAce, ...] = ()
    firewall: tuple[AddFirewallRule, ...] = ()
    unenforced: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def firewall_rules(install: WindowsInstall) -> tuple[AddFirewallRule, ...]:
    """The offline user's outbound blocks: everything but TCP to loopback:proxy_port."""
    return _firewall_rules(install.offline_user, install.proxy_port)


def _firewall_rules(user: str, port: int) -> tuple[AddFirewallRule, ...]:
    return (
        AddFirewallRule("ringfence offline: not loopback", user, "any", NOT_LOOPBACK),
        AddFirewallRule(
            "ringfence offline: loopback tcp but the proxy",
            user,
            "tcp",
            LOOPBACK,
            f"1-{port - 1},{port + 1}-65535",
        ),
        AddFirewallRule("ringfence offline: loopback udp", user, "udp", LOOPBACK),
    )


def setup_actions(
    offline_user: str = OFFLINE_USER,
    online_user: str = ONLINE_USER,
    proxy_port: int = PROXY_PORT,
) -> list[Action]:
    """The elevated, once-per-machine part: users, their stored passwords, firewall rules
    (which name the user, so they come after it)."""
    return [
        CreateUser(offline_user),
        StoreSecret(offline_user),
        CreateUser(online_user),
        StoreSecret(online_user),
        *_firewall_rules(offline_user, proxy_port),
    ]


def refuse_unenforceable(policy: Policy) -> None:
    """What the Windows backend cannot enforce is refused by its compiler, so no front end
    keeps its own list and a library caller never gets less than it asked for."""
    for wanted, setting, why in (
        (bool(policy.expose_ports), "--expose-port", "the offline user's firewall blocks it"),
        (bool(policy.allow_sockets), "--allow-socket", "no Windows grant is compiled for it"),
        (
            bool(policy.publish),
            "--publish",
            "no firewall rule lets the host reach a server inside yet",
        ),
    ):
        if wanted:
            raise UnenforceableError(setting, "Windows", why)
    for flag in changed_limits(policy.limits):  # the job object sets none of them yet
        raise UnenforceableError(f"--limit {flag}", "Windows", "no job-object limits yet")


def compile_windows(policy: Policy, facts: WindowsFacts, install: WindowsInstall) -> WindowsPlan:
    policy.validate()
    if policy.path_style != PathStyle.WINDOWS:
        raise PolicyError(
            "windows plan: the policy holds POSIX paths; give Windows paths (C:\\...) "
            "for the workspace and every other path"
        )
    if not policy.sandboxed:
        return WindowsPlan(False, network="on", notes=("full-access: no sandbox user, no ACEs",))
    refuse_unenforceable(policy)
    resolve = _Resolver(facts)
    network = policy.effective_network
    online = network is Network.ON
    user, user_sid = (
        (install.online_user, install.online_sid)
        if online
        else (install.offline_user, install.offline_sid)
    )
    # Allow ACEs name the capability too: a write passes only if both the user and the
    # capability are granted. Deny ACEs need only the users: a write-restricted token's reads
    # are checked against the user alone, and its writes must pass the user's check as well.
    principals = (install.capability_sid, install.offline_sid, install.online_sid)
    users = (install.offline_sid, install.online_sid)

    writable = _unique(resolve(p) for p in policy.writable_paths())
    temp = resolve(facts.temp)
    granted = _unique([*writable, temp])
    read_only = () if writable else (resolve(policy.workspace),)
    protected = _unique(resolve(p) for p in policy.protected)
    deny_read = _unique(
        resolve(p) for p in policy.deny_read_paths(facts.home, "windows", folders=facts.folders)
    )
    names = policy.protected_names("windows") if writable else ()
    found = _unique(
        f
        for f in (resolve(x) for x in facts.found)
        if any(
            semantics.is_under(f, r, WINDOWS) and semantics.name_covers(n, f[len(r) :], WINDOWS)
            for r in writable
            for n in names
        )
    )
    exists = (lambda p: True) if facts.existing is None else _exists_in(facts.existing | set(found))
    anchored: tuple[str, ...] = ()
    if policy.default_protected and writable:
        # The places a file makes Windows run a program later, as paths too: a root that is
        # Documents itself holds PowerShell\, which the relative name does not reach. Only
        # those that exist: an ACE needs the file.
        anchored = tuple(
            a
            for a in (
                resolve(x) for x in defaults_windows.persistence_paths(facts.home, facts.folders)
            )
            if exists(a) and any(semantics.is_strictly_under(a, r, WINDOWS) for r in granted)
        )
    deny_write = _unique([*protected, *found, *anchored])
    tools = _unique(
        resolve(d)
        for d in facts.path_dirs
        if semantics.is_strictly_under(d, facts.home, WINDOWS)
        and not any(semantics.overlaps(d, x, WINDOWS) for x in deny_read)
    )

    _refuse_dangerous([*granted, *read_only, *tools], facts)
    for root in [*granted, *read_only]:
        for p in [*deny_write, *deny_read]:
            if semantics.is_strictly_under(root, p, WINDOWS):
                raise PolicyError(
                    f"windows plan: {root} lies inside the protected or hidden path {p}; its "
                    "own allow ACE would outrank the inherited deny. Grant a directory "
                    "outside it"
                )
            if winpaths.key(root) == winpaths.key(p):
                raise PolicyError(f"windows plan: {root} is both granted and protected or hidden")

    aces: list[AddAce] = []
    unenforced: list[str] = []
    for root in granted:
        aces += [AddAce(root, sid, "modify") for sid in principals]
    for root in (*read_only, *tools):
        aces += [AddAce(root, sid, "read") for sid in users]
    user_deny_read = {winpaths.key(resolve(p)) for p in policy.deny_read}
    for p in deny_write:
        if not exists(p):
            if p in protected and any(semantics.is_under(p, r, WINDOWS) for r in granted):
                # The command could create it: a rule that would not hold is refused.
                raise PolicyError(
                    f"windows plan: protected path {p} does not exist, and a Windows ACL needs "
                    "the file; create it first (even empty) or drop --protect"
                )
            unenforced.append(f"protected path {p} does not exist: Windows ACLs need the file")
            continue
        aces += [AddAce(p, sid, "write", deny=True) for sid in users]
        root = next((r for r in granted if semantics.is_under(p, r, WINDOWS)), None)
        if root is None:
            continue
        cur = p
        while winpaths.key(cur) != winpaths.key(root):
            if cur != p:
                aces += [AddAce(cur, sid, "delete", deny=True, inherit=False) for sid in users]
            up = winpaths.parent(cur)
            aces += [AddAce(up, sid, "delete_child", deny=True, inherit=False) for sid in users]
            cur = up
    for p in deny_read:
        if exists(p):
            aces += [AddAce(p, sid, "read_write", deny=True) for sid in users]
        elif any(semantics.is_under(p, r, WINDOWS) for r in (*granted, *read_only, *tools)):
            if winpaths.key(p) in user_deny_read and any(
                semantics.is_under(p, r, WINDOWS) for r in granted
            ):
                raise PolicyError(
                    f"windows plan: hidden path {p} does not exist, and a Windows ACL needs the "
                    "file; create it first or drop --deny-read"
                )
            unenforced.append(f"hidden path {p} does not exist: Windows ACLs need the file")
    aces = list(dict.fromkeys(aces))

    notes = ["not run on Windows yet: compiled and property-tested on Linux only"]
    if install.example:
        notes.append("example install: the SIDs are placeholders until `ringfence setup` runs")
    if names:
        notes.append(
            "protected names are enforced for the matches that exist before the command; a "
            "new .git\\hooks created by the command is not covered"
        )
    files, fileless = defaults_windows.PERSISTENCE_NOTES
    if defaults_windows.PERSISTENCE_PROTECTED[0] in names:
        notes.append(files)
    notes.append(fileless)
    if network is Network.OFF:
        notes.append(
            f"network off: the firewall leaves only TCP to 127.0.0.1:{install.proxy_port}, "
            "where ringfence's proxy answers with refusals"
        )
    elif network is Network.ALLOWLIST:
        notes.append(
            f"network allowlist: the firewall leaves only TCP to 127.0.0.1:{install.proxy_port}; "
            "the proxy there decides by name"
        )
    if policy.mode is Mode.READ_ONLY:
        notes.append("read-only: only the private temporary directory is writable")
    return WindowsPlan(
        sandboxed=True,
        user=user,
        user_sid=user_sid,
        restricting_sids=(install.capability_sid,),
        network=network.value,
        proxy_port=None if online else install.proxy_port,
        writable=granted,
        read_roots=(*read_only, *tools),
        protected=deny_write,
        protected_names=names,
        deny_read=deny_read,
        aces=tuple(aces),
        firewall=() if online else firewall_rules(install),
        unenforced=tuple(unenforced),
        notes=tuple(notes),
    )


class _Resolver:
    """Canonical spelling, then junctions and symlinks followed (from the facts), compared and
    deduplicated case-insensitively."""

    def __init__(self, facts: WindowsFacts) -> None:
        self.map = {winpaths.key(k): v for k, v in facts.realpaths.items()}

    def __call__(self, path: str) -> str:
        p = winpaths.normalize("windows plan", path)
        real = self.map.get(winpaths.key(p))
        return winpaths.normalize("windows plan", real) if real else p


def _unique(paths: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for p in paths:
        out.setdefault(winpaths.key(p), p)
    return tuple(out.values())


def _exists_in(existing: frozenset[str]) -> Callable[[str], bool]:
    keys = {winpaths.key(e) for e in existing}
    return lambda p: winpaths.key(p) in keys


def _refuse_dangerous(roots: Iterable[str], facts: WindowsFacts) -> None:
    profiles = [winpaths.normalize("profile root", r) for r in (facts.home, *facts.profile_roots)]
    for root in roots:
        if winpaths.parent(root) == root:
            raise PolicyError(f"windows plan: refusing to grant the drive or share root {root}")
        if root.rsplit("\\", 1)[-1].casefold() in HIVE_FILES:
            raise PolicyError(f"windows plan: refusing to grant the registry hive file {root}")
        for prof in profiles:
            if semantics.is_under(prof, root, WINDOWS):
                raise PolicyError(
                    f"windows plan: refusing to grant {root}: it is the user profile {prof} or "
                    "holds it, and ACEs there break logons. Grant a directory inside it"
                )
