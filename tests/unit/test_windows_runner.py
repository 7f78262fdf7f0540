"""The Windows runner's pure parts on Linux: the orchestration over a simulated machine that
fails at every call (job before process, suspended until jobbed, no live process and no open
handle after any failure, the timeout ends the whole job), the command-line quoting against a
reimplementation of CommandLineToArgvW, and the environment block. Nothing here runs on
Windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.errors import PolicyError, UnsupportedError
from ringfence.platforms.windows import runner
from ringfence.platforms.windows.runner import ProcessHandles, RunSpec, StdioMode

CAP = "S-1-15-3-1-2-3-4"
LOGON_SID = "S-1-5-5-0-12345"
PROGRAM = "C:\\Windows\\System32\\cmd.exe"


class Injected(Exception):
    """The simulated Windows call failed."""


@dataclass
class Proc:
    state: str = "suspended"  # suspended | running | ended | killed
    job: int | None = None
    resumed_in_job: bool | None = None


@dataclass
class Machine:
    """A simulated Windows for the runner: handles, processes, jobs, and a failure at call
    number ``fail_at`` (counted over every call, so repeated steps each get their turn)."""

    fail_at: int | None = None
    hang: bool = False  # the command never ends by itself
    code: int = 0
    output: tuple[bytes, bytes] = (b"out", b"err")
    fail_also: frozenset[str] = frozenset()  # steps that always fail (cleanup failures)
    calls: list[str] = field(default_factory=list)
    open: dict[int, str] = field(default_factory=dict)
    procs: dict[int, Proc] = field(default_factory=dict)
    jobs: dict[int, bool] = field(default_factory=dict)  # job -> limited (kill on close)
    seen: dict[str, object] = field(default_factory=dict)
    next_handle: int = 100
    reads: int = 0

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if len(self.calls) - 1 == self.fail_at or name in self.fail_also:
            raise Injected(name)

    def _new(self, kind: str) -> int:
        self.next_handle += 1
        self.open[self.next_handle] = kind
        return self.next_handle

    def _kind(self, handle: int, kind: str) -> None:
        assert self.open.get(handle) == kind, (handle, kind, self.open)

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.state in ("suspended", "running")]

    # RunnerApi

    def load_secret(self, user: str) -> str:
        self._step("load_secret")
        return "pw-" + user

    def logon_user(self, user: str, password: str) -> int:
        self._step("logon_user")
        assert password == "pw-" + user
        return self._new("logon")

    def logon_sid(self, token: int) -> str:
        self._step("logon_sid")
        self._kind(token, "logon")
        return LOGON_SID

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        self._step("restrict_token")
        self._kind(token, "logon")
        self.seen["sids"] = list(restricting_sids)
        return self._new("restricted")

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
        self._kind(token, "restricted")
        assert any(self.jobs.values()), "a limited job exists before the process"
        assert all(h in self.open for h in stdio)
        self.seen.update(app=application, cmd=command_line, cwd=cwd, env=environment, io=stdio)
        process = self._new("process")
        self.procs[process] = Proc()
        return ProcessHandles(process, self._new("thread"), 4242)

    def assign_to_job(self, job: int, process: int) -> None:
        self._step("assign_to_job")
        self._kind(job, "job")
        self.procs[process].job = job

    def resume_thread(self, thread: int) -> None:
        self._step("resume_thread")
        self._kind(thread, "thread")
        (proc,) = self.procs.values()
        proc.resumed_in_job = proc.job is not None and self.jobs[proc.job]
        proc.state = "running"

    def wait(self, process: int, timeout: float | None) -> bool:
        self._step("wait")
        proc = self.procs[process]
        if proc.state == "running" and not self.hang:
            proc.state = "ended"
        return proc.state in ("ended", "killed")

    def exit_code(self, process: int) -> int:
        self._step("exit_code")
        return self.code

    def terminate_job(self, job: int, exit_code: int) -> None:
        self._step("terminate_job")
        self._kind(job, "job")
        self.seen["job_exit"] = exit_code
        for proc in self.procs.values():
            if proc.job == job and proc.state in ("suspended", "running"):
                proc.state = "killed"

    def terminate_process(self, process: int, exit_code: int) -> None:
        self._step("terminate_process")
        self.procs[process].state = "killed"

    def read_all(self, handle: int) -> bytes:
        self._step("read_all")
        self._kind(handle, "pipe-read")
        self.reads += 1
        return self.output[
            sorted(h for h, k in self.open.items() if k == "pipe-read").index(handle)
        ]

    def close(self, handle: int) -> None:
        self._step("close")
        kind = self.open.pop(handle)  # KeyError: a double close or a foreign handle
        if kind == "job" and self.jobs[handle]:  # kill-on-close
            for proc in self.procs.values():
                if proc.job == handle and proc.state in ("suspended", "running"):
                    proc.state = "killed"


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


def steps_of_a_clean_run(mode: StdioMode, hang: bool = False) -> list[str]:
    m = Machine(hang=hang)
    runner.run(spec(stdio=mode), m)
    return m.calls


@pytest.mark.parametrize("mode", MODES)
def test_clean_run_order_and_cleanup(mode: StdioMode) -> None:
    m = Machine(code=3)
    result = runner.run(spec(stdio=mode), m)
    assert result.exit_code == 3 and not result.timed_out
    assert result.stdout == (b"out" if mode == "capture" else b"")
    assert result.stderr == (b"err" if mode == "capture" else b"")
    c = m.calls
    # job (limited) before the process; assigned before resumed; the job ended after the wait
    assert c.index("create_job") < c.index("limit_job") < c.index("create_process")
    assert c.index("create_process") < c.index("assign_to_job") < c.index("resume_thread")
    assert c.index("resume_thread") < c.index("wait") < c.index("terminate_job")
    (proc,) = m.procs.values()
    assert proc.resumed_in_job is True
    assert m.open == {} and m.live() == []
    assert m.seen["sids"] == [CAP, LOGON_SID]
    assert m.seen["app"] == PROGRAM and m.seen["cmd"] == f'{PROGRAM} /c "echo hi"'


def test_child_ends_closed_before_the_command_runs() -> None:
    """The runner's copies of the child's stdio go before ResumeThread, or EOF never comes."""
    m = Machine()
    runner.run(spec(stdio="capture"), m)
    c = m.calls
    closes = [i for i, name in enumerate(c) if name == "close"]
    # the null handle and both pipe write ends: three closes between assign and resume
    assert sum(c.index("assign_to_job") < i < c.index("resume_thread") for i in closes) == 3


@pytest.mark.parametrize("mode", MODES)
def test_timeout_terminates_the_job(mode: StdioMode) -> None:
    m = Machine(hang=True)
    result = runner.run(spec(stdio=mode, timeout=0.5), m)
    assert result.timed_out and result.exit_code == runner.TIMEOUT_EXIT_CODE
    assert m.seen["job_exit"] == runner.TIMEOUT_EXIT_CODE
    assert m.live() == [] and m.open == {}
    assert "exit_code" not in m.calls


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
        runner.run(spec(stdio=mode), m)
    assert isinstance(info.value, Injected) or isinstance(info.value.__cause__, Injected)
    assert m.live() == [], f"a process outlived a failure at {failing}"
    for proc in m.procs.values():  # never ran outside its job
        assert proc.resumed_in_job in (None, True)
    if failing == "close":
        assert len(m.open) == 1  # only the handle whose CloseHandle failed
    else:
        assert m.open == {}, f"handles left open after a failure at {failing}"


def test_terminate_failing_too_still_closes_everything() -> None:
    """Assigning fails, then TerminateProcess fails as well: the process never ran (it is
    still suspended, outside any job) and every handle is closed anyway."""
    m = Machine(fail_also=frozenset({"assign_to_job", "terminate_process"}))
    with pytest.raises(Injected):
        runner.run(spec(), m)
    (proc,) = m.procs.values()
    assert proc.state == "suspended" and proc.resumed_in_job is None
    assert m.open == {}


def test_killed_by_job_close_when_terminate_fails_after_assignment() -> None:
    m = Machine(fail_also=frozenset({"resume_thread", "terminate_process"}))
    with pytest.raises(Injected):
        runner.run(spec(), m)
    assert m.live() == [] and m.open == {}


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
        {"timeout": 0.0},
    ],
)
def test_bad_specs_touch_nothing(changes: dict[str, object]) -> None:
    m = Machine()
    with pytest.raises(PolicyError):
        runner.run(spec(**changes), m)
    assert m.calls == []


def test_pty_is_refused_until_implemented() -> None:
    m = Machine()
    with pytest.raises(UnsupportedError, match="ConPTY"):
        runner.run(spec(pty_size=(80, 24)), m)
    assert m.calls == []


def test_win32_runner_api_off_windows() -> None:
    with pytest.raises(UnsupportedError, match="needs Windows"):
        runner.Win32RunnerApi()


def test_pure_flags() -> None:
    flags = runner.flags_for_process()
    assert flags & runner.CREATE_SUSPENDED and flags & runner.CREATE_UNICODE_ENVIRONMENT
    assert flags & runner.CREATE_NEW_PROCESS_GROUP and flags & runner.EXTENDED_STARTUPINFO_PRESENT
    limits = runner.job_limit_flags()
    assert limits & runner.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert limits & runner.JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION
    assert not limits & (0x800 | 0x1000)  # BREAKAWAY_OK, SILENT_BREAKAWAY_OK
    assert runner.timeout_ms(None) == runner.INFINITE
    assert runner.timeout_ms(1.5) == 1500
    assert runner.timeout_ms(1e12) == runner.INFINITE - 1


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
    assert command_line_to_argv(runner.command_line(argv)) == argv


@pytest.mark.parametrize(
    "argv",
    [
        ["C:\\Program Files\\x.exe", "a b", 'say "hi"', "C:\\dir\\", "C:\\dir with space\\"],
        ["p", "", "", "\\\\server\\share", '\\"', '\\\\"', "\t"],
    ],
)
def test_command_line_examples(argv: list[str]) -> None:
    assert command_line_to_argv(runner.command_line(argv)) == argv


@pytest.mark.parametrize("argv", [[], ["a\0b"], ["p", "x\0"], ['C:\\a"b'], ["C:\\dir\\"], [""]])
def test_command_line_refusals(argv: list[str]) -> None:
    with pytest.raises(PolicyError):
        runner.command_line(argv)


# --- environment block ---------------------------------------------------------------------


def test_environment_block_layout_and_order() -> None:
    block = runner.environment_block({"b": "2", "Path": "C:\\x", "A": "1", "_u": "\u00e9"})
    text = block.decode("utf-16-le")
    assert text == "A=1\0b=2\0Path=C:\\x\0_u=\u00e9\0\0"  # "_" (0x5F) sorts after "P" (0x50)
    assert runner.environment_block({}) == "\0\0".encode("utf-16-le")


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters="=\0"), min_size=1),
        st.text(st.characters(blacklist_characters="\0")),
    )
)
def test_environment_block_properties(env: dict[str, str]) -> None:
    if len({k.upper() for k in env}) != len(env):
        with pytest.raises(PolicyError, match="differ only in case"):
            runner.environment_block(env)
        return
    text = runner.environment_block(env).decode("utf-16-le", "surrogatepass")
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
        runner.environment_block(env)
