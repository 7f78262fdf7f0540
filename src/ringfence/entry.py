"""The ``ringfence`` command's entry point: the session fast path first, then a one-shot run
from the plan cache, the full CLI otherwise.

``ringfence run --session NAME -- CMD`` is what an agent calls for every command once a
session server is up, so it must not pay for argparse, the policy model or the config loader,
nor for ``from __future__`` (this module and the ones the fast path imports do without it).
A one-shot ``ringfence run FLAGS -- CMD`` whose plan was kept does not pay for them either:
the native launcher runs it when it can (``ringfence.native_oneshot``), else the Python fast
path (``ringfence.oneshot``).
"""

import sys

from ringfence import stdfds


def main() -> int:
    """The CLI's exit status; a ``run --session`` call or a cached one-shot run ends the
    process itself instead (their teardown has nothing left to do)."""
    stdfds.reserve()  # before anything opens a descriptor (stdfds.py)
    if sys.argv[1:] == ["--version"]:  # as cheap as the session fast path
        from ringfence.version import __version__

        print(f"ringfence {__version__}")
        return 0
    from ringfence import session_client

    fast = session_client.fast_args(sys.argv[1:])
    if fast is not None:
        session_client.exit_now(session_client.run(*fast))
    from ringfence import native_oneshot

    native = native_oneshot.run(sys.argv[1:])
    if native is not None:
        session_client.exit_now(native & 0xFF if native >= 0 else 1)
    from ringfence import oneshot

    cached = oneshot.run_cached(sys.argv[1:])
    if cached is not None:
        session_client.exit_now(cached & 0xFF if cached >= 0 else 1)
    from ringfence.cli import main as cli_main

    return cli_main()
