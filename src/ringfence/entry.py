"""The ``ringfence`` command's entry point: the session fast path first, the full CLI otherwise.

``ringfence run --session NAME -- CMD`` is what an agent calls for every command once a
session server is up, so it must not pay for argparse, the policy model or the config loader.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing`: the session fast path must not import it
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> int:
    if sys.argv[1:] == ["--version"]:  # as cheap as the session fast path
        from ringfence.version import __version__

        print(f"ringfence {__version__}")
        return 0
    from ringfence import session_client

    fast = session_client.fast_args(sys.argv[1:])
    if fast is not None:
        return session_client.run(*fast)
    from ringfence import oneshot

    cached = oneshot.run_cached(sys.argv[1:])
    if cached is not None:
        _exit_now(cached)
    from ringfence.cli import main as cli_main

    return cli_main()


def _exit_now(status: int) -> NoReturn:
    """Exit without tearing the interpreter down: a cached one-shot run has closed its sandbox
    and written its audit record, and freeing a hundred modules' objects one by one is a few
    milliseconds of nothing on every command. What Python would still flush is flushed."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status & 0xFF if status >= 0 else 1)
