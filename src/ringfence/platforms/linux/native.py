"""The native launcher (``launcher/*.c``) from Python: whether it was built, and one run.

``pip install .`` builds the launcher with the system's C compiler where it can (setup.py,
an optional extension); where it could not, :func:`available` is False and every run takes
the Python runner, which stays the reference the native path is tested against
(tests/sandbox/test_native_launcher.py runs one plan both ways and compares what the
command saw). See docs/native.md for what the native launcher does and does not do yet.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ringfence.errors import SandboxError, UnsupportedError
from ringfence.platforms.linux.native_image import Image

try:
    from ringfence.platforms.linux import _launcher  # type: ignore[attr-defined]
except ImportError:  # not built here: the Python runner does everything
    _launcher = None


@dataclass(frozen=True)
class Ended:
    """How a natively launched command ended: ``exit`` (``value`` is its status),
    ``signal`` (the signal that killed it), ``timeout`` (killed, with its whole sandbox, at
    the deadline), ``exec_error`` / ``cwd_error`` (``value`` is the errno; it never ran)."""

    kind: str
    value: int
    detail: str = ""
    oom_kills: int = 0  # processes the run's memory cap killed
    names: tuple[str, ...] = ()  # host names looked up through the sandbox's resolver
    names_lost: bool = False  # more were looked up than are kept
    # The name guard's findings, as command_init._finish sends them: what it refused and
    # found, and the files that waited for its end-of-command check and did not get it (the
    # host moves them aside: fail closed).
    reports: tuple[dict[str, str], ...] = ()
    unchecked: tuple[str, ...] = ()
    guard_started: bool = False  # the command made a call the guard decides


def available() -> bool:
    """Whether the native launcher was built for this interpreter."""
    return _launcher is not None


def launch(image: Image, argv: Sequence[str], timeout: float | None = None) -> Ended:
    """Run ``argv`` in the sandbox ``image`` describes (native_image.encode), on this
    process's stdin, stdout and stderr. Raises :class:`UnsupportedError` when the image
    needs what the launcher does not do (``image.missing``: the Python runner must run that
    plan) or this host cannot build the boundary, and :class:`SandboxError` when a step of
    it failed: in all these cases nothing ran."""
    if _launcher is None:
        raise UnsupportedError("the native launcher was not built for this interpreter")
    if image.missing:
        gaps = "; ".join(image.missing)
        raise UnsupportedError(f"the native launcher cannot run this plan: {gaps}")
    raw_argv = [os.fsencode(a) for a in argv]
    got = _launcher.launch(image.data, raw_argv, -1.0 if timeout is None else timeout)
    if got[0] == "unsupported":
        raise UnsupportedError(got[2].decode("utf-8", "replace"))
    if got[0] == "error":
        raise SandboxError(got[2].decode("utf-8", "replace"))
    return ended(got)


def ended(got: tuple[Any, ...]) -> Ended:
    """The launcher's answer (``launch``, ``oneshot``) as an :class:`Ended`."""
    kind, value, detail, info = got
    names, lost = _names(info.get("names", b""))
    reports, unchecked, started = _findings(info.get("reports", b""), info.get("told", b""))
    return Ended(
        kind,
        value,
        detail.decode("utf-8", "replace"),
        int(info.get("oom_kills", 0)),
        names,
        lost,
        reports,
        unchecked,
        started,
    )


STARTED = "guard_started"  # the stub's record: the Python supervisor runs from here on


def _findings(
    raw: bytes, told: bytes = b""
) -> tuple[tuple[dict[str, str], ...], tuple[str, ...], bool]:
    """The guard's records (each a u32 length and JSON, as pid 1 forwards them), sorted as
    command_init._finish sorts them; ``told``: the names the guard told the host itself
    (guard_tell), each waiting for the end check as a ``git_pending`` record does."""
    if not raw and not told:
        return (), (), False
    from ringfence.platforms.linux.guard_tell import read_told, still_told
    from ringfence.platforms.linux.steps import CONTROL, _record

    records: list[dict[str, str]] = []
    pos = 0
    while pos + 4 <= len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        record = _record(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
        if record is not None:
            records.append(record)
    kinds = {r.get("kind") for r in records}
    # The guard's own line is whole and in order; pid 1's copy may have been cut at the
    # host's cap (and a cut between a name and its taking back would bring the name back).
    pending = sorted(still_told(read_told(told)))
    unchecked = tuple(pending) if pending and "git_finished" not in kinds else ()
    kept = tuple(r for r in records if r.get("kind") not in CONTROL and r.get("kind") != STARTED)
    return kept, unchecked, STARTED in kinds


KEPT_NAMES = 256  # as dns_stub.LOG_SIZE
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _names(raw: bytes) -> tuple[tuple[str, ...], bool]:
    """The names the sandbox's resolver passed on (one per line), each checked again here: it
    parsed the command's packets, so what it says is the command's to choose."""
    lost = len(raw) > (1 << 16) - 512  # the pipe was (nearly) full: the resolver dropped some
    names = [n.decode() for n in raw.split(b"\n") if n and set(n) <= _NAME_BYTES and len(n) <= 253]
    if len(names) > KEPT_NAMES:
        names, lost = names[-KEPT_NAMES:], True
    return tuple(dict.fromkeys(names)), lost


__all__ = ["Ended", "available", "ended", "launch"]
