"""The ``ringfence`` command line's grammar: every subcommand and flag, and nothing else.

argparse (standard library) keeps ``ringfence run`` fast to start; ``build_parser(only)``
fills in the arguments of one subcommand only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from ringfence import __version__
from ringfence.engine.platform import PLATFORMS, host_platform
from ringfence.network.proxy_env import PROXY_PORT
from ringfence.policy.model import Isolation, Mode, Network

DESCRIPTION = "Run an AI coding agent's commands inside boundaries the kernel enforces."

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
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
        "--publish",
        metavar="[HOST_PORT:]PORT",
        action="append",
        default=[],
        help="a server on 127.0.0.1:PORT inside is reachable at the host's 127.0.0.1:HOST_PORT "
        "(and [::1]; default HOST_PORT = PORT); with --network off or allowlist; repeatable",
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
        "see: ringfence explain --isolation reduced",
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
        help="run in the session server NAME (see: ringfence session start); its policy "
        "applies, so no policy flags here",
    )
    run.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the command a terminal of its own (from the sandbox), relayed to yours",
    )
    _report_flags(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _report_flags(run: argparse.ArgumentParser) -> None:
    """``run``'s machine-readable result (docs/report.md), its trace, and ``-c LINE``."""
    g = run.add_argument_group("result")
    g.add_argument(
        "--report",
        metavar="FILE",
        help="write the run's record (JSON, one line; see docs/report.md) to FILE after the "
        "run; never through a symbolic link, only to a regular file",
    )
    g.add_argument(
        "--report-fd",
        metavar="N",
        type=int,
        help="write the run's record to descriptor N (3 or more), which the command does "
        "not get: e.g. --report-fd 3 3>report.json",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="trace ringfence's steps with their timings on stderr",
    )
    run.add_argument(
        "-c",
        dest="script",
        metavar="LINE",
        help="run a shell command line (bash -c LINE, or sh where there is no bash)",
    )


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
        default=host if (host := host_platform()) in PLATFORMS else "linux",
        help="whose plan to show (macos: the Seatbelt profile; windows: the sandbox user, ACEs "
        "and firewall rules; give Windows paths like C:\\work). Compiled here, on any machine",
    )
    explain.add_argument("argv", nargs=argparse.REMAINDER, metavar="[-- CMD]")


def _fill_config(cfg: argparse.ArgumentParser) -> None:
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=Parser)
    show = cfg_sub.add_parser("show", help="print the effective policy with its sources")
    _policy_flags(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")


def _fill_audit(audit: argparse.ArgumentParser) -> None:
    audit.add_argument(
        "--since",
        metavar="TIME",
        help="records at or after TIME: ISO 8601 (UTC unless it has an offset), a span ago "
        "(90s, 15m, 1h, 2d, 1w), today or yesterday",
    )
    audit.add_argument("--json", action="store_true", help="one JSON record per line")
    audit.add_argument("--follow", action="store_true", help="keep printing new records")
    audit.add_argument("--file", metavar="PATH", help="another audit log than the default")


def _fill_session(sess: argparse.ArgumentParser) -> None:
    sess_sub = sess.add_subparsers(dest="session_command", required=True, parser_class=Parser)
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


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run a command inside the sandbox", _fill_run),
    "shell": ("an interactive shell inside the sandbox", _fill_shell),
    "explain": ("print the plan a command would run under", _fill_explain),
    "config": ("the effective policy and where each value came from", _fill_config),
    "audit": ("read the audit log", _fill_audit),
    "check": ("whether the approval policy would run, ask about or refuse a command", _fill_check),
    "session": ("a warm sandbox that run --session calls reach", _fill_session),
    "mcp": ("serve a sandboxed shell to an AI agent over MCP (stdio)", _fill_mcp),
    "doctor": ("report what this kernel can enforce", _fill_doctor),
    "clean": ("remove per-workspace state: tool caches and /tmp layers", _fill_clean),
    "setup": ("Windows: the one-time elevated setup (users, firewall rules)", _fill_setup),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) one whose other subcommands have no arguments: each
    set of policy flags costs a cold ``ringfence run`` about 2 ms to build."""
    parser = Parser(prog="ringfence", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ringfence {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (text, fill) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=text)
        if only is None or only == name:
            fill(p)
    return parser
