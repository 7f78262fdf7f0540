"""Rebuild the command's environment from the caller's: secrets out, sandbox facts in.

A coding agent's environment routinely holds API keys and agent sockets; the command needs
neither, and anything it can read it can leak. Pure function, so ``explain`` shows exactly
what the command will see.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping

from ringfence.policy import defaults
from ringfence.policy.model import EnvPolicy, Policy


def scrubbed_names(env: Mapping[str, str], policy: EnvPolicy) -> list[str]:
    """Names of ``env`` that the policy drops, sorted, for reports."""
    keep = set(policy.keep)
    out = []
    for name in env:
        if name in keep:
            continue
        if is_secret_name(name) or name in defaults.AGENT_ENV_NAMES or name in policy.unset:
            out.append(name)
    return sorted(out)


_ALLOWED = frozenset(defaults.SECRET_ENV_ALLOW)


@functools.lru_cache(maxsize=4096)  # a session server checks every caller's environment
def is_secret_name(name: str) -> bool:
    """Whether ``name`` matches a secret pattern and is not one of the documented non-secret
    names those patterns would also catch (``AWS_REGION``, ``AZURE_CONFIG_DIR`` ...)."""
    upper = name.upper()
    if upper in _ALLOWED:
        return False
    return any(fnmatch.fnmatchcase(upper, pat) for pat in defaults.SECRET_ENV_PATTERNS)


def sandbox_variables(policy: Policy) -> dict[str, str]:
    """``RINGFENCE_*``: what a command (or a tool it starts) may read to know it is sandboxed,
    the same on every platform."""
    return {
        "RINGFENCE_SANDBOX": "1" if policy.sandboxed else "0",
        "RINGFENCE_MODE": policy.mode.value,
        "RINGFENCE_NETWORK": policy.effective_network.value,
    }


def build_environment(
    caller_env: Mapping[str, str],
    policy: EnvPolicy,
    sandbox_vars: Mapping[str, str],
) -> dict[str, str]:
    """The environment the command starts with.

    ``sandbox_vars`` (``RINGFENCE_*``, ``TMPDIR``) are applied after the caller's variables and
    before ``policy.set``: a user may override TMPDIR on purpose, but a command cannot pretend
    to be unsandboxed through an inherited ``RINGFENCE_SANDBOX``.
    """
    env: dict[str, str] = {}
    if policy.inherit:
        dropped = set(scrubbed_names(caller_env, policy))
        env = {k: v for k, v in caller_env.items() if k not in dropped}
    else:
        env = {k: caller_env[k] for k in policy.keep if k in caller_env}
    for name in list(env):
        if name.startswith("RINGFENCE_"):
            del env[name]
    env.update(sandbox_vars)
    env.update(policy.set)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env
