"""A command's init serves the session's next command when nothing of the last one is left.

Each command's init is pid 1 of a pid namespace of its own; once its command has ended, it
ends what the command left running, has its guard start afresh, and says in the report that
it can serve another (``command_init._reusable``). These check that the next command then
runs in that same namespace (so the probe below is a real measure) and meets nothing of the
last one, and that an init is never reused after a command the host signalled, killed or
timed out, one with a terminal, or under a CPU limit.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import Confinement

from ringfence import Limits, Policy, Session

pytestmark = pytest.mark.sandbox

NS = "readlink /proc/self/ns/pid"


def _warm(s: Session) -> None:
    """Past the first commands, which may go to inits the runner made on request (those the
    host never holds): from here on each command goes to an init the host handed it to."""
    conn = s._conn
    assert conn is not None
    for _ in range(2):
        assert s.run(["true"]).returncode == 0
    deadline = time.monotonic() + 5
    while not conn.ready_inits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert conn.ready_inits, "no prepared init"
    assert s.run(["true"]).returncode == 0


def _ns(s: Session, conf: Confinement, script: str = "") -> str:
    r = s.run(conf.shell(f"{NS}; {script}"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return conf.strip(r.stdout, r.stderr).split("\n", 1)[0]


def test_back_to_back_commands_run_in_one_reused_init(ws: Path, confinement: Confinement) -> None:
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        seen = {_ns(s, confinement) for _ in range(10)}
        assert len(seen) == 1, seen
        assert seen.pop().startswith("pid:[")


def test_nothing_one_command_leaves_meets_the_next(ws: Path, confinement: Confinement) -> None:
    """Background processes, a stopped one and one that ignores SIGTERM: the next command in
    the same init sees only its init, its guard and itself."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        left = (
            "sleep 1000 & echo $!; "
            "sh -c 'trap \"\" TERM HUP; exec sleep 1000' & echo $!; "
            "sleep 1000 & kill -STOP $!; echo $!"
        )
        r = s.run(confinement.shell(f"{NS}; {left}"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        first, *pids = confinement.strip(r.stdout, r.stderr).split()
        assert len(pids) == 3
        listing = 'for p in /proc/[0-9]*; do echo "${p#/proc/}:$(cat $p/comm)"; done'
        r = s.run(confinement.shell(f"{NS}; echo $$; {listing}"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        ns, me, *procs = confinement.strip(r.stdout, r.stderr).split()
        assert ns == first, "the second command did not run in the first one's init"
        running = dict(p.split(":", 1) for p in procs)
        assert not set(pids) & set(running), running
        assert "sleep" not in running.values(), running
        # pid 1 (the init), its guard, this shell and the subshells of the listing
        others = {p for p in running if p not in ("1", me)}
        assert all(running[p] in ("sh", "cat") for p in others if int(p) > int(me)), running
        assert len([p for p in others if int(p) < int(me)]) <= 1, running  # the guard


def test_a_signalled_command_leaves_its_init_unused(ws: Path, confinement: Confinement) -> None:
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        for stop in ("terminate", "kill"):
            proc = s.spawn(
                confinement.shell(f"{NS}; exec sleep 30"), stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == confinement.line
            ns = proc.stdout.readline().strip()
            assert ns.startswith("pid:[")
            proc.terminate() if stop == "terminate" else proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
            assert _ns(s, confinement) != ns, f"the init of a command ended by {stop} was reused"


def test_an_init_is_reused_after_a_command_that_ended_by_itself(
    ws: Path, confinement: Confinement
) -> None:
    """The control for the test above: the same probe, no signal from the host."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        proc = s.spawn(confinement.shell(f"{NS}; read line"), stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == confinement.line
        ns = proc.stdout.readline().strip()
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        assert _ns(s, confinement) == ns


def test_a_timed_out_command_leaves_its_init_unused(ws: Path, confinement: Confinement) -> None:
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        marker = ws / f"ns-{confinement.nonce}"
        with pytest.raises(subprocess.TimeoutExpired):
            s.run(confinement.shell(f"{NS} > {marker.name}; exec sleep 30"), timeout=0.5)
        ns = marker.read_text().strip()
        assert ns.startswith("pid:[")
        assert _ns(s, confinement) != ns


def test_a_terminal_command_leaves_its_init_unused(ws: Path, confinement: Confinement) -> None:
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        marker = ws / f"ns-{confinement.nonce}"
        proc = s.spawn(confinement.shell(f"{NS} > {marker.name}; test -t 0"), pty=True)
        assert proc.wait(timeout=10) == 0
        ns = marker.read_text().strip()
        assert ns.startswith("pid:[")
        assert _ns(s, confinement) != ns


def test_no_init_is_reused_under_a_cpu_limit(ws: Path, confinement: Confinement) -> None:
    """RLIMIT_CPU counts an init's own time: each command gets a fresh one."""
    policy = Policy(workspace=str(ws), limits=Limits(cpu_seconds=60))
    with Session(policy, cwd=str(ws), audit=False) as s:
        _warm(s)
        seen = [_ns(s, confinement, "ulimit -t") for _ in range(4)]
        assert len(set(seen)) == 4, seen


def test_a_umask_does_not_stay_with_the_init(ws: Path, confinement: Confinement) -> None:
    """A command's umask is set in its init before the spawn: the next command, which asks
    for none, has the session's."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        base = s.run(confinement.shell("umask"), capture_output=True, text=True)
        want = confinement.strip(base.stdout, base.stderr).strip()
        assert want != "0077"
        r = s.run(confinement.shell(f"{NS}; umask"), umask=0o077, capture_output=True, text=True)
        ns, got = confinement.strip(r.stdout, r.stderr).split()
        assert got == "0077"
        r = s.run(confinement.shell(f"{NS}; umask"), capture_output=True, text=True)
        assert confinement.strip(r.stdout, r.stderr).split() == [ns, want]


PROBE = "nice; taskset -p $$ | sed 's/.*: //'; ionice -p $$"


@pytest.mark.parametrize("change", ["renice -n 7 -p 1", "taskset -p -c 0 1", "ionice -c 3 -p 1"])
def test_an_init_its_command_rescheduled_serves_no_other(
    ws: Path, confinement: Confinement, change: str
) -> None:
    """A command may lower how its init is scheduled (same user); the next command would
    inherit it (nice, CPUs, I/O class), so that init serves no other."""
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        r = s.run(confinement.shell(PROBE), capture_output=True, text=True)
        before = confinement.strip(r.stdout, r.stderr)
        r = s.run(confinement.shell(f"{NS}; {change} >/dev/null"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr  # the change itself is allowed: the init's to undo
        ns = confinement.strip(r.stdout, r.stderr).strip()
        r = s.run(confinement.shell(f"{NS}; {PROBE}"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        nxt, after = confinement.strip(r.stdout, r.stderr).split("\n", 1)
        assert nxt != ns
        assert after == before


SLICE = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
get, put = {"x86_64": (315, 314), "aarch64": (275, 274)}[os.uname().machine]
attr = ctypes.create_string_buffer(56)
pid = int(sys.argv[1])
if libc.syscall(get, pid, attr, 56, 0) != 0:
    sys.exit(f"sched_getattr: {os.strerror(ctypes.get_errno())}")
if len(sys.argv) > 2:  # sched_runtime: the time slice a fair-class task asks for (6.12+)
    struct.pack_into("Q", attr, 8, 0)
    struct.pack_into("Q", attr, 24, 100_000)
    if libc.syscall(put, pid, attr, 0) != 0:
        print("refused", os.strerror(ctypes.get_errno()))
        sys.exit(0)
print(struct.unpack_from("Q", attr, 24)[0])
"""


def test_an_init_whose_time_slice_a_command_changed_serves_no_other(
    ws: Path, confinement: Confinement
) -> None:
    """sched_setattr on pid 1 (same user) sets the slice every later child of the init would
    inherit: the init's whole sched_attr is compared, not a list of fields."""
    (ws / "slice.py").write_text(SLICE)
    with Session(Policy(workspace=str(ws)), cwd=str(ws), audit=False) as s:
        _warm(s)
        r = s.run(confinement.shell("python3 slice.py $$"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        before = confinement.strip(r.stdout, r.stderr).strip()
        r = s.run(
            confinement.shell(f"{NS}; python3 slice.py 1 set"), capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        ns, got = confinement.strip(r.stdout, r.stderr).strip().split("\n")
        if got.startswith("refused"):
            pytest.skip(f"this kernel has no per-task slice for fair tasks ({got})")
        assert got == "100000"
        r = s.run(confinement.shell(f"{NS}; python3 slice.py $$"), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert confinement.strip(r.stdout, r.stderr).split() != [ns, "100000"]
        nxt, after = confinement.strip(r.stdout, r.stderr).split()
        assert nxt != ns
        assert after == before
