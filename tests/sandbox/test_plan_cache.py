"""The one-shot plan cache, through real ``ringfence run`` calls: a repeated request runs the
kept plan; any change to what the plan was made from (a config file, the workspace, the
environment, the flags) compiles again and the change is enforced; no sandbox can read or
write the cache; a damaged or loosened entry is ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _plans(rf: Runner, env: dict[str, str] | None = None) -> Path:
    return Path(rf.env(env)["XDG_CACHE_HOME"]) / "ringfence" / "plans"


def _entries(rf: Runner, ws: Path, env: dict[str, str] | None = None) -> list[Path]:
    """This workspace's entries: a plan names its working directory. (Not the native
    launcher's twin of each, ``<key>.n``: test_native_oneshot.py has those.)"""
    d = _plans(rf, env)
    if not d.is_dir():
        return []
    mark = str(ws).encode()
    return sorted(
        p
        for p in d.iterdir()
        if p.is_file() and not p.name.endswith(".n") and mark in p.read_bytes()
    )


@pytest.fixture(autouse=True)
def _state_made(rf: Runner) -> None:
    """The very first run of a user makes ringfence's state directory while its compile looks
    at it: a change under the compile, so that plan is not kept. Make it before each test."""
    rf.sh(rf.mkdir(), "true")


def _one(rf: Runner, ws: Path, env: dict[str, str] | None = None) -> Path:
    found = _entries(rf, ws, env)
    assert len(found) == 1, found
    return found[0]


def test_a_repeated_request_runs_the_kept_plan(rf: Runner) -> None:
    ws = rf.mkdir()
    first = rf.confined_sh(ws, "echo one > made-1; echo ran-1")
    assert first.returncode == 0, first.stderr
    entry = _one(rf, ws)
    st = entry.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == rf.uid
    assert entry.parent.stat().st_mode & 0o777 == 0o700
    second = rf.confined_sh(ws, "echo one > made-1; echo ran-1")
    assert second.returncode == 0 and second.stdout.strip() == "ran-1", second.stderr
    assert _one(rf, ws).stat().st_ino == st.st_ino  # read, not compiled and written again
    assert (ws / "made-1").read_text() == "one\n"
    # the kept plan is the same sandbox: a write outside the workspace is still refused
    outside = rf.mkdir("outside-")
    r = rf.sh(ws, f"echo x > {outside}/escape; echo status=$?")
    assert "status=1" in r.stdout or "status=2" in r.stdout, r.stdout
    assert not (outside / "escape").exists()


def test_a_project_file_edit_compiles_again_and_binds(rf: Runner) -> None:
    ws = rf.mkdir()
    secret = ws / "notes.txt"
    secret.write_text("readable\n")
    os.chown(secret, rf.uid, rf.gid)
    r = rf.confined_sh(ws, "cat notes.txt")
    assert r.stdout.strip() == "readable", r.stderr
    before = _one(rf, ws).stat().st_ino
    (ws / ".ringfence.toml").write_text('deny_read = ["notes.txt"]\n')
    r = rf.confined_sh(ws, "cat notes.txt; echo status=$?")
    assert "readable" not in r.stdout and "status=1" in r.stdout, (r.stdout, r.stderr)
    assert _one(rf, ws).stat().st_ino != before


def test_a_user_config_edit_compiles_again_and_binds(rf: Runner) -> None:
    ws = rf.mkdir()
    config_home = rf.mkdir("config-")
    env = {"XDG_CONFIG_HOME": str(config_home)}
    r = rf.confined_sh(ws, "echo $RF_PLAN_PROBE", env=env)
    assert r.returncode == 0, r.stderr
    conf = config_home / "ringfence" / "config.toml"
    conf.parent.mkdir()
    conf.write_text('network = "on"\n')
    os.chown(conf.parent, rf.uid, rf.gid)
    os.chown(conf, rf.uid, rf.gid)
    r = rf("explain", "--json", "--", "true", cwd=ws, env=env)
    assert '"network": "on"' in r.stdout
    r = rf.confined_sh(ws, "cat /proc/net/dev | grep -c ':'", env=env)
    assert int(r.stdout) >= 2, r.stdout  # network on: the host's interfaces, not a lone lo
    plans = _entries(rf, ws, env)
    assert len(plans) == 1  # same key (flags, cwd, env), new answers: written again
    conf.write_text('network = "off"\n')
    r = rf.confined_sh(ws, "cat /proc/net/dev | grep -c ':'", env=env)
    assert r.stdout.strip() == "1", r.stdout  # loopback only again


def test_a_new_git_directory_is_protected_at_once(rf: Runner) -> None:
    ws = rf.mkdir()
    assert rf.confined_sh(ws, "true").returncode == 0
    hooks = ws / ".git" / "hooks"
    hooks.mkdir(parents=True)
    for p in (ws / ".git", hooks):
        os.chown(p, rf.uid, rf.gid)
    r = rf.confined_sh(ws, "echo 'evil' > .git/hooks/pre-commit; echo status=$?")
    assert "status=0" not in r.stdout, r.stdout
    assert not (hooks / "pre-commit").exists()


def test_the_environment_is_part_of_the_request(rf: Runner) -> None:
    ws = rf.mkdir()
    a = rf.confined_sh(ws, "echo value=$RF_PLAN_PROBE", env={"RF_PLAN_PROBE": "first"})
    b = rf.confined_sh(ws, "echo value=$RF_PLAN_PROBE", env={"RF_PLAN_PROBE": "second"})
    assert a.stdout.strip() == "value=first" and b.stdout.strip() == "value=second"
    assert len(_entries(rf, ws)) == 2


def test_flags_are_part_of_the_request(rf: Runner) -> None:
    ws = rf.mkdir()
    extra = rf.mkdir("extra-")
    r = rf.sh(ws, f"echo x > {extra}/f; echo status=$?")
    assert "status=0" not in r.stdout and not (extra / "f").exists()
    r = rf.sh(ws, f"echo x > {extra}/f; echo status=$?", "--writable", str(extra))
    assert "status=0" in r.stdout and (extra / "f").exists(), r.stderr
    assert len(_entries(rf, ws)) == 2


def test_no_sandbox_can_read_or_write_the_cache(rf: Runner) -> None:
    ws = rf.mkdir()
    assert rf.confined_sh(ws, "true").returncode == 0
    entry = _one(rf, ws)
    kept = entry.read_bytes()
    plans = entry.parent
    script = (
        f"ls -A {plans} 2>/dev/null | wc -l; "
        f"cat {entry} >/dev/null 2>&1 && echo READ; "
        f"echo forged > {plans}/forged 2>/dev/null && echo WROTE; "
        f"echo forged > {entry} 2>/dev/null && echo OVERWROTE; "
        "echo end"
    )
    r = rf.confined_sh(ws, script)
    out = r.stdout.split()
    assert out[0] == "0" and out[-1] == "end", (r.stdout, r.stderr)
    assert "READ" not in out and "WROTE" not in out and "OVERWROTE" not in out
    assert not (plans / "forged").exists()
    # the host may have kept a newer plan meanwhile (another test changed a file the compile
    # looks at); what must not be there is the sandbox's write
    after = entry.read_bytes()
    assert after == kept or (b"forged" not in after and len(after) > 1000)


@pytest.mark.parametrize("damage", ["garbage", "group-readable", "symlink"])
def test_a_damaged_entry_is_ignored(rf: Runner, damage: str) -> None:
    """The Python entry (the native launcher's twin is off: it would run the request
    before the damaged entry is read; test_native_oneshot.py damages that one)."""
    ws = rf.mkdir()
    python_only = {"RINGFENCE_NATIVE": "off"}
    assert rf.confined_sh(ws, "true", env=python_only).returncode == 0
    entry = _one(rf, ws)
    if damage == "garbage":
        entry.write_bytes(b"\x00not a plan")
    elif damage == "group-readable":
        entry.chmod(0o640)
    else:
        target = ws / "elsewhere"
        target.write_bytes(entry.read_bytes())
        entry.unlink()
        entry.symlink_to(target)
    r = rf.confined_sh(ws, "echo still-ran", env=python_only)
    assert r.stdout.strip() == "still-ran", r.stderr
    fresh = _one(rf, ws)
    assert not fresh.is_symlink() and fresh.stat().st_mode & 0o777 == 0o600


def test_the_cache_can_be_turned_off(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "echo off", env={"RINGFENCE_PLAN_CACHE": "off"})
    assert r.stdout.strip() == "off", r.stderr
    assert _entries(rf, ws, {"RINGFENCE_PLAN_CACHE": "off"}) == []


def test_full_access_runs_from_the_cache_too(rf: Runner) -> None:
    ws = rf.mkdir()
    for _ in range(2):
        r = rf(
            "run", "--mode", "full-access", "--", "sh", "-c", "echo $RINGFENCE_SANDBOX-x", cwd=ws
        )
        assert r.returncode == 0 and r.stdout.strip() == "0-x", r.stderr  # marked unconfined


def test_a_forged_entry_never_loosens_the_next_run(rf: Runner) -> None:
    """What a reduced sandbox with the cache in a writable root could do: rewrite an entry
    as an unconfined plan (its seal, keyed in the user's keyring, cannot be made)."""
    import marshal
    import sys

    sys.path.insert(0, rf.src_copy)
    from ringfence.plancache import codec
    from ringfence.platforms.linux import plan_model  # noqa: F401 - codec looks it up

    ws = rf.mkdir()
    assert rf.confined_sh(ws, "true").returncode == 0
    entry = _one(rf, ws)
    raw = entry.read_bytes()
    seal, data = raw[:32], raw[32:]
    fmt, key, plan, options, answers, effects = marshal.loads(data)
    loose = codec.decode(plan)
    object.__setattr__(loose, "sandboxed", False)
    forged = marshal.dumps((fmt, key, codec.encode(loose), options, answers, effects))
    entry.write_bytes(seal + forged)  # the old seal: it does not cover these bytes
    r = rf.confined_sh(ws, "grep -c '^Seccomp:[[:space:]]*2' /proc/self/status")
    assert r.stdout.strip() == "1", (r.stdout, r.stderr)  # confined, filter on


def test_a_command_before_the_separator_is_not_cached_as_flags(rf: Runner) -> None:
    """`run echo safe -- X` runs `echo safe -- X` (the command starts at the first
    positional argument): a kept plan must never make a later call run only X."""
    ws = rf.mkdir()
    first = rf("run", "echo", "safe", "--", "true", cwd=ws)
    assert first.stdout.strip() == "safe -- true", first.stderr
    second = rf("run", "echo", "safe", "--", "sh", "-c", "echo INJECTED", cwd=ws)
    assert second.stdout.strip() == "safe -- sh -c echo INJECTED", second.stderr
    assert _entries(rf, ws) == []


def test_a_plan_too_large_to_hand_over_still_runs(rf: Runner) -> None:
    """The early runner gets its plan in one message; a plan larger than that (a large
    environment) is handed to a runner forked the usual way instead."""
    ws = rf.mkdir()
    big = {f"RF_BIG_{i}": "x" * 100_000 for i in range(3)}
    for _ in range(2):
        r = rf.confined_sh(ws, "echo ${#RF_BIG_2}", env=big)
        assert r.returncode == 0 and r.stdout.strip() == "100000", r.stderr


def test_the_audit_log_says_which_plan_ran(rf: Runner) -> None:
    """Reusing a plan is a decision: each command record says whether its plan was compiled
    or kept, and a kept plan has the digest a fresh compile gives."""
    import json

    ws = rf.mkdir()
    for _ in range(2):
        assert rf.confined_sh(ws, "true").returncode == 0
    assert rf.confined_sh(ws, "true", env={"RINGFENCE_PLAN_CACHE": "off"}).returncode == 0
    log = Path(rf.env()["XDG_STATE_HOME"]) / "ringfence" / "audit.jsonl"
    mine = [
        r
        for r in map(json.loads, log.read_text().splitlines())
        if r.get("type") == "command" and r.get("cwd") == str(ws)
    ]
    assert [r["plan"] for r in mine] == ["compiled", "cached", "compiled"], mine
    assert len({r["policy"] for r in mine}) == 1
