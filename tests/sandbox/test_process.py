"""The process tree ends with the command; exit statuses follow the shell; bad input fails."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import CONFINED_MARK, Runner

from ringfence.platforms.linux import cgroups

pytestmark = pytest.mark.sandbox


def _procs_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _wait_gone(token: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = _procs_with(token)
        if not left:
            return []
        time.sleep(0.05)
    return _procs_with(token)


def _sleeper(token: str) -> str:
    """A shell snippet that starts a long sleep whose argv carries ``token``."""
    return f"sh -c 'sleep 300; : {token}'"


def test_background_and_setsid_processes_die_with_the_command(rf: Runner) -> None:
    ws = rf.mkdir()
    token = f"rf-bg-{uuid.uuid4().hex}"
    script = (
        f"{_sleeper(token)} & setsid {_sleeper(token)} & "
        f'(setsid sh -c "{_sleeper(token)} &" &) ; sleep 0.3; '
        f"ps -eo args | grep -c '[{token[0]}]{token[1:]}'"
    )
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 3  # they really ran inside
    assert _wait_gone(token) == []


def test_sigkill_of_ringfence_leaves_no_process_and_no_file(rf: Runner) -> None:
    """Everything checked is this test's own: processes by a token only its command carries,
    temporary files in a TMPDIR only its ringfence uses, cgroups by its ringfence's pid; so
    another ringfence running on the machine meanwhile changes nothing here."""
    ws = rf.mkdir()
    (ws / ".git").mkdir()
    os.chown(ws / ".git", rf.uid, rf.gid)
    before = sorted(p.name for p in ws.rglob("*"))
    tmpdir = rf.mkdir("tmpdir-")  # the host side's own temporary files go here, not to /tmp
    token = f"rf-kill-{uuid.uuid4().hex}"
    proc = rf.popen(
        "run",
        "--",
        "sh",
        "-c",
        f"setsid {_sleeper(token)} & echo started; wait",
        cwd=ws,
        env={"TMPDIR": str(tmpdir)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    assert _procs_with(token), "the command never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_gone(token) == []
    assert sorted(p.name for p in ws.rglob("*")) == before
    assert sorted(os.listdir(tmpdir)) == []
    # Its per-run cgroups (if any) could not be removed by the killed ringfence: they are empty,
    # and the next run removes them.
    stale = [
        os.path.join(site.parent, n)
        for site in cgroups.discover()[0].values()
        if os.path.isdir(site.parent)
        for n in os.listdir(site.parent)
        if n.startswith(f"ringfence-{proc.pid}-")
    ]
    for d in stale:  # the runner processes exit right after the killed host: give them time
        deadline = time.monotonic() + 10
        while Path(d, "cgroup.procs").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(d, "cgroup.procs").read_text() == ""
    assert rf("run", "--", "true", cwd=ws).returncode == 0
    assert [d for d in stale if os.path.exists(d)] == []


def test_timeout_kills_the_tree_and_exits_124(rf: Runner) -> None:
    ws = rf.mkdir()
    token = f"rf-timeout-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    r = rf("run", "--timeout", "1", "--", "sh", "-c", f"setsid {_sleeper(token)} & wait", cwd=ws)
    assert r.returncode == 124
    assert "timed out after 1 s" in r.stderr
    assert time.monotonic() - t0 < 20
    assert _wait_gone(token) == []


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
    ],
)
def test_exit_status_mapping(rf: Runner, script: str, code: int) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, script)
    assert r.returncode == code, r.stderr


def test_not_found_is_127_and_not_executable_is_126(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("run", "--", "definitely-not-a-command-xyz", cwd=ws)
    assert r.returncode == 127
    assert "definitely-not-a-command-xyz: command not found" in r.stderr
    script = ws / "noexec.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    os.chown(script, rf.uid, rf.gid)
    r = rf("run", "--", str(script), cwd=ws)
    assert r.returncode == 126
    assert "cannot execute" in r.stderr and "ran" not in r.stdout


def test_ringfence_failure_is_125_with_a_message(rf: Runner) -> None:
    # A working directory the policy hides: ringfence cannot start the command there and
    # says so.
    ws = rf.mkdir()
    hidden = rf.mkdir("hidden-")
    r = rf(
        "run",
        "--deny-read",
        str(hidden),
        "--cwd",
        str(hidden),
        "--",
        "sh",
        "-c",
        "echo ran",
        cwd=ws,
    )
    assert r.returncode == 125
    assert "ran" not in r.stdout
    assert str(hidden) in r.stderr


def test_stdio_is_passed_straight_through(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "cat; echo err >&2", input="from stdin\n")
    assert r.returncode == 0
    assert r.stdout == "from stdin\n"
    assert r.stderr == "err\n"


def test_no_controlling_terminal(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "ps -o sid=,pid= -p $$; cat /dev/tty 2>&1 || true")
    assert r.returncode == 0, r.stderr
    sid, pid = r.stdout.split("\n")[0].split()
    assert sid == pid  # the command leads its own session
    assert "No such device or address" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--bogus", "--", "true"], "unrecognized arguments"),
        (["run", "--writable", "relative/dir", "--", "true"], "is relative"),
        (["run", "--writable", "/nonexistent-ringfence-dir", "--", "true"], "does not exist"),
        (["run", "--cwd", "/nonexistent-ringfence-dir", "--", "true"], "does not exist"),
        (["run", "--mode", "read-only", "--writable", "/var/tmp", "--", "true"], "conflicts"),
        (["run", "--mode", "full-access", "--network", "off", "--", "true"], "network"),
        (["run", "--mode", "full-access", "--deny-read", "/etc", "--", "true"], "full-access"),
        (["run", "--"], "no command given"),
        (["run"], "no command given"),
        (["run", "--", ""], "empty"),
        (["run", "--env", "NOEQUALS", "--", "true"], "K=V"),
        (["run", "--timeout", "-1", "--", "true"], "positive"),
        (["run", "--writable", "/", "--", "true"], "cannot be a writable root"),
        (["run", "--mode", "nope", "--", "true"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_and_runs_nothing(rf: Runner, args: list[str], message: str) -> None:
    ws = rf.mkdir()
    marker = ws / "ran"
    full = [*args]
    if full[-1] == "true":
        full[-1:] = ["sh", "-c", f"touch {marker}"]
    r = rf(*full, cwd=ws)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2
    assert not marker.exists()


def test_full_access_runs_without_a_boundary(rf: Runner) -> None:
    ws, outside = rf.mkdir(), rf.mkdir("outside-")
    r = rf(
        "run",
        "--mode",
        "full-access",
        "--",
        "sh",
        "-c",
        f"echo x > {outside}/f; echo $RINGFENCE_SANDBOX",
        cwd=ws,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
    assert (outside / "f").exists()
    assert Path(outside / "f").read_text() == "x\n"


def test_the_confinement_proof_fails_for_an_unconfined_command(rf: Runner) -> None:
    """The check positive tests rely on (``rf.confined``) rejects a command that ran with no
    boundary: under full access RINGFENCE_SANDBOX is 0, and with it forced to 1 (by the
    command itself: ``--env RINGFENCE_SANDBOX=1`` is refused) the escape write lands on the
    host."""
    ws = rf.mkdir()
    c = rf.confinement
    r = rf("run", "--mode", "full-access", "--", *c.shell("echo ran"), cwd=ws)
    assert r.returncode == 0 and r.stdout == f"{CONFINED_MARK}:0:{c.nonce}\nran\n", r.stdout
    with pytest.raises(AssertionError, match="did not prove it ran confined"):
        c.check(r)
    refused = rf("run", "--mode", "full-access", "--env", "RINGFENCE_SANDBOX=1", "--", "true")
    assert refused.returncode == 2 and "RINGFENCE_SANDBOX is ringfence's own" in refused.stderr
    forged = ("--mode", "full-access", "--", "env", "RINGFENCE_SANDBOX=1")
    r = rf("run", *forged, *c.shell("echo ran"), cwd=ws)
    assert r.stdout.startswith(c.line + "\n"), r.stdout
    with pytest.raises(AssertionError, match=r"wrote .* on the host"):
        c.check(r)


def test_the_callers_terminal_can_be_reopened_but_not_injected(rf: Runner) -> None:
    """``> /dev/stdout`` on a terminal works; TIOCSTI into it does not."""
    import pty
    import select
    import subprocess

    ws = rf.mkdir()
    master, slave = pty.openpty()
    os.fchown(slave, rf.uid, rf.gid)  # a user's own terminal belongs to that user
    inject = (
        'python3 -c "import fcntl, termios; '
        "[fcntl.ioctl(0, termios.TIOCSTI, c) for c in [b'i', b'd', b'\\n']]; print('INJECTED')\""
    )
    script = f"echo via-dev-stdout > /dev/stdout; test -t 0 && echo stdin-is-tty; {inject}"
    proc = subprocess.Popen(
        rf.argv(["run", "--", "sh", "-c", script]),
        cwd=ws,
        env=rf.env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 20)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=20)
    os.close(master)
    text = out.decode(errors="replace")
    assert "via-dev-stdout" in text
    assert "stdin-is-tty" in text
    assert "INJECTED" not in text
    assert "Operation not permitted" in text


def test_runner_processes_are_out_of_reach(rf: Runner) -> None:
    """pid 1 and the guard carry ringfence's unscrubbed environment: it must not be readable,
    and they must not be traceable."""
    ws = rf.mkdir()
    script = """
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$p" = $$ ] && continue
        if tr '\\0' '\\n' < $d/environ 2>/dev/null | grep -q RINGFENCE_CANARY; then
            echo "LEAK from $p"
        fi
    done
    python3 -c "
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
print('attach-pid1', libc.ptrace(PTRACE_ATTACH, 1, 0, 0), ctypes.get_errno())
"
    echo done
    """
    r = rf.confined_sh(ws, script, env={"RINGFENCE_CANARY": "s3cret"})
    assert r.stdout.strip().endswith("done"), r.stderr
    assert "LEAK" not in r.stdout
    assert "attach-pid1 -1 1" in r.stdout  # EPERM


def test_nested_namespaces_cannot_peel_off_protection(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / ".git/hooks").mkdir(parents=True)
    (ws / ".git/hooks/pre-commit").write_text("orig\n")
    for p in (ws / ".git", ws / ".git/hooks", ws / ".git/hooks/pre-commit"):
        os.chown(p, rf.uid, rf.gid)
    script = """
    unshare -Urm sh -c 'umount -l .git/hooks; echo evil > .git/hooks/pre-commit' 2>&1
    python3 -c "
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('unshare', libc.unshare(0x10000000 | 0x20000), ctypes.get_errno())
try:
    with open('/proc/self/uid_map', 'w') as f:
        f.write('0 %d 1' % os.getuid())
    print('MAPPED')
except OSError as e:
    print('map refused', e.errno)
"
    echo done
    """
    r = rf.confined_sh(ws, script)
    assert r.stdout.strip().endswith("done"), r.stderr
    assert "MAPPED" not in r.stdout
    assert (ws / ".git/hooks/pre-commit").read_text() == "orig\n"


def test_ringfence_inside_ringfence_fails_closed(rf: Runner) -> None:
    """Where the kernel refuses a layer (here: id maps in a nested user namespace), ringfence
    refuses to run instead of running the command unconfined."""
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    marker = outside / "ran-unconfined"
    inner = f"{rf.inner_ringfence()} run -- sh -c 'touch {marker}; echo INNER-RAN'"
    r = rf.sh(ws, f"{inner}; echo inner-status=$?", "--writable", str(outside))
    assert "inner-status=125" in r.stdout, (r.stdout, r.stderr)
    assert "INNER-RAN" not in r.stdout
    assert "cannot enforce the policy" in r.stderr and "user" in r.stderr
    assert not marker.exists()


# What the command sees at 0, 1 and 2, and a line that proves it ran in the sandbox.
FD_PROBE = (
    "a=$(readlink /proc/$$/fd/0); b=$(readlink /proc/$$/fd/1); c=$(readlink /proc/$$/fd/2); "
    'printf "%s\\n" "$a" "$b" "$c" "$RINGFENCE_SANDBOX:$0" > "$1"'
)


def test_closed_stdio_never_hands_ringfence_descriptors_to_the_command(rf: Runner) -> None:
    """Started with stdin, stdout and stderr closed, ringfence's own descriptors (its session
    socket, its state lock, the resolver's socket) would take those numbers and be handed to
    the command as its stdio: the session socket lets it start unapproved, unaudited commands.
    It gets /dev/null for each instead."""
    ws = rf.mkdir()
    out = ws / "fds.txt"
    argv = rf.argv(["run", "--", "sh", "-c", FD_PROBE, rf.nonce, str(out)])
    r = subprocess.run(
        ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", *argv],
        cwd=ws,
        env=rf.env(),
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert r.returncode == 0
    assert out.read_text().splitlines() == ["/dev/null"] * 3 + [f"1:{rf.nonce}"]


CLOSED_STDIN_SCRIPT = """
import os, sys
from ringfence import Policy, Session
ws, nonce, probe = sys.argv[1:4]
os.close(0)  # before the session: its descriptors would take 0
lines = []
with Session(Policy(workspace=ws), cwd=ws, audit=False) as s:
    for i in range(2):
        out = os.path.join(ws, f"fds-{i}.txt")
        assert s.run(["sh", "-c", probe, nonce, out]).returncode == 0
        with open(out) as f:
            seen = f.read().splitlines()
        lines.append(seen[0] + " " + seen[3])
        if i == 0:  # during the session: a close-on-exec descriptor of this process's own at 0
            os.close(0)
            assert os.open(os.path.join(ws, "private"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC) == 0
print("\\n".join(lines))
"""


def test_closed_or_private_stdin_of_an_api_caller_is_not_handed_over(rf: Runner) -> None:
    """``stdin=None`` hands the command the caller's fd 0 only if a child of the caller would
    get it: a closed fd 0 is filled with /dev/null when the session starts (so none of the
    session's descriptors takes it), and a close-on-exec one is not handed over."""
    ws = rf.mkdir()
    script = ws / "closed.py"
    script.write_text(CLOSED_STDIN_SCRIPT)
    r = rf.py(str(script), str(ws), rf.nonce, FD_PROBE, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"/dev/null 1:{rf.nonce}"] * 2, r.stdout
