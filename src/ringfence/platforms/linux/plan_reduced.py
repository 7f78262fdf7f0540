"""The Linux plan without namespaces (``--isolation reduced``): Landlock, seccomp and process
rules alone, for hosts without unprivileged user namespaces, and what that does not protect."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ringfence.platforms.linux import landlock, seccomp
from ringfence.platforms.linux.hostfacts import HostFacts
from ringfence.platforms.linux.plan_limits import rlimits
from ringfence.policy.model import Isolation, Network, Policy

if TYPE_CHECKING:
    from ringfence.platforms.linux.plan_model import LinuxPlan

SCOPE_ABI = 6  # Landlock's signal and abstract-unix-socket scopes
NET_ABI = 4  # Landlock's TCP bind/connect rights

# What reduced isolation does not protect, said plainly (explain and doctor print it).
REDUCED_GAPS: tuple[str, ...] = (
    "reduced isolation: Landlock, seccomp and process rules only, no namespaces",
    "NOT protected: protected paths inside writable roots (.git/hooks, .git/config, .envrc, "
    ".vscode, shell rc files, ...): there is no mount namespace to make them read-only",
    "NOT hidden: deny-read paths (~/.ssh, ~/.aws, ...): Landlock cannot take them out of the "
    "read-everywhere rule",
    "NOT hidden: runtime sockets on disk (docker, ssh-agent, D-Bus): connect() is not mediated",
    "NOT stopped: chmod, chown, utime and xattr changes to files you own anywhere (Landlock does "
    "not see metadata)",
    "NOT hidden: ringfence's own state (~/.cache/ringfence: caches, kept plans; the audit log); "
    "a writable root that contains it lets the command write there, as it could your config",
    "visible: your other processes in /proc (Landlock ABI 6 refuses signals to them)",
    "TMPDIR is a private directory under the host's /tmp, removed afterwards (left behind if "
    "ringfence is killed); /tmp and /dev/shm themselves are not writable",
    "background processes are killed when the command ends, but survive if ringfence itself is "
    "SIGKILLed, or, in a session, until the session closes if the command kills its own init "
    "process",
)


def compile_reduced(
    policy: Policy, facts: HostFacts, roots: tuple[str, ...], base: LinuxPlan
) -> LinuxPlan:
    """The plan without namespaces. The private TMPDIR is made by the host at run time and
    added to the Landlock rules by the runner."""
    network = policy.effective_network
    rules = landlock.build_ruleset(
        facts.landlock_abi,
        read_paths=("/",),
        write_paths=roots,
        device_paths=("/dev/null", "/dev/zero", "/dev/full"),
    )
    notes = list(REDUCED_GAPS)
    if not any(c == "pids" for c, _ in base.cgroup_limits):
        notes.append(
            "no process-count limit: RLIMIT_NPROC would count all of your processes, and there "
            "is no pids cgroup you can write to"
        )
    if facts.landlock_abi >= SCOPE_ABI:
        rules = replace(
            rules, scoped=landlock.SCOPE["SIGNAL"] | landlock.SCOPE["ABSTRACT_UNIX_SOCKET"]
        )
    else:
        notes.append(
            "NOT confined (Landlock ABI < 6): signals to and abstract sockets of your "
            "other processes"
        )
    if network is Network.OFF:
        if facts.landlock_abi >= NET_ABI:  # a second wall behind seccomp: no TCP at all
            rules = replace(
                rules,
                handled_net=landlock.ACCESS_NET["BIND_TCP"] | landlock.ACCESS_NET["CONNECT_TCP"],
            )
        notes.append("network off: inet sockets refused by seccomp; unix sockets on disk reachable")
    limits = replace(policy.limits, processes=None)
    return replace(
        base,
        sandboxed=True,
        isolation=Isolation.REDUCED,
        notes=tuple(notes),
        landlock=rules,
        seccomp=seccomp.SeccompPolicy(allow_inet=network is Network.ON),
        rlimits=rlimits(limits),
    )
