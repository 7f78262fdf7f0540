"""What any seccomp filter costs a system-call-heavy command, against no filter at all.

    .venv/bin/python bench/seccomp_cost.py [--runs N] [--size 4G]

The same workload (``head -c SIZE /dev/zero > /dev/null``: 8 KiB per read and write) runs in a
forked child with no_new_privs and: no filter; a filter that allows everything (one
instruction); and ringfence's hardening filter. Nothing else of the sandbox is applied, so the
difference is the kernel's seccomp path alone. Median wall time of N runs, variants rotated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from ringfence.platforms.linux import bpf, seccomp
from ringfence.platforms.linux.libc import syscall

PR_SET_NO_NEW_PRIVS = 38
ALLOW = 0x7FFF0000


def _run(kind: str, size: str) -> float:
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            syscall("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if kind == "ringfence's filter":
                seccomp.install(seccomp.build_program(seccomp.SeccompPolicy(allow_inet=True)))
            elif kind == "allow-everything filter":
                b = bpf.Builder()
                b.ret(ALLOW)
                seccomp.install(b.build())
            os.execvp("sh", ["sh", "-c", f"head -c {size} /dev/zero > /dev/null"])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit(f"bench: the {kind} run failed ({status})")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--size", default="4G")
    ns = ap.parse_args()
    kinds = ["no filter", "allow-everything filter", "ringfence's filter"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(ns.runs):
        for k in kinds[r % 3 :] + kinds[: r % 3]:
            times[k].append(_run(k, ns.size))
    base = statistics.median(times["no filter"])
    print(f"head -c {ns.size} /dev/zero > /dev/null (8 KiB reads and writes), median of {ns.runs}")
    for k in kinds:
        t = statistics.median(times[k])
        print(f"  {k:<26} {t * 1000:8.1f} ms  {t / base:.2f}x no filter")


if __name__ == "__main__":
    main()
