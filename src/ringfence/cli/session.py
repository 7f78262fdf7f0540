"""``ringfence session start|stop|list``: warm sandboxes that ``run --session`` reaches."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from ringfence.cli.flags import gate_of, resolve_flags
from ringfence.engine import backends
from ringfence.errors import PolicyError, RingfenceError


def cmd_session(ns: argparse.Namespace) -> int:
    from ringfence import session_client, session_server, session_wire

    if ns.session_command == "list":
        return _session_list(ns)
    why = session_wire.check_name(ns.name)
    if why:
        raise PolicyError(why)
    if ns.session_command == "stop":
        try:
            sock = session_client.connect(ns.name)
        except (FileNotFoundError, ConnectionRefusedError):
            raise PolicyError(f"no session named {ns.name!r} is running") from None
        try:
            session_wire.send_all(sock, session_wire.frame(b"Q"))
            got = session_wire.FrameReader(sock).read()
        finally:
            sock.close()
        if got is None or got[0] != b"q":
            raise RingfenceError(f"session {ns.name!r} did not confirm that it stopped")
        print(f"session {ns.name!r} stopped")
        return 0
    resolved = resolve_flags(ns)
    policy, cwd = resolved.policy, resolved.cwd
    plan = backends.linux_plan(policy, cwd)
    server = session_server.SessionServer(
        ns.name,
        plan,
        policy.env,
        workspace=policy.workspace or cwd,
        idle_timeout=ns.idle_timeout,
        audit=not ns.no_audit,
        gate=gate_of(resolved),
    )
    server.bind()
    from ringfence import importpaths

    importpaths.tell_front_end(plan.writable_places())  # here: a daemon's stderr is gone
    if not ns.foreground:
        return session_server.daemonize(server)
    try:
        server.start()
        print(f"session {ns.name!r} ready: ringfence run --session {ns.name} -- CMD", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _session_list(ns: argparse.Namespace) -> int:
    from ringfence import session_client, session_wire

    directory = session_wire.session_dir()
    try:
        names = sorted(f[: -len(".sock")] for f in os.listdir(directory) if f.endswith(".sock"))
    except FileNotFoundError:
        names = []
    rows: list[dict[str, object]] = []
    for name in names:
        got = None
        with contextlib.suppress(OSError):
            sock = session_client.connect(name)
            try:
                session_wire.send_all(sock, session_wire.frame(b"I"))
                got = session_wire.FrameReader(sock).read()
            finally:
                sock.close()
        if got is None or got[0] != b"i":
            rows.append({"name": name, "running": False})
            continue
        rows.append({"running": True, **json.loads(got[1])})
    if ns.json:
        json.dump(rows, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    if not rows:
        print("no sessions")
    for r in rows:
        if not r["running"]:
            print(f"{r['name']}  not running (a stale socket; the next start removes it)")
            continue
        print(
            f"{r['name']}  pid {r['pid']}  since {r['started']}  {r['mode']}, network "
            f"{r['network']}  workspace {r['workspace']}  {r['commands']} commands, "
            f"{r['active']} running"
        )
    return 0
