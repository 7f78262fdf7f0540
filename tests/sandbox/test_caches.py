"""Package-manager caches: redirected to ringfence's own writable directory, the user's own
caches untouched, and a real `pip install` into a venv in the workspace works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Runner

from ringfence.policy import statedirs

pytestmark = pytest.mark.sandbox

PYPI = (
    "--network",
    "allowlist",
    "--allow-domain",
    "pypi.org",
    "--allow-domain",
    "files.pythonhosted.org",
)


def _cache_root(rf: Runner, ws: Path) -> Path:
    base = Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence"
    return Path(statedirs.workspace_dir(str(base), str(ws))) / "cache"


def test_caches_are_redirected_and_writable(rf: Runner) -> None:
    ws = rf.mkdir()
    own = Path(rf.home) / ".cache" / "pip"  # the user's own cache, which must stay untouched
    before = own.stat().st_mtime_ns if own.exists() else None
    script = (
        "for v in PIP_CACHE_DIR npm_config_cache CARGO_HOME GOMODCACHE UV_CACHE_DIR "
        "pnpm_config_store_dir PNPM_HOME; do "
        'eval d=\\$$v; echo "$v=$d"; done; touch "$PIP_CACHE_DIR/probe" && echo writable; '
        'touch "$HOME/.cache-probe" 2>/dev/null || echo home-read-only'
    )
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    root = _cache_root(rf, ws)
    assert f"PIP_CACHE_DIR={root}/pip" in r.stdout
    assert f"npm_config_cache={root}/npm" in r.stdout
    assert f"CARGO_HOME={root}/cargo" in r.stdout
    assert f"pnpm_config_store_dir={root}/pnpm/store" in r.stdout  # pnpm >= 11
    assert f"PNPM_HOME={root}/pnpm" in r.stdout  # pnpm 9 and 10 keep their store under it
    assert "writable" in r.stdout and "home-read-only" in r.stdout
    assert (root / "pip" / "probe").exists()
    assert (own.stat().st_mtime_ns if own.exists() else None) == before
    (root / "pip" / "probe").unlink()
    r = rf.confined_sh(ws, "echo ${PIP_CACHE_DIR:-none}", "--no-tool-caches")
    assert r.stdout.strip() == "none"


def test_pip_install_into_a_workspace_venv_uses_the_redirected_cache(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "/usr/bin/python3 -m venv venv && venv/bin/pip install -q --disable-pip-version-check "
        "six==1.16.0 && venv/bin/pip cache dir && "
        "venv/bin/python -c 'import six; print(six.__version__)'",
        *PYPI,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("1.16.0")
    assert r.stdout.splitlines()[0] == str(_cache_root(rf, ws) / "pip")  # pip's own answer
    assert os.path.isdir(ws / "venv" / "lib")
