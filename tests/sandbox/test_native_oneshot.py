"""``ringfence run`` from a kept request through the native launcher: the same run, report,
exit status and audit record as the Python fast path, and a miss on every change.

Each scenario runs in two fresh workspaces: once with ``RINGFENCE_NATIVE=off`` (the Python
fast path) and once with ``RINGFENCE_NATIVE=explain`` (the native one, which says on stderr
when it did not run). The first run of each keeps the request; the second is compared.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.sandbox.conftest import Runner

from ringfence.platforms.linux import native

pytestmark = pytest.mark.skipif(
    not native.available(), reason="the native launcher was not built here"
)

NOT_NATIVE = "ringfence: not run by the native launcher"
# A record's own parts, the plan's digest (each workspace's plan names its own paths) and
# where the plan came from (the Python fast path's own run may compile again if something
# the compile read changed meanwhile, such as a /tmp secret another test made).
VOLATILE = ("time", "session", "duration", "policy", "plan")


@pytest.fixture(autouse=True)
def _state_made(rf: Runner) -> None:
    """A user's very first runs make ringfence's state and audit log while their compile
    looks (test_plan_cache.py): made before each test, with both settings. (Every test here
    runs the default plan, with the name guard.)"""
    rf.needs_native_guard()
    for how in ("off", "explain"):
        rf.sh(rf.mkdir(), "true", env={"RINGFENCE_NATIVE": how})


def _repo(rf: Runner) -> Path:
    ws = rf.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    for p in (ws, *ws.rglob("*")):
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    return ws


def _audit_tail(rf: Runner) -> dict:
    path = Path(rf.env()["XDG_STATE_HOME"]) / "ringfence" / "audit.jsonl"
    record = json.loads(path.read_text().splitlines()[-1])
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _twice(rf: Runner, how: str, flags: list[str], cmd: list[str]) -> tuple:
    ws = _repo(rf)
    env = {"RINGFENCE_NATIVE": how}
    first = rf("run", *flags, "--", *cmd, cwd=ws, env=env)
    second = rf("run", *flags, "--", *cmd, cwd=ws, env=env)
    stderr = second.stderr.replace(str(ws), "WS")
    record = _audit_tail(rf) if "--no-audit" not in flags else {}
    text = json.dumps(record).replace(str(ws), "WS")
    return first, second.returncode, second.stdout.replace(str(ws), "WS"), stderr, text


POINTER = "mkdir -p sub && printf 'gitdir: /etc\\n' > sub/.git"
LOOKUP = (
    "import socket\ntry: socket.getaddrinfo('pypi.org', 443)\nexcept OSError as e: print(e.errno)"
)
SCENARIOS = {
    "clean": ([], ["sh", "-c", "echo out; echo err >&2; exit 3"]),
    "signal": ([], ["sh", "-c", "kill -TERM $$"]),
    "refused": ([], ["sh", "-c", "echo evil > .git/hooks/pre-commit; echo after"]),
    "not-found": ([], ["no-such-program-rf"]),
    "lookup": ([], ["/usr/bin/python3", "-c", LOOKUP]),
    "timeout": (["--timeout", "1"], ["sh", "-c", "sleep 5"]),
    # A pointer the guard checks when the command ends, left by one that outlives --timeout.
    "timeout-pointer": (["--timeout", "1"], ["sh", "-c", POINTER + "; sleep 5"]),
    "no-audit": (["--no-audit"], ["sh", "-c", "echo quiet"]),
    "secret-arg": ([], ["sh", "-c", "true", "password=hunter2"]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_native_run_is_the_python_fast_paths_run(rf: Runner, name: str) -> None:
    flags, cmd = SCENARIOS[name]
    _, *python = _twice(rf, "off", flags, cmd)
    first, *natively = _twice(rf, "explain", flags, cmd)
    assert f"{NOT_NATIVE}: no kept request" in first.stderr  # the first run kept it
    assert NOT_NATIVE not in natively[2], natively[2]  # the second ran natively
    assert natively == python


def test_a_native_run_is_confined(rf: Runner) -> None:
    ws = rf.mkdir()
    c = rf.confinement
    env = {"RINGFENCE_NATIVE": "explain"}
    cmd = c.shell(f"echo {c.nonce} > mine.txt; echo wrote")
    rf("run", "--", *cmd, cwd=ws, env=env)
    r = rf("run", "--", *cmd, cwd=ws, env=env)
    assert NOT_NATIVE not in r.stderr and r.returncode == 0, r.stderr
    assert c.strip(r.stdout, r.stderr).strip() == "wrote"
    assert (ws / "mine.txt").read_text() == f"{c.nonce}\n"


def _native_runs(rf: Runner, ws: Path, *cmd: str) -> str:
    """The stderr of a run that should be native, after one that keeps the request."""
    env = {"RINGFENCE_NATIVE": "explain"}
    rf("run", "--", *cmd, cwd=ws, env=env)
    return rf("run", "--", *cmd, cwd=ws, env=env).stderr


def _again(rf: Runner, ws: Path, *cmd: str) -> str:
    return rf("run", "--", *cmd, cwd=ws, env={"RINGFENCE_NATIVE": "explain"}).stderr


def test_the_kept_request_misses_on_every_kind_of_change(rf: Runner) -> None:
    """Each change the compile depended on sends the next run down the usual path (which
    compiles again and keeps the new plan), and the one after is native again."""
    ws = _repo(rf)
    home = Path(rf.home)
    assert NOT_NATIVE not in _native_runs(rf, ws, "true")
    changes = [
        ("a project config file", lambda: (ws / ".ringfence.toml").write_text("# a comment\n")),
        ("a new dotfile in the workspace", lambda: (ws / ".envrc").write_text("x\n")),
        ("the git config", lambda: (ws / ".git/config").write_text("[core]\n\tbare = false\n")),
        ("a file removed", (ws / ".envrc").unlink),
    ]
    if rf.label == "self":  # the test user's home is not ours to write
        changes.append(
            ("a host /tmp secret", lambda: Path(f"/tmp/krb5cc_rfnat{os.getpid()}").write_text("t"))
        )
    try:
        for what, change in changes:
            change()
            for p in ws.rglob("*"):
                os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
            said = _again(rf, ws, "true")
            assert f"{NOT_NATIVE}: question" in said, (what, said)
            assert NOT_NATIVE not in _again(rf, ws, "true"), what
    finally:
        Path(f"/tmp/krb5cc_rfnat{os.getpid()}").unlink(missing_ok=True)
    assert home.exists()


def test_a_changed_entry_is_never_run(rf: Runner) -> None:
    """The native entry is sealed with the keyring's key: a flipped byte is a miss (the
    usual path then runs and keeps it again)."""
    ws = rf.mkdir()
    assert NOT_NATIVE not in _native_runs(rf, ws, "true")
    plans = Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence" / "plans"
    entries = sorted(plans.glob("*.n"), key=lambda p: p.stat().st_mtime)
    entry = entries[-1]
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))
    assert f"{NOT_NATIVE}: no kept request" in _again(rf, ws, "true")


@pytest.mark.parametrize("how", ["off", "explain"])
def test_a_command_that_outlives_its_timeout_still_gets_the_end_check(rf: Runner, how: str) -> None:
    """Review 17: on a timeout the host killed the command's init outright, and with it the
    guard's end-of-command check: a `.git` pointer naming /etc stayed for host git to follow.
    Now the init ends the command's tree and its guard still checks (both paths)."""
    ws = rf.mkdir()
    env = {"RINGFENCE_NATIVE": how}
    for _ in range(2):  # the second run is the kept request's (native with "explain")
        r = rf("run", "--timeout", "1", "--", "sh", "-c", POINTER + "; sleep 5", cwd=ws, env=env)
        assert r.returncode == 124, r.stderr
        assert not (ws / "sub/.git").exists(), r.stderr
        assert (ws / "sub/.git.ringfence-refused").exists()
        (ws / "sub/.git.ringfence-refused").unlink()
    record = _audit_tail(rf)
    assert record["timed_out"] is True and record["created"], record


def test_a_native_run_reports_without_the_python_entry(rf: Runner) -> None:
    """Review 17: the native path read the plan for its report back from the Python entry,
    which pruning removes first (only the native twin is used): the end then went unreported
    and unaudited. The plan now travels in the native entry itself."""
    ws = _repo(rf)
    env = {"RINGFENCE_NATIVE": "explain"}
    cmd = ["sh", "-c", "echo evil > .git/hooks/pre-commit; echo after"]
    rf("run", "--", *cmd, cwd=ws, env=env)
    plans = Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence" / "plans"
    for entry in plans.iterdir():
        if not entry.name.endswith(".n"):
            entry.unlink()
    r = rf("run", "--", *cmd, cwd=ws, env=env)
    assert NOT_NATIVE not in r.stderr, r.stderr
    assert "ringfence: refused git hook" in r.stderr, r.stderr
    assert not (ws / ".git/hooks/pre-commit").exists()
    record = _audit_tail(rf)
    assert record["created"] and record["violations"], record
