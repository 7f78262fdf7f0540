"""Command line: ``ringfence run``, ``shell``, ``session``, ``explain``, ``doctor`` and more.

argparse (standard library) keeps ``ringfence run`` fast to start; the sandbox modules are
imported only by the subcommand that needs them. Bad input is one clear line and exit 2,
with nothing run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ringfence.display import printable
from ringfence.errors import PolicyError, RingfenceError, UnsupportedError, UsageError
from ringfence.network.proxy_env import PROXY_PORT
from ringfence.policy import config, paths
from ringfence.policy.model import (
    Isolation,
    Limits,
    Mode,
    Network,
    PathStyle,
    Policy,
    parse_size,
)

if TYPE_CHECKING:
    from ringfence.platforms.linux.plan import LinuxPlan
    from ringfence.process import Outcome

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ringfence: {message} (see `{self.prog} --help`)\n")


def _policy_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("policy")
    g.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=None,
        help="read-only | workspace-write (default) | full-access (no boundary)",
    )
    g.add_argument(
        "--workspace", metavar="DIR", help="writable workspace (default: current directory)"
    )
    g.add_argument(
        "--writable",
        metavar="PATH",
        action="append",
        default=[],
        help="another writable root (absolute, existing directory); repeatable",
    )
    g.add_argument(
        "--protect",
        metavar="PATH",
        action="append",
        default=[],
        help="keep PATH read-only even inside a writable root; repeatable",
    )
    g.add_argument(
        "--deny-read",
        metavar="PATH",
        action="append",
        default=[],
        help="hide PATH from the command; repeatable",
    )
    g.add_argument(
        "--no-default-protect",
        action="store_true",
        help="do not protect .git/hooks, .vscode, .envrc, shell rc files, ...",
    )
    g.add_argument(
        "--no-default-deny-read",
        action="store_true",
        help="do not hide ~/.ssh, ~/.aws and the other default secret paths",
    )
    g.add_argument(
        "--strict-git",
        action="store_true",
        help="make every git directory read-only (default: only git's own data is writable)",
    )
    g.add_argument(
        "--network",
        choices=[n.value for n in Network],
        default=None,
        help="off (default when sandboxed) | on | allowlist (only the --allow-domain names, "
        "through a filtering proxy that is the only way out)",
    )
    g.add_argument(
        "--allow-domain",
        metavar="NAME",
        action="append",
        default=[],
        help="with --network allowlist: example.com, *.example.com (subdomains), or NAME:PORT "
        "(default ports 80 and 443)",
    )
    g.add_argument(
        "--deny-domain",
        metavar="NAME",
        action="append",
        default=[],
        help="with --network allowlist: never this name (wins over --allow-domain; every port)",
    )
    g.add_argument(
        "--no-tool-caches",
        action="store_true",
        help="do not point pip, uv, npm, yarn, pnpm, cargo, go, gradle and maven at ringfence's "
        "own writable cache ($XDG_CACHE_HOME/ringfence/cache)",
    )
    g.add_argument(
        "--expose-port",
        metavar="PORT",
        type=int,
        action="append",
        default=[],
        help="127.0.0.1:PORT inside reaches the host's 127.0.0.1:PORT (a dev database, a local "
        "model server); with --network off or allowlist",
    )
    g.add_argument(
        "--allow-local-targets",
        action="store_true",
        help="with --network allowlist: an allowed name may resolve to a local, private or "
        "link-local address (refused by default)",
    )
    g.add_argument(
        "--allow-socket",
        metavar="PATH",
        action="append",
        default=[],
        help="let the command reach this unix socket (or directory of sockets) outside the "
        "writable roots, and keep it visible if it is a hidden runtime socket; repeatable",
    )
    g.add_argument("--cwd", metavar="DIR", help="working directory of the command")
    g.add_argument("--env", metavar="K=V", action="append", default=[], help="set a variable")
    g.add_argument(
        "--keep-env",
        metavar="NAME",
        action="append",
        default=[],
        help="keep a variable the secret scrub would drop",
    )
    g.add_argument(
        "--unset-env", metavar="NAME", action="append", default=[], help="drop a variable"
    )
    g.add_argument(
        "--clean-env",
        action="store_true",
        help="start from an empty environment (plus --keep-env names)",
    )
    g.add_argument(
        "--isolation",
        choices=[i.value for i in Isolation],
        default=None,
        help="namespaces (default) | reduced: for hosts without user namespaces; weaker, "
        "see `ringfence explain --isolation reduced`",
    )
    g.add_argument(
        "--landlock-min-abi",
        metavar="N",
        type=int,
        default=None,
        help="refuse to run unless the kernel's Landlock ABI is at least N",
    )
    g.add_argument(
        "--profile",
        metavar="NAME",
        help="use [profiles.NAME] of your config file ($XDG_CONFIG_HOME/ringfence/config.toml)",
    )
    g.add_argument(
        "--ignore-project-config",
        action="store_true",
        help="do not read the workspace's .ringfence.toml (it can only tighten the policy)",
    )
    g.add_argument(
        "--limit",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="resource limit; keys: processes, memory (needs a cgroup: see doctor), open-files, "
        "cpu (seconds), file-size, tmp-size, shm-size (512m, 2g, 25%%), inotify-instances, "
        "inotify-watches; 'none' lifts processes, memory, open-files, cpu and file-size",
    )


def _fill_run(run: argparse.ArgumentParser) -> None:
    _policy_flags(run)
    run.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        help="kill the command (and everything it started) after SECONDS",
    )
    run.add_argument(
        "--no-audit",
        action="store_true",
        help="do not record this command in the audit log ($XDG_STATE_HOME/ringfence/audit.jsonl)",
    )
    run.add_argument(
        "--ask",
        action="store_true",
        help="with --network allowlist: ask on the terminal before refusing a host the "
        "allowlist does not cover (allow once, for this run, or no)",
    )
    _approval_flags(run)
    run.add_argument(
        "--session",
        metavar="NAME",
        help="run in the session server NAME (see `ringfence session start`): its policy "
        "applies, so no policy flags here",
    )
    run.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the command a terminal of its own (from the sandbox), relayed to yours",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _approval_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("approval")
    g.add_argument(
        "--approval",
        choices=["never-ask", "on-request", "untrusted"],
        help="whether a command may run at all: never-ask (refuse what a rule would ask "
        "about), on-request (prompt rules ask; the default once --rules is given), untrusted "
        "(only known read-only commands run without asking)",
    )
    g.add_argument(
        "--rules",
        metavar="FILE",
        help="prefix rules (allow/prompt/forbid; default: $XDG_CONFIG_HOME/ringfence/rules.toml "
        "when --approval is given)",
    )


def _fill_check(check: argparse.ArgumentParser) -> None:
    _approval_flags(check)
    check.add_argument("-c", dest="script", metavar="LINE", help="a shell command line to judge")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _fill_shell(shell: argparse.ArgumentParser) -> None:
    _policy_flags(shell)
    shell.add_argument(
        "--shell", metavar="PATH", help="the shell to start (default: $SHELL, else /bin/sh)"
    )


def _fill_explain(explain: argparse.ArgumentParser) -> None:
    _policy_flags(explain)
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument(
        "--platform",
        choices=["linux", "macos", "windows"],
        default={"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux"),
        help="whose plan to show (macos: the Seatbelt profile; windows: the sandbox user, ACEs "
        "and firewall rules; give Windows paths like C:\\work). Compiled here, on any machine",
    )
    explain.add_argument("argv", nargs=argparse.REMAINDER, metavar="[-- CMD]")


def _fill_config(cfg: argparse.ArgumentParser) -> None:
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = cfg_sub.add_parser("show", help="print the effective policy with its sources")
    _policy_flags(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")


def _fill_audit(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("--since", metavar="TIME", help="records at or after TIME (ISO 8601, UTC)")
    audit.add_argument("--json", action="store_true", help="one JSON record per line")
    audit.add_argument("--follow", action="store_true", help="keep printing new records")
    audit.add_argument("--file", metavar="PATH", help="another audit log than the default")


def _fill_session(sess: argparse.ArgumentParser) -> None:
    sess_sub = sess.add_subparsers(dest="session_command", required=True, parser_class=_Parser)
    start = sess_sub.add_parser("start", help="build a sandbox once and serve commands from it")
    _policy_flags(start)
    start.add_argument("--name", default="default", help="the session's name (default: default)")
    start.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=float,
        help="stop after SECONDS with no command running (default: run until stopped)",
    )
    start.add_argument(
        "--foreground", action="store_true", help="serve in this process instead of forking"
    )
    start.add_argument("--no-audit", action="store_true", help="do not write the audit log")
    _approval_flags(start)
    stop = sess_sub.add_parser("stop", help="stop a session server and its commands")
    stop.add_argument("--name", default="default", help="the session's name (default: default)")
    lst = sess_sub.add_parser("list", help="the running session servers")
    lst.add_argument("--json", action="store_true", help="machine-readable output")


def _fill_clean(clean: argparse.ArgumentParser) -> None:
    which = clean.add_mutually_exclusive_group()
    which.add_argument(
        "--workspace",
        metavar="DIR",
        help="the workspace whose state to remove (default: the current directory's)",
    )
    which.add_argument("--all", action="store_true", help="every workspace's state")
    which.add_argument(
        "--gone", action="store_true", help="the state of workspaces that no longer exist"
    )
    which.add_argument(
        "--older-than",
        metavar="DAYS",
        type=float,
        help="the state of workspaces not used for DAYS days",
    )
    clean.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")


def _fill_mcp(mcp: argparse.ArgumentParser) -> None:
    _policy_flags(mcp)
    _approval_flags(mcp)
    mcp.add_argument(
        "--max-processes",
        type=int,
        default=8,
        metavar="N",
        help="at most N started processes running at once (default 8)",
    )
    mcp.add_argument("--no-audit", action="store_true", help="do not write the audit log")


def _fill_setup(setup: argparse.ArgumentParser) -> None:
    setup.add_argument(
        "--uninstall",
        action="store_true",
        help="remove every user, secret, ACE and firewall rule ringfence added",
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="print what setup would do; change nothing"
    )
    setup.add_argument(
        "--proxy-port",
        type=int,
        default=PROXY_PORT,
        metavar="PORT",
        help=f"the loopback port the offline user may reach (default {PROXY_PORT})",
    )
    setup.add_argument("--json", action="store_true", help="machine-readable output")


def _fill_doctor(doctor: argparse.ArgumentParser) -> None:
    _policy_flags(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")


_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run a command inside the sandbox", _fill_run),
    "shell": ("an interactive shell inside the sandbox", _fill_shell),
    "explain": ("print the plan a command would run under", _fill_explain),
    "config": ("the effective policy and where each value came from", _fill_config),
    "audit": ("read the audit log", _fill_audit),
    "check": ("whether the approval policy would run, ask about or refuse a command", _fill_check),
    "session": ("a warm sandbox that `run --session` calls reach", _fill_session),
    "mcp": ("serve a sandboxed shell to an AI agent over MCP (stdio)", _fill_mcp),
    "doctor": ("report what this kernel can enforce", _fill_doctor),
    "clean": ("remove per-workspace state: tool caches and /tmp layers", _fill_clean),
    "setup": ("Windows: the one-time elevated setup (users, firewall rules)", _fill_setup),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) one whose other subcommands have no arguments: each
    set of policy flags costs a cold ``ringfence run`` about 2 ms to build."""
    parser = _Parser(prog="ringfence", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (text, fill) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=text)
        if only is None or only == name:
            fill(p)
    return parser


def policy_from_args(ns: argparse.Namespace) -> tuple[Policy, str]:
    """The validated policy and the command's working directory."""
    policy, cwd, _ = layered_policy(ns)
    return policy, cwd


def layered_policy(ns: argparse.Namespace) -> tuple[Policy, str, config.Settings]:
    """User config (and profile), then flags, then the project file (tighten only), then the
    managed ceiling: the policy, the command's cwd, and where each value came from."""
    if ns.workspace:
        workspace = paths.existing_dir("--workspace", ns.workspace)
    else:
        workspace = paths.default_workspace(os.getcwd(), os.environ.get("HOME"))
    cwd = paths.existing_dir("--cwd", ns.cwd) if ns.cwd else os.path.realpath(os.getcwd())
    settings = config.Settings()
    config.load_user(settings, os.environ, ns.profile)
    _flag_settings(ns, settings)
    if not ns.ignore_project_config:
        config.apply_project(settings, workspace)
    # Approval is not a policy field: flags first, then the files, then the managed floor.
    in_files = settings.values.pop("approval", None), settings.values.pop("rules", None)
    asked = getattr(ns, "approval", None) or in_files[0]
    rules_file = getattr(ns, "rules", None) or in_files[1]
    policy = _policy_from_settings(settings, workspace)
    ceiling = config.load_ceiling()
    if ceiling is not None:
        policy = ceiling.check(policy, audit=not getattr(ns, "no_audit", False))
        asked = ceiling.approval(asked)
    ns.effective_approval = (asked, rules_file)  # read by _approval_settings
    return policy.validate(), cwd, settings


def _flag_settings(
    ns: argparse.Namespace,
    s: config.Settings,
    path: Callable[[str, str], str] | None = None,
) -> None:
    """Flags the user gave, on top of the config files: scalars replace, lists add. ``path``
    reads every path flag instead of this machine's rules (Windows paths, for explain)."""
    for key, value in (
        ("mode", ns.mode),
        ("network", ns.network),
        ("isolation", ns.isolation),
        ("landlock_min_abi", ns.landlock_min_abi),
    ):
        if value is not None:
            s.set(key, value, "flag")
    for key, flag_on, value in (
        ("default_protected", ns.no_default_protect, False),
        ("default_deny_read", ns.no_default_deny_read, False),
        ("strict_git", ns.strict_git, True),
        ("allow_local_targets", ns.allow_local_targets, True),
        ("tool_caches", ns.no_tool_caches, False),
    ):
        if flag_on:
            s.set(key, value, "flag")
    for key, items in (
        ("writable_roots", [(path or paths.absolute)("--writable", w) for w in ns.writable]),
        ("protected", [(path or paths.plain)("--protect", p) for p in ns.protect]),
        ("deny_read", [(path or paths.plain)("--deny-read", p) for p in ns.deny_read]),
        (
            "allow_sockets",
            [(path or paths.socket_path)("--allow-socket", p) for p in ns.allow_socket],
        ),
        ("allow_domains", list(ns.allow_domain)),
        ("deny_domains", list(ns.deny_domain)),
        ("expose_ports", list(ns.expose_port)),
    ):
        s.add(key, items, "flag")
    if ns.limit:
        merged = dict(s.values.get("limits", {}))
        merged.update(limit_changes(ns.limit))
        s.set("limits", merged, "flag")
    env_flags = ns.clean_env or ns.keep_env or ns.unset_env or ns.env
    if env_flags:
        env = dict(s.values.get("env", {}))
        if ns.clean_env:
            env["inherit"] = False
        env["keep"] = [*env.get("keep", []), *ns.keep_env]
        env["unset"] = [*env.get("unset", []), *ns.unset_env]
        sets = dict(env.get("set", {}))
        for item in ns.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise PolicyError(f"--env: {item!r} is not K=V")
            sets[key] = value
        env["set"] = sets
        s.set("env", env, "flag")


def _policy_from_settings(settings: config.Settings, workspace: str) -> Policy:
    """Paths from config files are expanded (``~``) and checked like flags; a writable root
    reached through a link planted inside another writable area is refused."""
    v = settings.values
    for key in ("protected", "deny_read"):
        if key in v:
            v[key] = [paths.plain(key, os.path.expanduser(p)) for p in v[key]]
    if "allow_sockets" in v:  # a socket missing on this machine is skipped (explain notes it)
        v["allow_sockets"] = [
            paths.socket_path("allow_sockets", q)
            if os.path.lexists(q := os.path.expanduser(p))
            else paths.plain("allow_sockets", q)
            for p in v["allow_sockets"]
        ]
    if "writable_roots" in v:
        given = [
            paths.absolute("writable root", os.path.expanduser(w)) for w in v["writable_roots"]
        ]
        trusted = [workspace, *(os.path.realpath(g) for g in given)]
        v["writable_roots"] = [paths.writable_root("writable root", w, trusted) for w in given]
    return config.build_policy(settings, workspace)


_LIMIT_KEYS = {
    "processes": "processes",
    "memory": "memory",
    "open-files": "open_files",
    "cpu": "cpu_seconds",
    "file-size": "file_size",
    "tmp-size": "tmp_size",
    "shm-size": "shm_size",
    "inotify-instances": "inotify_instances",
    "inotify-watches": "inotify_watches",
}
_LIFTABLE = {"processes", "memory", "open_files", "cpu_seconds", "file_size"}


def limits_from_args(items: Sequence[str]) -> Limits:
    """``--limit KEY=VALUE`` flags on top of the default limits."""
    return dataclasses.replace(Limits(), **limit_changes(items))  # type: ignore[arg-type]


def limit_changes(items: Sequence[str]) -> dict[str, int | str | None]:
    """``--limit KEY=VALUE`` flags as {Limits field: value}."""
    changes: dict[str, int | str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        field_name = _LIMIT_KEYS.get(key.strip())
        if not sep or field_name is None:
            raise PolicyError(
                f"--limit: {item!r} is not KEY=VALUE with KEY one of {', '.join(_LIMIT_KEYS)}"
            )
        value = value.strip()
        if value.lower() in ("none", "unlimited"):
            if field_name not in _LIFTABLE:
                raise PolicyError(f"--limit: {key} cannot be lifted, give a value")
            changes[field_name] = None
        elif field_name in ("tmp_size", "shm_size", "file_size", "memory"):
            size = parse_size(value)
            if field_name in ("file_size", "memory") and isinstance(size, str):
                raise PolicyError(f"--limit: {key} takes a size, not a percentage")
            changes[field_name] = size
        elif value.isdigit() and int(value) > 0:
            changes[field_name] = int(value)
        else:
            raise PolicyError(f"--limit: {key}={value!r} must be a positive whole number")
    return changes


def _command(ns: argparse.Namespace, *, required: bool) -> list[str]:
    argv = list(ns.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if required and not argv:
        raise PolicyError("no command given: use `ringfence run [flags] -- CMD [ARGS...]`")
    if argv and not argv[0]:
        raise PolicyError("the command name is empty")
    return argv


def _compile(policy: Policy, cwd: str) -> LinuxPlan:
    if sys.platform == "win32":
        raise UnsupportedError(
            "this is the Linux plan; on Windows, `ringfence explain --platform windows` shows "
            "what would be enforced and `ringfence run` runs a command (never yet run on "
            "Windows: docs/platforms.md)"
        )
    if sys.platform != "linux":
        raise UnsupportedError(
            f"this command is Linux-only so far ({sys.platform}); see docs/platforms.md"
        )
    from ringfence.platforms.linux import hostfacts, landlock
    from ringfence.platforms.linux.plan import compile_linux

    abi = landlock.abi_version() if policy.sandboxed else 0
    facts = hostfacts.gather(policy, env=os.environ, landlock_abi=abi)
    return compile_linux(policy, facts, cwd=cwd)


def cmd_shell(ns: argparse.Namespace) -> int:
    shell = ns.shell or os.environ.get("SHELL") or "/bin/sh"
    if not os.path.isabs(shell) or not os.access(shell, os.X_OK):
        shell = "/bin/sh"
    ns.argv = [shell]
    ns.timeout = None
    ns.tty = True
    ns.ask = False
    ns.no_audit = False
    return cmd_run(ns)


def cmd_run(ns: argparse.Namespace) -> int:
    argv = ns.argv if ns.command == "shell" else _command(ns, required=True)
    if ns.timeout is not None and not ns.timeout > 0:
        raise PolicyError("--timeout must be a positive number of seconds")
    if getattr(ns, "session", None) is not None:
        return _run_in_session(ns, argv)
    policy, cwd = policy_from_args(ns)
    if sys.platform == "darwin":
        return _run_macos(ns, argv, policy, cwd)
    if sys.platform == "win32":
        return _run_windows(ns, argv, policy, cwd)
    plan = _compile(policy, cwd)
    from ringfence import process

    ask = None
    if ns.ask:
        if plan.proxy_port is None:
            raise PolicyError("--ask needs --network allowlist")
        if ns.tty:
            raise PolicyError("--ask cannot share the terminal with -t")
        from ringfence.terminal import tty_asker

        ask = tty_asker()
    approval, rules = _approval_settings(ns)
    if plan.sandboxed:
        outcome = process.run_sandboxed(
            plan,
            argv,
            ns.timeout,
            tty=ns.tty,
            ask=ask,
            audit=not ns.no_audit,
            approval=approval,
            rules=rules,
            approver=_tty_approver if approval else None,
        )
    else:
        refusal = _approve_here(argv, approval, rules)
        outcome = refusal or process.run_unconfined(argv, dict(plan.env), cwd, ns.timeout)
    if outcome.message:
        prefix = "ringfence: "
        if outcome.error_kind == "UnsupportedError":
            prefix = "ringfence: cannot enforce the policy: "
        for line in outcome.message.split("\n"):
            print(prefix + printable(line), file=sys.stderr)
    return outcome.returncode


def _run_windows(ns: argparse.Namespace, argv: list[str], policy: Policy, cwd: str) -> int:
    """``ringfence run`` on Windows: facts, plan, grants, then the broker and the command in
    a job. Never run on Windows yet (docs/platforms.md); each piece is tested on Linux over
    simulated Windows calls."""
    import time

    from ringfence.platforms.windows import command, install, runner
    from ringfence.platforms.windows.win32 import Win32Api

    _refuse_unavailable(ns, policy, "Windows", [(bool(policy.allow_sockets), "--allow-socket")])
    if not policy.sandboxed:
        raise UnsupportedError("full-access on Windows: run the command without ringfence")
    approval, rules = _approval_settings(ns)
    refusal = _approve_here(argv, approval, rules)
    if refusal is not None:
        print(f"ringfence: {refusal.message}", file=sys.stderr)
        return refusal.returncode
    places = install.Places.default()
    state = install.load_install(places)
    if state is None:
        raise RingfenceError("ringfence is not set up here: run `ringfence setup` once, elevated")
    env = _host_env(policy)
    proxy = None
    if policy.effective_network is not Network.ON:
        # The firewall leaves the install's port open: ringfence's proxy holds it for the
        # command's life (with the network off it refuses everything).
        proxy = _host_proxy(policy, ns.ask, port=state.proxy_port)
        if policy.effective_network is Network.ALLOWLIST:
            env.update(_proxy_env(state.proxy_port))
    started = time.monotonic()
    try:
        ran = command.run_command(
            policy,
            argv,
            cwd=cwd,
            env=env,
            timeout=ns.timeout,
            home=os.path.expanduser("~"),
            places=places,
            api=Win32Api(),
            launch=lambda spec: runner.run(spec, runner.Win32RunnerApi()),
        )
    finally:
        if proxy is not None:
            proxy.service.close()
    if not ns.no_audit:
        _audit_host(
            "windows",
            policy,
            argv,
            cwd,
            returncode=ran.result.exit_code,
            duration=time.monotonic() - started,
            timed_out=ran.result.timed_out,
            approval=approval,
            network=proxy.service.events if proxy else (),
        )
    for note in ran.notes:
        print(f"ringfence: {note}", file=sys.stderr)
    timed_out = _report_host_run(ns, proxy, ran.result.timed_out)
    return timed_out or ran.result.exit_code


def _run_macos(
    ns: argparse.Namespace,
    argv: list[str],
    policy: Policy,
    cwd: str,
    *,
    sandbox_exec: str | None = None,
    log: str | None = None,
) -> int:
    """``ringfence run`` on a Mac: Seatbelt via ``sandbox-exec``, the violation monitor, the
    tree ended afterwards. Not run on a Mac yet: tests call this on Linux with stand-ins for
    ``sandbox-exec`` and ``log`` (parameters only, never from the environment, so nothing
    outside a test can swap the enforcer). What the macOS side cannot do yet is refused,
    never run with less."""
    from ringfence.platforms.macos import monitor, runner
    from ringfence.platforms.macos.plan import SANDBOX_EXEC

    _refuse_unavailable(ns, policy, "macOS", [])
    approval, rules = _approval_settings(ns)
    refusal = _approve_here(argv, approval, rules)
    if refusal is not None:
        print(f"ringfence: {refusal.message}", file=sys.stderr)
        return refusal.returncode
    env = _host_env(policy)
    proxy = None
    if policy.effective_network is Network.ALLOWLIST:
        proxy = _host_proxy(policy, ns.ask)  # on a port the kernel picks; the profile names it
        env.update(_proxy_env(proxy.port))
    try:
        result = runner.run(
            policy,
            argv,
            cwd=cwd,
            env=env,
            timeout=ns.timeout,
            sandbox_exec=sandbox_exec or SANDBOX_EXEC,
            log=log or monitor.LOG,
            proxy_port=proxy.port if proxy else None,
        )
    finally:
        if proxy is not None:
            proxy.service.close()
    from ringfence.escalation import quiet

    homes = [h for h in (env.get("HOME"), os.environ.get("HOME")) if h and os.path.isabs(h)]
    reported = quiet(result.violations, env, homes)
    files = [v for v in reported if v.get("kind") == "filesystem"]
    if not ns.no_audit:
        _audit_host(
            "macos",
            policy,
            argv,
            cwd,
            returncode=result.returncode,
            duration=result.duration,
            timed_out=result.timed_out,
            approval=approval,
            filesystem=files,
            network=proxy.service.events if proxy else (),
        )
    if files:
        shown = ", ".join(f"{v['op']} {v['path']} ({v['rule']})" for v in files[:5])
        more = " and more" if len(files) > 5 else ""
        print(f"ringfence: refused {printable(shown)}{more}", file=sys.stderr)
    blocked = [v for v in reported if v.get("kind") == "network"]
    if blocked:
        print(f"ringfence: Seatbelt blocked {len(blocked)} connection(s)", file=sys.stderr)
    timed_out = _report_host_run(ns, proxy, result.timed_out)
    if timed_out:
        return timed_out
    if result.signal is not None:
        return 128 + result.signal
    return result.returncode


def _refuse_unavailable(
    ns: argparse.Namespace, policy: Policy, where: str, more: Sequence[tuple[bool, str]]
) -> None:
    """What a Mac or Windows run cannot do yet is refused, never run with less."""
    for wanted, what in (
        (ns.tty, "-t (a terminal)"),
        (bool(policy.expose_ports), "--expose-port"),
        (policy.limits.memory is not None, "--limit memory"),
        # As on Linux: asking is about names for the proxy, never a way to turn the network on.
        (
            ns.ask and policy.effective_network is not Network.ALLOWLIST,
            "--ask without an allowlist",
        ),
        *more,
    ):
        if wanted:
            raise UnsupportedError(f"{what} is not available on {where} yet")


def _host_env(policy: Policy) -> dict[str, str]:
    from ringfence.policy.environment import build_environment, sandbox_variables

    return build_environment(os.environ, policy.env, sandbox_variables(policy))


def _proxy_env(port: int) -> dict[str, str]:
    from ringfence.network.proxy_env import proxy_environment

    return proxy_environment(port)


def _report_host_run(ns: argparse.Namespace, proxy: _HostProxy | None, timed_out: bool) -> int:
    """What the proxy refused, and the timeout; returns the exit status for a timeout, else 0."""
    from ringfence import process

    if proxy is not None:
        events = proxy.service.events
        hosts = {f"{e.host}:{e.port} ({e.rule})": None for e in events if not e.allowed}
        if hosts:
            print(f"ringfence: blocked {printable(', '.join(hosts))}", file=sys.stderr)
    if timed_out:
        print(f"ringfence: timed out after {ns.timeout} s", file=sys.stderr)
        return process.EXIT_TIMEOUT
    return 0


@dataclasses.dataclass
class _HostProxy:
    service: Any
    port: int


def _host_proxy(policy: Policy, ask: bool = False, port: int = 0) -> _HostProxy:
    """The filtering proxy for a Mac or Windows command: on the host's loopback (neither has
    a network namespace), on a port the kernel picks (macOS: the profile then names it) or
    the install's fixed one (Windows: the firewall leaves only that one open; if another
    program holds it, the command does not run). Other local processes could reach it too;
    they are not sandboxed anyway, and it only ever leads to the allowed names."""
    import socket

    from ringfence.network.service import ProxyService
    from ringfence.policy.netrules import NetRules

    asker = None
    if ask:  # before the socket: no terminal is a refusal, with nothing to clean up
        from ringfence.terminal import tty_asker

        asker = tty_asker()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as e:
        listener.close()
        raise UnsupportedError(
            f"the proxy port 127.0.0.1:{port} is taken by another program ({e.strerror}); "
            "the sandbox's only way out must be ringfence's proxy"
        ) from None
    listener.listen(64)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    # With the network off (Windows only gets here so), the proxy refuses every request.
    rules = NetRules.parse(policy.allow_domains, policy.deny_domains)
    service = ProxyService(listener, rules, allow_local=policy.allow_local_targets, ask=asker)
    return _HostProxy(service, port)


def _audit_host(
    platform: str,
    policy: Policy,
    argv: list[str],
    cwd: str,
    *,
    returncode: int | None,
    duration: float | None,
    timed_out: bool,
    approval: str | None,
    filesystem: Sequence[dict[str, Any]] = (),
    network: Sequence[Any] = (),
) -> None:
    """The same command record as on Linux, for a Mac or Windows run; the policy digest is of
    the policy (its environment values left out), as those plans carry per-run values."""
    import secrets

    from ringfence import audit

    data = dataclasses.asdict(policy)
    data["env"]["set"] = sorted(data["env"]["set"])
    record = audit.command_record(
        session=f"{platform}-" + secrets.token_hex(6),
        argv=argv,
        cwd=cwd,
        policy_digest=audit.digest(data),
        returncode=returncode,
        duration=duration,
        timed_out=timed_out,
        approval={"policy": approval} if approval else None,
        filesystem=filesystem,
        network=network,
    )
    try:
        audit.AuditLog().write(record)
    except OSError as e:
        print(f"ringfence: cannot write the audit log: {e}", file=sys.stderr)


def _approval_settings(ns: argparse.Namespace) -> tuple[str | None, object]:
    """The approval policy and rules the flags ask for (None: no approval step at all)."""
    approval, rules_file = ns.effective_approval  # set by layered_policy
    if approval is None and rules_file is None:
        return None, None
    from ringfence.approval import rules

    if rules_file is not None:
        rules_file = os.path.expanduser(rules_file)
    return approval or "on-request", rules.load(rules_file)


def _tty_approver(decision: object) -> bool | None:
    """Ask the person at the terminal (``/dev/tty``); None when there is no terminal."""
    from ringfence.approval.decide import Decision

    assert isinstance(decision, Decision)
    from ringfence.terminal import ask_on_tty

    shown = printable(" && ".join(shlex.join(c) for c in decision.commands))
    answer = ask_on_tty(
        f"ringfence: {printable(decision.reason)}\nringfence: run `{shown}`? [y/N] "
    )
    if answer is None:
        return None
    return answer in ("y", "yes")


def _approve_here(argv: list[str], approval: str | None, rules: object) -> Outcome | None:
    """The approval step, taken here where no Linux Session takes it: full-access, and the
    Mac and Windows runs."""
    if approval is None:
        return None
    from ringfence import process
    from ringfence.approval.decide import ASK, RUN, decide
    from ringfence.approval.rules import RuleSet

    assert isinstance(rules, RuleSet)
    d = decide(argv, approval, rules)
    if d.action == RUN or (d.action == ASK and _tty_approver(d)):
        return None
    return process.Outcome(process.EXIT_REFUSED, message=f"refused: {d.reason}")


def cmd_mcp(ns: argparse.Namespace) -> int:
    """``ringfence mcp``: one warm session behind an MCP server on stdin/stdout."""
    try:
        from ringfence import mcp_server
    except ImportError as e:  # an optional extra, not a kernel limit
        raise RingfenceError(
            f"ringfence mcp needs the MCP SDK ({e.name or e}): pip install 'ringfence[mcp]'"
        ) from None
    if not 1 <= ns.max_processes <= 256:
        raise PolicyError("--max-processes must be between 1 and 256")
    policy, cwd = policy_from_args(ns)
    plan = _compile(policy, cwd)
    if not plan.sandboxed:
        raise PolicyError("ringfence mcp serves a sandbox; full-access mode has none")
    approval, rules = _approval_settings(ns)
    tools = mcp_server.SandboxTools(
        policy,
        plan,
        approval=approval,
        rules=rules,  # type: ignore[arg-type]
        max_processes=ns.max_processes,
        audit=not ns.no_audit,
    )
    mcp_server.serve(tools)
    return 0


def cmd_check(ns: argparse.Namespace) -> int:
    """Print the approval decision for a command; exit 0 (run), 1 (ask) or 77 (refuse)."""
    from ringfence.approval.decide import ASK, RUN, decide

    argv = _command(ns, required=ns.script is None)
    if ns.script is not None:
        if argv:
            raise PolicyError("give either -c LINE or -- CMD [ARGS...], not both")
        argv = ["bash", "-c", ns.script]
    settings = config.Settings()  # the user's file and the managed floor, as for run
    config.load_user(settings, os.environ, None)
    asked = ns.approval or settings.values.get("approval")
    ceiling = config.load_ceiling()
    ns.effective_approval = (
        ceiling.approval(asked) if ceiling is not None else asked,
        ns.rules or settings.values.get("rules"),
    )
    approval, rules = _approval_settings(ns)
    d = decide(argv, approval or "on-request", rules)  # type: ignore[arg-type]
    if ns.json:
        json.dump(d.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(f"{d.action}: {d.reason}")
        if d.rule:
            print(f"rule: {d.rule}")
        for c in d.commands:
            print(f"command: {' '.join(c)}")
    return {RUN: 0, ASK: 1}.get(d.action, 77)


def _run_in_session(ns: argparse.Namespace, argv: list[str]) -> int:
    """``run --session``, reached when the fast path in ``entry`` did not take the call: say
    exactly what is wrong with it, or run it."""
    from ringfence import session_client, session_wire

    why = session_wire.check_name(ns.session)
    if why:
        raise PolicyError(why)
    defaults = vars(build_parser("run").parse_args(["run", "--", "true"]))
    ignored = {"argv", "session", "timeout", "command"}
    given = sorted(
        "--" + key.replace("_", "-")
        for key, value in vars(ns).items()
        if key not in ignored and value != defaults.get(key)
    )
    if given:
        raise PolicyError(
            f"{', '.join(given)} cannot be used with --session: the session's policy was fixed "
            "by `ringfence session start` (start another session for another policy)"
        )
    return session_client.run(ns.session, ns.timeout, argv)


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
            print(f"ringfence: no session named {ns.name!r} is running", file=sys.stderr)
            return 1
        try:
            session_wire.send_all(sock, session_wire.frame(b"Q"))
            got = session_wire.FrameReader(sock).read()
        finally:
            sock.close()
        if got is None or got[0] != b"q":
            raise RingfenceError(f"session {ns.name!r} did not confirm that it stopped")
        print(f"session {ns.name!r} stopped")
        return 0
    policy, cwd = policy_from_args(ns)
    plan = _compile(policy, cwd)
    server = session_server.SessionServer(
        ns.name,
        plan,
        policy.env,
        workspace=policy.workspace or cwd,
        idle_timeout=ns.idle_timeout,
        audit=not ns.no_audit,
        approval=_approval_settings(ns),
    )
    server.bind()
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


def cmd_config_show(ns: argparse.Namespace) -> int:
    policy, cwd, settings = layered_policy(ns)
    ceiling = config.load_ceiling()
    rows = []
    for f in dataclasses.fields(Policy):
        value = getattr(policy, f.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        elif isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "value"):
            value = value.value
        source = settings.sources.get(f.name, "default")
        if f.name == "workspace":
            source = "flag" if ns.workspace else "current directory"
        if (
            ceiling is not None
            and f.name in ("protected", "deny_read")
            and (set(getattr(ceiling, f.name)) & set(getattr(policy, f.name)))
        ):
            source += f" + managed {ceiling.path}"
        rows.append({"key": f.name, "value": value, "source": source})
    for key, value in zip(("approval", "rules"), ns.effective_approval, strict=True):
        rows.append({"key": key, "value": value, "source": settings.sources.get(key, "default")})
    if ns.json:
        out = {"cwd": cwd, "managed": ceiling.path if ceiling else None, "policy": rows}
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
        return 0
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        print(f"{r['key']:<{width}}  {json.dumps(r['value'], default=str)}  ({r['source']})")
    print(f"managed ceiling: {ceiling.path if ceiling else 'none'}")
    return 0


def cmd_audit(ns: argparse.Namespace) -> int:
    import time

    from ringfence.audit import AuditLog, format_record

    log = AuditLog(ns.file)
    seen = 0
    while True:
        records = list(log.records(since=ns.since))
        for record in records[seen:]:
            print(json.dumps(record, sort_keys=True) if ns.json else format_record(record))
        sys.stdout.flush()
        if not ns.follow:
            return 0
        seen = len(records)
        time.sleep(0.5)


def cmd_explain(ns: argparse.Namespace) -> int:
    argv = _command(ns, required=False)
    if ns.platform == "windows":
        return _explain_windows(ns, argv)
    policy, cwd = policy_from_args(ns)
    if ns.platform == "macos":
        from ringfence.platforms.macos.plan import MacFacts, compile_macos

        # As a Mac would get it: home and temporary directory as macOS has them; symlinks are
        # resolved on the Mac, not here.
        home = os.environ.get("HOME", "/")
        mac = compile_macos(policy, MacFacts(home=home, tmpdir="/private/tmp/ringfence"))
        text = "".join(f"; note: {n}\n" for n in mac.notes) + mac.profile.rstrip("\n")
        return _print_plan(ns, mac.to_dict(), argv, text)
    plan = _compile(policy, cwd)
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
    _flag_settings(ns, settings, path=win)
    policy = config.build_policy(settings, workspace, path_style=PathStyle.WINDOWS)
    install = None
    if sys.platform == "win32":
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


def cmd_clean(ns: argparse.Namespace) -> int:
    from ringfence import cleanup
    from ringfence.policy import statedirs

    home = os.environ.get("HOME")
    base = statedirs.cache_base(os.environ, os.path.realpath(home) if home else None)
    if base is None:
        raise PolicyError("clean: neither XDG_CACHE_HOME nor HOME is set; nothing to find")
    if ns.older_than is not None and ns.older_than < 0:
        raise PolicyError(f"clean: --older-than {ns.older_than}: give a number of days >= 0")
    workspace = None
    if not (ns.all or ns.gone or ns.older_than is not None):
        workspace = os.path.realpath(paths.absolute("--workspace", ns.workspace or os.getcwd()))
    chosen = cleanup.select(
        base, workspace=workspace, everything=ns.all, gone=ns.gone, older_than_days=ns.older_than
    )
    legacy = os.path.join(base, "cache")  # the one shared cache of ringfence < 0.2
    if ns.all and os.path.isdir(legacy) and not os.path.islink(legacy):
        chosen.append(cleanup.WorkspaceState(legacy, None, 0.0, cleanup.size_of(legacy)))
    busy = 0
    for st in chosen:
        label = st.workspace or "(shared cache of an older ringfence)"
        if ns.dry_run:
            print(f"would remove {st.path}  {label}  {st.size} bytes")
            continue
        lock = statedirs.try_exclusive(st.path) if st.workspace is not None else None
        if st.workspace is not None and lock is None:
            busy += 1
            print(f"in use, kept {st.path}  {label} (a sandbox of it is running)", file=sys.stderr)
            continue
        try:
            if st.workspace is None:
                cleanup.remove_state(base, "cache")
            else:
                cleanup.remove_state(base, os.path.basename(st.path), statedirs.WORKSPACES)
        finally:
            if lock is not None:
                os.close(lock)
        print(f"removed {st.path}  {label}  {st.size} bytes")
    if busy:
        return 1
    if not chosen:
        print("nothing to remove", file=sys.stderr)
    return 0


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
    if sys.platform != "win32":
        raise UsageError(
            f"`ringfence setup` is for Windows; on {sys.platform} nothing needs setting up "
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


def _print_plan(ns: argparse.Namespace, data: dict[str, object], argv: list[str], text: str) -> int:
    if ns.json:
        json.dump({**data, "command": argv}, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(text)
    return 0


def cmd_doctor(ns: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ringfence.platforms.linux import layers, probe

    report = probe.probe()
    plan, refusal = None, None
    try:
        policy, cwd = policy_from_args(ns)
        plan = _compile(policy, cwd)
    except (UnsupportedError, PolicyError) as e:
        refusal = str(e)  # doctor reports the host even where this policy cannot run
    rows = layers.layers(report, plan, refusal, uid=os.getuid())
    if ns.json:
        out = report.to_dict()
        out["layers"] = [asdict(r) for r in rows]
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(probe.render(report))
        print()
        print(layers.render(rows))
    return 0 if report.default_policy_ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    first = args[0] if args and args[0] in _SUBCOMMANDS else None
    ns = build_parser(first).parse_args(args)
    try:
        if ns.command == "run":
            return cmd_run(ns)
        if ns.command == "shell":
            return cmd_shell(ns)
        if ns.command == "audit":
            return cmd_audit(ns)
        if ns.command == "config":
            return cmd_config_show(ns)
        if ns.command == "explain":
            return cmd_explain(ns)
        if ns.command == "session":
            return cmd_session(ns)
        if ns.command == "check":
            return cmd_check(ns)
        if ns.command == "mcp":
            return cmd_mcp(ns)
        if ns.command == "setup":
            return cmd_setup(ns)
        if ns.command == "clean":
            return cmd_clean(ns)
        return cmd_doctor(ns)
    except UnsupportedError as e:
        print(f"ringfence: cannot enforce the policy: {e}", file=sys.stderr)
        return 125
    except PolicyError as e:
        print(f"ringfence: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RingfenceError as e:
        print(f"ringfence: {e}", file=sys.stderr)
        return 125
    except BrokenPipeError:  # e.g. `ringfence explain | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
