"""examples/cli_agent_loop.py: an agent loop over `ringfence run --report-fd`, run for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cli_agent_loop.py"


def test_the_loop_reads_refusals_and_widenings_from_the_record() -> None:
    """The third call is refused (the record says so, with the widening), the person says
    yes, and the call succeeds wider; a look-alike line on stderr changes nothing."""
    base = Path(tempfile.mkdtemp(prefix="ringfence-example-", dir="/var/tmp"))
    try:
        home, ws, out = base / "home", base / "home" / "ws", base / "home" / "out"
        for d in (home, ws, out):
            d.mkdir()
        env = {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "LANG": "C.UTF-8",
        }
        r = subprocess.run(
            [sys.executable, str(EXAMPLE), str(ws), str(out)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"refused: openat {out}/result.txt (outside writable roots)" in r.stdout
        assert f"again with --writable {out}: exit 0" in r.stdout
        assert "--writable /?" not in r.stdout  # the forged line was only text
        assert (out / "result.txt").exists() and (ws / "hello.py").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
