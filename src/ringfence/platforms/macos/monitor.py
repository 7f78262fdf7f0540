"""The macOS violation monitor: this session's Seatbelt denials, read from ``log stream``.

How Seatbelt reports a denial: the Sandbox kernel extension writes one line to the unified log,
``Sandbox: <comm>(<pid>) deny(1) <operation> <target>``, with the kernel as the sender (process
id 0, ``senderImagePath`` the Sandbox kext), and the offending process only in that free text.
A rule with ``(with message "TEXT")`` gets TEXT appended to that line, on a line of its own
(the parser accepts any whitespace before it, in case the OS joins them otherwise).
Our profile puts the session tag on every deny rule (``plan.py``), so ``log stream`` with a
predicate on the tag selects this session's denials, and :func:`parse_line` keeps only events
whose message *ends* with a line that is exactly the tag: a path cannot smuggle another
session's tag to the end, because Seatbelt appends the real tag after it.

Sources this is based on (the code is ours): Anthropic's sandbox-runtime
(``src/sandbox/macos-sandbox-utils.ts``), which puts ``(with message "..._SBX")`` on its deny
rules and runs ``log stream --predicate 'eventMessage ENDSWITH "<suffix>"'``, then reads the
``Sandbox: ...deny...`` line and the tag line that follows it; and a published probe of
``log stream --style ndjson`` on macOS 26 (Darwin 25) showing the event fields (``eventMessage``,
``processID`` 0, ``senderImagePath`` the Sandbox kext), the ``N duplicate report(s) for`` prefix
the OS uses when one process repeats one denial, and that a stream started a few milliseconds
before the command can miss its first denials.

What this is not: an audit. The log is best effort (the OS coalesces repeats and may drop
reports under load), ``comm`` and ``pid`` are what the kernel printed (the process chooses its
own name), and anything that can write to the unified log could forge a line with our tag. The
tag attributes denials; it does not authenticate them.

Not run on a Mac yet: the parser is tested against lines constructed from the sources above,
and the :class:`Monitor` against a stand-in ``log`` executable on Linux.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from ringfence.platforms.macos import plan as mac_plan

LOG = "/usr/bin/log"  # by absolute path: never whatever is first on PATH
# The same limits as the Linux guard's reports (platforms/linux/steps.py MAX_REPORTS,
# MAX_REPORT_PATH; a test keeps them equal): 100 distinct entries, then a "more" marker; a path
# keeps its first and last 256 characters.
MAX_REPORTS = 100
MAX_REPORT_PATH = 512
MAX_LINE = 64 * 1024  # an ndjson event is a few KiB; a longer line is skipped, never buffered
READY_TIMEOUT = 1.0  # seconds to wait for the stream's first line before the command starts
GRACE = 0.3  # seconds to keep reading after the command ended: reports trail the denial

_DENIAL = re.compile(
    r"(?:(?P<dup>\d+) duplicate reports? for )?"
    r"Sandbox: (?P<comm>.{0,64}?)\((?P<pid>\d{1,10})\) deny(?:\(\d+\))? "
    r"(?P<op>[a-z][a-z0-9*-]{0,63})(?: (?P<target>.*))?",
    re.DOTALL,
)
_FILE_READ = frozenset({"file-read-data", "file-read-metadata", "file-read-xattr", "file-read*"})


@dataclass(frozen=True)
class Violation:
    """One denial Seatbelt reported for this session.

    ``kind`` follows the Linux reports: ``filesystem`` (``op``, ``path``), ``network`` (``host``
    and ``port`` for an address, or ``path`` for a unix socket), ``other`` (any other operation:
    ``mach-lookup``, ``sysctl-read``, ...; its target in ``path``). ``op`` is Seatbelt's
    operation name (``file-write-create``), where Linux reports the system call.
    """

    kind: str
    op: str
    path: str
    pid: int
    process: str
    host: str = ""
    port: int | None = None
    rule: str = "seatbelt"
    repeats: int = 1  # the OS's "N duplicate reports" count, plus the first one

    def to_report(self) -> dict[str, Any]:
        """The record shape ``Process.violations`` holds on Linux (plus ``pid``)."""
        if self.kind == "network" and self.host:
            return {"kind": "network", "host": self.host, "port": self.port, "rule": self.rule,
                    "op": self.op, "pid": self.pid}  # fmt: skip
        return {"kind": self.kind, "op": self.op, "path": self.path, "rule": self.rule,
                "pid": self.pid}  # fmt: skip


def log_argv(tag: str, log: str = LOG) -> list[str]:
    """``log stream`` for the denials that carry ``tag``, one JSON object a line.

    The predicate only narrows what ``log`` sends us (``CONTAINS``, wider than ``ENDSWITH``,
    in case the OS adds whitespace after the message); :func:`parse_line` decides."""
    mac_plan.check_tag(tag)  # letters, digits, _ and -: nothing to quote in the predicate
    predicate = f'eventMessage CONTAINS "Sandbox: " AND eventMessage CONTAINS "{tag}"'
    return [log, "stream", "--style", "ndjson", "--predicate", predicate]


def cut_path(path: str) -> str:
    """At most ``MAX_REPORT_PATH`` characters, keeping both ends: the start says where, the end
    what (as the Linux guard's reports do)."""
    if len(path) <= MAX_REPORT_PATH:
        return path
    keep = MAX_REPORT_PATH // 2
    return path[:keep] + "..." + path[-keep:]


def parse_message(message: str, tag: str) -> Violation | None:
    """The violation in one event message, if it is a Seatbelt denial carrying ``tag``."""
    text = message.rstrip()
    if not text.endswith(tag) or not text[: -len(tag)][-1:].isspace():
        return None  # not ours: Seatbelt appends the rule's message last, after a line break
    m = _DENIAL.fullmatch(text[: -len(tag) - 1])  # less the separator
    if m is None:
        return None
    op, target = m["op"], m["target"] or ""
    pid, process = int(m["pid"]), m["comm"]
    repeats = int(m["dup"]) + 1 if m["dup"] else 1
    if op.startswith("network"):
        if target.startswith("/"):  # a unix socket
            return Violation("network", op, cut_path(target), pid, process, repeats=repeats)
        host, _, port = target.rpartition(":")
        return Violation(
            "network", op, "", pid, process, host=host.strip("[]")[:MAX_REPORT_PATH],
            port=int(port) if port.isdigit() else None, repeats=repeats,
        )  # fmt: skip
    kind = "filesystem" if op.startswith("file-") else "other"
    return Violation(kind, op, cut_path(target), pid, process, repeats=repeats)


def parse_line(line: str | bytes, tag: str) -> Violation | None:
    """One line of ``log stream --style ndjson``: a violation of this session, or None for
    anything else (the stream's header, other processes' denials, other sessions', garbage)."""
    if len(line) > MAX_LINE:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    message = event.get("eventMessage")
    return parse_message(message, tag) if isinstance(message, str) else None


def rule_for(violation: Violation, plan: mac_plan.SeatbeltPlan) -> str:
    """Which part of ``plan`` refused: Seatbelt reports only the operation and the path, so
    the rule is found again by matching the path against the plan's own patterns, in the
    profile's order (the last matching rule decides)."""
    if violation.kind == "network":
        if plan.network == "allowlist":
            return f"network allowlist: only the proxy on localhost:{plan.proxy_port}"
        return "network off"
    if violation.kind != "filesystem":
        return "not allowed by the profile"
    path = violation.path
    for p in plan.deny_read:
        if re.match(mac_plan.path_regex(p), path):
            return f"deny_read: {p}"
    if violation.op in _FILE_READ:
        return "not readable"
    for p in plan.protected:
        if re.match(mac_plan.path_regex(p), path):
            return f"protected: {p}"
    for root in plan.writable:
        for name in plan.protected_names:
            if re.match(mac_plan.name_regex(root, name), path):
                return f"protected: {name}"
    return "outside writable roots"  # escalation.OUTSIDE: what Linux calls it


class Collector:
    """Distinct violations, bounded: after ``MAX_REPORTS`` only a marker that there were more."""

    def __init__(self, tag: str) -> None:
        self.tag = mac_plan.check_tag(tag)
        self.violations: list[Violation] = []
        self.more = False
        self._seen: set[tuple[str, str, str, str]] = set()

    def feed(self, line: str | bytes) -> None:
        v = parse_line(line, self.tag)
        if v is None:
            return
        key = (v.kind, v.op, v.path, f"{v.host}:{v.port}")
        if key in self._seen:
            return
        if len(self._seen) >= MAX_REPORTS:
            self.more = True
            return
        self._seen.add(key)
        self.violations.append(v)

    def reports(self, plan: mac_plan.SeatbeltPlan | None = None) -> list[dict[str, Any]]:
        """The Linux-shaped records, each rule named from ``plan`` when given."""
        out = []
        for v in self.violations:
            r = v.to_report()
            if plan is not None:
                r["rule"] = rule_for(v, plan)
            out.append(r)
        return out + ([{"kind": "more"}] if self.more else [])


def read_lines(stream: IO[bytes], limit: int = MAX_LINE) -> Iterable[bytes]:
    """Lines of ``stream``; a line longer than ``limit`` is skipped whole, never buffered."""
    skipping = False
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        complete = chunk.endswith(b"\n")
        if skipping or len(chunk) > limit:
            skipping = not complete
            continue
        yield chunk


class Monitor:
    """``log stream`` for one session, around one command.

    ``start()`` before the command: it waits (at most ``ready_timeout``) for the stream's first
    line, since a stream that has not subscribed yet misses denials. ``stop()`` after the
    command: it keeps reading for ``grace`` seconds, then ends ``log``'s process group
    (SIGTERM, then SIGKILL)
    and returns what was collected. ``log`` is ``/usr/bin/log`` unless a test passes a stand-in.
    """

    def __init__(
        self,
        tag: str,
        *,
        log: str = LOG,
        ready_timeout: float = READY_TIMEOUT,
        grace: float = GRACE,
    ) -> None:
        self.collector = Collector(tag)
        self.argv = log_argv(tag, log)
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> bool:
        """Start ``log``; True once its first line arrived (False: it is running but may
        have missed the first denials). OSError when it cannot be started at all."""
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # our terminal's ^C is the command's business, not log's
            close_fds=True,
        )
        self._thread = threading.Thread(target=self._read, name="ringfence-log", daemon=True)
        self._thread.start()
        return self._ready.wait(self.ready_timeout)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in read_lines(self.proc.stdout):
            self._ready.set()
            self.collector.feed(line)
        self._ready.set()

    def stop(self, plan: mac_plan.SeatbeltPlan | None = None) -> list[dict[str, Any]]:
        """End ``log`` after the grace period; the violations, in the Linux record shape."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                time.sleep(self.grace)
            for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # its own group (start_new_session): all of it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            if self._thread is not None:
                self._thread.join(5.0)
            if proc.stdout is not None:
                proc.stdout.close()
        return self.collector.reports(plan)

    def __enter__(self) -> Monitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
