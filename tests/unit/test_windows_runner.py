"""The Windows runner's pure parts on Linux: the orchestration over a simulated machine (the
runner's side and the broker's, ``broker.respond`` run in-process) that fails at every call of
either side (job before the broker, the broker suspended until jobbed, the command suspended
until the broker has exited and the command is checked to be in the job, no live process and
no open handle after any failure, the timeout ends the whole job), how the broker is launched,
the command-line quoting against a reimplementation of CommandLineToArgvW, and the environment
block. Nothing here runs on Windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import broker, broker_native, broker_wire, kernel, run, run_native
from ringfence.platforms.windows.broker_launch import broker_launch
from ringfence.platforms.windows.broker_wire import ProcessHandles
from ringfence.platforms.windows.cmdline import command_line, environment_block
from ringfence.platforms.windows.run import RunSpec, StdioMode

CAP = "S-1-15-3-1-2-3-4"
LOGON_SID = "S-1-5-5-0-12345"
PROGRAM = "C:\\Windows\\System32\\cmd.exe"


class Injected(Exception):
    """The simulated Windows call failed."""


BROKER_PID = 777
COMMAND_PID = 4242


@dataclass
class Proc:
    state: str = "suspended"  # suspended | running | ended | killed
    job: int | None = None
    resumed_in_job: bool | None = None
    broker_alive_at_resume: bool | None = None


@dataclass
class Machine:
    """A simulated Windows for the runner *and* the broker: two handle tables (the runner's,
    the broker's), the broker and the command as processes, jobs, and a failure at call number
    ``fail_at`` (counted over every call of both sides, so each step gets its turn). The
    broker's side is ``broker.respond`` itself, run in-process when the runner writes the
    request frame, against ``BrokerSide``."""

    fail_at: int | None = None
    hang: bool = False  # the command never ends by itself
    code: int = 0
    output: tuple[bytes, bytes] = (b"out", b"err")
    fail_also: frozenset[str] = frozenset()  # steps that always fail (cleanup failures)
    breakaway: bool = False  # the command does not land in the broker's job
    reply_pid: int = BROKER_PID  # what the broker says its pid is
    broker_code: int = 0
    broker_exits: bool = True  # the broker exits when its stdin closes
    calls: list[str] = field(default_factory=list)
    open: dict[int, str] = field(default_factory=dict)
    broker_table: dict[int, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    jobs: dict[int, bool] = field(default_factory=dict)  # job -> limited (kill on close)
    seen: dict[str, object] = field(default_factory=dict)
    replies: bytes = b""
    next_handle: int = 100

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if len(self.calls) - 1 == self.fail_at or name in self.fail_also:
            raise Injected(name)

    def _new(self, kind: str, table: dict[int, str] | None = None) -> int:
        self.next_handle += 4
        (self.open if table is None else table)[self.next_handle] = kind
        return self.next_handle

    def _kind(self, handle: int, *kinds: str) -> str:
        kind = self.open.get(handle, "")
        assert kind in kinds, (handle, kinds, self.open)
        return kind

    def _proc(self, handle: int) -> Proc:
        return self.procs[self._kind(handle, "broker-process", "command-process").split("-")[0]]

    def _end(self, proc: Proc, state: str) -> None:
        if proc.state in ("suspended", "running"):
            proc.state = state
            if proc is self.procs.get("broker"):
                self.broker_table.clear()  # a process's handles go with it

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.state in ("suspended", "running")]

    # RunnerApi

    def load_secret(self, user: str) -> str:
        self._step("load_secret")
        return "pw-" + user

    def create_job(self) -> int:
        self._step("create_job")
        job = self._new("job")
        self.jobs[job] = False
        return job

    def limit_job(self, job: int) -> None:
        self._step("limit_job")
        self._kind(job, "job")
        self.jobs[job] = True

    def inherit_std(self, which: int) -> int:
        self._step("inherit_std")
        return self._new(f"std{which}")

    def open_null(self) -> int:
        self._step("open_null")
        return self._new("null")

    def create_pipe(self) -> tuple[int, int]:
        self._step("create_pipe")
        return self._new("pipe-read"), self._new("pipe-write")

    def start_broker(self, user: str, password: str) -> run.BrokerProcess:
        self._step("start_broker")
        assert password == "pw-" + user
        assert any(self.jobs.values()), "a limited job exists before the broker"
        self.procs["broker"] = Proc()
        return run.BrokerProcess(
            self._new("broker-process"),
            self._new("broker-thread"),
            BROKER_PID,
            self._new("broker-stdin"),
            self._new("broker-stdout"),
        )

    def assign_to_job(self, job: int, process: int) -> None:
        self._step("assign_to_job")
        self._kind(job, "job")
        self._proc(process).job = job

    def send_handle(self, process: int, handle: int) -> int:
        self._step("send_handle")
        assert self._proc(process).state in ("suspended", "running")
        return self._new("stdio:" + self.open[handle], self.broker_table)

    def resume_thread(self, thread: int) -> None:
        self._step("resume_thread")
        proc = self.procs[self._kind(thread, "broker-thread", "command-thread").split("-")[0]]
        proc.resumed_in_job = proc.job is not None and self.jobs[proc.job]
        if proc is self.procs.get("command"):
            proc.broker_alive_at_resume = self.procs["broker"] in self.live()
        proc.state = "running"

    def write(self, handle: int, data: bytes) -> None:
        self._step("write")
        self._kind(handle, "broker-stdin")
        assert self.procs["broker"].state == "running"
        (size,) = broker_wire.HEADER.unpack(data[:4])
        assert size == len(data) - 4
        reply, _ = broker.respond(data[4:], BrokerSide(self))
        self.seen["broker_table_after"] = sorted(self.broker_table.values())
        self.replies += reply

    def read(self, handle: int, n: int) -> bytes:
        self._step("read")
        self._kind(handle, "broker-stdout")
        out, self.replies = self.replies[:n], self.replies[n:]
        return out

    def take_handle(self, process: int, remote: int) -> int:
        self._step("take_handle")
        self._kind(process, "broker-process")
        return self._new(self.broker_table[remote])

    def process_in_job(self, job: int, process: int) -> bool:
        self._step("process_in_job")
        self._kind(job, "job")
        return self._proc(process).job == job

    def wait(self, process: int, timeout: float | None) -> bool:
        self._step("wait")
        proc = self._proc(process)
        if proc is self.procs.get("command") and proc.state == "running" and not self.hang:
            proc.state = "ended"
        return proc.state in ("ended", "killed")

    def exit_code(self, process: int) -> int:
        self._step("exit_code")
        return self.broker_code if self._proc(process) is self.procs["broker"] else self.code

    def terminate_job(self, job: int, exit_code: int) -> None:
        self._step("terminate_job")
        self._kind(job, "job")
        self.seen["job_exit"] = exit_code
        for proc in list(self.procs.values()):
            if proc.job == job:
                self._end(proc, "killed")

    def terminate_process(self, process: int, exit_code: int) -> None:
        self._step("terminate_process")
        self._end(self._proc(process), "killed")

    def read_all(self, handle: int) -> bytes:
        self._step("read_all")
        self._kind(handle, "pipe-read")
        return self.output[
            sorted(h for h, k in self.open.items() if k == "pipe-read").index(handle)
        ]

    def close(self, handle: int) -> None:
        self._step("close")
        kind = self.open.pop(handle)  # KeyError: a double close or a foreign handle
        if kind == "job" and self.jobs[handle]:  # kill-on-close
            for proc in list(self.procs.values()):
                if proc.job == handle:
                    self._end(proc, "killed")
        if kind == "broker-stdin" and self.broker_exits:
            broker = self.procs["broker"]
            if broker.state == "running":  # EOF: it closes its handles and exits
                self._end(broker, "ended")


@dataclass
class BrokerSide:
    """The simulated ``BrokerApi``: the broker's handle table of the same machine."""

    m: Machine

    def own_pid(self) -> int:
        return self.m.reply_pid

    def read_stdin(self, n: int) -> bytes:
        raise AssertionError("respond() does not read")

    def write_stdout(self, data: bytes) -> None:
        raise AssertionError("respond() does not write")

    def open_own_token(self) -> int:
        self.m._step("broker.open_own_token")
        return self.m._new("token", self.m.broker_table)

    def logon_sid(self, token: int) -> str:
        self.m._step("broker.logon_sid")
        assert self.m.broker_table[token] == "token"
        return LOGON_SID

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        self.m._step("broker.restrict_token")
        assert self.m.broker_table[token] == "token"
        self.m.seen["sids"] = list(restricting_sids)
        return self.m._new("restricted", self.m.broker_table)

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
        self.m._step("broker.create_process")
        table = self.m.broker_table
        assert table[token] == "restricted"
        assert all(table[h].startswith("stdio:") for h in stdio)
        self.m.seen.update(
            app=application,
            cmd=command_line,
            cwd=cwd,
            env=environment,
            io=tuple(table[h] for h in stdio),
        )
        broker = self.m.procs["broker"]
        self.m.procs["command"] = Proc(job=None if self.m.breakaway else broker.job)
        return ProcessHandles(
            self.m._new("command-process", table),
            self.m._new("command-thread", table),
            COMMAND_PID,
        )

    def terminate_process(self, process: int, exit_code: int) -> None:
        self.m._step("broker.terminate_process")
        assert self.m.broker_table[process] == "command-process"
        self.m._end(self.m.procs["command"], "killed")

    def close(self, handle: int) -> None:
        self.m._step("broker.close")
        del self.m.broker_table[handle]


def spec(**changes: object) -> RunSpec:
    base = RunSpec(
        user="ringfence-offline",
        restricting_sids=(CAP,),
        argv=(PROGRAM, "/c", "echo hi"),
        cwd="C:\\work",
        env={"PATH": "C:\\Windows", "b": "2", "A": "1"},
        timeout=5.0,
        stdio="capture",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


MODES: tuple[StdioMode, ...] = ("inherit", "null", "capture")
EXPECTED_IO = {
    "inherit": ("stdio:std0", "stdio:std1", "stdio:std2"),
    "null": ("stdio:null", "stdio:null", "stdio:null"),
    "capture": ("stdio:null", "stdio:pipe-write", "stdio:pipe-write"),
}


def steps_of_a_clean_run(mode: StdioMode, hang: bool = False) -> list[str]:
    m = Machine(hang=hang)
    run.run(spec(stdio=mode), m)
    return m.calls


def assert_order(calls: list[str], *names: str) -> None:
    positions = [calls.index(name) for name in names]
    assert positions == sorted(positions), list(zip(names, positions, strict=True))


@pytest.mark.parametrize("mode", MODES)
def test_clean_run_order_and_cleanup(mode: StdioMode) -> None:
    m = Machine(code=3)
    result = run.run(spec(stdio=mode), m)
    assert result.exit_code == 3 and not result.timed_out
    assert result.stdout == (b"out" if mode == "capture" else b"")
    assert result.stderr == (b"err" if mode == "capture" else b"")
    c = m.calls
    # job (limited) before the broker; the broker jobbed before it runs; the request after;
    # the broker's steps; the handles taken; the command checked, then resumed; then the end
    assert_order(c, "create_job", "limit_job", "start_broker", "assign_to_job", "send_handle")
    assert_order(c, "send_handle", "resume_thread", "write", "broker.open_own_token")
    assert_order(c, "broker.logon_sid", "broker.restrict_token", "broker.create_process")
    assert_order(c, "broker.create_process", "read", "take_handle", "process_in_job")
    assert c.count("resume_thread") == 2
    second_resume = len(c) - 1 - c[::-1].index("resume_thread")
    assert c.index("process_in_job") < second_resume < c.index("terminate_job")
    broker, command = m.procs["broker"], m.procs["command"]
    assert broker.resumed_in_job is True and broker.state == "ended"
    assert command.resumed_in_job is True and command.broker_alive_at_resume is False
    assert m.open == {} and m.live() == [] and m.broker_table == {}
    assert m.seen["sids"] == [CAP, LOGON_SID]
    assert m.seen["app"] == PROGRAM and m.seen["cmd"] == f'{PROGRAM} /c "echo hi"'
    assert m.seen["cwd"] == "C:\\work"
    assert m.seen["env"] == environment_block(spec().env)
    assert m.seen["io"] == EXPECTED_IO[mode]
    # once the command exists, the broker holds only its process and thread handles
    assert m.seen["broker_table_after"] == ["command-process", "command-thread"]


def test_child_ends_closed_before_the_broker_runs() -> None:
    """The runner's copies of the command's stdio go before the broker is resumed (the broker
    has its own by then), or EOF on the pipes never comes."""
    m = Machine()
    run.run(spec(stdio="capture"), m)
    c = m.calls
    closes = [i for i, name in enumerate(c) if name == "close"]
    first_resume = c.index("resume_thread")
    # the null handle and both pipe write ends: three closes between the sends and the resume
    assert sum(c.index("send_handle") < i < first_resume for i in closes) == 3


@pytest.mark.parametrize("mode", MODES)
def test_timeout_terminates_the_job(mode: StdioMode) -> None:
    m = Machine(hang=True)
    result = run.run(spec(stdio=mode, timeout=0.5), m)
    assert result.timed_out and result.exit_code == run.TIMEOUT_EXIT_CODE
    assert m.seen["job_exit"] == run.TIMEOUT_EXIT_CODE
    assert m.live() == [] and m.open == {}
    assert m.calls.count("exit_code") == 1  # the broker's only


CASES = [
    (mode, hang, i)
    for mode in MODES
    for hang in (False, True)
    for i in range(len(steps_of_a_clean_run(mode, hang)))
]


@pytest.mark.parametrize(("mode", "hang", "fail_at"), CASES)
def test_a_failure_at_every_call_leaves_nothing_behind(
    mode: StdioMode, hang: bool, fail_at: int
) -> None:
    m = Machine(fail_at=fail_at, hang=hang)
    failing = steps_of_a_clean_run(mode, hang)[fail_at]
    with pytest.raises(Exception) as info:
        run.run(spec(stdio=mode), m)
    if failing.startswith("broker."):  # reported by the broker's error reply
        assert isinstance(info.value, SandboxError) and failing in str(info.value)
    else:
        assert isinstance(info.value, Injected) or isinstance(info.value.__cause__, Injected)
    assert m.live() == [], f"a process outlived a failure at {failing}"
    for proc in m.procs.values():  # never ran outside its job
        assert proc.resumed_in_job in (None, True)
    assert m.procs.get("command", Proc()).broker_alive_at_resume in (None, False)
    assert m.broker_table == {}
    if failing == "close":
        assert len(m.open) == 1  # only the handle whose CloseHandle failed
    else:
        assert m.open == {}, f"handles left open after a failure at {failing}"


def test_terminate_failing_too_still_closes_everything() -> None:
    """Assigning the broker fails, then TerminateProcess fails as well: the broker never ran
    (it is still suspended, outside any job) and every handle is closed anyway."""
    m = Machine(fail_also=frozenset({"assign_to_job", "terminate_process"}))
    with pytest.raises(Injected):
        run.run(spec(), m)
    assert m.procs["broker"].state == "suspended" and m.procs["broker"].resumed_in_job is None
    assert "command" not in m.procs
    assert m.open == {}


def test_killed_by_job_close_when_terminating_fails() -> None:
    m = Machine(fail_also=frozenset({"process_in_job", "terminate_job", "terminate_process"}))
    with pytest.raises(Injected):
        run.run(spec(), m)
    assert m.live() == [] and m.open == {}
    assert m.procs["command"].resumed_in_job is None


def test_a_command_outside_the_job_is_never_resumed() -> None:
    m = Machine(breakaway=True)
    with pytest.raises(SandboxError, match="not in the runner's job"):
        run.run(spec(), m)
    assert m.procs["command"].state == "killed" and m.procs["command"].resumed_in_job is None
    assert m.live() == [] and m.open == {}


def test_a_reply_from_another_process_is_refused() -> None:
    """A launcher between the runner and the interpreter: the handle values are not the
    broker's, so nothing is taken from it."""
    m = Machine(reply_pid=BROKER_PID + 1)
    with pytest.raises(SandboxError, match="not the broker"):
        run.run(spec(), m)
    assert "take_handle" not in m.calls
    assert m.live() == [] and m.open == {}


def test_a_broker_that_does_not_exit_or_fails_stops_the_run() -> None:
    m = Machine(broker_exits=False)
    with pytest.raises(SandboxError, match="did not exit"):
        run.run(spec(), m)
    assert m.procs["command"].resumed_in_job is None and m.live() == [] and m.open == {}
    m = Machine(broker_code=1)
    with pytest.raises(SandboxError, match="exited with 1"):
        run.run(spec(), m)
    assert m.procs["command"].resumed_in_job is None and m.live() == [] and m.open == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"argv": ()},
        {"argv": ("cmd.exe",)},  # not absolute
        {"argv": (PROGRAM, "a\0b")},
        {"cwd": "work"},
        {"restricting_sids": ()},
        {"restricting_sids": ("S-1-x",)},
        {"user": "..\\admin"},
        {"env": {"A=B": "1"}},
        {"env": {"Path": "1", "PATH": "2"}},
        {"env": {"BIG": "x" * broker_wire.MAX_REQUEST}},  # over the request limit
        {"timeout": 0.0},
    ],
)
def test_bad_specs_touch_nothing(changes: dict[str, object]) -> None:
    m = Machine()
    with pytest.raises(PolicyError):
        run.run(spec(**changes), m)
    assert m.calls == []


def test_pty_is_refused_until_implemented() -> None:
    m = Machine()
    with pytest.raises(UnsupportedError, match="ConPTY"):
        run.run(spec(pty_size=(80, 24)), m)
    assert m.calls == []


def test_win32_apis_off_windows() -> None:
    with pytest.raises(UnsupportedError, match="needs Windows"):
        run_native.Win32RunnerApi()
    with pytest.raises(UnsupportedError, match="needs Windows"):
        broker_native.Win32BrokerApi()


def test_pure_flags() -> None:
    flags = kernel.flags_for_process()
    assert flags & kernel.CREATE_SUSPENDED and flags & kernel.CREATE_UNICODE_ENVIRONMENT
    assert flags & kernel.CREATE_NEW_PROCESS_GROUP and flags & kernel.EXTENDED_STARTUPINFO_PRESENT
    assert flags & kernel.CREATE_NO_WINDOW
    broker_flags = kernel.flags_for_broker()
    assert (
        broker_flags & kernel.CREATE_SUSPENDED and broker_flags & kernel.CREATE_UNICODE_ENVIRONMENT
    )
    # only flags CreateProcessWithLogonW documents (no handle list, no breakaway)
    assert not broker_flags & (kernel.EXTENDED_STARTUPINFO_PRESENT | 0x01000000)
    limits = kernel.job_limit_flags()
    assert limits & kernel.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert limits & kernel.JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION
    assert not limits & (0x800 | 0x1000)  # BREAKAWAY_OK, SILENT_BREAKAWAY_OK
    assert kernel.timeout_ms(None) == kernel.INFINITE
    assert kernel.timeout_ms(1.5) == 1500
    assert kernel.timeout_ms(1e12) == kernel.INFINITE - 1


# --- how the broker is started ---------------------------------------------------------------

PY = "C:\\Program Files\\Python312\\python.exe"
ROOT = "C:\\Program Files\\ringfence\\lib"


def test_broker_launch() -> None:
    base = {"SYSTEMROOT": "C:\\Windows", "SystemDrive": "C:", "PATH": "x", "PYTHONHOME": "evil"}
    launch = broker_launch(PY, ROOT, base, exists=lambda p: p.endswith("pythonw.exe"))
    windowless = "C:\\Program Files\\Python312\\pythonw.exe"
    assert launch.application == windowless
    assert command_line_to_argv(launch.command_line) == [
        windowless,
        "-B",
        "-s",
        "-m",
        "ringfence.platforms.windows.broker",
    ]
    assert launch.cwd == ROOT
    assert launch.environment == {
        "SystemRoot": "C:\\Windows",
        "SystemDrive": "C:",
        "PYTHONPATH": ROOT,
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUTF8": "1",
    }
    environment_block(launch.environment)  # a valid block
    plain = broker_launch(PY, ROOT, base, exists=lambda p: False)
    assert plain.application == PY


@pytest.mark.parametrize(("python", "root"), [("python.exe", ROOT), (PY, "lib")])
def test_broker_launch_needs_absolute_paths(python: str, root: str) -> None:
    with pytest.raises(SandboxError):
        broker_launch(python, root, {})


# --- command line --------------------------------------------------------------------------


def command_line_to_argv(cmd: str) -> list[str]:
    """CommandLineToArgvW / the MS C runtime (2008+), written from the documented rules:
    the program name ends at the next quote if it starts with one, else at whitespace; then
    2n backslashes + quote -> n backslashes and a quote toggles; 2n+1 backslashes + quote ->
    n backslashes and a literal quote; backslashes not before a quote are literal; inside
    quotes, "" is a literal quote; space and tab outside quotes separate."""
    args: list[str] = []
    i, n = 0, len(cmd)
    if cmd.startswith('"'):
        end = cmd.find('"', 1)
        end = n if end < 0 else end
        args.append(cmd[1:end])
        i = end + 1
    else:
        while i < n and cmd[i] not in " \t":
            i += 1
        args.append(cmd[:i])
    while True:
        while i < n and cmd[i] in " \t":
            i += 1
        if i >= n:
            return args
        arg: list[str] = []
        quoted = False
        while i < n and (quoted or cmd[i] not in " \t"):
            if cmd[i] == "\\":
                j = i
                while j < n and cmd[j] == "\\":
                    j += 1
                count = j - i
                if j < n and cmd[j] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:
                        arg.append('"')
                        i = j + 1
                    else:
                        i = j
                else:
                    arg.append("\\" * count)
                    i = j
            elif cmd[i] == '"':
                if quoted and i + 1 < n and cmd[i + 1] == '"':
                    arg.append('"')
                    i += 2
                else:
                    quoted = not quoted
                    i += 1
            else:
                arg.append(cmd[i])
                i += 1
        args.append("".join(arg))


ARG_CHARS = st.sampled_from(list("ab \t\\\"'&|^%!x\u00e9\u4e2d\n"))
ARG = st.text(ARG_CHARS, max_size=12)
PROGRAM_NAME = st.text(st.sampled_from(list("ab \\.:_\u00e9")), min_size=1, max_size=12).filter(
    lambda s: not s.endswith("\\")
)


@settings(max_examples=600, deadline=None)
@given(PROGRAM_NAME, st.lists(ARG, max_size=6))
def test_command_line_round_trips(program: str, args: list[str]) -> None:
    argv = [program, *args]
    assert command_line_to_argv(command_line(argv)) == argv


@pytest.mark.parametrize(
    "argv",
    [
        ["C:\\Program Files\\x.exe", "a b", 'say "hi"', "C:\\dir\\", "C:\\dir with space\\"],
        ["p", "", "", "\\\\server\\share", '\\"', '\\\\"', "\t"],
    ],
)
def test_command_line_examples(argv: list[str]) -> None:
    assert command_line_to_argv(command_line(argv)) == argv


@pytest.mark.parametrize("argv", [[], ["a\0b"], ["p", "x\0"], ['C:\\a"b'], ["C:\\dir\\"], [""]])
def test_command_line_refusals(argv: list[str]) -> None:
    with pytest.raises(PolicyError):
        command_line(argv)


# --- environment block ---------------------------------------------------------------------


def test_environment_block_layout_and_order() -> None:
    block = environment_block({"b": "2", "Path": "C:\\x", "A": "1", "_u": "\u00e9"})
    text = block.decode("utf-16-le")
    assert text == "A=1\0b=2\0Path=C:\\x\0_u=\u00e9\0\0"  # "_" (0x5F) sorts after "P" (0x50)
    assert environment_block({}) == "\0\0".encode("utf-16-le")


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters="=\0"), min_size=1),
        st.text(st.characters(blacklist_characters="\0")),
    )
)
def test_environment_block_properties(env: dict[str, str]) -> None:
    if len({k.upper() for k in env}) != len(env):
        with pytest.raises(PolicyError, match="differ only in case"):
            environment_block(env)
        return
    text = environment_block(env).decode("utf-16-le", "surrogatepass")
    assert text.endswith("\0\0")
    entries = text[:-1].split("\0")[:-1] if env else []
    names = [e.split("=", 1)[0] for e in entries]
    assert names == sorted(env, key=str.upper)
    assert dict(e.split("=", 1) for e in entries) == env


@pytest.mark.parametrize(
    "env",
    [{"": "x"}, {"A=B": "x"}, {"=C:": "C:\\"}, {"A\0": "x"}, {"A": "x\0y"}, {"a": "1", "A": "2"}],
)
def test_environment_block_refusals(env: dict[str, str]) -> None:
    with pytest.raises(PolicyError):
        environment_block(env)
