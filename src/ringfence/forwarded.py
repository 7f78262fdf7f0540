"""The signals that are the command's: ringfence passes them on to it instead of acting on
them (an interrupt at the terminal reaches the command, not ringfence's own process).

One list for the CLI, the session client's fast path and the sandbox side; built from
``_signal`` (the C module), since ``signal`` would import ``enum`` (~3 ms on the fast path).
"""

import _signal  # type: ignore[import-not-found]

FORWARDED: tuple[int, ...] = (
    _signal.SIGINT,
    _signal.SIGTERM,
    _signal.SIGHUP,
    _signal.SIGQUIT,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
    _signal.SIGWINCH,
    _signal.SIGCONT,
)
