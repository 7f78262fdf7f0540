"""Scale: setup with a large policy, and a thousand concurrent tunnels through the proxy.

    .venv/bin/python bench/all.py --only scale [--quick]

Every figure is a ratio against a baseline measured in the same run:

- setup (the API: ``Session(policy)`` + ``start()`` + first ``run(["true"])`` + ``close()``;
  the CLI: a one-shot ``ringfence run -- true``) with 10, 100 and 1,000 protected paths and
  with 100 writable roots plus 1,000 protected paths, against the default policy (the
  workspace only). Target: the large policy within 2x the default. The 10/100/1,000 rows
  show whether the cost grows linearly (the "per path" column).
- 1,000 tunnels opened at once through the filtering proxy from inside a sandbox, all held
  open, then each carrying its own bytes both ways, against 1,000 direct connections from
  the host to the same echo server. Target: no errors. The host process starts the session
  with a soft descriptor limit of 1,024, as a user's agent might.

Ten thousand commands in one session with flat descriptors and memory is the ``load`` section
of bench/session.py.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from benchlib import Scale, Section, check_rc, median, ms, quiet, ratio, scratch

from ringfence import Network, Policy
from ringfence.session import DEVNULL, Session

SETUP_TARGET = 2.0  # x the default policy
TUNNELS = 1000
USUAL_SOFT_LIMIT = 1024

# (label, writable roots, protected paths); the first is the baseline
CONFIGS = (
    ("default policy (workspace only)", 0, 0),
    ("10 protected paths", 0, 10),
    ("100 protected paths", 0, 100),
    ("1,000 protected paths", 0, 1000),
    ("100 writable roots + 1,000 protected paths", 100, 1000),
)
LARGE = CONFIGS[-1][0]

ECHO = r"""
import asyncio, resource, socket
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def handle(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()
async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await asyncio.start_server(handle, sock=sock, backlog=4096)
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().create_future()
asyncio.run(main())
"""

# Opens N connections at once (through the proxy at 127.0.0.1:PROXY with CONNECT, or straight
# to the echo server when PROXY is 0), holds them all, then sends a distinct message through
# each and reads it back. Prints {"held", "errors", "first_errors", "open_s", "total_s"}.
CLIENT = r"""
import asyncio, json, os, resource, sys, time
n, port, proxy = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
errors, opened = [], []
async def one(i, go):
    try:
        if proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy)
            w.write(f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
            head = await r.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:60])
        else:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        opened.append(i)
        await go.wait()
        msg = f"tunnel {i} {os.urandom(8).hex()}\n".encode() * 8
        w.write(msg)
        await w.drain()
        if await r.readexactly(len(msg)) != msg:
            raise RuntimeError("echo mismatch")
        w.write_eof()
        if await r.read():
            raise RuntimeError("bytes after the echo")
        w.close()
    except Exception as e:
        errors.append(f"{i}: {e!r}"[:160])
async def main():
    go = asyncio.Event()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i, go)) for i in range(n)]
    while len(opened) + len(errors) < n:
        await asyncio.sleep(0.002)
    t1 = time.perf_counter()
    held = len(opened)
    go.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"held": held, "errors": len(errors), "first_errors": errors[:3],
                      "open_s": t1 - t0, "total_s": time.perf_counter() - t0}))
asyncio.run(main())
"""


def scale(sc: Scale) -> Section:
    sec = Section(
        f"scale: setup with a large policy (median of {sc.setup_reps * 2}), "
        f"{TUNNELS:,} concurrent proxy tunnels"
    )
    _setup(sec, sc.setup_reps * 2)  # noisy VM: twice the setup section's repetitions
    _tunnels(sec)
    return sec


# -- setup ---------------------------------------------------------------------------------------
def _setup(sec: Section, reps: int) -> None:
    with scratch("ringfence-bench-scale-") as base:
        ws = os.path.join(base, "ws")
        os.mkdir(ws)
        roots = []
        for i in range(max(nr for _, nr, _ in CONFIGS)):
            d = os.path.join(base, f"w{i:03d}")
            os.mkdir(d)
            roots.append(d)
        protected = []
        for i in range(max(np_ for _, _, np_ in CONFIGS)):
            f = os.path.join(ws, f"p{i:04d}")
            with open(f, "w"):
                pass
            protected.append(f)
        keys = ("compile", "start", "first", "close", "cli")
        results = {label: {k: [] for k in keys} for label, _, _ in CONFIGS}
        for rep in range(reps):
            order = CONFIGS[rep % len(CONFIGS) :] + CONFIGS[: rep % len(CONFIGS)]
            for label, nr, np_ in order:
                _one_setup(results[label], ws, roots[:nr], protected[:np_])
    base_api = _api(results[CONFIGS[0][0]])
    base_cli = median(results[CONFIGS[0][0]]["cli"])
    for label, _, _ in CONFIGS:
        r = results[label]
        api, cli = _api(r), median(r["cli"])
        parts = ", ".join(f"{k} {median(r[k]) * 1000:.0f}" for k in ("compile", "start", "first"))
        first = label == CONFIGS[0][0]
        target = ""
        if label == LARGE:
            ok = api <= SETUP_TARGET * base_api and cli <= SETUP_TARGET * base_cli
            target = f"<= {SETUP_TARGET:g}x default: {'met' if ok else 'NOT met'}"
        per = "" if first else f"; {(api - base_api) * 1000:+.0f} ms"
        sec.add(
            f"API, {label} ({parts} ms)",
            ms(api),
            "" if first else ratio(api, base_api, "default") + per,
            target,
        )
        sec.add(
            f"  CLI `ringfence run -- true`, {label}",
            ms(cli),
            "" if first else ratio(cli, base_cli, "default"),
        )
    sec.notes.append(
        "grows linearly when the added milliseconds grow tenfold from 100 to 1,000 paths; "
        "protected paths are existing files in the workspace (each bound read-only onto "
        "itself); writable roots are sibling directories; the name guard is on; the "
        "configurations run in rotated order, one after another, in each repetition"
    )


def _one_setup(r: dict[str, list[float]], ws: str, roots: list[str], prot: list[str]) -> None:
    policy = Policy(workspace=ws, writable_roots=tuple(roots), protected=tuple(prot))
    t0 = time.perf_counter()
    s = Session(policy, cwd=ws)
    t1 = time.perf_counter()
    s.start()
    t2 = time.perf_counter()
    check_rc(s.run(["true"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL).returncode, "run")
    t3 = time.perf_counter()
    s.close()
    t4 = time.perf_counter()
    for key, dt in zip(
        ("compile", "start", "first", "close"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True
    ):
        r[key].append(dt)
    flags: list[str] = []
    for d in roots:
        flags += ["--writable", d]
    for f in prot:
        flags += ["--protect", f]
    t0 = time.perf_counter()
    rc = quiet([sys.executable, "-P", "-m", "ringfence", "run", *flags, "--", "true"], ws)
    r["cli"].append(time.perf_counter() - t0)
    check_rc(rc, "ringfence run")


def _api(r: dict[str, list[float]]) -> float:
    return sum(median(r[k]) for k in ("compile", "start", "first", "close"))


# -- tunnels -------------------------------------------------------------------------------------
def _tunnels(sec: Section) -> None:
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        direct = _client([sys.executable, "-c", CLIENT, str(TUNNELS), str(port), "0"])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        usual = min(USUAL_SOFT_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (usual, hard))
        with scratch("ringfence-bench-tunnels-") as ws:
            policy = Policy(
                workspace=ws,
                network=Network.ALLOWLIST,
                allow_domains=(f"localhost:{port}",),
                allow_local_targets=True,
            )
            fds0 = len(os.listdir("/proc/self/fd"))
            try:
                with Session(policy) as s:
                    check_rc(s.run(["true"]).returncode, "run")
                    session_fds = len(os.listdir("/proc/self/fd"))
                    argv = ["python3", "-c", CLIENT, str(TUNNELS), str(port), "3128"]
                    r = s.run(argv, capture_output=True, text=True, timeout=300)
                    proxied = json.loads(r.stdout) if r.returncode == 0 else None
                    if proxied is None:
                        raise SystemExit(f"bench: tunnel client failed: {r.stderr[-500:]}")
                    fds1 = _settled_fds(session_fds)
                fds2 = len(os.listdir("/proc/self/fd"))
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        echo.kill()
        echo.wait()
    sec.add(
        f"{TUNNELS:,} direct connections from the host, held, then echoed",
        f"{direct['total_s'] * 1000:.0f} ms",
        f"{direct['errors']} errors; opening {direct['open_s'] * 1000:.0f} ms",
    )
    errors = proxied["errors"]
    sec.add(
        f"{TUNNELS:,} tunnels through the proxy from inside the sandbox",
        f"{proxied['total_s'] * 1000:.0f} ms",
        ratio(proxied["total_s"], direct["total_s"], "direct")
        + f"; opening {proxied['open_s'] * 1000:.0f} ms; held at once {proxied['held']:,}",
        f"errors {errors} (target 0): {'met' if errors == 0 else 'NOT met'}",
    )
    if proxied["first_errors"]:
        sec.notes.append("first tunnel errors: " + "; ".join(proxied["first_errors"]))
    sec.add(
        "  host fds: before the session / session up / tunnels closed / session closed",
        f"{fds0} / {session_fds} / {fds1} / {fds2}",
    )
    sec.notes.append(
        f"the echo server is a separate process; the benchmark's own soft descriptor limit is "
        f"{usual:,} when the session starts (hard {hard:,}); the proxy raises it to the hard "
        "limit. Each tunnel carries 344 bytes each way after all are open"
    )


def _settled_fds(session_fds: int, wait: float = 3.0) -> int:
    """The host's descriptors once the proxy has closed the tunnels' ends (it does so a moment
    after the client has gone): at most ``wait`` seconds for the count to stop falling."""
    deadline = time.monotonic() + wait
    last = len(os.listdir("/proc/self/fd"))
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(os.listdir("/proc/self/fd"))
        if now == last and now <= session_fds:
            break
        last = now
    return last


def _client(argv: list[str]) -> dict[str, object]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)  # type: ignore[no-any-return]
