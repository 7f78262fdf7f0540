"""The usual path's side of the plan cache: record the compile of a one-shot request that
the fast path (``ringfence.oneshot``) looked up and missed, then keep its plan."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ringfence import oneshot
from ringfence.plancache import facts, store

if TYPE_CHECKING:
    from ringfence.engine.contract import RunOptions


class Keeper:
    """The usual path's side of the cache: record the compile of a request the fast path
    looked up and missed, then keep its plan."""

    def __init__(self, request: oneshot.Pending) -> None:
        self.request = request
        self.recorder = facts.Recorder()

    @classmethod
    def for_this_run(cls) -> Keeper | None:
        """A keeper when the fast path missed this very request (None otherwise: a test
        calling ``cmd_run`` directly, another command, the cache turned off)."""
        pending = oneshot.pending()
        return None if pending is None else cls(pending)

    @contextmanager
    def recording(self) -> Iterator[None]:
        with facts.recording(self.recorder):
            yield

    def keep(self, plan: Any, options: RunOptions, argv: Sequence[str]) -> None:
        """Store ``plan`` unless something in its compile cannot be replayed, or the command
        the usual path read (``argv``) is not what the fast path would run: with a positional
        argument before ``--`` (``run echo x -- y``) the command starts there."""
        if options.gate is not None:
            return  # the approval step reads its rules per command: not cached
        if list(argv) != self.request.command:
            return
        answers = self.recorder.answers()
        if answers is None:
            return

        for name, module in list(sys.modules.items()):  # ringfence's own code is an input
            path = getattr(module, "__file__", None)
            if name.startswith("ringfence") and isinstance(path, str):
                answers[("stat", path)] = facts.ask("stat", path)
        entry = store.Entry(
            plan,
            {
                "timeout": options.timeout,
                "tty": options.tty,
                "ask": options.ask,
                "audit": options.audit,
            },
            answers,
            tuple(self.recorder.effects),
        )
        store.save(self.request.directory, self.request.key, entry, self.request.secret)
        self._keep_native(entry)

    def _keep_native(self, entry: store.Entry) -> None:
        """The same request for the native launcher (``native_oneshot``), when it can run the
        plan and ask every question of its compile again; else only the Python entry."""
        from ringfence.platforms.linux import native
        from ringfence.platforms.linux.plan_model import LinuxPlan

        plan, opts = entry.plan, entry.options
        if not native.available() or not isinstance(plan, LinuxPlan) or opts["tty"] or opts["ask"]:
            return
        from ringfence import importpaths

        if importpaths.writable_imports(plan.writable_places()):
            return  # the Python paths tell the user, on every run (importpaths.tell_front_end)
        from ringfence.audit import default_path
        from ringfence.connection import plan_digest
        from ringfence.plancache import native_entry
        from ringfence.platforms.linux import native_image

        try:
            image = native_image.encode(plan)
        except ValueError:  # not sandboxed, or no Landlock: nothing for the launcher
            return
        if image.missing:
            return
        audit = (default_path(), plan_digest(plan), plan.cwd)
        data = native_entry.encode(
            image.data, entry.answers, entry.effects, opts, audit=audit, plan=plan
        )
        if data is not None:
            name = self.request.key + native_entry.SUFFIX
            store.write_sealed(
                self.request.directory, self.request.key, name, data, self.request.secret
            )
