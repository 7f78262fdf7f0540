"""Reduced isolation (Landlock + seccomp + process rules, no namespaces): opt-in only, and
tested where it is meant for: inside a ringfence sandbox, where user namespaces are refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def test_without_opt_in_the_refusal_names_both_options(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.sh(ws, f"{rf.inner_ringfence()} run -- sh -c 'echo INNER-RAN'; echo status=$?")
    assert "status=125" in r.stdout and "INNER-RAN" not in r.stdout
    assert "--isolation reduced" in r.stderr and "protects less" in r.stderr


def _inner_script(ws: Path, other: Path, token: str) -> None:
    (ws / "inner.sh").write_text(
        "echo inside > in.txt\n"
        f"echo x > {other}/escaped || echo refused-outside\n"
        'echo t > "$TMPDIR/t" && echo tmp-ok\n'
        'echo "$TMPDIR" > tmpdir.txt\n'
        "python3 -c 'import socket; socket.socket()' 2>/dev/null || echo refused-inet\n"
        f"(setsid sh -c 'sleep 300; : {token}' &)\n"
        "echo started\n"
    )


def test_reduced_isolation_inside_a_sandbox(rf: Runner) -> None:
    """The outer sandbox runs without protected names here, so its name guard keeps only the
    unix socket rule: a guard with names forbids nested Landlock domains (see the next test),
    and reduced isolation is built on one."""
    ws, other = rf.mkdir(), rf.mkdir("other-")
    token = f"rf-reduced-{uuid.uuid4().hex}"
    _inner_script(ws, other, token)
    script = f"""
    {rf.inner_ringfence()} run --isolation reduced -- sh inner.sh
    echo inner-status=$?
    sleep 0.3
    echo survivors=$(ps -eo args | grep -c '[{token[0]}]{token[1:]}')
    test -e "$(cat tmpdir.txt)" && echo TMP-LEFT || echo tmp-removed
    """
    r = rf.confined_sh(ws, script, "--writable", str(other), "--no-default-protect")
    out = r.stdout
    for expected in (
        "refused-outside",
        "tmp-ok",
        "refused-inet",
        "started",
        "inner-status=0",
        "survivors=0",
        "tmp-removed",
    ):
        assert expected in out, (expected, out, r.stderr)
    assert (ws / "in.txt").read_text() == "inside\n"
    assert not (other / "escaped").exists()


def test_the_name_guard_refuses_nested_landlock_domains(rf: Runner) -> None:
    """Its emulated calls carry the outer rights; an inner domain would silently be weaker,
    so it is refused and the inner sandbox fails closed."""
    ws, other = rf.mkdir(), rf.mkdir("other-")
    _inner_script(ws, other, "unused")
    r = rf.sh(
        ws,
        f"{rf.inner_ringfence()} run --isolation reduced -- sh inner.sh; echo inner-status=$?",
        "--writable",
        str(other),
    )
    assert "inner-status=125" in r.stdout, (r.stdout, r.stderr)
    assert "nested domain" in r.stderr
    assert not (ws / "in.txt").exists() and not (other / "escaped").exists()


def test_reduced_isolation_on_the_host(rf: Runner) -> None:
    ws, other = rf.mkdir(), rf.mkdir("other-")
    r = rf.sh(ws, f"echo a > a; echo b > {other}/b; echo status=$?", "--isolation", "reduced")
    assert "status=0" not in r.stdout and "Permission denied" in r.stderr
    assert (ws / "a").read_text() == "a\n" and not (other / "b").exists()


def test_explain_lists_what_reduced_isolation_does_not_protect(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("explain", "--isolation", "reduced", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "isolation:  reduced" in r.stdout
    for gap in ("NOT protected: protected paths", "NOT hidden: deny-read", "NOT stopped: chmod"):
        assert gap in r.stdout
