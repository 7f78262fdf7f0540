"""Commands nobody waits for any more (a cancelled task, an interrupted ``run``): their end
is still judged and audited (files left for the name guard's end check moved aside when the
init could not finish it), from a thread of their own, once they end."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


def in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a daemon thread; with no thread to be had (the process limit), the
    command ends unaudited."""
    with contextlib.suppress(RuntimeError):
        threading.Thread(target=fn, name="ringfence-unwatched", daemon=True).start()


def finish_later(proc: Any) -> None:
    """Wait for a started command (a ``session.Process``) in a thread: its end report,
    audit record and moves aside happen as for any other."""

    def finish() -> None:
        with contextlib.suppress(Exception):
            proc.wait()

    in_thread(finish)
