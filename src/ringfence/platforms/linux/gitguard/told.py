"""Which files left for the end-of-command check the host has been told of (guard_tell.py).

Should the end check not run, the host moves aside every file it was told of, without
reading it. So what it was told must match what waits for the check, both ways:

- every name in :attr:`GitGuard.pending` is told before a call can put a file there (else
  the file would stay unchecked);
- a name stays told only while a file of the command's may be there: names a call told are
  taken back when that call fails or is refused (:meth:`Told.undo_since`, with the names it
  added to ``pending``), and a name whose file was renamed away or removed is taken back
  once that is done (:meth:`Told.forget`). Else the host would move aside whatever is at the
  name later, such as a nested repository's ``.git`` the command may not remove.

Calls are answered one at a time, so a call's own tells are the log's entries since its
mark; the log is emptied when a call has been done (:meth:`Told.done`).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

# What the host may have to keep for one command: it keeps every told name (outside the
# sandbox's memory limit), and the native launcher keeps at most 8 MiB of them.
TOLD_BUDGET: Final = 4 << 20


def told_cost(path: str) -> int:
    """What telling ``path`` costs the host at most: the name as a relayed JSON record
    escapes it (a control byte takes six), and the record's framing."""
    return len(json.dumps(path)) + 48


@dataclass
class Told:
    event: Callable[[str, str], None]  # (kind, path): git_pending or git_untold
    names: set[str] = field(default_factory=set)
    spent: int = 0  # bytes of records this command has sent the host so far
    # this call's changes, to undo should it fail: ("told", path, None) or
    # ("pending", path, the kind it had before or None)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)

    def tell(self, path: str, *, budget: bool = True) -> None:
        """Tell the host of ``path`` (once). A call that would tell more than
        :data:`TOLD_BUDGET` is refused (EMFILE) before it is done: a name the host had to
        drop could be the one it needed."""
        if path in self.names:
            return
        cost = told_cost(path)
        if budget and self.spent + cost > TOLD_BUDGET:
            raise OSError(errno.EMFILE, "too many names wait for the git check")
        self.spent += cost
        self.event("git_pending", path)
        self.names.add(path)
        self.log.append(("told", path, None))

    def forget(self, path: str) -> None:
        """``path``'s file went away (renamed, removed), by a call that is done."""
        if path in self.names:
            self.names.discard(path)
            self.spent += told_cost(path)  # the taking back is sent too
            self.event("git_untold", path)

    def noting(self, path: str, before: str | None) -> None:
        """This call makes ``path`` wait for the check (it was waiting as ``before``)."""
        self.log.append(("pending", path, before))

    def mark(self) -> int:
        return len(self.log)

    def undo_since(self, mark: int, pending: dict[str, str], drop: Callable[[str], None]) -> None:
        """The call whose changes start at ``mark`` failed: take back what it told, and
        what it added to ``pending`` (``drop``: let go of what was pinned for a name no
        longer waiting)."""
        for what, path, before in reversed(self.log[mark:]):
            if what == "told":
                self.forget(path)
            elif before is None:
                pending.pop(path, None)
                drop(path)
            else:
                pending[path] = before
        del self.log[mark:]

    def done(self) -> None:
        """The call has been done: nothing of it is undone any more."""
        self.log.clear()
