"""``ringfence session start`` / ``run --session`` / ``session stop`` with the real kernel.

Each test gets a private session directory (``RINGFENCE_SESSION_DIR``) and stops every server
it started, killing it by pid if it does not answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner


class Sessions:
    def __init__(self, rf: Runner) -> None:
        self.rf = rf
        self.dir = rf.mkdir("sessions-")
        self.dir.chmod(0o700)
        self.env = {"RINGFENCE_SESSION_DIR": str(self.dir)}

    def __call__(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **kw.pop("env", {})}  # type: ignore[dict-item]
        return self.rf(*args, env=env, **kw)  # type: ignore[arg-type]

    def start(self, ws: Path, name: str = "t", *flags: str) -> None:
        r = self("session", "start", "--name", name, *flags, cwd=ws)
        assert r.returncode == 0, r.stderr
        assert f"session {name!r} ready" in r.stdout

    def listing(self) -> list[dict[str, object]]:
        r = self("session", "list", "--json")
        assert r.returncode == 0, r.stderr
        rows: list[dict[str, object]] = json.loads(r.stdout)
        return rows

    def run(
        self, ws: Path | str, name: str, *argv: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return self("run", "--session", name, "--", *argv, cwd=ws, **kw)

    def confined(
        self, ws: Path | str, name: str, *argv: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """``run``, asserting the command ran confined (see ``Confinement``)."""
        c = self.rf.confinement
        return c.check(self.run(ws, name, *c.argv(argv), **kw))

    def stop_all(self) -> None:
        for row in self.listing():
            if row.get("running"):
                self("session", "stop", "--name", str(row["name"]))
                pid = int(row["pid"])  # type: ignore[call-overload]
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.05)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def sessions(rf: Runner) -> Iterator[Sessions]:
    s = Sessions(rf)
    try:
        yield s
    finally:
        s.stop_all()


def test_commands_run_in_the_session_with_the_callers_stdio_and_status(
    rf: Runner, sessions: Sessions
) -> None:
    ws = rf.mkdir()
    sessions.start(ws)
    r = sessions.confined(
        ws, "t", "sh", "-c", "echo out; echo err >&2; echo $RINGFENCE_SANDBOX; exit 3"
    )
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n1\n", "err\n")
    r = sessions.confined(ws, "t", "cat", input="from stdin\n")
    assert (r.returncode, r.stdout) == (0, "from stdin\n")
    r = sessions.run(ws, "t", "no-such-command")
    assert r.returncode == 127
    assert "no-such-command: command not found" in r.stderr
    r = sessions.run(ws, "t", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + signal.SIGKILL
    r = sessions("run", "--session", "t", "--timeout", "0.5", "--", "sleep", "30", cwd=ws)
    assert r.returncode == 124
    assert "timed out after 0.5 s" in r.stderr
    rows = sessions.listing()
    assert [(row["name"], row["running"], row["commands"]) for row in rows] == [("t", True, 5)]


def test_the_session_policy_holds_writes_outside_are_refused(
    rf: Runner, sessions: Sessions
) -> None:
    ws = rf.mkdir()
    outside = rf.mkdir("outside-")
    sessions.start(ws)
    r = sessions.confined(ws, "t", "sh", "-c", f"touch {outside}/x; echo $?; touch inside; echo $?")
    assert r.stdout == "1\n0\n"
    assert "Read-only file system" in r.stderr
    assert not (outside / "x").exists()
    assert (ws / "inside").exists()
    r = sessions.run(ws, "t", "sh", "-c", "echo x > .git/hooks/pre-commit")
    assert r.returncode != 0


def test_each_call_brings_its_own_cwd_and_environment(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    (ws / "sub").mkdir()
    os.chown(ws / "sub", rf.uid, rf.gid)
    sessions.start(ws)
    r = sessions.confined(
        ws / "sub",
        "t",
        "sh",
        "-c",
        'pwd; echo "$FOO" "${AWS_SECRET_ACCESS_KEY-scrubbed}" "$RINGFENCE_MODE" "$TMPDIR"',
        env={"FOO": "per-call", "AWS_SECRET_ACCESS_KEY": "hunter2"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{ws}/sub\nper-call scrubbed workspace-write /tmp\n"


def test_policy_flags_cannot_be_given_with_a_session(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    sessions.start(ws)
    r = sessions("run", "--session", "t", "--network", "on", "--", "true", cwd=ws)
    assert r.returncode == 2
    assert "--network cannot be used with --session" in r.stderr
    r = sessions("run", "--session", "../x", "--", "true", cwd=ws)
    assert r.returncode == 2
    assert "session name" in r.stderr


def test_no_session_running_is_a_clear_error(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    r = sessions.run(ws, "nobody", "true")
    assert r.returncode == 2  # a usage error, as everywhere
    assert "no session named 'nobody' is running" in r.stderr


def test_stopping_a_session_that_is_not_running_is_a_usage_error(
    rf: Runner, sessions: Sessions
) -> None:
    r = sessions("session", "stop", "--name", "nobody", cwd=rf.mkdir())
    assert r.returncode == 2
    assert r.stderr == "ringfence: no session named 'nobody' is running\n"


def test_start_refuses_a_second_server_and_replaces_a_dead_ones_socket(
    rf: Runner, sessions: Sessions
) -> None:
    ws = rf.mkdir()
    sessions.start(ws)
    r = sessions("session", "start", "--name", "t", cwd=ws)
    assert r.returncode == 2
    assert "already running" in r.stderr
    pid = int(sessions.listing()[0]["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    assert (sessions.dir / "t.sock").exists()
    assert sessions.listing() == [{"name": "t", "running": False}]
    sessions.start(ws)
    assert sessions.confined(ws, "t", "true").returncode == 0


def test_stop_ends_the_server_and_its_commands(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    sessions.start(ws)
    client = subprocess.Popen(
        sessions.rf.argv(["run", "--session", "t", "--", "sh", "-c", "sleep 30; touch late"]),
        cwd=ws,
        env=sessions.rf.env(sessions.env),
        stderr=subprocess.PIPE,
        text=True,
        **sessions.rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    try:
        deadline = time.monotonic() + 10
        while sessions.listing()[0]["active"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = sessions("session", "stop", "--name", "t")
        assert (r.returncode, r.stdout) == (0, "session 't' stopped\n"), r.stderr
        _, err = client.communicate(timeout=10)
    finally:
        client.kill()
    assert client.returncode == 125
    assert "while the command ran" in err
    assert sessions.listing() == []
    assert not (ws / "late").exists()


def test_signals_reach_the_command_and_a_vanished_client_takes_it_along(
    rf: Runner, sessions: Sessions
) -> None:
    ws = rf.mkdir()
    sessions.start(ws)
    script = 'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done'
    client = subprocess.Popen(
        sessions.rf.argv(["run", "--session", "t", "--", "sh", "-c", script]),
        cwd=ws,
        env=sessions.rf.env(sessions.env),
        stdout=subprocess.PIPE,
        text=True,
        **sessions.rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert client.stdout is not None
    assert client.stdout.readline() == "ready\n"
    client.send_signal(signal.SIGTERM)
    assert client.wait(10) == 7
    assert client.stdout.read() == "got TERM\n"
    client.stdout.close()
    # SIGKILL the client: nobody waits for the command any more, so the server ends it.
    client = subprocess.Popen(
        sessions.rf.argv(["run", "--session", "t", "--", "sh", "-c", "sleep 2; touch orphan"]),
        cwd=ws,
        env=sessions.rf.env(sessions.env),
        **sessions.rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 10
    while sessions.listing()[0]["active"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.kill()
    client.wait()
    time.sleep(3)
    assert not (ws / "orphan").exists()
    assert sessions.listing()[0]["active"] == 0


@pytest.mark.parametrize("isolation", ["namespaces", "reduced"])
def test_a_sandboxed_command_cannot_use_a_session(
    rf: Runner, sessions: Sessions, isolation: str
) -> None:
    """A wider session's socket in plain sight of a narrower sandbox: still refused, also
    from reduced isolation, which shares the session's user namespace."""
    ws = rf.mkdir()
    wide = rf.mkdir("wide-")
    sess_dir = ws / "sessions"
    sess_dir.mkdir(mode=0o700)
    os.chown(sess_dir, rf.uid, rf.gid)
    env = {"RINGFENCE_SESSION_DIR": str(sess_dir)}
    r = sessions("session", "start", "--name", "wide", "--writable", str(wide), cwd=ws, env=env)
    assert r.returncode == 0, r.stderr
    try:
        inner = (
            f"RINGFENCE_SESSION_DIR={sess_dir} {rf.inner_ringfence()} "
            f"run --session wide -- touch {wide}/pwned"
        )
        r = rf.sh(ws, inner, "--isolation", isolation)
        assert r.returncode == 125, (r.stdout, r.stderr)
        assert "may not use a session" in r.stderr or "cannot verify the caller" in r.stderr
        assert not (wide / "pwned").exists()
    finally:
        sessions("session", "stop", "--name", "wide", env=env)


def test_an_idle_session_stops_by_itself(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    sessions.start(ws, "idle", "--idle-timeout", "1")
    assert sessions.run(ws, "idle", "true").returncode == 0
    deadline = time.monotonic() + 15
    while sessions.listing() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions.listing() == []


def test_a_session_directory_others_can_use_is_refused(rf: Runner, sessions: Sessions) -> None:
    ws = rf.mkdir()
    shared = rf.mkdir("shared-")
    shared.chmod(0o755)
    r = sessions(
        "session", "start", "--name", "t", cwd=ws, env={"RINGFENCE_SESSION_DIR": str(shared)}
    )
    assert r.returncode == 125
    assert "only you can use" in r.stderr
    assert not list(shared.iterdir())


def test_a_server_whose_socket_is_removed_stops(rf: Runner, sessions: Sessions) -> None:
    """Nobody can reach it any more: it must not hold a sandbox forever."""
    ws = rf.mkdir()
    sessions.start(ws)
    pid = int(sessions.listing()[0]["pid"])  # type: ignore[call-overload]
    (sessions.dir / "t.sock").unlink()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_a_session_in_a_host_tmp_directory_and_its_lasting_tmp(
    rf: Runner, sessions: Sessions
) -> None:
    """From a /tmp checkout (mkdtemp), a session starts there, its commands run there, and
    what one command wrote to /tmp the next one-shot command of the workspace finds."""
    import secrets

    ws = rf.mkdir("tmpws-", base="/tmp")
    nonce = secrets.token_hex(8)
    sessions.start(ws, "t")
    r = sessions.confined(ws, "t", "sh", "-c", f"pwd; echo {nonce} > /tmp/from-session-{nonce}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(ws)
    assert not Path(f"/tmp/from-session-{nonce}").exists()
    r = rf.confined(ws, ["cat", f"/tmp/from-session-{nonce}"], env=sessions.env)
    assert r.returncode == 0 and r.stdout.strip() == nonce, r.stderr


IMPORTS_WARNING = "ringfence: warning: ringfence imports Python modules from"


def test_a_ringfence_that_imports_from_the_workspace_is_told_so(
    rf: Runner, sessions: Sessions
) -> None:
    """``session start`` (daemonized: told before its stderr goes) and every ``run --session``
    whose own sys.path reaches where the session's commands write (a ringfence in a
    virtualenv inside the workspace) say so; a client importing from elsewhere is not told
    (an outside review: neither said anything)."""
    ws = rf.mkdir()
    (ws / "lib").mkdir()
    os.chown(ws / "lib", rf.uid, rf.gid)
    inside = {"PYTHONPATH": ":".join(filter(None, [rf.pythonpath, str(ws / "lib")]))}
    r = sessions("session", "start", "--name", "venv", cwd=ws, env=inside)
    assert r.returncode == 0, r.stderr
    assert f"{IMPORTS_WARNING} {str(ws / 'lib')!r}" in r.stderr, r.stderr
    script = "echo ran-$0"
    r = sessions.run(ws, "venv", "sh", "-c", script, rf.nonce, env=inside)
    assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
    assert f"{IMPORTS_WARNING} {str(ws / 'lib')!r}" in r.stderr, r.stderr
    r = sessions.run(ws, "venv", "sh", "-c", script, rf.nonce)
    assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
    assert IMPORTS_WARNING not in r.stderr, r.stderr
    # told before the command starts: a command that never ends (or is killed) is told too
    # (review 39: the warning came with the exit status, so a long command went untold)
    cache = {"PYTHONPYCACHEPREFIX": str(ws / "pyc")}  # bytecode read from the workspace
    p = rf.popen(
        "run", "--session", "venv", "--", "sh", "-c", "echo up-$0; sleep 60", rf.nonce,
        cwd=ws, env={**sessions.env, **cache},
    )  # fmt: skip
    try:
        assert p.stdout is not None and p.stderr is not None
        assert p.stdout.readline() == f"up-{rf.nonce}\n"  # it runs, in there
        line = p.stderr.readline()
        assert line.startswith(f"{IMPORTS_WARNING} {str(ws / 'pyc')!r}"), line
    finally:
        p.kill()
        p.communicate(timeout=30)
