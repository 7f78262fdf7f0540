"""The ``ringfence`` command's entry point: the session fast path first, the full CLI otherwise.

``ringfence run --session NAME -- CMD`` is what an agent calls for every command once a
session server is up, so it must not pay for argparse, the policy model or the config loader,
nor for ``from __future__`` (this module and the ones the fast path imports do without it).
"""

import sys


def main() -> int:
    """The CLI's exit status; a ``run --session`` call ends the process itself instead."""
    if sys.argv[1:] == ["--version"]:  # as cheap as the session fast path
        from ringfence import __version__

        print(f"ringfence {__version__}")
        return 0
    from ringfence import session_client

    fast = session_client.fast_args(sys.argv[1:])
    if fast is not None:
        session_client.exit_now(session_client.run(*fast))
    from ringfence.cli import main as cli_main

    return cli_main()
