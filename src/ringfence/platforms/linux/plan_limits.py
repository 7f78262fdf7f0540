"""The Linux plan's resource limits: rlimits on the command, quotas inside the sandbox's user
namespace, and per-run cgroups. Pure: decided from the policy and the host's facts."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ringfence.errors import UnsupportedError
from ringfence.platforms.linux.hostfacts import HostFacts
from ringfence.policy.model import Limits

if TYPE_CHECKING:
    from ringfence.platforms.linux.plan_model import LinuxPlan

# Nested namespaces are refused by seccomp; a zero quota refuses them a second time.
_NO_NESTED_NAMESPACES = (
    "max_user_namespaces",
    "max_mnt_namespaces",
    "max_pid_namespaces",
    "max_net_namespaces",
    "max_ipc_namespaces",
    "max_uts_namespaces",
    "max_cgroup_namespaces",
    "max_time_namespaces",
    "max_fanotify_groups",
)


def rlimits(limits: Limits) -> tuple[tuple[str, int], ...]:
    pairs = (
        ("NPROC", limits.processes),
        ("NOFILE", limits.open_files),
        ("FSIZE", limits.file_size),
        ("CPU", limits.cpu_seconds),
    )
    return tuple((name, value) for name, value in pairs if value is not None)


def with_cgroups(base: LinuxPlan, limits: Limits, facts: HostFacts) -> LinuxPlan:
    """The memory cap exists only as a cgroup: without one it is refused, never dropped. The
    process cap uses a cgroup where there is one (it then binds root too) and RLIMIT_NPROC
    always."""
    wanted = {"memory": limits.memory, "pids": limits.processes}
    if limits.memory is not None and "memory" not in facts.cgroups:
        raise UnsupportedError(
            f"limit memory={limits.memory // (1 << 20)} MiB: a memory limit needs a cgroup you "
            f"can write to, and there is none here ({facts.cgroup_note or 'no memory controller'})."
            " Run `ringfence doctor`, run under a delegated cgroup, or drop the memory limit"
        )
    return replace(
        base,
        cgroup_sites=tuple((c, v, p) for c, (v, p) in sorted(facts.cgroups.items())),
        cgroup_limits=tuple(
            (c, n) for c, n in wanted.items() if n is not None and c in facts.cgroups
        ),
        cgroup_note=facts.cgroup_note,
    )


# Without a reading of the host's quota: the kernel's defaults (the sandbox gets half).
_HOST_QUOTA_FALLBACK = {"max_inotify_instances": 128, "max_inotify_watches": 8192}


def userns_limits(limits: Limits, facts: HostFacts) -> tuple[tuple[str, int], ...]:
    """Quotas inside the sandbox's user namespace. The kernel charges what the sandbox takes
    to the user's own quota as well, so the sandbox gets less than the whole: half the host
    user's quota unless the policy says otherwise (never more than the host's)."""
    out: list[tuple[str, int]] = [(name, 0) for name in _NO_NESTED_NAMESPACES]
    for name, asked in (
        ("max_inotify_instances", limits.inotify_instances),
        ("max_inotify_watches", limits.inotify_watches),
    ):
        host = facts.user_quotas.get(name, _HOST_QUOTA_FALLBACK[name])
        out.append((name, min(asked, host) if asked is not None else max(1, host // 2)))
    return tuple(out)
