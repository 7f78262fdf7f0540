"""``ringfence explain``: the plan a command would run under, on this or another platform."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ringfence.cli.flags import apply_flags, command_of, resolve_flags
from ringfence.engine import backends
from ringfence.engine.platform import host_platform
from ringfence.policy import config
from ringfence.policy.model import PathStyle


def cmd_explain(ns: argparse.Namespace) -> int:
    argv = command_of(ns, required=False)
    if ns.platform == "windows":
        return _explain_windows(ns, argv)
    resolved = resolve_flags(ns)
    policy, cwd = resolved.policy, resolved.cwd
    if ns.platform == "macos":
        from ringfence.platforms.macos.plan import MacFacts, compile_macos

        # As a Mac would get it: home and temporary directory as macOS has them; symlinks are
        # resolved on the Mac, not here.
        home = os.environ.get("HOME", "/")
        mac = compile_macos(policy, MacFacts(home=home, tmpdir="/private/tmp/ringfence"))
        text = "".join(f"; note: {n}\n" for n in mac.notes) + mac.profile.rstrip("\n")
        return _print_plan(ns, mac.to_dict(), argv, text)
    plan = backends.linux_plan(policy, cwd)
    from ringfence.explain import render

    return _print_plan(ns, plan.to_dict(), argv, render(plan, argv))


WINDOWS_EXAMPLE_WORKSPACE = "C:\\Users\\you\\project"


def _explain_windows(ns: argparse.Namespace, argv: list[str]) -> int:
    """The Windows plan from the flags alone: their paths are Windows paths (no file is
    looked at), and the config files are not read (their paths are this machine's)."""
    from ringfence.platforms.windows.explain import render
    from ringfence.platforms.windows.plan import WindowsFacts, WindowsInstall, compile_windows
    from ringfence.policy import winpaths

    def win(flag: str, path: str) -> str:
        return winpaths.normalize(flag, path)

    notes = ["from the flags only: config files hold this machine's paths and were not read"]
    if ns.workspace:
        workspace = win("--workspace", ns.workspace)
    else:
        workspace = WINDOWS_EXAMPLE_WORKSPACE
        notes.append(f"no --workspace given: showing the example {workspace}")
    parts = workspace.split("\\")
    home = (
        "\\".join(parts[:3])
        if [p.casefold() for p in parts[1:2]] == ["users"] and len(parts) >= 3
        else "C:\\Users\\you"
    )
    settings = config.Settings()
    apply_flags(ns, settings, path=win)
    policy = config.build_policy(settings, workspace, path_style=PathStyle.WINDOWS)
    install = None
    if host_platform() == "windows":
        from ringfence.platforms.windows.install import Places, load_install

        install = load_install(Places.default())
    install = install or WindowsInstall.placeholder()
    facts = WindowsFacts(
        home=home,
        temp=home + "\\AppData\\Local\\ringfence\\tmp\\example",
        profile_roots=(home,),
    )
    plan = compile_windows(policy, facts, install)
    plan = dataclasses.replace(plan, notes=(*plan.notes, *notes))
    return _print_plan(ns, plan.to_dict(), argv, render(plan, install))


def _print_plan(ns: argparse.Namespace, data: dict[str, object], argv: list[str], text: str) -> int:
    if ns.json:
        json.dump({**data, "command": argv}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(text)
    return 0
