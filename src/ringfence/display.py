"""Text that reaches a person's terminal: what a command controls must not steer it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringfence.engine.result import RunResult


def printable(text: str) -> str:
    """``text`` with control characters (escape sequences that could rewrite what the person
    sees: a prompt, a report of what was refused) shown escaped, never sent raw."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def report(result: RunResult) -> None:
    """ringfence's own lines about a run, on stderr, each escaped on its own."""
    if not result.message:
        return
    prefix = "ringfence: "
    if result.error_kind == "UnsupportedError":
        prefix = "ringfence: cannot enforce the policy: "
    for line in result.message.split("\n"):
        print(prefix + printable(line), file=sys.stderr)
