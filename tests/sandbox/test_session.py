"""The session API against the real kernel: subprocess-like behaviour, trees, concurrency, PTY.

These run in the test process (the API is a library); ``test_the_api_as_an_unprivileged_user``
runs a script through it as the unprivileged test user, and the CLI tests at the end drive
``ringfence run -t`` and ``ringfence shell`` on a real pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Confinement, Runner

import ringfence
from ringfence import Policy, SandboxError, Session

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def ws() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ringfence-session-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def session(ws: Path) -> Iterator[Session]:
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        yield s


def _procs_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _wait_gone(token: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _procs_with(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _sleeper(token: str) -> str:
    return f"sh -c 'sleep 30; echo {token}'"


# -- subprocess behaviour -------------------------------------------------------------------


def test_run_mirrors_subprocess(session: Session, ws: Path, confinement: Confinement) -> None:
    c = confinement
    r = session.run(c.shell("echo out; echo err >&2; exit 3"), capture_output=True)
    assert isinstance(r, subprocess.CompletedProcess)
    assert (r.returncode, c.strip_bytes(r.stdout), r.stderr) == (3, b"out\n", b"err\n")
    assert r.duration > 0 and not r.stdout_truncated
    r = session.run("echo $((6*7)) $RINGFENCE_SANDBOX", shell=True, capture_output=True, text=True)
    assert r.stdout == "42 1\n"
    r = session.run(c.argv(["cat"]), input="fed through stdin", capture_output=True, text=True)
    assert c.strip(r.stdout) == "fed through stdin"
    r = session.run(c.argv(["pwd"]), cwd="/usr", capture_output=True, text=True)
    assert c.strip(r.stdout) == "/usr\n"
    r = session.run(
        c.shell("echo $ONLY"),
        env={"ONLY": "me", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert c.strip(r.stdout) == "me\n"
    r = session.run(["sh", "-c", "kill -TERM $$"])
    assert r.returncode == -signal.SIGTERM
    with pytest.raises(subprocess.CalledProcessError) as e:
        session.run(["sh", "-c", "echo no >&2; exit 4"], capture_output=True, check=True)
    assert e.value.returncode == 4 and e.value.stderr == b"no\n"
    with pytest.raises(FileNotFoundError):
        session.run(["no-such-command-here"])
    with pytest.raises(SandboxError, match="chdir"):
        session.run(["true"], cwd=str(ws / "missing"))


def test_output_goes_straight_to_the_callers_fd(
    session: Session, ws: Path, confinement: Confinement
) -> None:
    out = ws / "out.txt"
    with open(out, "wb") as f:
        r = session.run(
            confinement.shell("echo direct; echo also >&2"), stdout=f, stderr=ringfence.STDOUT
        )
    assert r.returncode == 0 and r.stdout is None
    assert confinement.strip(out.read_text()) == "direct\nalso\n"


def test_the_boundary_holds_in_a_session(session: Session) -> None:
    r = session.run(["sh", "-c", "touch /etc/ringfence-x"], capture_output=True, text=True)
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    assert not os.path.exists("/etc/ringfence-x")


def test_the_commands_init_holds_the_session_socket_out_of_reach(session: Session) -> None:
    """pid 1 of the command's namespace holds the session socket: reaching it would let a
    command forge reports for other commands. It is not dumpable: no fd, memory or environ."""
    probe = (
        "import os\n"
        "names = os.listdir('/proc/1/fd')\n"
        "for n in names:\n"
        "    try:\n        print('LEAK', os.readlink(f'/proc/1/fd/{n}'))\n"
        "    except PermissionError:\n        print('fd refused')\n"
        "for f in ('environ', 'mem'):\n"
        "    try:\n        open(f'/proc/1/{f}', 'rb').read(1); print('LEAK', f)\n"
        "    except PermissionError:\n        print(f, 'refused')\n"
    )
    r = session.run(["python3", "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "LEAK" not in r.stdout
    assert r.stdout.count("fd refused") >= 3  # at least stdio and the session socket
    assert "environ refused" in r.stdout and "mem refused" in r.stdout


def test_a_timeout_kills_the_whole_tree_not_the_session(session: Session) -> None:
    token = f"rf-sess-timeout-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as e:
        session.run(
            ["sh", "-c", f"echo before; setsid {_sleeper(token)} & wait"],
            capture_output=True,
            timeout=1,
        )
    assert isinstance(e.value, ringfence.TimeoutExpired)
    assert e.value.stdout == b"before\n"  # what came before the timeout is kept
    assert time.monotonic() - t0 < 10
    assert _wait_gone(token) == []
    assert session.run(["true"]).returncode == 0


def test_flooding_output_under_a_cap_never_blocks(session: Session) -> None:
    r = session.run(
        ["sh", "-c", "head -c 20000000 /dev/zero; echo tail >&2"],
        capture_output=True,
        output_limit=1 << 20,
        timeout=60,
    )
    assert r.returncode == 0
    assert len(r.stdout) == 1 << 20 and r.stdout_truncated
    assert r.stderr == b"tail\n" and not r.stderr_truncated


def test_a_command_that_closes_stdout_and_keeps_running(session: Session) -> None:
    r = session.run(
        ["sh", "-c", "exec >&-; sleep 0.5; echo still-here >&2"], capture_output=True, timeout=30
    )
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"still-here\n"


def test_spawn_is_popen_like(session: Session) -> None:
    p = session.spawn(
        ["sh", "-c", "read line; echo got $line"],
        stdin=ringfence.PIPE,
        stdout=ringfence.PIPE,
        text=True,
    )
    assert p.poll() is None and p.pid > 0
    out, err = p.communicate("hello\n", timeout=10)
    assert (out, err, p.returncode) == ("got hello\n", None, 0)
    p = session.spawn(["sleep", "30"])
    p.terminate()
    assert p.wait(10) == -signal.SIGTERM
    p = session.spawn(["sh", "-c", "trap '' TERM; sleep 30"])
    p.kill()
    assert p.wait(10) == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired):
        session.spawn(["sleep", "30"]).wait(0.2)


# -- many commands ----------------------------------------------------------------------------


def test_commands_run_concurrently_from_many_threads(
    session: Session, confinement: Confinement
) -> None:
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            cmd = confinement.shell(f"sleep 0.5; echo {i}")
            r = session.run(cmd, capture_output=True, timeout=60)
            results[i] = confinement.strip_bytes(r.stdout)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == {i: f"{i}\n".encode() for i in range(12)}
    assert time.monotonic() - t0 < 12 * 0.5  # they overlapped


def test_commands_cannot_see_or_signal_each_other(session: Session) -> None:
    token = f"rf-sess-victim-{uuid.uuid4().hex}"
    victim = session.spawn(["sh", "-c", f"sleep 30; echo {token}"])
    try:
        r = session.run(
            ["sh", "-c", "grep -l rf-sess-victim /proc/[0-9]*/cmdline; kill -KILL -1; echo $?"],
            capture_output=True,
            text=True,
        )
        assert "rf-sess-victim" not in r.stdout  # not in its /proc
        assert victim.poll() is None  # and kill -1 did not reach it
        assert _procs_with(token), "the victim must still run"
    finally:
        victim.kill()
        victim.wait(10)


def test_no_leaks_over_many_commands(ws: Path) -> None:
    """fds, zombies and memory of host and runner stay flat (the benchmark runs 10,000)."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        s.run(["true"])
        conn = s._conn
        assert conn is not None
        runner = int(Path(f"/proc/{conn.runner_pid}/task/{conn.runner_pid}/children").read_text())

        def snapshot() -> tuple[int, int, int]:
            time.sleep(0.3)  # the runner prepares the next command's init: let it settle
            rss = next(
                int(ln.split()[1])
                for ln in Path(f"/proc/{runner}/status").read_text().splitlines()
                if ln.startswith("VmRSS")
            )
            return len(os.listdir("/proc/self/fd")), len(os.listdir(f"/proc/{runner}/fd")), rss

        for _ in range(50):
            s.run(["true"], capture_output=True)
        before = snapshot()
        for i in range(400):
            s.run(["sh", "-c", "echo x"], capture_output=True, input=b"" if i % 2 else None)
        after = snapshot()
        assert after[0] == before[0], "host fds"
        assert after[1] == before[1], "runner fds"
        assert after[2] - before[2] < 4096, "runner RSS grew by more than 4 MiB"
        zombies = [
            p
            for p in os.listdir("/proc")
            if p.isdigit()
            and Path(f"/proc/{p}/stat").exists()
            and _stat(p)[0] == "Z"
            and _stat(p)[1] in (os.getpid(), conn.runner_pid, runner)
        ]
        assert zombies == []


def _stat(pid: str) -> tuple[str, int]:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return "?", 0
    fields = data.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1])


def test_a_dead_runner_fails_pending_commands_and_the_next_call_restarts(ws: Path) -> None:
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        token = f"rf-sess-dead-{uuid.uuid4().hex}"
        p = s.spawn(["sh", "-c", f"setsid {_sleeper(token)} & wait"])
        assert s._conn is not None
        os.kill(s._conn.runner_pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="runner"):
            p.wait(20)
        assert _wait_gone(token) == []  # the kernel ended the whole sandbox
        r = s.run(["echo", "again"], capture_output=True)
        assert r.stdout == b"again\n"
    s.close()  # idempotent
    with pytest.raises(SandboxError, match="closed"):
        s.run(["true"])


def test_module_level_run(ws: Path, confinement: Confinement) -> None:
    r = ringfence.run(
        confinement.shell("echo $RINGFENCE_SANDBOX"),
        policy=Policy(workspace=str(ws)),
        capture_output=True,
        text=True,
    )
    assert confinement.strip(r.stdout) == "1\n"


# -- asyncio ------------------------------------------------------------------------------------


def test_asyncio_run_spawn_and_timeout(session: Session, confinement: Confinement) -> None:
    async def main() -> None:
        cmd = confinement.shell("echo a; exit 5")
        r = await session.arun(cmd, capture_output=True, text=True)
        assert (r.returncode, confinement.strip(r.stdout)) == (5, "a\n")
        results = await asyncio.gather(
            *(
                session.arun(["sh", "-c", f"sleep 0.3; echo {i}"], capture_output=True)
                for i in range(6)
            )
        )
        assert [x.stdout for x in results] == [f"{i}\n".encode() for i in range(6)]
        p = await session.aspawn(
            ["sh", "-c", "read x; echo got $x; echo e >&2"],
            stdin=ringfence.PIPE,
            stdout=ringfence.PIPE,
            stderr=ringfence.PIPE,
        )
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"line\n")
        await p.stdin.drain()
        assert await p.stdout.readline() == b"got line\n"
        out, err = await p.communicate()
        assert (out, err, await p.wait()) == (b"", b"e\n", 0)
        with pytest.raises(subprocess.TimeoutExpired):
            await session.arun(["sleep", "30"], timeout=0.5)

    asyncio.run(main())


# -- PTY ---------------------------------------------------------------------------------------


def _read_all(fd: int, seconds: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_pty_with_window_size_changes(session: Session) -> None:
    p = session.spawn(
        ["sh", "-c", "tty; stty size; trap 'stty size' WINCH; sleep 1; stty size"], pty=(30, 100)
    )
    assert p.pty_fd is not None
    time.sleep(0.3)
    p.set_winsize(40, 120)
    out = _read_all(p.pty_fd).decode()
    assert p.wait(10) == 0
    lines = [ln.strip() for ln in out.splitlines()]
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "30 100"
    assert lines[-1] == "40 120"


def test_terminal_injection_stays_impossible_on_the_pty(session: Session) -> None:
    probe = (
        "import fcntl, termios, errno\n"
        "try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\nexcept OSError as e:\n"
        "    print('refused', errno.errorcode[e.errno])\nelse:\n    print('INJECTED')\n"
    )
    p = session.spawn(["python3", "-c", probe], pty=True)
    assert p.pty_fd is not None
    out = _read_all(p.pty_fd).decode()
    assert p.wait(10) == 0
    assert "refused EPERM" in out and "INJECTED" not in out


# -- as a normal user, and the CLI's terminal --------------------------------------------------

API_SCRIPT = """
import os, subprocess, sys
from ringfence import Policy, Session
ws, nonce = sys.argv[1:3]
with Session(Policy(workspace=ws), cwd=ws) as s:
    script = 'echo "proof $RINGFENCE_SANDBOX:$0"; id -u; touch ok; touch /etc/nope'
    r = s.run(["sh", "-c", script, nonce], capture_output=True, text=True)
    print(r.stdout.splitlines()[0])
    print("run", r.returncode, r.stdout.split()[2], os.path.exists(os.path.join(ws, "ok")))
    try:
        s.run(["sleep", "30"], timeout=0.5)
    except subprocess.TimeoutExpired:
        print("timeout ok")
    p = s.spawn(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    print("spawn", p.communicate(b"x")[0].decode(), p.returncode)
"""


def test_the_api_as_an_unprivileged_user(rf: Runner) -> None:
    ws = rf.mkdir()
    script = ws / "api.py"
    script.write_text(API_SCRIPT)
    env = rf.env()
    r = subprocess.run(
        [rf.python, str(script), str(ws), rf.nonce],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"proof 1:{rf.nonce}\n"), r.stdout  # it ran confined
    assert f"run 1 {rf.uid} True" in r.stdout
    assert "timeout ok" in r.stdout and "spawn x 0" in r.stdout


def _controlling_terminal() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _drive_cli(rf: Runner, args: list[str], ws: Path, feed: bytes = b"") -> tuple[int, str]:
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        rf.argv(args),
        cwd=ws,
        env=rf.env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_controlling_terminal,  # noqa: PLW1509 - the test process forks no threads
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    os.close(slave)
    if feed:
        time.sleep(1.0)
        os.write(master, feed)
    out = _read_all(master, 30)
    os.close(master)
    return proc.wait(30), out.decode(errors="replace")


def test_cli_run_t_gives_the_command_a_terminal(rf: Runner) -> None:
    ws = rf.mkdir()
    cmd = rf.confinement.shell("tty; stty size")
    code, out = _drive_cli(rf, ["run", "-t", "--", *cmd], ws)
    assert code == 0, out
    assert rf.confinement.line in out.splitlines()[0], out  # it ran confined
    assert rf.confinement.escape_path is not None and not rf.confinement.escape_path.exists()
    assert "/dev/pts/" in out and "33 111" in out


def test_cli_shell_is_interactive_and_sandboxed(rf: Runner) -> None:
    ws = rf.mkdir()
    code, out = _drive_cli(
        rf,
        ["shell", "--shell", "/bin/sh"],
        ws,
        feed=f"echo in-$RINGFENCE_SANDBOX-{rf.nonce}; touch /etc/x-shell; exit 7\n".encode(),
    )
    assert code == 7, out
    assert f"in-1-{rf.nonce}" in out and "Read-only file system" in out
    assert not os.path.exists("/etc/x-shell")
