"""What a finished command looks like to a caller of the subprocess-like API: the
``CompletedProcess`` and exception types (subclasses of ``subprocess``'s own, so code written
for ``subprocess`` keeps working), and how stdio arguments and results are shaped."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringfence.network.proxy import NetEvent
    from ringfence.session import Process


StdSpec = int | IO[Any] | None
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


class TimeoutExpired(subprocess.TimeoutExpired):
    """A command ran past its timeout; its whole process tree was killed (not the session)."""


class CalledProcessError(subprocess.CalledProcessError):
    """``check=True`` and the command failed."""


@dataclass
class CompletedProcess(subprocess.CompletedProcess[Any]):
    """``subprocess.CompletedProcess`` plus what ringfence knows about the run."""

    args: Any
    returncode: int
    stdout: Any = None
    stderr: Any = None
    duration: float = 0.0
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    memory_limit_hit: bool = False
    # network = allowlist: the proxy's decisions while the command ran (with commands running
    # at once in one session, theirs may be among them)
    network_events: list[NetEvent] = field(default_factory=list)
    # What the boundary refused: {"kind": "filesystem", "op", "path", "rule"} from the name
    # guard, {"kind": "network", "host", "port", "rule"} from the proxy; {"kind": "more"} when
    # the guard stopped counting (refused writes of shells to their history files are left
    # out: see escalation.quiet). And what the command made that a person should know of:
    # ``created``: the git section of the report, never crowded out by refusals:
    # {"kind": "new_repository" | "refused_repository" | "refused_config" |
    # "refused_pointer", "path", "detail"?} and {"kind": "more_git"}.
    violations: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    # The smallest widenings of the policy that would have allowed what was refused.
    widenings: list[dict[str, Any]] = field(default_factory=list)

    def check_returncode(self) -> None:
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


def run_stdio(
    input: bytes | str | None,
    stdin: StdSpec,
    stdout: StdSpec,
    stderr: StdSpec,
    capture_output: bool,
) -> tuple[StdSpec, StdSpec, StdSpec]:
    """``run``'s stdio, as ``subprocess.run`` derives it from ``input`` and ``capture_output``."""
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = PIPE
    return stdin, stdout, stderr


def completed(
    proc: Process,
    output: tuple[bytes | None, bytes | None],
    truncated: tuple[bool, bool],
    decoding: tuple[bool, str | None, str | None],
    check: bool,
) -> CompletedProcess:
    """The result of a finished ``run``/``arun``; raises CalledProcessError with ``check``."""
    result = CompletedProcess(
        proc.args,
        proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        decode(output[0], *decoding),
        decode(output[1], *decoding),
        duration=proc.duration or 0.0,
        stdout_truncated=truncated[0],
        stderr_truncated=truncated[1],
        memory_limit_hit=proc.memory_limit_hit,
        network_events=proc.network_events,
        violations=proc.violations,
        created=proc.created,
        widenings=proc.widenings,
    )
    if check:
        result.check_returncode()
    return result


def decode(data: bytes | None, text: bool, encoding: str | None, errors: str | None) -> Any:
    """Captured output as ``subprocess`` gives it in text mode: decoded (by default UTF-8
    with ``errors="replace"``: a command's output is not trusted to be valid text), with
    universal newlines (``\r\n`` and ``\r`` read as ``\n``)."""
    if data is None or not (text or encoding or errors):
        return data
    out = data.decode(encoding or "utf-8", errors or "replace")
    return out.replace("\r\n", "\n").replace("\r", "\n")
