"""Policy → Seatbelt profile (pure: no I/O, the same inputs give the same text).

The profile denies by default, then allows, then denies again: in SBPL the last rule that
matches decides, so the protected and deny-read rules come after the grants they carve out
of. Paths are canonicalised first (``/var`` → ``/private/var``, ``/tmp`` → ``/private/tmp``,
``/etc`` → ``/private/etc``: Seatbelt sees the real paths), and the enforcement step must
pass paths already resolved through symlinks (``MacFacts.realpaths``).

Every deny rule, ``(deny default)`` included, carries ``(with message "TAG")``: Seatbelt
appends that text to the denial it writes to the unified log, so ``monitor.py`` can pick this
session's denials out of everyone else's with ``log stream`` (the approach Anthropic's
sandbox-runtime takes; see ``monitor.py``). The tag attributes, it does not authenticate: it is
no secret, and a process could write a look-alike line to the log itself.

Not run on a Mac yet: the profile's text is golden-tested and structurally checked here.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ringfence.errors import PolicyError, UnenforceableError
from ringfence.network.proxy_env import PROXY_PORT
from ringfence.platforms.macos import sbpl
from ringfence.policy import defaults_macos, semantics
from ringfence.policy.model import Mode, Network, Policy, changed_limits
from ringfence.policy.semantics import MACOS

SANDBOX_EXEC = "/usr/bin/sandbox-exec"  # by absolute path: never whatever is first on PATH
FIRMLINKS = (("/var", "/private/var"), ("/tmp", "/private/tmp"), ("/etc", "/private/etc"))
# Devices every command may write or ioctl (terminals, the bit bucket).
DEVICES = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper")
TTY_REGEX = r"^/dev/ttys[0-9]+$"
# System services a shell and common tools look up (name resolution is done by the proxy).
MACH_SERVICES = (
    "com.apple.system.logger",
    "com.apple.system.notification_center",
    "com.apple.system.opendirectoryd.libinfo",
    "com.apple.SecurityServer",
    "com.apple.coreservices.launchservicesd",
)
# Tags: letters, digits, ``_`` and ``-`` only, so a tag needs no quoting in a profile or in a
# ``log`` predicate and cannot be confused with the text around it in a log line.
TAG_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
# The tag of a profile that is only shown (``ringfence explain``), never run: the runner makes a
# fresh tag for every command (``new_tag``) and refuses this one.
EXPLAIN_TAG = "ringfence_explain"


def new_tag() -> str:
    """A fresh session tag: unguessable enough that two sessions never share one."""
    return "ringfence_" + secrets.token_hex(12)


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid session tag, else :class:`PolicyError`."""
    if not TAG_RE.fullmatch(tag):
        raise PolicyError(
            f"macOS session tag {tag!r}: 8 to 64 letters, digits, '_' or '-' expected"
        )
    return tag


@dataclass(frozen=True)
class MacFacts:
    """What the compiler needs to know about the Mac; gathered by ``execute.gather_facts``."""

    home: str
    tmpdir: str  # the command's private temporary directory (writable)
    realpaths: Mapping[str, str] = field(default_factory=dict)  # path -> symlinks resolved
    tag: str = EXPLAIN_TAG  # put on every deny rule; the runner passes a fresh one (new_tag)
    proxy_port: int = PROXY_PORT  # where the runner's filtering proxy listens (allowlist)


@dataclass(frozen=True)
class SeatbeltPlan:
    sandboxed: bool
    profile: str
    argv_prefix: tuple[str, ...]
    writable: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    protected_names: tuple[str, ...] = ()
    deny_read: tuple[str, ...] = ()
    network: str = "off"
    proxy_port: int | None = None
    notes: tuple[str, ...] = ()
    tag: str = ""  # the session tag on every deny rule ("" for full access: no profile)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical(path: str, facts: MacFacts) -> str:
    """The path Seatbelt sees: normalised, symlinks resolved (from the facts), firmlinks
    followed. A path that still contains ``..`` after that is refused."""
    p = posixpath.normpath(facts.realpaths.get(path, path))
    if not p.startswith("/") or "/../" in p + "/":
        raise PolicyError(f"policy: {path!r} does not resolve to an absolute path")
    for short, real in FIRMLINKS:
        if semantics.is_under(p, short):  # firmlinks are spelled exactly
            p = real + p[len(short) :]
    return p


def name_regex(root: str, name: str) -> str:
    """A regex for protected name pattern ``name`` (``*`` = one component, ``**`` = zero or
    more, as for the Linux name guard) at any depth under ``root``: the path and everything
    beneath it, whether or not it exists yet, in any letter case."""
    parts = name.split("/")
    while parts and parts[-1] == "**":  # "beneath" is included anyway
        parts.pop()
    body = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            body += "([^/]+/)*"
        else:
            body += ("[^/]+" if part == "*" else sbpl.ere_caseless(part)) + ("" if last else "/")
    return f"^{sbpl.ere_caseless(root)}(/.*)?/{body}(/.*)?$"


def path_regex(path: str) -> str:
    """A regex for ``path`` and everything beneath it, in any letter case."""
    return f"^{sbpl.ere_caseless(path)}(/.*)?$"


def refuse_unenforceable(policy: Policy) -> None:
    """What a Seatbelt profile cannot say is refused here, by the compiler, so no front end
    keeps its own list and a library caller never gets less than it asked for."""
    for flag in changed_limits(policy.limits):  # Seatbelt has no resource limits
        raise UnenforceableError(f"--limit {flag}", "macOS", "no resource limits are set there")
    if policy.expose_ports:
        raise UnenforceableError("--expose-port", "macOS", "no rule opens a port yet")
    if policy.publish:
        raise UnenforceableError(
            "--publish", "macOS", "no Seatbelt rule lets a server inside listen for the host yet"
        )


def compile_macos(policy: Policy, facts: MacFacts) -> SeatbeltPlan:
    policy.validate()
    tag = check_tag(facts.tag)
    if not isinstance(facts.proxy_port, int) or not 0 < facts.proxy_port < 65536:
        raise PolicyError(f"macos plan: proxy port {facts.proxy_port!r} is not 1-65535")
    if not policy.sandboxed:
        return SeatbeltPlan(False, "", (), notes=("full-access: no profile, no boundary",))
    refuse_unenforceable(policy)
    network = policy.effective_network
    writable = tuple(dict.fromkeys(canonical(p, facts) for p in policy.writable_paths()))
    tmp = canonical(facts.tmpdir, facts)
    protected = tuple(dict.fromkeys(canonical(p, facts) for p in policy.protected))
    names = policy.protected_names("macos") if writable else ()
    if policy.default_protected and writable:
        # The places a file makes the Mac run a program later, as paths too: a root that is
        # ~/Library itself holds LaunchAgents/, which the relative name does not reach.
        anchored = (canonical(p, facts) for p in defaults_macos.persistence_paths(facts.home))
        protected = tuple(
            dict.fromkeys(
                [
                    *protected,
                    *(
                        a
                        for a in anchored
                        if any(semantics.is_strictly_under(a, r, MACOS) for r in writable)
                    ),
                ]
            )
        )
    deny_read = tuple(
        dict.fromkeys(canonical(p, facts) for p in policy.deny_read_paths(facts.home, "macos"))
    )
    s = sbpl.string
    why = f" (with message {s(tag)})"  # on every deny rule: Seatbelt logs it with the denial
    out = [
        "(version 1)",
        f"(deny default{why})",
        "; processes: run programs, fork, signal only inside this sandbox",
        "(allow process-exec)",
        "(allow process-fork)",
        "(allow process-info* (target same-sandbox))",
        "(allow signal (target same-sandbox))",
        "(allow sysctl-read)",
        "(allow ipc-posix-shm)",
        "(allow ipc-posix-sem)",
        "(allow user-preference-read)",
        "(allow pseudo-tty)",
        "(allow mach-lookup " + " ".join(f"(global-name {s(m)})" for m in MACH_SERVICES) + ")",
        "; reads: everywhere, except the deny-read paths below",
        "(allow file-read*)",
        "; writes: the writable roots and the private temporary directory",
        "(allow file-write* " + " ".join(f"(subpath {s(p)})" for p in (*writable, tmp)) + ")",
        "(allow file-write-data file-ioctl "
        + " ".join(f"(literal {s(d)})" for d in DEVICES)
        + f" (regex {sbpl.regex_literal(TTY_REGEX)}))",
    ]
    if network is Network.ON:
        out += ["; network: on", "(allow network*)", "(allow system-socket)"]
    elif network is Network.ALLOWLIST:
        out += [
            f"; network: only the filtering proxy on localhost:{facts.proxy_port}",
            f'(allow network-outbound (remote ip "localhost:{facts.proxy_port}"))',
        ]
    else:
        out.append("; network: off (denied by default)")
    for sock in policy.allow_sockets:
        path = s(canonical(sock, facts))
        out.append(f"(allow network-outbound (remote unix-socket (path-literal {path})))")
    r = sbpl.regex_literal
    carve = [f"(regex {r(path_regex(p))})" for p in protected]
    carve += [f"(regex {r(name_regex(root, n))})" for root in writable for n in names]
    if carve:
        out += [
            "; protected: read-only even inside a writable root, names that do not exist yet too",
            "(deny file-write* " + " ".join(carve) + why + ")",
        ]
    ancestors = _ancestors(protected, writable)
    if ancestors:
        out += [
            "; their directories cannot be renamed or removed (that would move them away)",
            "(deny file-write-unlink "
            + " ".join(f"(regex {r('^' + sbpl.ere_caseless(a) + '$')})" for a in ancestors)
            + why
            + ")",
        ]
    if deny_read:
        out += [
            "; deny-read: hidden entirely (read and write)",
            "(deny file-read* file-write* "
            + " ".join(f"(regex {r(path_regex(p))})" for p in deny_read)
            + why
            + ")",
        ]
    text = "\n".join(out) + "\n"
    sbpl.check(text, tag=tag)
    notes = ["not run on a Mac yet: compiled and checked on Linux only"]
    files, fileless = defaults_macos.PERSISTENCE_NOTES
    if defaults_macos.PERSISTENCE_PROTECTED[0] in names:
        notes.append(files)
    notes.append(fileless)
    if network is Network.ALLOWLIST:
        notes.append(
            f"network allowlist: Seatbelt lets TCP reach localhost:{facts.proxy_port} only; "
            "the proxy there decides by name"
        )
    if policy.mode is Mode.READ_ONLY:
        notes.append("read-only: only the private temporary directory is writable")
    return SeatbeltPlan(
        sandboxed=True,
        profile=text,
        argv_prefix=(SANDBOX_EXEC, "-p", text),
        writable=(*writable, tmp),
        protected=protected,
        protected_names=names,
        deny_read=deny_read,
        network=network.value,
        proxy_port=facts.proxy_port if network is Network.ALLOWLIST else None,
        notes=tuple(notes),
        tag=tag,
    )


def _ancestors(protected: tuple[str, ...], roots: tuple[str, ...]) -> tuple[str, ...]:
    """Every directory between a protected path and the writable root holding it, the path
    itself included (renaming any of them would take the protected path along). Compared in
    any letter case, as APFS does."""
    out: dict[str, None] = {}
    for p in protected:
        root = semantics.first_under(p, roots, MACOS)
        if root is None:
            continue
        cur = p
        while semantics.is_strictly_under(cur, root, MACOS):
            out.setdefault(cur, None)
            cur = posixpath.dirname(cur)
    return tuple(out)
