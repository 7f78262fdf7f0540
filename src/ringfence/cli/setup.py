"""``ringfence setup``: the one-time elevated setup on Windows (users, firewall rules)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ringfence.engine.platform import host_platform
from ringfence.errors import UsageError


def cmd_setup(ns: argparse.Namespace) -> int:
    from ringfence.platforms.windows.plan import setup_actions

    actions = setup_actions(proxy_port=ns.proxy_port)
    if ns.dry_run:
        if ns.json:
            json.dump(
                {"uninstall": ns.uninstall, "actions": [dataclasses.asdict(a) for a in actions]},
                sys.stdout,
                indent=2,
            )
            print()
        elif ns.uninstall:
            print("would undo, newest first, every change recorded in the setup and grants")
            print("journals (users and secrets that existed before setup stay)")
        else:
            from ringfence.platforms.windows.setup import describe

            print(
                "would do, in this order (each step journaled, resumable, undone by --uninstall):"
            )
            for a in actions:
                print(f"  {describe(a)}")
        return 0
    if (host := host_platform()) != "windows":
        raise UsageError(
            f"`ringfence setup` is for Windows; on {host} nothing needs setting up "
            "(`ringfence doctor` shows what this machine enforces; `--dry-run` shows what "
            "setup would do on Windows)"
        )
    from ringfence.platforms.windows.install import Places, run_setup, run_uninstall
    from ringfence.platforms.windows.win32 import Win32Api

    api, places = Win32Api(), Places.default()
    if ns.uninstall:
        print(f"ringfence setup: undid {run_uninstall(api, places)} changes")
        return 0
    install, changed = run_setup(api, places, proxy_port=ns.proxy_port)
    print(f"ringfence setup: {changed} changes; capability SID {install.capability_sid}")
    return 0
