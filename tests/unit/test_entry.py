"""The `ringfence` command's own script (scripts/ringfence, installed as a script file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ringfence"


def test_the_script_runs_the_cli() -> None:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ringfence")


def test_the_script_is_installable_as_is() -> None:
    """pip rewrites a `#!python` first line to the environment's interpreter."""
    assert SCRIPT.read_text().splitlines()[0] == "#!python"
    assert SCRIPT.stat().st_mode & 0o111


def test_the_fast_path_imports_no_policy_or_config_code() -> None:
    code = (
        "import sys; from ringfence import entry, session_client; "
        "heavy = [m for m in ('ringfence.policy.model', 'ringfence.cli', 'argparse', 'json', "
        "'typing', 'dataclasses', 'socket') if m in sys.modules]; print(heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
