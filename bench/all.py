"""Every ringfence benchmark, one table: medians, and ratios against baselines from the same run.

    .venv/bin/python bench/all.py            # the full spec (about 6 minutes here)
    .venv/bin/python bench/all.py --quick    # scaled down (about 1 minute)
    .venv/bin/python bench/all.py --only warm,cold --markdown
    .venv/bin/python bench/all.py --commit HEAD   # a committed tree, not the working one

Run it with the virtualenv's own interpreter, never a pyenv shim: a shim is another
interpreter start (~75 ms) in front of every process the benchmark spawns. The guarded-syscall
cost of the name guard has its own script, ``bench/run_overhead.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

import benchlib
from benchlib import FULL, QUICK, Scale, Section

SECTIONS = ("warm", "cold", "throughput", "setup", "load", "scale", "mcp")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXPORTED = "RINGFENCE_BENCH_EXPORTED"  # set in the re-executed benchmark: "<rev> <dir>"


def _run_exported(rev: str) -> int:
    """Measure ``rev`` as committed: export its src/ to /var/tmp and re-run this benchmark with
    that tree first on PYTHONPATH (it wins over the editable install's path entry, and the
    session runner inherits it). The working tree may be mid-edit; a commit is a fixed point
    that can be measured again and compared."""
    full = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with benchlib.scratch("ringfence-bench-src-") as d:
        src = benchlib.export_src(REPO, full, d)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        env[_EXPORTED] = f"{full[:12]} {src}"
        return subprocess.run([sys.executable, *sys.argv], env=env, check=False).returncode


def _section(name: str) -> Callable[[Scale], Section]:
    """Imported late: with ``--commit`` the first process must not import the working tree's
    ringfence at all (it may be mid-edit)."""
    import cold
    import mcp_roundtrip
    import scale as scale_bench
    import session

    return {
        "warm": session.warm,
        "cold": cold.cold,
        "throughput": session.throughput,
        "setup": session.setup,
        "load": session.load,
        "scale": scale_bench.scale,
        "mcp": mcp_roundtrip.mcp_roundtrip,
    }[name]


def _measured() -> str:
    """Which ringfence the numbers belong to: the exported commit, or the working tree."""
    import ringfence

    where = os.path.dirname(os.path.dirname(os.path.abspath(ringfence.__file__)))
    exported = os.environ.get(_EXPORTED)
    if exported:
        rev, src = exported.split(" ", 1)
        if where != src:
            raise SystemExit(f"bench: imported ringfence from {where}, not the export {src}")
        return f"commit {rev} (exported; working-tree edits not measured)"
    return f"{benchlib.git_revision(REPO)} from {where}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations, 128 MiB, 1,000 cmds")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(SECTIONS)}")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--markdown-file", metavar="PATH", help="also write the Markdown table here")
    ap.add_argument("--sequential", type=int, help="sequential commands in the load section")
    ap.add_argument("--mib", type=int, help="MiB per throughput sample")
    ap.add_argument("--commit", metavar="REV", help="measure this commit's src/, not the work tree")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each section, wait up to SECONDS for other CPU use to drop below 10%%",
    )
    args = ap.parse_args()
    if args.commit and _EXPORTED not in os.environ:
        sys.exit(_run_exported(args.commit))
    scale = QUICK if args.quick else FULL
    if args.sequential:
        scale = dataclasses.replace(scale, sequential=args.sequential)
    if args.mib:
        scale = dataclasses.replace(scale, mib=args.mib)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}")
    if not sys.executable.startswith(sys.prefix) or ".pyenv/shims" in sys.executable:
        print(f"warning: {sys.executable} may be a shim; use the venv's python", file=sys.stderr)

    with benchlib.scratch("ringfence-bench-pycache-") as pycache:
        # Every Python this benchmark starts (the CLI, the session runner) reads and writes
        # bytecode in a cache of its own: an installed package has its .pyc files, and an
        # environment with PYTHONDONTWRITEBYTECODE (or a source tree being edited) would
        # otherwise recompile modules on every cold start and measure the compiler.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = pycache
        load0 = benchlib.loadavg()
        t0 = time.monotonic()
        sections: list[Section] = []
        for name in names:
            busy = benchlib.cpu_busy(0.5)
            if args.wait_idle > 0:
                busy = benchlib.wait_idle(args.wait_idle)
            print(
                f"[{time.monotonic() - t0:6.1f} s] {name} (machine {busy:.0%} busy) ...",
                file=sys.stderr,
                flush=True,
            )
            others = benchlib.OthersCpu()
            sec = _section(name)(scale)
            sec.notes.append(
                f"machine: {busy:.0%} busy just before this section; other processes used "
                f"~{others.fraction():.0%} of all CPUs while it ran"
            )
            sections.append(sec)
        elapsed = time.monotonic() - t0
        load1 = benchlib.loadavg()

    header = [
        *benchlib.machine(),
        ("ringfence", _measured()),
        ("command", " ".join([sys.executable, *sys.argv])),
        ("scale", scale.name),
        ("load average", f"{load0} at start, {load1} at end"),
        ("elapsed", f"{elapsed:.0f} s"),
    ]
    markdown = "".join(f"- {k}: {v}\n" for k, v in header)
    markdown += "\n" + benchlib.render_markdown(sections)
    if args.markdown_file:
        with open(args.markdown_file, "w") as f:
            f.write(markdown)
    if args.markdown:
        print(markdown, end="")
    else:
        for k, v in header:
            print(f"{k:<13} {v}")
        print(benchlib.render_text(sections))


if __name__ == "__main__":
    main()
