"""What wrapping a command in ``ringfence run`` costs, as ratios to baselines from the same run.

    .venv/bin/python bench/run_overhead.py [--runs N] [--files N]

Measures (median wall time over N runs):
* start-up: ``/bin/true`` spawned bare (fork+exec), through ``bwrap --unshare-all`` when
  bubblewrap is installed, and through ``ringfence run`` with and without the name guard;
* guarded system calls: a command that creates, writes and deletes ``--files`` files in the
  workspace, bare and under ringfence with and without the guard.
Use the virtualenv's own interpreter (a pyenv shim adds ~75 ms per start).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOAD = (
    "import os, sys\n"
    "n = int(sys.argv[1])\n"
    "for i in range(n):\n"
    "    with open(f'f{i}', 'w') as f: f.write('x')\n"
    "for i in range(n):\n"
    "    os.unlink(f'f{i}')\n"
)


def median_ms(argv: list[str], runs: int, cwd: str) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--files", type=int, default=500)
    args = ap.parse_args()
    ws = tempfile.mkdtemp(prefix="ringfence-bench-", dir="/var/tmp")
    rf = [sys.executable, "-P", "-m", "ringfence", "run"]
    try:
        rows: list[tuple[str, float]] = []
        bare = median_ms(["/bin/true"], args.runs, ws)
        rows.append(("bare fork+exec /bin/true", bare))
        bwrap = shutil.which("bwrap")
        if bwrap:
            cmd = [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "/bin/true"]
            rows.append(("bwrap --unshare-all /bin/true", median_ms(cmd, args.runs, ws)))
        rows.append(("ringfence run /bin/true", median_ms([*rf, "--", "/bin/true"], args.runs, ws)))
        rows.append(
            (
                "ringfence run --no-default-protect /bin/true (no guard)",
                median_ms([*rf, "--no-default-protect", "--", "/bin/true"], args.runs, ws),
            )
        )
        print(f"start-up, median of {args.runs} runs")
        for name, ms in rows:
            print(f"  {name:<58} {ms:8.1f} ms  {ms / bare:6.1f}x bare")
        py = sys.executable
        work = [py, "-c", WORKLOAD, str(args.files)]
        base = median_ms(work, max(3, args.runs // 4), ws)
        guarded = median_ms([*rf, "--", *work], max(3, args.runs // 4), ws)
        unguarded = median_ms(
            [*rf, "--no-default-protect", "--", *work], max(3, args.runs // 4), ws
        )
        print(f"\ncreate+write+delete {args.files} files")
        print(f"  {'bare':<58} {base:8.1f} ms")
        print(f"  {'ringfence run, no guard':<58} {unguarded:8.1f} ms  {unguarded / base:6.2f}x")
        print(f"  {'ringfence run, name guard':<58} {guarded:8.1f} ms  {guarded / base:6.2f}x")
        per_call = (guarded - unguarded) / (2 * args.files) * 1000
        print(f"  guard cost per guarded call (2 per file): {per_call:.0f} us")
    finally:
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
