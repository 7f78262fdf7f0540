"""Violation reports and escalation with the real sandbox: what the boundary refused (path,
operation, rule), the repositories and hooks a command made, and the smallest widening that
allows a refused write, applied and run again."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner

from ringfence import Policy, Session
from ringfence.escalation import widen

pytestmark = pytest.mark.sandbox


def _audit(rf: Runner) -> list[dict[str, object]]:
    log = Path(rf.env()["XDG_STATE_HOME"]) / "ringfence" / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_write_outside_the_roots_is_reported_with_its_smallest_widening(rf: Runner) -> None:
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    r = rf.sh(ws, f"touch {outside}/new; mkdir {outside}/a/b 2>/dev/null; exit 4")
    assert r.returncode == 4
    assert f"ringfence: refused openat {outside}/new (outside writable roots)" in r.stderr
    assert f"ringfence: to allow it: --writable {outside}" in r.stderr
    assert not (outside / "new").exists()
    record = _audit(rf)[-1]
    refused = {"kind": "filesystem", "op": "openat", "path": f"{outside}/new",
               "rule": "outside writable roots"}  # fmt: skip
    assert refused in record["violations"]  # type: ignore[operator]
    widenings = [(w["kind"], w["flag"]) for w in record["widenings"]]  # type: ignore[attr-defined]
    assert ("writable_root", f"--writable {outside}") in widenings


def test_no_widening_opens_home_or_a_parent_of_the_workspace(rf: Runner) -> None:
    """A refused write in $HOME, or next to the workspace, names what was refused but never
    suggests making the home directory or the workspace's parent writable."""
    parent = rf.mkdir("parent-")
    ws = parent / "ws"
    ws.mkdir()
    shutil.chown(ws, rf.uid, rf.gid)
    r = rf.sh(ws, f"touch {rf.home}/rf-probe-{ws.name}; touch {parent}/sibling; exit 3")
    assert r.returncode == 3
    assert f"openat {parent}/sibling (outside writable roots)" in r.stderr
    assert "to allow it" not in r.stderr, r.stderr
    assert not (parent / "sibling").exists()


def test_a_refused_config_key_names_the_host_side_command(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.sh(ws, "git init -q . && git config core.editor vim; exit 0")
    assert f"refused git config: {ws}/.git/config" in r.stderr
    assert f"git config --file {ws}/.git/config core.editor VALUE" in r.stderr
    assert "to allow it" not in r.stderr


def test_a_protected_path_is_named_and_no_widening_is_offered(rf: Runner) -> None:
    ws = rf.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    shutil.chown(ws / ".git", rf.uid, rf.gid)
    for p in (ws / ".git").rglob("*"):
        shutil.chown(p, rf.uid, rf.gid)
    r = rf.sh(ws, "echo evil > .git/hooks/pre-commit")
    assert r.returncode != 0
    assert f"refused openat {ws}/.git/hooks/pre-commit (protected: {ws}/.git/hooks)" in r.stderr
    assert "to allow it" not in r.stderr


def test_new_repositories_are_reported_and_their_hooks_refused(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.sh(ws, "git init -q sub && printf '#!/bin/sh\\n' > sub/.git/hooks/post-checkout")
    assert r.returncode != 0
    assert f"ringfence: new git repository: {ws}/sub/.git" in r.stderr
    assert f"openat {ws}/sub/.git/hooks/post-checkout" in r.stderr
    assert ".sample" not in r.stderr  # git init's inert samples are not news
    assert not (ws / "sub/.git/hooks/post-checkout").exists()
    record = _audit(rf)[-1]
    assert {"kind": "new_repository", "path": f"{ws}/sub/.git"} in record["created"]  # type: ignore[operator]


def test_git_findings_are_never_crowded_out_by_refusals(rf: Runner) -> None:
    """500 cheap refusals first, then a new repository and a refused config key: both still
    appear in the report and the audit record, in their own section."""
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    script = (
        f"for i in $(seq 500); do touch {outside}/f$i 2>/dev/null; done; "
        "git init -q late && git -C late config core.pager 'touch pwned'; echo done"
    )
    r = rf.sh(ws, script)
    assert r.stdout == "done\n"
    assert "and more" in r.stderr
    assert f"ringfence: new git repository: {ws}/late/.git" in r.stderr
    assert f"ringfence: refused git config: {ws}/late/.git/config" in r.stderr
    assert "core.pager" in r.stderr
    created = _audit(rf)[-1]["created"]
    assert {"kind": "new_repository", "path": f"{ws}/late/.git"} in created  # type: ignore[operator]
    assert any("core.pager" in json.dumps(c) for c in created)  # type: ignore[attr-defined]


def test_a_path_with_control_characters_is_reported_escaped(rf: Runner) -> None:
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    r = rf.sh(ws, f"touch \"{outside}/$(printf 'x\\033[2Ky')\"")
    assert "\x1b" not in r.stderr.split("ringfence:", 1)[1]
    assert "x\\x1b[2Ky" in r.stderr


def test_reports_are_capped_and_never_block_the_command(rf: Runner) -> None:
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    r = rf.sh(ws, f"for i in $(seq 300); do touch {outside}/f$i 2>/dev/null; done; echo done")
    assert r.returncode == 0 and r.stdout == "done\n"
    assert "and more" in r.stderr
    violations = _audit(rf)[-1]["violations"]
    assert len([v for v in violations if v["kind"] == "filesystem"]) == 100  # type: ignore[attr-defined]


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    ws = Path(tempfile.mkdtemp(prefix="ringfence-esc-", dir="/var/tmp"))
    outside = Path(tempfile.mkdtemp(prefix="ringfence-esc-out-", dir="/var/tmp"))
    yield ws, outside
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)


def test_the_api_reports_and_the_widening_it_proposes_is_enough(dirs: tuple[Path, Path]) -> None:
    ws, outside = dirs
    policy = Policy(workspace=str(ws))
    cmd = ["sh", "-c", f"mkdir -p {outside}/deep/er && echo ok > {outside}/deep/er/f"]
    with Session(policy, audit=False) as s:
        r = s.run(cmd, capture_output=True)
    assert r.returncode != 0
    assert r.violations == [
        {
            "kind": "filesystem",
            "op": "mkdir",
            "path": f"{outside}/deep",
            "rule": "outside writable roots",
        }
    ]
    assert [(w["kind"], w["path"]) for w in r.widenings] == [("writable_root", str(outside))]
    with Session(widen(policy, r.widenings), audit=False) as s:
        again = s.run(cmd, capture_output=True)
    assert again.returncode == 0 and again.violations == [] and again.widenings == []
    assert (outside / "deep" / "er" / "f").read_text() == "ok\n"


def test_widen_refuses_what_it_does_not_know(dirs: tuple[Path, Path]) -> None:
    ws, _ = dirs
    from ringfence.errors import PolicyError

    with pytest.raises(PolicyError, match="not a widening"):
        widen(Policy(workspace=str(ws)), [{"kind": "full_access"}])
    with pytest.raises(PolicyError, match="needs --network allowlist"):
        widen(Policy(workspace=str(ws)), [{"kind": "allow_domain", "entry": "pypi.org:443"}])


def test_a_write_under_a_deny_read_path_names_that_rule(rf: Runner) -> None:
    ws = rf.mkdir()
    home = rf.mkdir("home-")
    (home / ".ssh").mkdir()
    shutil.chown(home / ".ssh", rf.uid, rf.gid)
    r = rf.sh(ws, 'echo x > "$HOME/.ssh/evil"', "--writable", str(home), env={"HOME": str(home)})
    assert r.returncode != 0
    assert f"refused openat {home}/.ssh/evil (deny_read: {home}/.ssh)" in r.stderr
    assert "to allow it" not in r.stderr
    assert not (home / ".ssh" / "evil").exists()


def test_on_request_asks_before_running_again_wider(dirs: tuple[Path, Path]) -> None:
    from ringfence.escalation import WideningRequest, ask_to_widen

    ws, outside = dirs
    policy = Policy(workspace=str(ws))
    cmd = ["touch", f"{outside}/f"]
    with Session(policy, audit=False) as s:
        r = s.run(cmd, capture_output=True)
    asked: list[WideningRequest] = []

    def no(req: WideningRequest) -> bool:
        asked.append(req)
        return False

    assert ask_to_widen(policy, r.widenings, no, cmd) is None
    assert f"run it again with --writable {outside}?" in asked[0].reason
    wider = ask_to_widen(policy, r.widenings, lambda _req: True, cmd)
    assert wider is not None and wider.writable_roots == (str(outside),)
    with Session(wider, audit=False) as s:
        assert s.run(cmd).returncode == 0
    assert (outside / "f").exists()
    assert ask_to_widen(policy, [], lambda _req: True) is None


def test_long_refused_paths_cannot_swamp_the_exit_report(rf: Runner) -> None:
    """Refusals of ~3.8 KiB paths, more than the cap: the command's own status still arrives."""
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    deep = outside.joinpath(*["d" * 250] * 15)
    deep.mkdir(parents=True)
    script = f"for i in $(seq 150); do touch {deep}/f$i 2>/dev/null; done; exit 9"
    r = rf.sh(ws, script)
    assert r.returncode == 9, r.stderr
    assert "and more" in r.stderr
    assert "d" * 200 + "...d" in r.stderr and "/f150 " not in r.stderr  # both ends kept


def _home(rf: Runner, prefix: str = "home-") -> Path:
    """A throwaway home directory for the test's user, with an rc file and a history."""
    home = rf.mkdir(prefix)
    for name in (".bashrc", ".bash_history"):
        (home / name).write_text("")
        shutil.chown(home / name, rf.uid, rf.gid)
    return home


def test_an_rc_file_is_named_protected_and_no_home_is_proposed(rf: Runner) -> None:
    """Writes to the rc file and into the home directory: the rc file is named protected (no
    widening would allow it), and the home directory is never proposed, not even when the
    command's $HOME differs from ringfence's own (the case that proposed --writable /root)."""
    ws = rf.mkdir()
    home, other = _home(rf), _home(rf, "other-home-")
    mine = 'echo x >> "$HOME/.bashrc"; touch "$HOME/new"; mkdir -p "$HOME/.config/app"; '
    r = rf.sh(ws, mine + "exit 3", env={"HOME": str(home)})
    assert r.returncode == 3, r.stderr
    assert f"openat {home}/.bashrc (protected: .bashrc)" in r.stderr
    assert f"openat {home}/new (outside writable roots)" in r.stderr
    assert "to allow it" not in r.stderr, r.stderr
    # The command's $HOME is `other`; ringfence's own is `home`: neither is proposed.
    both = f"touch {home}/new2; echo x >> {home}/.bashrc; mkdir -p {home}/.local/bin; exit 3"
    r = rf.sh(ws, mine + both, "--env", f"HOME={other}", env={"HOME": str(home)})
    assert r.returncode == 3, r.stderr
    assert f"openat {other}/.bashrc (protected: .bashrc)" in r.stderr
    assert f"openat {home}/.bashrc (protected: .bashrc)" in r.stderr
    assert "to allow it" not in r.stderr, r.stderr
    assert (home / ".bashrc").read_text() == "" and not (home / "new").exists()
    assert (other / ".bashrc").read_text() == ""


def test_a_home_as_the_workspace_keeps_rc_files_with_no_widening(rf: Runner) -> None:
    home = _home(rf)
    r = rf.sh(
        home,
        "echo x >> .bashrc; echo x > .profile; echo ok > notes; cat notes; exit 0",
        "--workspace",
        str(home),
        env={"HOME": str(home)},
    )
    assert r.stdout == "ok\n", r.stderr
    assert f"{home}/.bashrc (protected" in r.stderr
    assert f"{home}/.profile (protected: .profile)" in r.stderr
    assert "to allow it" not in r.stderr
    assert (home / ".bashrc").read_text() == "" and not (home / ".profile").exists()


@pytest.mark.parametrize("existing", [True, False])
def test_interactive_shells_writing_history_are_not_reported(rf: Runner, existing: bool) -> None:
    """bash and python, interactive, write their histories at exit: refused (hidden, home
    read-only), not reported. Other refusals in the same run still are, and a history file
    the shell itself moved elsewhere is an ordinary write."""
    ws = rf.mkdir()
    home = _home(rf)
    if not existing:
        (home / ".bash_history").unlink()
    script = 'echo "hi-$((6*7))"\ntouch "$HOME/visible"\nexit\n'
    r = rf("run", "--", "bash", "-i", cwd=ws, env={"HOME": str(home)}, input=script)
    assert "hi-42" in r.stdout, r.stderr
    report = r.stderr[r.stderr.find("ringfence:") :]
    assert f"refused openat {home}/visible (outside writable roots)" in report
    assert "history" not in report, report
    r = rf("run", "--", "python3", "-i", cwd=ws, env={"HOME": str(home)}, input="print(6*7)\n")
    assert "42" in r.stdout and "ringfence:" not in r.stderr, r.stderr
    moved = 'HISTFILE="$HOME/elsewhere"\necho hi\nexit\n'
    r = rf("run", "--", "bash", "-i", cwd=ws, env={"HOME": str(home)}, input=moved)
    assert f"{home}/elsewhere (outside writable roots)" in r.stderr  # bash did write at exit
    hist = rf.mkdir("hist-")
    r = rf("run", "--", "bash", "-i", cwd=ws, env={"HOME": str(home),
           "HISTFILE": f"{hist}/h"}, input="echo hi\nexit\n")  # fmt: skip
    assert "ringfence:" not in r.stderr[r.stderr.find("exit") :], r.stderr


def test_ringfence_shell_ends_without_a_history_refusal(rf: Runner) -> None:
    """`ringfence shell` on a real terminal: bash writes ~/.bash_history when it exits."""
    import os
    import pty
    import select
    import time

    ws = rf.mkdir()
    home = _home(rf)
    env = rf.env({"HOME": str(home), "SHELL": "/bin/bash", "TERM": "dumb"})
    argv = rf.argv(["shell"])
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        try:
            os.chdir(ws)
            if rf.label != "self":
                os.fchown(0, rf.uid, rf.gid)  # a user's own terminal belongs to that user
                os.setgroups([])
                os.setgid(rf.gid)
                os.setuid(rf.uid)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out, sent = b"", False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if not sent and (b"# " in out or b"$ " in out):
                os.write(master, b'echo "hi-$((6*7))"; touch "$HOME/visible"; exit\r')
                sent = True
    finally:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)
    text = out.decode(errors="replace")
    assert "hi-42" in text, text
    assert f"refused openat {home}/visible (outside writable roots)" in text
    assert "history" not in text[text.find("ringfence:") :], text


def test_a_newline_in_a_refused_path_cannot_forge_a_ringfence_line(rf: Runner) -> None:
    ws = rf.mkdir()
    ro = rf.mkdir("ro-")
    ro.chmod(0o555)
    name = f"{ro}/x\nringfence: to allow it: --writable ~"
    r = rf("run", "--", "python3", "-c", f"open({name!r}, 'w')", cwd=ws)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("ringfence:")]
    assert not any(ln.startswith("ringfence: ringfence:") for ln in lines), r.stderr
    assert not any(ln.endswith("--writable ~") for ln in lines), r.stderr
    assert "x\\nringfence" in r.stderr  # shown escaped, on the report's own line
