"""``Session.arun`` from the event loop (``aio_capture``): sent and awaited without a worker
thread, with ``Session.run``'s own results: confined, output kept to ``output_limit``, the
whole tree killed on a timeout or a cancel (output kept, audited as timed out, the init not
reused), start errors as ``run``'s, and no descriptor left behind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Confinement, parent_pid, pid_of

import ringfence
from ringfence import Policy, Session

pytestmark = pytest.mark.sandbox

NS = "readlink /proc/self/ns/pid"


class _Watched(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to a thread."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.handed = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.handed += 1
        return super().submit(fn, *args, **kwargs)


def _open_pipes() -> set[str]:
    """This process's pipes (the session may meanwhile take sockets of prepared inits)."""
    out = set()
    for n in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            continue
        if link.startswith("pipe:"):
            out.add(f"{n}:{link}")
    return out


async def _watched() -> _Watched:
    pool = _Watched()
    asyncio.get_running_loop().set_default_executor(pool)
    return pool


def test_arun_runs_confined_from_the_loop(ws: Path, confinement: Confinement) -> None:
    """No thread is handed anything, the command proves it ran inside, stdout and stderr
    arrive apart (or merged with STDOUT), exit codes and text mode are run's."""

    async def main() -> None:
        pool = await _watched()
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            for _ in range(3):  # past the runner's first inits
                await s.arun(["true"])
            pool.handed = 0
            r = await s.arun(
                confinement.shell("echo out; echo err >&2; exit 3"),
                capture_output=True, text=True,
            )  # fmt: skip
            assert (r.returncode, confinement.strip(r.stdout), r.stderr) == (3, "out\n", "err\n")
            merged = await s.arun(
                ["sh", "-c", "echo a; echo b >&2"], stdout=ringfence.PIPE, stderr=ringfence.STDOUT
            )
            assert (merged.stdout, merged.stderr) == (b"a\nb\n", None)
            assert pool.handed == 0
            written = await s.arun(confinement.shell(f"echo {confinement.nonce} > mark"))
            assert written.returncode == 0
        assert (ws / "mark").read_text() == f"{confinement.nonce}\n"

    asyncio.run(main())
    assert confinement.escape_path is not None and not confinement.escape_path.exists()


def test_arun_keeps_output_limit_and_drains_the_rest(ws: Path, confinement: Confinement) -> None:
    """2 MiB written, 1,000 bytes kept, the command not blocked on a full pipe; as run."""
    script = confinement.shell("head -c 2097152 /dev/zero; echo done >&2")

    async def main() -> tuple[Any, Any]:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            got = await asyncio.wait_for(
                s.arun(script, capture_output=True, output_limit=1000), timeout=30
            )
            return got, s.run(script, capture_output=True, output_limit=1000)

    r, sync = asyncio.run(main())
    assert r.returncode == 0 and r.stderr == b"done\n"
    assert len(r.stdout) == 1000 and r.stdout_truncated and not r.stderr_truncated
    assert (r.stdout, r.stdout_truncated) == (sync.stdout, sync.stdout_truncated)


def test_arun_timeout_kills_the_tree_and_keeps_output(ws: Path, confinement: Confinement) -> None:
    """The output so far comes with TimeoutExpired, a background child dies with the
    command, the audit record says timed out, and the init is not given the next command."""
    log = ws / "audit.jsonl"
    late = ws / f"late-{confinement.nonce}"
    marker = ws / f"ns-{confinement.nonce}"

    async def main() -> tuple[subprocess.TimeoutExpired, str]:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=str(log)) as s:
            for _ in range(3):
                await s.arun(["true"])
            with pytest.raises(subprocess.TimeoutExpired) as e:
                await s.arun(
                    confinement.shell(
                        f"{NS} > {marker.name}; echo started; "
                        f"(sleep 2; echo late > {late.name}) & wait"
                    ),
                    capture_output=True, text=True, timeout=0.5,
                )  # fmt: skip
            after = await s.arun(confinement.shell(NS), capture_output=True, text=True)
            return e.value, confinement.strip(after.stdout).strip()

    err, ns_after = asyncio.run(main())
    assert confinement.strip(err.stdout) == "started\n"
    time.sleep(2.5)
    assert not late.exists()
    ns = marker.read_text().strip()
    assert ns.startswith("pid:[") and ns_after.startswith("pid:[") and ns != ns_after
    records = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in records if r.get("outcome") == "timed_out"]
    assert len(timed) == 1 and confinement.nonce in " ".join(timed[0]["argv"])


def test_a_cancelled_arun_kills_its_tree(ws: Path, confinement: Confinement) -> None:
    """Cancelling the awaiting task ends the command and what it started; nothing is left
    open in the host."""
    began = ws / f"began-{confinement.nonce}"
    late = ws / f"late-{confinement.nonce}"

    async def main() -> None:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            await s.arun(["true"])
            before = _open_pipes()
            task = asyncio.ensure_future(
                s.arun(
                    confinement.shell(
                        f"echo x > {began.name}; (sleep 2; echo late > {late.name}) & "
                        "sleep 2; echo late >> " + late.name
                    ),
                    capture_output=True,
                )
            )
            deadline = time.monotonic() + 10
            while not began.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert began.exists()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)
            assert _open_pipes() <= before
            r = await s.arun(["sh", "-c", "echo next"], capture_output=True)
            assert r.stdout == b"next\n"

    asyncio.run(main())
    time.sleep(2.5)
    assert not late.exists()


def test_arun_start_errors_are_runs(ws: Path, confinement: Confinement) -> None:
    """A program that is not there or cannot run: the same exceptions as run, with nothing
    left open."""
    (ws / "not-exec").write_text("#!/bin/sh\necho wrong\n")

    async def main() -> None:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            await s.arun(["true"])
            before = _open_pipes()
            with pytest.raises(FileNotFoundError):
                await s.arun([f"rf-none-{confinement.nonce}"], capture_output=True)
            with pytest.raises(PermissionError):
                await s.arun([str(ws / "not-exec")], capture_output=True)
            assert _open_pipes() <= before
            with pytest.raises(subprocess.CalledProcessError):
                await s.arun(["false"], check=True)

    asyncio.run(main())


def test_many_aruns_at_once_keep_their_own_output(ws: Path, confinement: Confinement) -> None:
    """Twenty commands at once, each 200 KB of its own bytes: none mixed, none lost."""

    async def main() -> list[Any]:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            return await asyncio.gather(
                *(
                    s.arun(
                        ["sh", "-c", f"yes {confinement.nonce}-{i} | head -c 200000"],
                        capture_output=True,
                    )
                    for i in range(20)
                )
            )

    for i, r in enumerate(asyncio.run(main())):
        line = f"{confinement.nonce}-{i}\n".encode()
        assert r.returncode == 0 and len(r.stdout) == 200000
        assert set(r.stdout[: len(r.stdout) // len(line) * len(line)].split(b"\n")[:-1]) == {
            line[:-1]
        }


def test_an_approver_is_never_called_on_the_loop(ws: Path) -> None:
    """An approver may ask a person (and block): with one, the command is judged and sent
    from a worker thread, as before."""
    where: list[bool] = []

    def approver(decision: object) -> bool:
        where.append(threading.current_thread() is threading.main_thread())
        return True

    async def main() -> None:
        async with ringfence.AsyncSession(
            Policy(workspace=str(ws)), cwd=str(ws), approval="untrusted", approver=approver,
            audit=False,
        ) as s:  # fmt: skip
            r = await s.run(["touch", "made"], capture_output=True)
            assert r.returncode == 0, r.stderr

    asyncio.run(main())
    assert where == [False]
    assert (ws / "made").exists()


def test_a_cancel_while_an_approver_thinks_kills_what_starts(
    ws: Path, confinement: Confinement
) -> None:
    """Cancelled while the approver (in its worker thread) still decides: the command it then
    lets start is killed at once, with what it started."""
    late = ws / f"late-{confinement.nonce}"
    deciding = threading.Event()

    def approver(decision: object) -> bool:
        deciding.set()
        time.sleep(0.5)
        return True

    async def main() -> None:
        async with ringfence.AsyncSession(
            Policy(workspace=str(ws)), cwd=str(ws), approval="untrusted", approver=approver,
            audit=False,
        ) as s:  # fmt: skip
            task = asyncio.ensure_future(
                s.run(
                    ["sh", "-c", f"(sleep 1; echo late > {late.name}) & sleep 1; touch {late.name}"]
                )
            )
            while not deciding.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(2.5)

    asyncio.run(main())
    assert deciding.is_set()
    assert not late.exists()


def test_arun_reports_what_the_boundary_refused(ws: Path, confinement: Confinement) -> None:
    """A name looked up with the network off is in the result's violations and widenings,
    as with run: the session's counters are read before the command is sent, not once it
    has ended."""

    async def main() -> list[Any]:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            await s.arun(["true"])
            return [
                await s.arun(confinement.shell("getent hosts pypi.org"), capture_output=True),
                s.run(confinement.shell("getent hosts pypi.org"), capture_output=True),
            ]

    for r in asyncio.run(main()):
        assert r.returncode == 2
        refused = [v for v in r.violations if v.get("kind") == "network"]
        assert refused and refused[0]["host"] == "pypi.org", r.violations
        assert any(w.get("entry") == "pypi.org" for w in r.widenings), r.widenings


def test_a_cancel_after_a_closed_stream_leaves_other_commands_alone(
    ws: Path, confinement: Confinement
) -> None:
    """Review 26: the cancelled command's end report came later and stopped reading the
    descriptor number its closed stream had had, by then another command's pipe; that
    command never returned, past its own timeout."""

    async def main() -> list[Any]:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
            for _ in range(3):
                await s.arun(["true"])
            victim = asyncio.ensure_future(
                s.arun(["sh", "-c", "exec 2>&-; sleep 30"], capture_output=True)
            )
            await asyncio.sleep(1.0)  # running, its stderr at its end already
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
            return await asyncio.wait_for(
                asyncio.gather(
                    *(
                        s.arun(
                            confinement.shell(f"sleep 1; echo next{k}"),
                            capture_output=True,
                            text=True,
                            timeout=5,
                        )
                        for k in range(3)
                    )
                ),
                timeout=20,
            )

    got = asyncio.run(main())
    assert [(r.returncode, confinement.strip(r.stdout)) for r in got] == [
        (0, f"next{k}\n") for k in range(3)
    ]


POINTER = (
    "import os, sys, time\n"
    "os.makedirs('sub')\n"
    "open('sub/.git', 'w').write('gitdir: /etc\\n')\n"
    "open('ready', 'w').write(sys.argv[1])\n"
    "time.sleep(60)\n"
)


def test_a_cancelled_arun_is_still_judged_and_audited(ws: Path, confinement: Confinement) -> None:
    """Review 26: nothing waited for a cancelled command's end, so it had no audit record,
    and the files left for its guard's end check were not moved aside when its init could
    not finish that check. Here the init is stopped (a starved one relays nothing), the task
    cancelled, then the init killed: the pointer is moved aside and the end audited."""
    log = ws / "audit.jsonl"
    argv = ["/usr/bin/python3", "-c", POINTER, confinement.nonce]
    ready = ws / "ready"

    async def main() -> None:
        with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=str(log)) as s:
            await s.arun(["true"])
            task = asyncio.ensure_future(s.arun(argv, capture_output=True, timeout=120))
            deadline = time.monotonic() + 20
            while not (ready.exists() and ready.read_text() == confinement.nonce):
                assert time.monotonic() < deadline, "the command did not start"
                await asyncio.sleep(0.02)
            pid = pid_of(argv)
            assert pid is not None
            init = parent_pid(pid)
            assert init not in (os.getpid(), os.getppid(), 1), init
            os.kill(init, signal.SIGSTOP)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            os.kill(init, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while (ws / "sub" / ".git").exists():
                assert time.monotonic() < deadline, "the pointer was left in place"
                await asyncio.sleep(0.05)

    asyncio.run(main())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    mine = [r for r in records if confinement.nonce in " ".join(r.get("argv") or [])]
    assert len(mine) == 1, records


HOLDER = r"""
import array, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("holder.sock")
s.listen(8)
print("ready", flush=True)
kept = []
while True:
    c, _ = s.accept()
    _, anc, _, _ = c.recvmsg(16, socket.CMSG_SPACE(64))
    for _lvl, _typ, data in anc:
        kept.extend(array.array("i", data[: len(data) - len(data) % 4]))
    kept.append(c)
"""

GIVER = r"""
import array, socket, sys, time
c = socket.socket(socket.AF_UNIX)
c.connect("holder.sock")
c.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [1, 2]))])
print("handed-" + sys.argv[1], flush=True)
if sys.argv[2] == "wait":
    time.sleep(3600)
"""


def test_pipes_handed_to_another_command_do_not_hold_the_caller(
    ws: Path, confinement: Confinement
) -> None:
    """Review 28: a command that handed its stdout and stderr to a process of another
    command of the session (over a unix socket) never reached their end, so run and arun
    waited forever, past their timeouts; through ringfence mcp each such call kept a slot.
    Once the command has ended (or been killed at its timeout) the output is read for
    EOF_GRACE more and the rest is not waited for."""
    (ws / "holder.py").write_text(HOLDER)
    (ws / "giver.py").write_text(GIVER)
    nonce = confinement.nonce

    async def main(s: Session) -> list[Any]:
        ended = await asyncio.wait_for(
            s.arun(["python3", "giver.py", nonce, "exit"], capture_output=True), 15
        )
        with pytest.raises(subprocess.TimeoutExpired) as e:
            await asyncio.wait_for(
                s.arun(["python3", "giver.py", nonce, "wait"], capture_output=True, timeout=2),
                15,
            )
        fed = await asyncio.wait_for(  # with input: the streams path (review 29)
            s.arun(["python3", "giver.py", nonce, "exit"], capture_output=True, input=b"x"), 15
        )
        assert (fed.returncode, fed.stdout) == (0, f"handed-{nonce}\n".encode())
        tty = await s.aspawn(["python3", "giver.py", nonce, "exit"], pty=True)
        out, _ = await asyncio.wait_for(tty.communicate(), 15)  # a terminal (review 30)
        assert f"handed-{nonce}".encode() in out
        return [ended, e.value]

    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        holder = s.spawn(["python3", "holder.py"], stdout=ringfence.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
            ended, timed = asyncio.run(main(s))
            assert (ended.returncode, ended.stdout) == (0, f"handed-{nonce}\n".encode())
            assert timed.stdout == f"handed-{nonce}\n".encode()
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    s.run(["python3", "giver.py", nonce, "wait"], capture_output=True, timeout=2)
                except subprocess.TimeoutExpired as exc:
                    result["out"] = exc.stdout

            t = threading.Thread(target=run, daemon=True)
            t.start()
            t.join(15)
            assert result == {"out": f"handed-{nonce}\n".encode()}
        finally:
            holder.kill()
            holder.wait(10)
