"""The state behind ``ringfence mcp``'s tools: the session (and the ones a grant retired), the
started processes and their output, and the widenings an agent may ask for.

Kept apart from the SDK (mcp_server.py builds the tools on top): nothing here imports
``mcp``, so it is tested without a client.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfence import ansi, escalation
from ringfence.approval.decide import Decision
from ringfence.display import printable
from ringfence.engine import backends, resolve
from ringfence.engine.approval import ApprovalGate
from ringfence.errors import RingfenceError
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.model import Policy
from ringfence.policy.semantics import is_under
from ringfence.session import Process, Session

MODEL_OUTPUT_CAP = 32 * 1024  # characters of each stream a model gets back from one call
BUFFER_CAP = 1 << 20  # bytes kept per stream of a started process between reads
REASON_SHOWN = 300  # characters of the agent's reason the person is shown


class ArgumentError(RingfenceError):
    """A tool argument the model got wrong; the front end says so as a tool error."""


def cap(text: str, limit: int = MODEL_OUTPUT_CAP) -> str:
    """Head and tail of ``text`` with a marker of what was cut (models read both ends)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut by ringfence ...]\n{text[-half:]}"


def argv_of(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise ArgumentError("command is empty")
        return ["/bin/sh", "-c", command]
    if not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise ArgumentError("command must be a non-empty string or a non-empty list of strings")
    return list(command)


def shown(data: bytes | str, raw: bool) -> str:
    """A finished command's output as the model gets it: escape sequences stripped unless
    ``raw``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if raw else ansi.strip(text)


@dataclass
class _Stream:
    """One stream of a started process: bytes not yet read, and the decoding state that
    carries a character or an escape sequence split across two reads."""

    buf: bytearray = field(default_factory=bytearray)
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    cleaner: ansi.Cleaner = field(default_factory=ansi.Cleaner)

    def take(self, *, raw: bool, final: bool) -> str:
        text: str = self.decoder.decode(bytes(self.buf), final)
        self.buf.clear()
        if raw:
            return self.cleaner.take_held() + text
        return self.cleaner.feed(text, final=final)


@dataclass
class Live:
    """A started process, the session it runs in, and what it printed since the last read."""

    proc: Process
    argv: list[str]
    pty: bool
    session: Session
    out: _Stream = field(default_factory=_Stream)
    err: _Stream = field(default_factory=_Stream)
    dropped: int = 0
    last_output: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition = field(init=False)
    readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)

    def start_readers(self) -> None:
        streams = [(self.proc.stdout, self.out)]
        if not self.pty:
            streams.append((self.proc.stderr, self.err))
        for stream, buf in streams:
            t = threading.Thread(target=self._pump, args=(stream, buf), daemon=True)
            t.start()
            self.readers.append(t)

    def _pump(self, stream: Any, into: _Stream) -> None:
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""  # a pty's master reads EIO once the command is gone
            with self.cond:
                if chunk:
                    buf = into.buf
                    buf += chunk
                    if len(buf) > BUFFER_CAP:
                        self.dropped += len(buf) - BUFFER_CAP
                        del buf[: len(buf) - BUFFER_CAP]
                    self.last_output = time.monotonic()
                self.cond.notify_all()
            if not chunk:
                return

    def finished(self) -> bool:
        return self.proc.poll() is not None and not any(t.is_alive() for t in self.readers)

    def settle(self, wait_s: float, quiet_s: float) -> None:
        """Wait up to ``wait_s`` for the output to settle: the process ends, or it printed
        something and then nothing for ``quiet_s``. Echoed input alone is not an answer."""
        deadline = time.monotonic() + wait_s
        with self.cond:
            while not self.finished():
                now = time.monotonic()
                pending = bool(self.out.buf or self.err.buf)
                if now >= deadline or (pending and now - self.last_output >= quiet_s):
                    return
                left = deadline - now
                if pending:
                    left = min(left, quiet_s - (now - self.last_output))
                self.cond.wait(min(max(left, 0.0), 0.1))  # the process may end unseen

    def take(self, *, raw: bool) -> tuple[str, str, int]:
        final = self.finished()
        with self.lock:
            out = self.out.take(raw=raw, final=final)
            err = self.err.take(raw=raw, final=final)
            dropped, self.dropped = self.dropped, 0
        return out, err, dropped


@dataclass(frozen=True)
class Proposal:
    """A widening an agent asked for, checked: what it adds and the policy it makes."""

    kind: str
    value: str
    widenings: tuple[dict[str, Any], ...]
    policy: Policy

    def words(self) -> str:
        """What it allows, for the person (paths and names shown escaped)."""
        said = []
        for w in self.widenings:
            if w["kind"] == "writable_root":
                said.append(f"make the directory {printable(w['path'])} writable")
                said.extend(_imports_inside(w["path"]))
            elif w["kind"] == "allow_domain":
                said.append(
                    f"let commands connect to {printable(w['entry'])}"
                    + ("" if ":" in w["entry"] else " (ports 80 and 443)")
                    + " through ringfence's filtering proxy"
                )
            elif w["network"] == "on":
                said.append("turn the network ON: commands may connect to any host on any port")
            else:
                said.append("with the network otherwise still off (only this name gets through)")
        return "; ".join(said)

    def question(self, reason: str) -> str:
        text = reason.strip()
        if len(text) > REASON_SHOWN:
            text = text[:REASON_SHOWN] + "..."
        return (
            "The AI agent asks to widen its sandbox for the rest of this session: "
            f"{self.words()}.\n"
            f"Its reason, in its own words (not checked): {printable(text) or '(none)'}\n"
            "Allow this?"
        )


def _imports_inside(path: str) -> list[str]:
    """A warning for the person when ``path`` holds where this server imports Python from:
    a command could then change code that runs outside the sandbox (importpaths.py)."""
    from ringfence import importpaths

    found = importpaths.writable_imports([path])
    if not found:
        return []
    return [
        f"WARNING: it holds {printable(found[0])}, Python code this ringfence server runs "
        "outside the sandbox, with your rights: a command could change it"
    ]


def propose(
    plan: LinuxPlan, policy: Policy, kind: str, value: str, *, approval: str | None, audit: bool
) -> Proposal | None:
    """The checked widening (None: allowed already), or the RingfenceError saying why it may
    not even be asked for: the escalation rules (escalation.requested_widenings), then the
    managed ceiling, which bounds what a person can grant as it bounds every flag."""
    widenings = escalation.requested_widenings(plan, policy, kind, value)
    if not widenings:
        return None
    widened = escalation.widen(policy, widenings)
    widened, _, _ = resolve.apply_ceiling(widened, approval, audit=audit)
    return Proposal(kind, value.strip(), widenings, widened)


_REQUESTABLE = {"writable_root": ("writable_path", "path"), "allow_domain": ("domain", "entry")}


def to_allow(widenings: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What would have allowed a refusal, as the model can use it: ``kind`` and ``value`` to
    pass to request_widening, or (for a widening only the user can give) the ``flag`` to
    restart the server with."""
    out = []
    for w in widenings:
        entry: dict[str, Any] = {"flag": printable(str(w.get("flag", "")))}
        if w.get("because"):
            entry["because"] = printable(str(w["because"]))
        known = _REQUESTABLE.get(str(w.get("kind")))
        if known is not None and known[1] in w:
            entry = {"kind": known[0], "value": printable(str(w[known[1]])), **entry}
        elif w.get("kind") == "network" and w.get("network") == "on":
            entry = {"kind": "network", "value": "on", **entry}
        out.append(entry)
    return out


RUN_AT_ONCE = min(32, (os.cpu_count() or 1) + 4)


class SandboxTools:
    """The state behind the tools: the session, the policy, the live processes, the grants."""

    def __init__(
        self,
        policy: Policy,
        plan: LinuxPlan,
        *,
        gate: ApprovalGate | None = None,
        approval: str | None = None,
        max_processes: int = 8,
        audit: bool = True,
    ) -> None:
        self.policy = policy
        self.plan = plan
        self.approval = approval
        # The person is asked through the client (elicitation) before the session's gate
        # runs; the gate then reads the answer this thread got.
        self.gate = dataclasses.replace(gate, approver=self._approver) if gate else None
        self.max_processes = max_processes
        # run_command calls that run at once (the rest wait their turn): as many as the
        # worker-thread pool they used to run in allowed, each being a sandboxed process tree.
        self.run_slots = asyncio.Semaphore(RUN_AT_ONCE)
        self.audit = audit
        self.answers: dict[int, bool | None] = {}
        self.session = self._session(plan)
        self.retired: list[Session] = []  # sessions a grant replaced, kept for their processes
        self.live: dict[str, Live] = {}
        self.asked: dict[tuple[str, str, str], str] = {}  # (kind, value, reason) -> question
        self.server_id = os.urandom(4).hex()
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        self.granting = threading.Lock()  # held from a grant's last check to its new session
        self._users: Counter[int] = Counter()

    def _session(self, plan: LinuxPlan) -> Session:
        return Session(_plan=plan, _gate=self.gate, audit=self.audit).start()

    def _approver(self, decision: Decision) -> bool | None:
        """The answer the tool already got from the person (elicitation), per thread."""
        return self.answers.get(threading.get_ident())

    def next_id(self) -> str:
        return str(next(self._ids))

    @contextlib.contextmanager
    def using(self) -> Iterator[Session]:
        """The current session, kept open (a grant may retire it meanwhile) until the block
        ends."""
        session = self._use(+1)
        try:
            yield session
        finally:
            self._use(-1, session)
            self.reap()

    @contextlib.asynccontextmanager
    async def using_here(self) -> AsyncIterator[Session]:
        """:meth:`using` for a coroutine: closing a retired session waits for its runner,
        so that is done in a worker thread, never on the event loop."""
        session = self._use(+1)
        try:
            yield session
        finally:
            self._use(-1, session)
            if self.retired:
                await asyncio.to_thread(self.reap)

    def _use(self, step: int, session: Session | None = None) -> Session:
        with self._lock:
            session = session if session is not None else self.session
            self._users[id(session)] += step
            return session

    def reap(self) -> None:
        """Close the retired sessions nothing runs in any more."""
        with self._lock:
            idle = [
                s
                for s in self.retired
                if not self._users[id(s)]
                and not any(v.session is s and v.proc.poll() is None for v in self.live.values())
            ]
            self.retired = [s for s in self.retired if s not in idle]
        for s in idle:
            with contextlib.suppress(RingfenceError):
                s.close()

    def close(self) -> None:
        for live in self.live.values():
            with contextlib.suppress(RingfenceError):
                live.proc.kill()
        for s in (*self.retired, self.session):
            s.close()

    def workspace_cwd(self, cwd: str | None) -> str:
        base = self.policy.workspace or self.plan.cwd
        if cwd is None:
            return self.plan.cwd
        path = os.path.realpath(os.path.join(base, cwd))
        if not is_under(path, base):
            raise ArgumentError(f"cwd must be inside the workspace {base}")
        if not os.path.isdir(path):
            raise ArgumentError(f"cwd {path} is not a directory")
        return path

    def decision(self, argv: list[str]) -> Decision | None:
        """What the gate says of ``argv`` as run_command runs it (the plan's environment)."""
        if self.gate is None:
            return None
        from ringfence.engine.approval import where_of

        return self.gate.decide(argv, where_of(self.plan))

    def describe(self) -> str:
        """The boundary as the model should know it, rendered from the compiled plan (what
        the kernel is told), not written by hand."""
        return describe_plan(self.plan, self.policy.workspace, self.gate)

    # -- widenings ----------------------------------------------------------------------------
    def propose(self, kind: str, value: str) -> Proposal | None:
        return propose(
            self.plan, self.policy, kind, value, approval=self.approval, audit=self.audit
        )

    def grant(self, proposal: Proposal) -> None:
        """Commands from now on run under ``proposal``'s policy, in a new session; the old
        one lives on while a process started in it runs."""
        plan = backends.linux_plan(proposal.policy, self.plan.cwd)
        session = self._session(plan)
        with self._lock:
            old, self.session = self.session, session
            self.policy, self.plan = proposal.policy, plan
            self.retired.append(old)
        self.reap()

    def record(self, kind: str, value: str, reason: str, decision: str, detail: str = "") -> None:
        """One audit record for a widening asked for, whatever became of it."""
        log = self.session.audit
        if log is None:
            return
        from ringfence.audit import widening_record

        log.write(
            widening_record(
                server=self.server_id,
                kind=kind,
                value=value,
                reason=reason,
                decision=decision,
                detail=detail,
            )
        )


def describe_plan(plan: LinuxPlan, workspace: str, gate: ApprovalGate | None) -> str:
    others = [r for r in plan.guard_roots if r != workspace]
    hidden = sorted({entry for _, entry in plan.hidden})
    lines = [
        f"Commands run inside a ringfence sandbox ({plan.mode}).",
        f"Workspace (writable): {workspace}",
        "Other writable directories: " + (", ".join(others) if others else "none")
        + "; /tmp is private to this workspace's sandboxes.",
        "Everything else is read-only."
        + (f" Hidden (unreadable): {', '.join(hidden)}." if hidden else ""),
    ]  # fmt: skip
    protected = [*plan.guard_paths, *(n for n in plan.guard_names if n not in plan.guard_paths)]
    if protected:
        lines.append(
            "Protected even inside writable directories (writes refused): "
            + ", ".join(protected)
            + "."
        )
    if plan.guard_git != "off":
        lines.append(
            "In git directories only git's own data is writable (config only with harmless "
            "keys; hooks never)."
        )
    if plan.network == "off":
        lines.append("Network: off (no connections at all, loopback inside only).")
    elif plan.network == "allowlist":
        allowed = ", ".join(plan.allow_domains) or "nothing"
        lines.append(f"Network: only through a proxy, to: {allowed}.")
    else:
        lines.append("Network: on.")
    if gate is not None:
        lines.append(
            f"Approval policy: {gate.policy} (commands that need a person are asked about or "
            "refused)."
        )
    lines.append(
        "A refused write or connection is reported with what would allow it (`to_allow`). "
        "To get one, call request_widening with its kind and value and say why: the person "
        "is asked, and a granted widening holds for the commands after it."
    )
    return "\n".join(lines)
