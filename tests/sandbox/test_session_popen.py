"""``subprocess`` arguments agents pass to ``Session.spawn``/``run``, against the real kernel:
``executable``, ``umask``, ``pass_fds``, ``bufsize``, ``universal_newlines``,
``start_new_session`` and ``close_fds`` either work or say why they cannot; a pty reads EOF
at the command's exit as a pipe does.

Each positive test proves its command ran confined (``Confinement``)."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CONFINED_MARK, Confinement

import ringfence
from ringfence import AsyncSession, Policy, Session

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def ws() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ringfence-popen-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def session(ws: Path) -> Iterator[Session]:
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        yield s


def _py(confinement: Confinement, body: str) -> str:
    """A Python program that first proves it runs confined, as ``Confinement.argv`` does
    for a shell: the marker line with ``$RINGFENCE_SANDBOX`` and the nonce (``sys.argv[1]``),
    and a write outside the workspace that must not land."""
    return (
        "import os, sys\n"
        "try:\n"
        f"    open({str(confinement.escape_path)!r}, 'w').close()\n"
        "except OSError:\n"
        "    pass\n"
        f"print('{CONFINED_MARK}:' + os.environ.get('RINGFENCE_SANDBOX', '') + ':' + sys.argv[1],"
        " flush=True)\n" + body
    )


def test_umask_is_the_commands(session: Session, ws: Path, confinement: Confinement) -> None:
    cmd = confinement.shell("umask; touch masked; stat -c %a masked")
    r = session.run(cmd, capture_output=True, text=True, umask=0o027)
    assert (r.returncode, confinement.strip(r.stdout, r.stderr)) == (0, "0027\n640\n")
    assert (ws / "masked").stat().st_mode & 0o777 == 0o640
    mine = os.umask(0o022)
    os.umask(mine)
    r = session.run(confinement.shell("umask"), capture_output=True, text=True)
    assert confinement.strip(r.stdout) == f"{mine:04o}\n"  # not given: the caller's


def test_executable_runs_another_program_under_the_given_argv0(
    session: Session, confinement: Confinement
) -> None:
    argv = confinement.argv([])  # the proof, then (nothing to exec) the rest of the script
    argv[0] = "renamed-sh"
    argv[2] += "; tr '\\0' '\\n' < /proc/$$/cmdline | head -n 1"
    r = session.run(argv, executable="/bin/sh", capture_output=True, text=True)
    assert (r.returncode, confinement.strip(r.stdout, r.stderr)) == (0, "renamed-sh\n")
    with pytest.raises(FileNotFoundError) as e:
        session.run(["sh", "-c", "true"], executable="/nonexistent/program")
    assert (e.value.errno, e.value.filename) == (2, "/nonexistent/program")


def test_pass_fds_hands_over_exactly_those_descriptors(
    session: Session, confinement: Confinement
) -> None:
    r_fd, w_fd = os.pipe()
    stray = os.open(os.devnull, os.O_RDONLY)  # inheritable, not named: must not get in
    os.set_inheritable(stray, True)
    try:
        body = (
            "w = int(sys.argv[2])\n"
            "os.write(w, b'through the descriptor')\n"
            "print(sorted(int(f) for f in os.listdir('/proc/self/fd')))\n"
        )
        argv = ["python3", "-c", _py(confinement, body), confinement.nonce, str(w_fd)]
        r = session.run(argv, pass_fds=[w_fd], close_fds=True, capture_output=True, text=True)
        out = confinement.strip(r.stdout, r.stderr)
        listed = set(eval(out))
        assert r.returncode == 0 and {0, 1, 2, w_fd} <= listed and len(listed) == 5
        assert stray not in listed or stray == w_fd
        os.close(w_fd)
        assert os.read(r_fd, 100) == b"through the descriptor"
        assert os.read(r_fd, 100) == b""  # EOF: no one in the sandbox kept a copy
    finally:
        os.close(r_fd)
        os.close(stray)


PASS_LOW_FDS = """
import os, sys
pipes = [os.pipe() for _ in range(5)]  # a fresh process: these are 3..12, where the
wanted = [w for _, w in pipes]         # command's init keeps its own descriptors
from ringfence import Policy, Session
ws, nonce, escape = sys.argv[1:4]
prog = (
    "import os, sys\\n"
    "try:\\n    open(sys.argv[2], 'w').close()\\nexcept OSError:\\n    pass\\n"
    "print('rf-confined:' + os.environ.get('RINGFENCE_SANDBOX', '') + ':' + sys.argv[1])\\n"
    "for n in sys.argv[3:]:\\n    os.write(int(n), n.encode())\\n"
)
with Session(Policy(workspace=ws), cwd=ws, audit=False) as s:
    for _ in range(2):  # the runner's path, then a prepared init's
        r = s.run(["python3", "-c", prog, nonce, escape, *map(str, wanted)], pass_fds=wanted,
                  capture_output=True, text=True)
        print(r.stdout.strip(), r.returncode, r.stderr.strip())
        got = [os.read(rd, 100).decode() for rd, _ in pipes]
        print(wanted == [int(g) for g in got])
for rd, w in pipes:
    os.close(w)
    assert os.read(rd, 10) == b""
print("eof")
"""


def test_pass_fds_at_numbers_the_commands_init_holds(ws: Path, confinement: Confinement) -> None:
    script = ws / "pass_low.py"
    script.write_text(PASS_LOW_FDS)
    r = subprocess.run(
        [sys.executable, str(script), str(ws), confinement.nonce, str(confinement.escape_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    proof = f"{confinement.line} 0 "
    assert r.stdout == f"{proof}\nTrue\n{proof}\nTrue\neof\n", r.stderr[-2000:]
    assert confinement.escape_path is not None and not confinement.escape_path.exists()


def test_start_new_session_and_close_fds(session: Session, confinement: Confinement) -> None:
    body = "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n"
    argv = ["python3", "-c", _py(confinement, body), confinement.nonce]
    r = session.run(argv, start_new_session=True, close_fds=True, capture_output=True, text=True)
    assert confinement.strip(r.stdout, r.stderr) == "True True\n"
    with pytest.raises(ValueError) as e:
        session.run(["true"], start_new_session=False)
    assert str(e.value) == (
        "start_new_session=False cannot be had: every sandboxed command starts a session of "
        "its own, so no terminal of yours is its controlling terminal and it cannot push "
        "keystrokes into one (TIOCSTI); signal it with send_signal(), terminate() or kill()"
    )
    with pytest.raises(ValueError) as e:
        session.spawn(["true"], close_fds=False)
    assert str(e.value) == (
        "close_fds=False cannot be had: the sandbox's runner starts the command, not this "
        "process, so it never inherits this process's descriptors; name the ones it needs in "
        "pass_fds"
    )


def test_bufsize_and_universal_newlines(session: Session, confinement: Confinement) -> None:
    p = session.spawn(confinement.argv(["cat"]), stdin=ringfence.PIPE, stdout=ringfence.PIPE)
    assert isinstance(p.stdout, io.FileIO)  # ours: unbuffered unless asked
    p.communicate(b"")
    p = session.spawn(
        confinement.argv(["cat"]), stdin=ringfence.PIPE, stdout=ringfence.PIPE, bufsize=-1
    )
    assert isinstance(p.stdout, io.BufferedReader) and isinstance(p.stdin, io.BufferedWriter)
    p.communicate(b"")
    p = session.spawn(
        confinement.argv(["cat"]),
        stdin=ringfence.PIPE,
        stdout=ringfence.PIPE,
        bufsize=1,
        universal_newlines=True,
    )
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline() == confinement.line + "\n"
    p.stdin.write("line-buffered\n")  # no flush: line buffering sends it
    assert p.stdout.readline() == "line-buffered\n"
    p.stdin.close()
    assert p.wait(10) == 0
    r = session.run(
        confinement.shell("printf 'a\\r\\nb\\rc\\n'"), capture_output=True, universal_newlines=True
    )
    assert confinement.strip(r.stdout) == "a\nb\nc\n"  # as subprocess's text mode reads it


def test_a_pty_reads_eof_at_the_commands_exit(session: Session, confinement: Confinement) -> None:
    p = session.spawn(confinement.shell("echo last words"), pty=True)
    assert p.stdout is not None
    out = p.stdout.read()  # to the end: no EIO
    assert confinement.strip(out.decode().replace("\r\n", "\n")) == "last words\n"
    assert p.stdout.read() == b"" and p.stdout.read(10) == b""
    assert p.wait(10) == 0
    p.stdout.close()


def test_asyncio_mirrors_the_arguments_and_the_pty_eof(ws: Path, confinement: Confinement) -> None:
    async def main() -> None:
        async with AsyncSession(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            r_fd, w_fd = os.pipe()
            cmd = confinement.shell(f"umask; echo via-fd >&{w_fd}" if w_fd < 10 else "umask")
            r = await s.run(
                cmd, capture_output=True, text=True, umask=0o077, pass_fds=[w_fd],
                start_new_session=True, close_fds=True,
            )  # fmt: skip
            os.close(w_fd)
            assert confinement.strip(r.stdout, r.stderr) == "0077\n"
            assert os.read(r_fd, 100) == (b"via-fd\n" if w_fd < 10 else b"")
            os.close(r_fd)
            p = await s.spawn(confinement.shell("echo async last"), pty=True)
            assert p.stdout is not None
            out = (await p.stdout.read()).decode().replace("\r\n", "\n")
            assert confinement.strip(out) == "async last\n"
            assert await p.stdout.read() == b"" and await p.wait() == 0
            with pytest.raises(ValueError, match="only bufsize=0 is meaningful here"):
                await s.spawn(["true"], bufsize=-1)
            with pytest.raises(ValueError, match="start_new_session=False cannot be had"):
                await s.run(["true"], start_new_session=False)

    asyncio.run(main())


def test_the_approval_step_judges_the_program_that_runs(ws: Path) -> None:
    """``executable`` cannot slip a program past the approval step under a known-safe
    ``args[0]`` (``ls`` runs unasked under ``untrusted``): the step (and the audit log) see
    the program itself."""
    asked: list[object] = []

    def approver(decision: object) -> bool:
        asked.append(decision)
        return False

    with (
        Session(
            Policy(workspace=str(ws)), approval="untrusted", approver=approver, audit=False
        ) as s,
        pytest.raises(ringfence.ApprovalRefused) as e,
    ):
        s.run(["ls", "-d", "."], executable="/bin/rm")
    assert len(asked) == 1
    assert e.value.decision.commands == (("/bin/rm", "-d", "."),)  # type: ignore[attr-defined]
    assert (ws / ".").exists()


def test_the_program_is_found_on_the_commands_own_path(
    session: Session, ws: Path, confinement: Confinement
) -> None:
    """As ``subprocess`` searches it: the PATH of the env the command gets (not the caller's
    or the sandbox's), an entry holding a same-named file that cannot be executed is passed
    over, and with nothing executable found the error says why (not found, or refused)."""
    first, second = ws / "path-first", ws / "path-second"
    for d in (first, second):
        d.mkdir(exist_ok=True)
    program = f"rf-prog-{confinement.nonce}"
    (first / program).write_text("#!/bin/sh\necho wrong\n")  # not executable
    (second / program).write_text('#!/bin/sh\necho "found $RINGFENCE_SANDBOX $1"\n')
    (second / program).chmod(0o755)
    env = {"PATH": f"{ws / 'path-none'}:{first}:{second}"}
    r = session.run([program, confinement.nonce], env=env, capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, f"found 1 {confinement.nonce}\n"), r.stderr
    with pytest.raises(FileNotFoundError):
        session.run([program], env={"PATH": str(ws / "path-none")})
    with pytest.raises(PermissionError):
        session.run([program], env={"PATH": str(first)})
    assert session.run(["sh", "-c", "exit 7"], env={}).returncode == 7  # no PATH: /bin:/usr/bin
