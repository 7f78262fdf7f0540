"""A session's prepared inits: commands sent back to back, each in a clean state.

The runner keeps per-command inits prepared ahead of the requests (two once a session has run
more than one command, see ``sandbox_side._Server._prepare_next``), and the host hands a
request straight to one. These check that nothing carries over from one command to the next
(cwd, environment, umask, signal dispositions, descriptors), and that a prepared init that
never got a command does not outlive ``close()``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import Confinement, Runner

from ringfence import Policy, Session

pytestmark = pytest.mark.sandbox

UMASKS = (0o022, 0o077, 0o002, 0o027, 0o000)
# pwd | the variable | umask | blocked and ignored signals, as the command sees them
PROBE = (
    'printf "%s|%s|%s|%s|%s\\n" "$(pwd)" "${RF_WARM-unset}" "$(umask)" '
    '"$(sed -n "s/^SigBlk:[[:space:]]*//p" /proc/self/status)" '
    '"$(sed -n "s/^SigIgn:[[:space:]]*//p" /proc/self/status)"'
)


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        kids.setdefault(int(data.rsplit(b")", 1)[1].split()[1]), []).append(int(entry))
    out: set[int] = set()
    todo = list(kids.get(pid, ()))
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(kids.get(p, ()))
    return out


def _alive(pids: set[int]) -> set[int]:
    left = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z":
            left.add(p)
    return left


def _wait_for_prepared(s: Session, n: int, seconds: float = 5.0) -> int:
    conn = s._conn
    assert conn is not None
    deadline = time.monotonic() + seconds
    while len(conn.ready_inits) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(conn.ready_inits)


def test_back_to_back_commands_each_get_their_own_cwd_env_umask_signals(
    ws: Path, confinement: Confinement
) -> None:
    dirs = [ws / f"d{i}" for i in range(5)]
    for d in dirs:
        d.mkdir()
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        first = s.run(["sh", "-c", PROBE], capture_output=True, text=True)
        blocked, ignored = first.stdout.strip().split("|")[3:]
        assert int(blocked, 16) == 0, "the first command starts with signals blocked"
        for i in range(40):  # no gap: most go to an init prepared while the last one ran
            d, mask = dirs[i % len(dirs)], UMASKS[i % len(UMASKS)]
            env = {"RF_WARM": f"{confinement.nonce}-{i}"} if i % 3 else None
            r = s.run(
                confinement.shell(PROBE), cwd=str(d), env=env, umask=mask, capture_output=True,
                text=True,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            out = confinement.strip(r.stdout, r.stderr).strip()
            want_env = f"{confinement.nonce}-{i}" if env else "unset"
            assert out == f"{d}|{want_env}|{mask:04o}|{blocked}|{ignored}", (i, out)


def test_no_descriptor_reaches_a_command_over_many_commands(ws: Path) -> None:
    """Every command holds only its stdio (a prepared init's sockets and pipes, or another
    command's, never reach it), and the host's descriptors stay flat."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws)) as s:
        for _ in range(3):
            s.run(["true"])
        # prepared by the runner, or served a command and can serve another: the host holds
        # one socket for each
        assert _wait_for_prepared(s, 2) >= 2
        conn = s._conn
        assert conn is not None
        before = len(os.listdir("/proc/self/fd")) - len(conn.ready_inits)
        for i in range(200):
            # `ls` opens the directory it lists: 3 is its own.
            r = s.run(["ls", "/proc/self/fd"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert r.stdout.split() == ["0", "1", "2", "3"], (i, r.stdout)
        assert _wait_for_prepared(s, 2) >= 2
        assert len(os.listdir("/proc/self/fd")) - len(conn.ready_inits) == before


def test_close_ends_prepared_inits_that_never_got_a_command(ws: Path) -> None:
    s = Session(Policy(workspace=str(ws)), cwd=str(ws)).start()
    try:
        for _ in range(3):
            assert s.run(["true"]).returncode == 0
        assert _wait_for_prepared(s, 2) >= 2, "the runner keeps two inits prepared"
        conn = s._conn
        assert conn is not None
        tree = _descendants(conn.runner_pid) | {conn.runner_pid}
        assert len(tree) >= 5  # outer runner, pid 1, and each prepared init with its guard
    finally:
        s.close()
    deadline = time.monotonic() + 5
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(tree) == set()
    assert conn.ready_inits == type(conn.ready_inits)()  # their sockets closed on the host


@pytest.mark.parametrize("gap", [0.0, 0.03])
def test_the_name_guard_answers_each_command_back_to_back_and_spaced(
    ws: Path, confinement: Confinement, gap: float
) -> None:
    """A prepared init's guard is built when asked (or after a while idle): a command's first
    guarded call is answered either way, refusals are reported to that command alone, and
    allowed creations happen."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        for i in range(12):
            time.sleep(gap)
            script = f"mkdir .envrc 2>/dev/null; echo ok > made-{i}"
            r = s.run(confinement.shell(script), capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert confinement.strip(r.stdout, r.stderr) == ""
            assert (ws / f"made-{i}").read_text() == "ok\n"
            assert not (ws / ".envrc").exists()
            refused = [
                (v["op"], v["path"])
                for v in r.violations
                if v["kind"] == "filesystem" and v["path"] != str(confinement.escape_path)
            ]
            assert refused == [("mkdir", f"{ws}/.envrc")], (i, r.violations)


WARM_SCRIPT = """
import os, sys
from ringfence import Policy, Session
ws, nonce = sys.argv[1:3]
probe = sys.argv[3]
with Session(Policy(workspace=ws), cwd=ws) as s:
    for i in range(12):
        d = os.path.join(ws, f"d{i % 3}")
        os.makedirs(d, exist_ok=True)
        mask = (0o022, 0o077, 0o002)[i % 3]
        r = s.run(["sh", "-c", 'echo "proof $RINGFENCE_SANDBOX:$0"; ' + probe, nonce], cwd=d,
                  env={"RF_WARM": f"v{i}"}, umask=mask, capture_output=True, text=True)
        proof, out = r.stdout.splitlines()
        assert proof == f"proof 1:{nonce}", r.stdout
        assert out.split("|")[:3] == [d, f"v{i}", f"{mask:04o}"], (i, out)
        assert int(out.split("|")[3], 16) == 0, out
    # Once the host holds a prepared init, the next commands all run in it (reused).
    import time
    deadline = time.monotonic() + 5
    while not s._conn.ready_inits and time.monotonic() < deadline:
        time.sleep(0.01)
    seen = set()
    for _ in range(4):
        r = s.run(["sh", "-c", 'echo "proof $RINGFENCE_SANDBOX:$0"; readlink /proc/self/ns/pid',
                   nonce], capture_output=True, text=True)
        proof, ns = r.stdout.splitlines()
        assert proof == f"proof 1:{nonce}", r.stdout
        seen.add(ns)
    assert len(seen) == 1, seen
    print("ok", len(os.listdir("/proc/self/fd")))
"""


def test_back_to_back_commands_as_an_unprivileged_user(rf: Runner) -> None:
    ws = rf.mkdir()
    script = ws / "warm.py"
    script.write_text(WARM_SCRIPT)
    r = rf.py(str(script), str(ws), rf.nonce, PROBE, cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok "), r.stdout


def test_what_a_command_leaves_running_stops_before_run_returns(
    ws: Path, confinement: Confinement
) -> None:
    """What a command left running is ended, and gone, before its exit report, not at its
    init's exit (which, at idle priority, can come later): once ``run`` has returned, the
    writers it left in the background (more than there are CPUs, one of them writing 2 MiB
    at a time, a write SIGKILL lets finish) have written their last byte."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        for i in range(10):
            out, big = ws / f"bg-{i}", ws / f"big-{i}"
            loop = f'while :; do echo "$0" >> {out.name}; done'
            writers = (os.cpu_count() or 1) + 1  # more than the CPUs: all stay busy
            # Not holding the command's stdout: the host's wait for its end is the report alone.
            script = f"sh -c '{loop}' {confinement.nonce} >/dev/null 2>&1 & " * writers
            dd = f"dd if=/dev/zero bs=2M count=1 status=none >> {big.name}"  # one write(2)
            script += f"sh -c 'while :; do {dd}; done' & "
            script += f"while [ ! -s {out.name} ] || [ ! -s {big.name} ]; do :; done"
            r = s.run(confinement.shell(script), capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert confinement.strip(r.stdout, r.stderr) == ""
            sizes = out.stat().st_size, big.stat().st_size
            assert sizes[0] > 0 and out.read_text().split("\n", 1)[0] == confinement.nonce
            time.sleep(0.2)
            after = out.stat().st_size, big.stat().st_size
            assert after == sizes, f"a background writer outlived command {i}"
            big.unlink()
