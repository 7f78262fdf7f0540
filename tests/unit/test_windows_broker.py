"""The broker's protocol and its side of the run, on Linux: frames and their limits, refusal of
other versions, unknown, missing or duplicate fields and bad values, round trips of requests
and replies, and ``serve`` (read, start, reply, wait for EOF, close) over a scripted
``BrokerApi`` failing at every call. Nothing here runs on Windows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows import broker
from ringfence.platforms.windows import broker_wire as wire
from ringfence.platforms.windows.broker_wire import BrokerReply, BrokerRequest, ProcessHandles

CAP = "S-1-15-3-1-2-3-4"
LOGON_SID = "S-1-5-5-0-12345"
PROGRAM = "C:\\Windows\\System32\\cmd.exe"

REQUEST = BrokerRequest(
    argv=(PROGRAM, "/c", "echo hi"),
    cwd="C:\\work",
    env=(("PATH", "C:\\Windows"), ("A", "1")),
    restricting_sids=(CAP,),
    stdio=(8, 12, 12),
)


def body(frame: bytes) -> bytes:
    (size,) = wire.HEADER.unpack(frame[:4])
    assert size == len(frame) - 4
    return frame[4:]


def raw(**fields: object) -> bytes:
    message: dict[str, object] = {
        "version": 1,
        "argv": [PROGRAM],
        "cwd": "C:\\w",
        "env": [],
        "restricting_sids": [CAP],
        "stdio": [4, 8, 8],
    }
    message.update(fields)
    return json.dumps({k: v for k, v in message.items() if v is not None}).encode()


def test_request_round_trip() -> None:
    assert wire.decode_request(body(wire.encode_request(REQUEST))) == REQUEST


_TEXT = st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))


@given(
    st.lists(st.text(_TEXT, max_size=8), max_size=5),
    st.dictionaries(
        st.text(st.characters(blacklist_characters="=\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=5).map(str.upper),
        st.text(_TEXT, max_size=8),
        max_size=5,
    ),
)  # fmt: skip
def test_request_round_trip_property(args: list[str], env: dict[str, str]) -> None:
    request = replace(REQUEST, argv=(PROGRAM, *args), env=tuple(env.items()))
    assert wire.decode_request(body(wire.encode_request(request))) == request


def test_a_lone_surrogate_is_refused_not_crashed_on() -> None:
    request = replace(REQUEST, env=(("X", "\ud800"),))
    with pytest.raises(PolicyError, match="not valid Unicode"):
        wire.encode_request(request)


@pytest.mark.parametrize(
    "reply",
    [
        BrokerReply("started", broker_pid=777, pid=4242, process=0x1A4, thread=0x1A8),
        BrokerReply("error", message="CreateProcessAsUserW failed: [5] Access is denied."),
    ],
)
def test_reply_round_trip(reply: BrokerReply) -> None:
    assert wire.decode_reply(body(wire.encode_reply(reply))) == reply


def test_error_messages_are_cut_and_cleaned() -> None:
    reply = wire.decode_reply(body(wire.encode_reply(BrokerReply("error", message="a\0" * 9000))))
    assert len(reply.message) == wire.MAX_ERROR_MESSAGE and "\0" not in reply.message


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (raw(version=2), "version"),
        (raw(version="1"), "version"),
        (raw(version=True), "version"),
        (raw(version=None), "version"),
        (raw(extra=1), "unknown fields"),
        (raw(stdio=None), "missing fields"),
        (raw(argv="C:\\x.exe"), "argv"),
        (raw(argv=[PROGRAM, 1]), "argv"),
        (raw(argv=[PROGRAM, "a\0b"]), "NUL"),
        (raw(argv=["cmd.exe"]), "absolute"),
        (raw(argv=[]), "refused"),
        (raw(cwd="w"), "absolute"),
        (raw(env={"A": "1"}), "env"),
        (raw(env=[["A", "1", "2"]]), "env entry"),
        (raw(env=[["A", 1]]), "env value"),
        (raw(env=[["A", "1"], ["a", "2"]]), "twice"),
        (raw(env=[["A=B", "1"]]), "environment variable name"),
        (raw(restricting_sids=[]), "restricting SIDs"),
        (raw(restricting_sids=["WD"]), "not a SID"),
        (raw(restricting_sids=[CAP] * (wire.MAX_SIDS + 1)), "at most"),
        (raw(stdio=[4, 8]), "three"),
        (raw(stdio=[0, 8, 8]), "handle"),
        (raw(stdio=[4, 8, -1]), "handle"),
        (raw(stdio=[4, 8, 1 << 40]), "handle"),
        (raw(stdio=[4, 8, True]), "handle"),
        (raw(stdio=[4, 8, 8.0]), "handle"),
        (b'{"version": 1, "version": 1}', "duplicate"),
        (b"[1]", "object"),
        (b'{"version": NaN}', "not allowed"),
        (b"\xff", "JSON"),
        (b"", "JSON"),
    ],
)
def test_request_refusals(data: bytes, match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        wire.decode_request(data)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"status": "started", "broker_pid": 1, "pid": 2, "process": 3}, "missing"),
        ({"status": "started", "broker_pid": 1, "pid": 2, "process": 3, "thread": 0}, "handle"),
        ({"status": "started", "broker_pid": 1, "pid": 2, "process": 3, "thread": 4, "x": 1}, "un"),
        ({"status": "error"}, "missing"),
        ({"status": "done", "message": "x"}, "unknown reply status"),
        ({"status": "error", "message": "x" * (wire.MAX_ERROR_MESSAGE + 1)}, "over the limit"),
        ({"status": "error", "message": 5}, "message"),
    ],
)
def test_reply_refusals(fields: dict[str, object], match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        wire.decode_reply(json.dumps({"version": 1, **fields}).encode())
    with pytest.raises(SandboxError, match="version"):
        wire.decode_reply(json.dumps({"version": 9, **fields}).encode())


def reader(data: bytes, chunk: int = 3) -> tuple[list[int], object]:
    asked: list[int] = []
    view = [data]

    def read(n: int) -> bytes:
        asked.append(n)
        out, view[0] = view[0][: min(n, chunk)], view[0][min(n, chunk) :]
        return out

    return asked, read


def test_frames_are_read_in_pieces_and_checked_before_reading() -> None:
    frame = wire.encode_request(REQUEST)
    _, read = reader(frame + b"rest")
    assert wire.read_frame(read, wire.MAX_REQUEST) == body(frame)  # type: ignore[arg-type]
    asked, read = reader(wire.HEADER.pack(wire.MAX_REQUEST + 1) + b"x" * 10)
    with pytest.raises(SandboxError, match="over"):
        wire.read_frame(read, wire.MAX_REQUEST)  # type: ignore[arg-type]
    assert max(asked) <= wire.HEADER.size  # the body was never asked for
    _, read = reader(frame[:-1])
    with pytest.raises(SandboxError, match="pipe closed"):
        wire.read_frame(read, wire.MAX_REQUEST)  # type: ignore[arg-type]
    with pytest.raises(SandboxError, match="more than was asked"):
        wire.read_frame(lambda n: b"x" * (n + 1), wire.MAX_REQUEST)


def test_encoders_refuse_what_the_other_side_would() -> None:
    with pytest.raises(PolicyError, match="over"):
        wire.encode_request(replace(REQUEST, env=(("BIG", "x" * wire.MAX_REQUEST),)))
    with pytest.raises(PolicyError):
        wire.encode_request(replace(REQUEST, argv=("cmd.exe",)))
    with pytest.raises(SandboxError, match="handle"):
        wire.encode_reply(BrokerReply("started", broker_pid=1, pid=2, process=3, thread=0))


# --- serve --------------------------------------------------------------------------------


class Injected(Exception):
    pass


@dataclass
class Broker:
    """A scripted ``BrokerApi``: stdin holds what the runner sent (then EOF)."""

    stdin: bytes
    fail_at: int | None = None
    fail_also: frozenset[str] = frozenset()
    calls: list[str] = field(default_factory=list)
    table: dict[int, str] = field(default_factory=dict)
    stdout: bytes = b""
    command: str | None = None  # None | suspended | killed
    next_handle: int = 200

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if len(self.calls) - 1 == self.fail_at or name in self.fail_also:
            raise Injected(name)

    def _new(self, kind: str) -> int:
        self.next_handle += 4
        self.table[self.next_handle] = kind
        return self.next_handle

    def own_pid(self) -> int:
        return 777

    def read_stdin(self, n: int) -> bytes:
        self._step("read_stdin")
        out, self.stdin = self.stdin[:n], self.stdin[n:]
        return out

    def write_stdout(self, data: bytes) -> None:
        self._step("write_stdout")
        self.stdout += data

    def open_own_token(self) -> int:
        self._step("open_own_token")
        return self._new("token")

    def logon_sid(self, token: int) -> str:
        self._step("logon_sid")
        return LOGON_SID

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        self._step("restrict_token")
        assert list(restricting_sids) == [CAP, LOGON_SID]
        return self._new("restricted")

    def create_process(
        self,
        token: int,
        *,
        application: str,
        command_line: str,
        cwd: str,
        environment: bytes,
        stdio: tuple[int, int, int],
    ) -> ProcessHandles:
        self._step("create_process")
        assert self.table[token] == "restricted" and application == PROGRAM
        self.command = "suspended"
        return ProcessHandles(self._new("process"), self._new("thread"), 4242)

    def terminate_process(self, process: int, exit_code: int) -> None:
        self._step("terminate_process")
        self.command = "killed"

    def close(self, handle: int) -> None:
        self._step("close")
        del self.table[handle]


def given_stdio(b: Broker) -> BrokerRequest:
    """The runner duplicated two handles into the broker before sending the request."""
    stdin, out = b._new("stdio"), b._new("stdio")
    return replace(REQUEST, stdio=(stdin, out, out))


def test_serve_starts_replies_and_exits_on_eof() -> None:
    b = Broker(b"")
    b.stdin = wire.encode_request(given_stdio(b))
    assert broker.serve(b) == 0
    reply = wire.decode_reply(body(b.stdout))
    assert reply.status == "started" and reply.broker_pid == 777 and reply.pid == 4242
    assert b.command == "suspended"  # the broker never resumes it; the runner does
    assert "resume" not in " ".join(b.calls)
    assert b.table == {}  # tokens, stdio and finally its command handles: all closed
    assert b.calls.index("write_stdout") < len(b.calls) - 3  # then EOF, then the two closes


@pytest.mark.parametrize(
    "stdin", [b"", b"\x00\x00", wire.HEADER.pack(10) + b"{}", wire.HEADER.pack(1 << 30)]
)
def test_serve_refuses_a_bad_request(stdin: bytes) -> None:
    b = Broker(stdin)
    assert broker.serve(b) == 1
    assert wire.decode_reply(body(b.stdout)).status == "error"
    assert b.command is None


def clean_calls() -> list[str]:
    b = Broker(b"")
    b.stdin = wire.encode_request(given_stdio(b))
    broker.serve(b)
    return b.calls


@pytest.mark.parametrize("fail_at", range(len(clean_calls())))
def test_serve_failure_at_every_call(fail_at: int) -> None:
    b = Broker(b"", fail_at=fail_at)
    b.stdin = wire.encode_request(given_stdio(b))
    failing = clean_calls()[fail_at]
    code = broker.serve(b)
    handed_over = failing == "close" and fail_at >= len(clean_calls()) - 2
    if handed_over:  # closing its own copies after EOF: the runner has the command already
        assert code == 0 and b.command == "suspended"
        return
    assert code == 1
    assert b.command in (None, "killed"), f"a command left behind after {failing}"
    written = fail_at > clean_calls().index("write_stdout")
    if written:  # "started" went out, but the runner sees the broker exit with 1 and refuses
        assert wire.decode_reply(body(b.stdout)).status == "started"
        assert b.command == "killed"
    elif failing != "write_stdout":
        reply = wire.decode_reply(body(b.stdout))
        assert reply.status == "error" and failing in reply.message
    if failing != "close":
        assert set(b.table.values()) <= {"stdio"} or b.table == {}


def test_broker_main_refuses_off_windows(capsys: pytest.CaptureFixture[str]) -> None:
    assert broker.main() == 2
    assert "only on Windows" in capsys.readouterr().err
