"""``ringfence run -v``: the steps of a run, with their timings, on stderr.

Off unless a front end turns it on; a step costs one global read then. The lines start with
``ringfence: [trace]`` and report what ringfence did (resolve, host facts, compile, sandbox
start, the command, teardown): they are for a person debugging a slow or failing run, not
for machines (``--report`` is).
"""

from __future__ import annotations

import sys
import time

_state: dict[str, float] = {}


def enable() -> None:
    """Start timing from now; later ``step`` calls print."""
    _state["start"] = _state["last"] = time.monotonic()


def enabled() -> bool:
    return "start" in _state


def step(what: str) -> None:
    """Say that ``what`` is done: time since the start, and since the previous step."""
    if "start" not in _state:
        return
    now = time.monotonic()
    total, delta = (now - _state["start"]) * 1000, (now - _state["last"]) * 1000
    _state["last"] = now
    from ringfence.display import printable

    print(f"ringfence: [trace {total:8.1f} ms  +{delta:7.1f}] {printable(what)}", file=sys.stderr)
