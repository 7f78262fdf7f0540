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
        "'typing', 'dataclasses', 'socket', '__future__', 'ringfence.errors') "
        "if m in sys.modules]; print(heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_the_public_names_are_still_there_when_imported_late() -> None:
    """The package imports its exception classes on first use (the fast path skips them)."""
    import ringfence
    from ringfence import errors

    assert ringfence.PolicyError is errors.PolicyError
    assert ringfence.ApprovalRefused is errors.ApprovalRefused
    for name in ringfence.__all__:  # every public name resolves
        assert getattr(ringfence, name) is not None


def test_the_fast_path_reports_a_missing_session_and_exits_2(tmp_path: Path) -> None:
    """It ends with os._exit (no interpreter teardown): the message must still be written."""
    sessions = tmp_path / "sessions"
    sessions.mkdir(mode=0o700)
    for argv in (
        ["run", "--session", "nosuch", "--", "true"],
        ["run", "--session=nosuch", "--", "x"],
    ):
        r = subprocess.run(
            [sys.executable, str(SCRIPT), *argv],
            capture_output=True,
            text=True,
            check=False,
            env={"RINGFENCE_SESSION_DIR": str(sessions), "PATH": "/usr/bin:/bin"},
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr == (
            "ringfence: no session named 'nosuch' is running (start one with `ringfence "
            "session start --name nosuch [policy flags]`)\n"
        )
        assert r.stdout == ""
