"""The front end: doctor, explain and help, driven as a user would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _plan(rf: Runner) -> dict[str, Any]:
    r = rf("explain", "--json", "--", "true", cwd=rf.mkdir())
    assert r.returncode == 0, r.stderr
    plan: dict[str, Any] = json.loads(r.stdout)
    return plan


def test_doctor_reports_every_layer(rf: Runner) -> None:
    r = rf("doctor", "--json", cwd=rf.mkdir())
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    names = {c["name"]: c for c in report["checks"]}
    for layer in (
        "user namespaces",
        "new mount API",
        "fresh /proc",
        "Landlock",
        "seccomp user notification (name guard)",
        "no_new_privs",
    ):
        assert names[layer]["ok"], names[layer]
    assert report["default_policy_ok"] is True
    layers = {row["name"]: row for row in report["layers"]}
    for name in (
        "namespaces",
        "read-only view",
        "Landlock filesystem",
        "seccomp hardening",
        "name guard",
    ):
        assert layers[name]["available"] and layers[name]["used"], layers[name]
    # root is bound only by a pids cgroup (RLIMIT_NPROC exempts it); others always
    pids = any(c == "pids" for c, _, _ in _plan(rf)["cgroup_sites"])
    assert layers["process limit"]["used"] is (rf.uid != 0 or pids)
    assert layers["memory limit"]["used"] is False  # no memory limit by default
    text = rf("doctor", cwd="/")  # a policy that cannot run here still gets a report
    assert "refused: workspace: the current directory / would become writable" in text.stdout
    assert "fully enforced here" in text.stdout


def test_explain_json_shows_the_plan(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / ".git").mkdir()
    (ws / ".git/hooks").mkdir()
    r = rf("explain", "--json", "--", "make", "test", cwd=ws)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["command"] == ["make", "test"]
    assert plan["namespaces"] == ["user", "mount", "pid", "ipc", "uts", "net"]
    binds = {(m["target"], m["readonly"]) for m in plan["mounts"] if m["kind"] == "bind"}
    assert (str(ws), False) in binds
    assert (str(ws / ".git/hooks"), True) in binds
    assert plan["guard_enabled"] is True
    assert plan["landlock"]["rules"][1]["path"] == str(ws)


def test_explain_text_is_readable(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("explain", "--network", "on", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "network:    on" in r.stdout
    assert "writable root" in r.stdout and "name guard (seccomp user notification): on" in r.stdout
    assert "unix sockets only" not in r.stdout
    # without the protected names the guard sees socket calls alone, and says so
    r = rf("explain", "--no-default-protect", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "on, for unix sockets only (no protected names; writes through hard links" in r.stdout


def test_explain_full_access_says_there_is_no_boundary(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("explain", "--mode", "full-access", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "no boundary" in r.stdout


def test_help_exits_zero(rf: Runner) -> None:
    r = rf("run", "--help")
    assert r.returncode == 0
    assert "--writable" in r.stdout and "--timeout" in r.stdout


def test_doctor_inside_a_sandbox_reports_what_is_missing(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, f"{rf.inner_ringfence()} doctor --json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["default_policy_ok"] is False
    userns = next(c for c in report["checks"] if c["name"] == "user namespaces")
    assert userns["ok"] is False
    assert "another sandbox" in userns["fix"]


def test_a_policy_can_require_a_newer_landlock(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("run", "--landlock-min-abi", "99", "--", "sh", "-c", "echo ran", cwd=ws)
    assert r.returncode == 125
    assert "requires Landlock ABI 99" in r.stderr and "ran" not in r.stdout
