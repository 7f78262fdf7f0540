"""Package-manager caches that work inside the sandbox without opening the user's own.

The user's caches live under ``$HOME``, which the sandbox shows read-only: pip, npm and cargo
then either fail or silently run without a cache. Pointing each tool at a directory of
ringfence's own, writable inside the sandbox, makes installs work and fast again, while the
user's real caches stay untouched and the host's own tools never read what a sandboxed command
wrote there. The directory is per workspace (``statedirs.py``): a cache two projects could write
would let one plant what the other's build runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TOOLS = ("pip", "uv", "npm", "yarn", "pnpm", "cargo", "go", "gradle", "maven")


def cache_environment(root: str, caller_env: Mapping[str, str]) -> dict[str, str]:
    """The variables each tool reads for its cache (and only its cache, where it has one)."""
    d = {tool: os.path.join(root, tool) for tool in TOOLS}
    maven = f"-Dmaven.repo.local={d['maven']}"
    if caller_env.get("MAVEN_OPTS"):
        maven = f"{caller_env['MAVEN_OPTS']} {maven}"
    return {
        "PIP_CACHE_DIR": d["pip"],
        "UV_CACHE_DIR": d["uv"],
        "npm_config_cache": d["npm"],
        "YARN_CACHE_FOLDER": d["yarn"],
        # pnpm's store, in pnpm's own variables: npm warns "Unknown env config" about an
        # npm_config_store_dir. pnpm >= 11 reads pnpm_config_*; pnpm 9 and 10 do not, and put
        # their store under PNPM_HOME (also where `pnpm add -g` installs, so that lands in
        # the writable cache too instead of failing on the read-only home).
        "pnpm_config_store_dir": os.path.join(d["pnpm"], "store"),
        "PNPM_HOME": d["pnpm"],
        # cargo keeps its registry and git caches in CARGO_HOME (rustup's toolchains stay in
        # RUSTUP_HOME); binaries installed with `cargo install` land here too.
        "CARGO_HOME": d["cargo"],
        "GOMODCACHE": os.path.join(d["go"], "mod"),
        "GOCACHE": os.path.join(d["go"], "build"),
        "GRADLE_USER_HOME": d["gradle"],
        "MAVEN_OPTS": maven,
    }


def ensure(root: str) -> bool:
    """Create the cache directories (private to the user); False if that is not possible."""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        for tool in TOOLS:
            os.makedirs(os.path.join(root, tool), mode=0o700, exist_ok=True)
    except OSError:
        return False
    return True
