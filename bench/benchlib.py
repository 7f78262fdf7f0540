"""Shared pieces of the benchmarks: timing loops, the result table, /proc readings, scratch dirs.

Benchmarks report numbers; they do not assert. Every ratio in the table is against a baseline
measured in the same run, on the same machine, in the same minute, because absolute numbers on
a shared 2-vCPU VM drift by tens of percent from one minute to the next.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

# Workspaces live under /var/tmp: the sandbox gives commands a private /tmp, so a workspace
# under /tmp would not be the directory the host sees.
SCRATCH = "/var/tmp"
BWRAP_ARGS = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all")


@dataclass(frozen=True)
class Scale:
    """How much work each section does; ``FULL`` is the spec, ``QUICK`` fits in ~2 minutes."""

    name: str
    warm: int  # back-to-back samples per variant
    warm_gap: int  # samples per variant with ``gap`` seconds of idle before each
    gap: float
    cold: int  # fresh processes per variant
    mib: int  # bytes per throughput sample, MiB
    throughput_reps: int
    setup_reps: int
    roots: tuple[int, ...]
    protected: tuple[int, ...]
    sequential: int
    concurrent: int


FULL = Scale(
    name="full",
    warm=1000,
    warm_gap=300,
    gap=0.020,
    cold=30,
    mib=1024,
    throughput_reps=5,
    setup_reps=5,
    roots=(0, 10, 100),
    protected=(0, 100, 1000),
    sequential=10_000,
    concurrent=50,
)
QUICK = Scale(
    name="quick",
    warm=200,
    warm_gap=60,
    gap=0.020,
    cold=10,
    mib=128,
    throughput_reps=3,
    setup_reps=3,
    roots=(0, 100),
    protected=(0, 1000),
    sequential=1000,
    concurrent=50,
)


@dataclass
class Row:
    """One line of the table. ``value`` and ``vs`` are preformatted: rows mix units."""

    name: str
    value: str
    vs: str = ""
    target: str = ""


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, vs: str = "", target: str = "") -> None:
        self.rows.append(Row(name, value, vs, target))


def render_text(sections: Sequence[Section]) -> str:
    """A plain table, columns aligned across all sections so it reads as one table."""
    rows = [r for s in sections for r in s.rows]
    if not rows:
        return ""
    w = [
        max(len(r.name) for r in rows),
        max(len(r.value) for r in rows),
        max(len(r.vs) for r in rows),
    ]
    out: list[str] = []
    for s in sections:
        out.append("")
        out.append(s.title)
        for r in s.rows:
            line = f"  {r.name:<{w[0]}}  {r.value:>{w[1]}}  {r.vs:<{w[2]}}  {r.target}"
            out.append(line.rstrip())
        out.extend(f"  note: {n}" for n in s.notes)
    return "\n".join(out)


def render_markdown(sections: Sequence[Section]) -> str:
    """The same table as Markdown, for docs/performance.md."""
    out: list[str] = []
    for s in sections:
        out.append(f"**{s.title}**")
        out.append("")
        out.append("| measurement | result | vs baseline | target |")
        out.append("| --- | ---: | --- | --- |")
        for r in s.rows:
            # Markdown drops a cell's leading spaces: mark the sub-rows another way.
            name = "↳ " + r.name.lstrip() if r.name.startswith(" ") else r.name
            cells = [c.replace("|", "\\|") for c in (name, r.value, r.vs, r.target)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.extend(f"- {n}" for n in s.notes)
        if s.notes:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# -- timing -------------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p99(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def blocked(
    fns: Mapping[str, Callable[[], object]], n: int, *, gap: float = 0.0, blocks: int = 10
) -> dict[str, list[float]]:
    """``n`` timings (seconds) of each function, run in consecutive blocks, variants rotated.

    Blocks, not one-call interleaving: a session prepares the next command's init after each
    command, and an interleaved bare call would hide that work and turn "back-to-back" into
    "spaced out". Rotating the order of the blocks spreads the VM's drift over all variants.
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    per = max(1, n // blocks)
    done = 0
    rnd = 0
    while done < n:
        k = min(per, n - done)
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            fn = fns[name]
            for _ in range(k):
                if gap:
                    time.sleep(gap)
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
        done += k
        rnd += 1
    return out


def quiet(argv: Sequence[str], cwd: str, env: Mapping[str, str] | None = None) -> int:
    """A bare ``subprocess.run`` with stdio on /dev/null: the baseline every row compares to.
    ``env``: variables added to this process's environment."""
    null = subprocess.DEVNULL
    full = None if env is None else {**os.environ, **env}
    r = subprocess.run(argv, cwd=cwd, env=full, stdin=null, stdout=null, stderr=null, check=False)
    return r.returncode


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def ratio(x: float, base: float, label: str) -> str:
    return f"{x / base:.2f}x {label}" if base > 0 else ""


def verdict(ok: bool, target: str) -> str:
    return f"{target}: {'met' if ok else 'NOT met'}"


def check_rc(rc: int, what: str) -> None:
    """A benchmark of a failing command measures nothing; stop loudly instead."""
    if rc != 0:
        raise SystemExit(f"bench: {what} exited with {rc}")


# -- scratch directories -------------------------------------------------------------------------
@contextlib.contextmanager
def scratch(prefix: str = "ringfence-bench-") -> Iterator[str]:
    """A fresh directory under /var/tmp, removed afterwards (real path: policies want one)."""
    d = os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def export_src(repo: str, rev: str, dest: str) -> str:
    """``src/`` of the committed tree ``rev`` of ``repo``, extracted under ``dest``: a fixed
    point to measure and compare (the working tree may be mid-edit). Returns the src path."""
    archive = subprocess.Popen(
        ["git", "-C", repo, "archive", "--format=tar", rev, "src"], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"bench: git archive {rev} failed")
    return os.path.join(dest, "src")


# -- /proc ---------------------------------------------------------------------------------------
def fd_count(pid: int | str = "self") -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def status_kib(pid: int | str, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None if the process is gone."""
    return kib_field(f"/proc/{pid}/status", key)


def kib_field(path: str, key: str) -> int | None:
    """``key:  N kB`` from a /proc file such as status or meminfo."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid``."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def zombies(parents: set[int]) -> int:
    """Processes in state Z whose parent is one of ``parents`` (host-side pids)."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 2 and fields[0] == "Z" and int(fields[1]) in parents:
            n += 1
    return n


def fmt_kib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_opt(x: int | None) -> str:
    return "?" if x is None else str(x)


# -- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    kib = kib_field("/proc/meminfo", "MemTotal")
    return "?" if kib is None else f"{kib / 1024 / 1024:.1f} GiB"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals) - idle, sum(vals)


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over the next ``interval`` seconds (this process is idle)."""
    b0, t0 = _cpu_ticks()
    time.sleep(interval)
    b1, t1 = _cpu_ticks()
    return (b1 - b0) / max(1, t1 - t0)


class OthersCpu:
    """How much of the machine something other than this benchmark used over a stretch of time.

    All CPUs' busy time (/proc/stat) minus this process's and its waited-for descendants' CPU
    time (the session runners and every command are reaped by the time a section ends).
    Approximate: interrupt work done for us counts as someone else's. It says whether a
    section's numbers were taken on a quiet machine.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, _ = _cpu_ticks()
        self.ours0 = own_cpu()

    def fraction(self) -> float:
        elapsed = time.monotonic() - self.t0
        busy, _ = _cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        others = (busy - self.busy0) / hz - (own_cpu() - self.ours0)
        return max(0.0, others / max(1e-9, elapsed * (os.cpu_count() or 1)))


def own_cpu() -> float:
    """CPU seconds of this process and every descendant it (transitively) reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_idle(max_wait: float, threshold: float = 0.10) -> float:
    """Wait until the machine is quiet (others' CPU use below ``threshold``) or ``max_wait``
    passes; returns the last reading. On a shared 2-vCPU VM a test suite running next door
    doubles every number in the table: better to wait, and to say how busy it was."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_version(path: str | None) -> str:
    if path is None:
        return "not installed"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def git_revision(repo: str) -> str:
    """The commit measured, and whether the source tree had uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (+ uncommitted changes in src/)" if dirty else "")


def machine() -> list[tuple[str, str]]:
    u = os.uname()
    return [
        ("kernel", f"{u.sysname} {u.release} {u.machine}"),
        ("cpus", f"{os.cpu_count()} x {cpu_model()}"),
        ("memory", mem_total()),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("interpreter", sys.executable),
        ("bubblewrap", bwrap_version(bwrap_path())),
    ]
