"""Command line: ``ringfence run``, ``shell``, ``session``, ``explain``, ``doctor`` and more.

One module per subcommand, each a thin front end over the engine (``ringfence.engine``);
``parser`` holds the grammar, ``flags`` turns flags into the engine's requests. The modules
are imported by the subcommand that needs them, so ``ringfence run`` starts fast. Bad input
is one clear line and exit 2, with nothing run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from ringfence.cli.parser import EXIT_USAGE, SUBCOMMANDS, build_parser
from ringfence.errors import RingfenceError, cli_outcome

__all__ = ["EXIT_USAGE", "build_parser", "main"]

# subcommand -> (module in this package, function)
_HANDLERS = {
    "run": ("run", "cmd_run"),
    "shell": ("run", "cmd_shell"),
    "audit": ("audit", "cmd_audit"),
    "config": ("config_show", "cmd_config_show"),
    "explain": ("explain", "cmd_explain"),
    "session": ("session", "cmd_session"),
    "check": ("check", "cmd_check"),
    "mcp": ("mcp", "cmd_mcp"),
    "setup": ("setup", "cmd_setup"),
    "clean": ("clean", "cmd_clean"),
    "doctor": ("doctor", "cmd_doctor"),
}


def handler(command: str) -> Callable[..., int]:
    import importlib

    module, name = _HANDLERS[command]
    fn: Callable[..., int] = getattr(importlib.import_module(f"ringfence.cli.{module}"), name)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    first = args[0] if args and args[0] in SUBCOMMANDS else None
    ns = build_parser(first).parse_args(args)
    try:
        return handler(ns.command)(ns)
    except RingfenceError as e:
        line, status = cli_outcome(e)
        print(line, file=sys.stderr)
        return status
    except BrokenPipeError:  # e.g. `ringfence explain | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
