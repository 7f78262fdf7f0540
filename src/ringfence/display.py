"""Text that reaches a person's terminal: what a command controls must not steer it."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with control characters (escape sequences that could rewrite what the person
    sees: a prompt, a report of what was refused) shown escaped, never sent raw."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
