"""Approvals with the real sandbox: the CLI asks on a terminal and refuses without one, rules
forbid, the API calls its approver, a session server refuses what it cannot ask about, and
every decision lands in the audit log."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import Runner

from ringfence import ApprovalRefused, Policy, Session
from ringfence.approval.decide import ASK, Decision

pytestmark = pytest.mark.sandbox


def _run(
    rf: Runner, ws: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ringfence ARGS`` with no terminal at all (its own session, so no /dev/tty)."""
    return subprocess.run(  # noqa: PLW1510 - callers assert on returncode
        ["setsid", "--wait", *rf.argv(args)],
        cwd=ws,
        env=rf.env(env),
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )


def _on_a_terminal(
    rf: Runner, ws: Path, answer: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``ringfence ARGS`` on a pseudo-terminal (util-linux ``script``), typing ``answer``."""
    line = " ".join(["env", *(f"{k}={v}" for k, v in rf.env().items()), *rf.argv(args)])
    return subprocess.run(  # noqa: PLW1510
        ["script", "-qec", line, "/dev/null"],
        cwd=ws,
        capture_output=True,
        text=True,
        input=answer + "\n",
        timeout=60,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )


def test_without_a_terminal_what_needs_asking_is_refused(rf: Runner) -> None:
    ws = rf.mkdir()
    r = _run(rf, ws, "run", "--approval", "untrusted", "--", "touch", "made")
    assert r.returncode == 77, r.stderr
    assert "touch made is not known to be safe" in r.stderr
    assert "there is no one to ask" in r.stderr
    assert not (ws / "made").exists()
    r = _run(
        rf,
        ws,
        "run",
        "--approval",
        "untrusted",
        "--",
        "bash",
        "-lc",
        "ls -d . && git status -s 2>/dev/null || true",
    )
    assert r.returncode == 0, r.stderr


def test_a_program_that_only_has_a_safe_name_is_asked_about(rf: Runner) -> None:
    """``./ls`` in the workspace is whatever the repository put there: the untrusted policy
    asks about it (and, with no one to ask, refuses) instead of running it as ``ls``."""
    ws = rf.mkdir()
    for name in ("ls", "bash"):
        fake = ws / name
        fake.write_text(f"#!/bin/sh\necho planted > {ws}/ran-$0-{rf.nonce}\n")
        fake.chmod(0o755)
        os.chown(fake, rf.uid, rf.gid)
    for argv in (["./ls"], ["./bash", "-c", "ls"]):
        r = _run(rf, ws, "run", "--approval", "untrusted", "--", *argv)
        assert r.returncode == 77, r.stderr
        assert "outside the system's directories" in r.stderr
    assert sorted(p.name for p in ws.iterdir() if p.name.startswith("ran-")) == []
    r = _run(rf, ws, "run", "--approval", "untrusted", "--", "/bin/ls", str(ws))
    assert r.returncode == 0 and "ls" in r.stdout.split(), r.stderr  # the system's ls runs


def test_a_safe_name_the_path_may_find_in_the_workspace_is_asked_about(rf: Runner) -> None:
    """``ls`` under a PATH that looks in the workspace first may be the repository's ``ls``:
    asked about (refused, with no one to ask), through the CLI and the API alike; with the
    system's directories first it runs."""
    ws = rf.mkdir()
    planted = ws / "bin"
    planted.mkdir()
    fake = planted / "ls"
    fake.write_text(f"#!/bin/sh\necho planted > {ws}/ran-{rf.nonce}\n")
    fake.chmod(0o755)
    for p in (planted, fake):
        os.chown(p, rf.uid, rf.gid)
    path = f"{planted}:/usr/bin:/bin"
    r = _run(rf, ws, "run", "--approval", "untrusted", "--", "ls", env={"PATH": path})
    assert r.returncode == 77, r.stderr
    assert f"looks in {planted}" in r.stderr
    api = (
        "import sys\n"
        "from ringfence import ApprovalRefused, Policy, Session\n"
        "ws, path = sys.argv[1:3]\n"
        "with Session(Policy(workspace=ws), cwd=ws, approval='untrusted', audit=False) as s:\n"
        "    try:\n"
        "        s.run(['ls'], env={'PATH': path})\n"
        "    except ApprovalRefused as e:\n"
        "        print('refused', e, flush=True)\n"
        "    print('system', s.run(['ls'], env={'PATH': '/usr/bin:/bin'}).returncode)\n"
    )
    r = rf.py("-c", api, str(ws), path, cwd=ws)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()  # the refusal, then what the system's ls listed, then 0
    assert lines[0].startswith("refused") and f"looks in {planted}" in lines[0], r.stdout
    assert lines[1:] == ["bin", "system 0"], r.stdout
    assert not (ws / f"ran-{rf.nonce}").exists()
    r = _run(rf, ws, "run", "--approval", "untrusted", "--", "ls", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_read_only_git_run_without_asking_ignores_a_committed_bare_repo(rf: Runner) -> None:
    """A repository can commit a bare repository's layout as plain files, whose config names
    a program (``core.fsmonitor``) that ``git status`` would run. Under untrusted, git status
    runs without asking, so it must not use a repository it only discovers there."""
    ws = rf.mkdir()
    bare = ws / "embedded"
    for d in ("objects", "refs/heads"):
        (bare / d).mkdir(parents=True)
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    marker = ws / f"fsmonitor-ran-{rf.nonce}"
    (bare / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n"
        f'\tfsmonitor = "echo ran > {marker}; false"\n'
    )
    for p in [bare, *bare.rglob("*")]:
        os.chown(p, rf.uid, rf.gid)
    for argv in (["git", "-C", "embedded", "status"], ["sh", "-c", "cd embedded && git status"]):
        r = _run(rf, ws, "run", "--approval", "untrusted", "--", *argv)
        assert r.returncode != 77, r.stderr  # judged read-only: ran without asking
        assert not marker.exists(), (argv, r.stdout, r.stderr)
    # The same with no approval step: git does use it (the point of the test's setup).
    r = _run(rf, ws, "run", "--", "git", "-C", "embedded", "status")
    assert marker.exists(), (r.stdout, r.stderr)


def test_on_a_terminal_the_person_decides(rf: Runner) -> None:
    ws = rf.mkdir()
    r = _on_a_terminal(rf, ws, "y", "run", "--approval", "untrusted", "--", "touch", "yes")
    assert r.returncode == 0, r.stdout
    assert "run `touch yes`? [y/N]" in r.stdout
    assert (ws / "yes").exists()
    r = _on_a_terminal(rf, ws, "n", "run", "--approval", "untrusted", "--", "touch", "no")
    assert r.returncode == 77
    assert "declined when asked" in r.stdout
    assert not (ws / "no").exists()


def test_the_prompt_shows_control_characters_escaped(rf: Runner) -> None:
    ws = rf.mkdir()
    r = _on_a_terminal(rf, ws, "n", "run", "--approval", "untrusted", "--", "touch", "a\x1b[2Kb")
    assert r.returncode == 77
    assert "\x1b[2K" not in r.stdout
    assert "a\\x1b[2Kb" in r.stdout


def test_a_forbid_rule_refuses_under_every_policy_and_check_says_why(rf: Runner) -> None:
    ws = rf.mkdir()
    rules = ws / "rules.toml"
    rules.write_text(
        '[[rule]]\nprefix = ["touch", "forbidden"]\ndecision = "forbid"\nwhy = "test"\n'
        'match = ["touch forbidden"]\n'
    )
    for policy in ("never-ask", "on-request", "untrusted"):
        r = _run(
            rf,
            ws,
            "run",
            "--approval",
            policy,
            "--rules",
            str(rules),
            "--",
            "sh",
            "-c",
            "touch forbidden",
        )
        assert r.returncode == 77, (policy, r.stderr)
        assert "forbidden: forbid touch forbidden (test)" in r.stderr
    assert not (ws / "forbidden").exists()
    r = _run(rf, ws, "check", "--rules", str(rules), "--json", "-c", "ls && touch forbidden")
    assert r.returncode == 77
    out = json.loads(r.stdout)
    assert out["action"] == "refuse"
    assert out["rule"] == f"{rules}: rule 1"
    assert out["commands"] == [["ls"], ["touch", "forbidden"]]
    assert _run(rf, ws, "check", "--approval", "untrusted", "--", "git", "status").returncode == 0
    assert _run(rf, ws, "check", "--approval", "untrusted", "--", "git", "push").returncode == 1


def test_check_says_what_run_would_do_with_the_users_own_rules_file(rf: Runner) -> None:
    """With no approval policy and no --rules, run has no approval step, so the user's own
    rules file is not read by check either; with --approval both read it, and agree."""
    ws = rf.mkdir()
    config = Path(rf.env()["XDG_CONFIG_HOME"]) / "ringfence"
    config.mkdir(parents=True, exist_ok=True)
    rules = config / "rules.toml"
    rules.write_text('[[rule]]\nprefix = ["touch"]\ndecision = "forbid"\n')
    rules.chmod(0o644)
    try:
        assert _run(rf, ws, "check", "--", "touch", "m").returncode != 77
        r = _run(rf, ws, "run", "--", "sh", "-c", 'touch m; echo "$RINGFENCE_SANDBOX"')
        assert (r.returncode, r.stdout) == (0, "1\n") and (ws / "m").exists()
        checked = _run(rf, ws, "check", "--approval", "on-request", "--", "touch", "n")
        ran = _run(rf, ws, "run", "--approval", "on-request", "--", "touch", "n")
        assert checked.returncode == ran.returncode == 77, (checked.stdout, ran.stderr)
        assert not (ws / "n").exists()
    finally:
        rules.unlink()


def test_ask_without_an_allowlist_is_refused_in_every_mode(rf: Runner) -> None:
    ws = rf.mkdir()
    for mode in ("workspace-write", "full-access"):
        r = _run(rf, ws, "run", "--mode", mode, "--ask", "--", "touch", "asked")
        assert r.returncode == 2 and "--ask needs --network allowlist" in r.stderr, r.stderr
    assert not (ws / "asked").exists()


def test_a_rules_file_whose_examples_fail_stops_everything(rf: Runner) -> None:
    ws = rf.mkdir()
    rules = ws / "rules.toml"
    rules.write_text(
        '[[rule]]\nprefix = ["git", "push"]\ndecision = "prompt"\nmatch = ["git pull"]\n'
    )
    r = _run(rf, ws, "run", "--rules", str(rules), "--", "touch", "x")
    assert r.returncode == 2
    assert "rule 1: the example 'git pull' in match does not match the rule" in r.stderr
    assert not (ws / "x").exists()


def test_the_api_asks_its_approver_and_audits_the_answer(ws: Path) -> None:
    asked: list[Decision] = []
    answers = iter([False, True])

    def approver(d: Decision) -> bool:
        asked.append(d)
        return next(answers)

    log = ws / "audit.jsonl"
    with Session(
        Policy(workspace=str(ws)),
        cwd=str(ws),
        audit=str(log),
        approval="untrusted",
        approver=approver,
    ) as s:
        assert s.run(["ls"], capture_output=True).returncode == 0  # known-safe: nobody asked
        with pytest.raises(ApprovalRefused, match="declined when asked"):
            s.run(["touch", "first"])
        assert not (ws / "first").exists()
        assert s.run(["touch", "second"]).returncode == 0
    assert (ws / "second").exists()
    assert [d.action for d in asked] == [ASK, ASK]
    assert asked[0].commands == (("touch", "first"),)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    approvals = [
        (r["argv"], r["approval"]["action"], r["approval"]["by"], r["approval"]["granted"])
        for r in records
    ]
    assert approvals == [
        (["ls"], "run", "policy", True),
        (["touch", "first"], "ask", "approver", False),
        (["touch", "second"], "ask", "approver", True),
    ]
    assert records[1]["exit"] == 77 and records[1]["outcome"] == "refused"
    assert records[1]["messages"][0].startswith("refused: declined")


def test_a_session_without_an_approval_policy_records_none(ws: Path) -> None:
    log = ws / "audit.jsonl"
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=str(log)) as s:
        s.run(["true"])
    assert json.loads(log.read_text().splitlines()[0])["approval"] is None
