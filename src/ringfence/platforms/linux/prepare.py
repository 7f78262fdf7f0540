"""The Linux plan for a policy on this host: host facts gathered now, then the pure compiler."""

from __future__ import annotations

import os

from ringfence.platforms.linux import hostfacts, landlock
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.model import Policy


def facts(policy: Policy) -> hostfacts.HostFacts:
    abi = landlock.abi_version() if policy.sandboxed else 0
    return hostfacts.gather(policy, env=os.environ, landlock_abi=abi)


def plan(policy: Policy, cwd: str) -> LinuxPlan:
    return compile_linux(policy, facts(policy), cwd=cwd)
