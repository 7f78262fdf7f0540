"""Run the real ``ringfence`` against the real kernel, as root and as an unprivileged user.

Every sandbox test takes the ``rf`` fixture, parametrized over who runs ringfence: the current
user and, when the tests run as root, an unprivileged test user (``RINGFENCE_TEST_USER``,
created by ``scripts/test.sh``). Root hides bugs (capabilities, DAC), and a normal user is the
real use. The unprivileged runs use ``/usr/bin/python3`` and a world-readable copy of the
source, because the test virtualenv may live where other users cannot read.

A positive test ("a write in the workspace works") would also pass if the command ran with no
sandbox at all, so positive tests run their command through ``rf.confined_sh`` /
``rf.confined`` (or a ``Confinement`` for the Session API): the command first reports
``$RINGFENCE_SANDBOX`` (``1`` in every sandbox, ``0`` under full access, unset outside) and a
nonce made for this test, and tries to write a file outside the workspace; the test fails
unless both came back from inside and the write did not land on the host.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
TEST_USER = os.environ.get("RINGFENCE_TEST_USER", "ringfence-test")
REQUIRE_UNPRIVILEGED = os.environ.get("RINGFENCE_REQUIRE_UNPRIVILEGED") == "1"


def _test_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rf" in metafunc.fixturenames:
        users = ["self"]
        if os.getuid() == 0:
            users.append("unprivileged")
        metafunc.parametrize("rf", users, indirect=True)


@pytest.fixture(scope="session", autouse=True)
def private_xdg_dirs() -> Iterator[Path]:
    """ringfence reads its config from $XDG_CONFIG_HOME and writes its caches and audit log
    under $XDG_CACHE_HOME and $XDG_STATE_HOME: the tests point all three at throwaway
    directories (per user), never at a real home."""
    base = Path(tempfile.mkdtemp(prefix="ringfence-xdg-", dir="/var/tmp"))
    base.chmod(0o755)
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")}
    os.environ["XDG_CACHE_HOME"] = str(base / "self" / "cache")
    os.environ["XDG_STATE_HOME"] = str(base / "self" / "state")
    os.environ["XDG_CONFIG_HOME"] = str(base / "self" / "config")
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(base, ignore_errors=True)


def _xdg_for(label: str, uid: int, gid: int) -> dict[str, str]:
    base = Path(os.environ["XDG_CACHE_HOME"]).parent.parent / label
    for sub in ("cache", "state", "config"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        os.chown(base, uid, gid)
        os.chown(base / sub, uid, gid)
    return {
        "XDG_CACHE_HOME": str(base / "cache"),
        "XDG_STATE_HOME": str(base / "state"),
        "XDG_CONFIG_HOME": str(base / "config"),
    }


@pytest.fixture(scope="session")
def world_readable_src() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ringfence-src-", dir="/var/tmp"))
    shutil.copytree(SRC / "ringfence", base / "ringfence")
    for dep in ("tree_sitter", "tree_sitter_bash"):  # ringfence's dependencies, for that user
        spec = importlib.util.find_spec(dep)
        assert spec is not None and spec.submodule_search_locations, f"{dep} is not installed"
        shutil.copytree(spec.submodule_search_locations[0], base / dep)
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield base
    shutil.rmtree(base)


CONFINED_MARK = "rf-confined"


@dataclass(frozen=True)
class Confinement:
    """Proof that a command ran inside a ringfence sandbox, not merely that it ran.

    ``argv(cmd)`` wraps a command so that, before it execs, it tries to write
    ``<outside>/escaped-<nonce>`` (when ``outside`` is given: a directory the command's user
    could write if nothing confined it) and prints ``rf-confined:$RINGFENCE_SANDBOX:<nonce>``
    as its first line of output; the nonce travels in through argv. ``check`` asserts that
    line is exactly ``rf-confined:1:<nonce>`` and that the escape file is not on the host, then
    returns the output without that line, so the test's own assertions read as before.
    """

    nonce: str
    outside: Path | None = None

    @property
    def line(self) -> str:
        return f"{CONFINED_MARK}:1:{self.nonce}"

    @property
    def escape_path(self) -> Path | None:
        return None if self.outside is None else self.outside / f"escaped-{self.nonce}"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        probe = ""
        if self.escape_path is not None:  # in a subshell, so the command's $? starts at 0
            probe = f"(: > {shlex.quote(str(self.escape_path))}) 2>/dev/null; "
        script = f'{probe}printf "{CONFINED_MARK}:%s:%s\\n" "$RINGFENCE_SANDBOX" "$0"; exec "$@"'
        return ["sh", "-c", script, self.nonce, *cmd]

    def shell(self, script: str) -> list[str]:
        """``argv`` for ``sh -c script``."""
        return self.argv(["sh", "-c", script])

    def strip(self, out: str, stderr: str = "") -> str:
        """``out`` without the first line, after asserting it is the proof from inside."""
        first, sep, rest = out.partition("\n")
        assert sep and first == self.line, (
            f"the command did not prove it ran confined: expected {self.line!r} first, "
            f"got stdout {out[:300]!r}, stderr {stderr[-600:]!r}"
        )
        escape = self.escape_path
        assert escape is None or not escape.exists(), f"the command wrote {escape} on the host"
        return rest

    def strip_bytes(self, out: bytes) -> bytes:
        return self.strip(out.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def scrub_stderr(self, err: str) -> str:
        """ringfence's report of the refused escape write taken out of ``err``, so a test's
        assertions about its own refusals can neither fail nor pass because of the probe."""
        if self.outside is None:
            return err
        refused = f"openat {self.escape_path} (outside writable roots)"
        widening = f"--writable {self.outside}"
        lines = []
        for line in err.splitlines(keepends=True):
            body = line.rstrip("\n")
            if body.startswith("ringfence: refused "):
                items = body.removeprefix("ringfence: refused ").split(", ")
                items = [i for i in items if i != refused]
                body = "ringfence: refused " + ", ".join(items) if items else ""
            elif body.startswith("ringfence: to allow it: "):
                flags = body.removeprefix("ringfence: to allow it: ").replace(widening, "")
                flags = " ".join(flags.split())
                body = "ringfence: to allow it: " + flags if flags else ""
            if body:
                lines.append(body + line[len(line.rstrip("\n")) :])
        return "".join(lines)

    def check(self, r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        """``r`` with the proof line taken off its stdout (asserted first) and the escape
        probe's report taken out of its stderr."""
        out = self.strip(r.stdout, r.stderr)
        return subprocess.CompletedProcess(r.args, r.returncode, out, self.scrub_stderr(r.stderr))


def parent_pid(pid: int) -> int:
    """The parent of process ``pid`` (a command's init, for tests that stop or kill it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def pid_of(argv: Sequence[str]) -> int | None:
    """The process whose command line is exactly ``argv`` (a test's own command, named by its
    nonce: ringfence's processes, whose argv holds it too, have longer ones)."""
    want = "\0".join(argv).encode() + b"\0"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() == want:
                return int(entry)
        except OSError:
            continue
    return None


def new_nonce() -> str:
    return f"rfn{secrets.token_hex(8)}"


def outside_dir(uid: int, gid: int) -> Path:
    """A directory outside any workspace that user ``uid`` may write, unconfined."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-outside-", dir="/var/tmp"))
    d.chmod(0o755)
    os.chown(d, uid, gid)
    return d


@pytest.fixture
def ws(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A throwaway workspace for a test that drives the Session API as the current user, under
    /var/tmp (the sandbox's /tmp is a private layer), named after the test's module."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    d = Path(tempfile.mkdtemp(prefix=f"ringfence-{name}-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def confinement() -> Iterator[Confinement]:
    """A ``Confinement`` for tests that drive the Session API (the current user)."""
    d = outside_dir(os.getuid(), os.getgid())
    yield Confinement(new_nonce(), d)
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Runner:
    """Runs ``ringfence`` as one user, with workspaces that user owns."""

    label: str
    uid: int
    gid: int
    home: str
    python: str
    pythonpath: str | None
    cleanup: list[Path]
    src_copy: str
    nonce: str = field(default_factory=new_nonce)
    _confinement: Confinement | None = None

    @property
    def confinement(self) -> Confinement:
        """This test's nonce and an outside directory this runner's user owns (made once)."""
        if self._confinement is None:
            self._confinement = Confinement(self.nonce, self.mkdir("outside-"))
        return self._confinement

    @property
    def native_guard(self) -> bool:
        """Whether the native launcher may run this runner's plans with the name guard: not
        when its interpreter or ringfence lies under /tmp or /dev/shm (a CI clone in /tmp),
        which a sandbox can change (native_image.guard_code_changeable refuses them)."""
        if self.label == "self":
            paths = [sys.prefix, os.path.realpath(sys.executable), str(SRC)]
        else:
            paths = [os.path.realpath(self.python), self.src_copy]
        return not any(p.startswith(("/tmp/", "/dev/shm/")) for p in paths)

    def needs_native_guard(self) -> None:
        if not self.native_guard:
            pytest.skip(
                f"{self.label}'s interpreter or ringfence lies under /tmp, which a sandbox can "
                "change: the guard is never run natively from there (the other runner covers it)"
            )

    def inner_ringfence(self) -> str:
        """A shell command that runs ringfence *inside* a sandbox: the test virtualenv may live
        under /tmp (private in there), so use /usr/bin/python3 and the world-readable copy."""
        return f"env PYTHONPATH={self.src_copy} /usr/bin/python3 -P -m ringfence"

    def mkdir(self, prefix: str = "ws-", base: str = "/var/tmp") -> Path:
        """A fresh directory owned by the runner's user, outside pytest's 0700 tmp tree.

        The default base is /var/tmp, a host directory the sandbox shows as it is (its /tmp is
        the host's read-only under a per-workspace layer, which a test may not want).
        """
        d = Path(tempfile.mkdtemp(prefix=f"ringfence-{prefix}", dir=base))
        d.chmod(0o755)
        os.chown(d, self.uid, self.gid)
        self.cleanup.append(d)
        return d

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "LANG": "C.UTF-8",
        }
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        env.update(_xdg_for(self.label, self.uid, self.gid))
        env.update(extra or {})
        return env

    def argv(self, args: Sequence[str]) -> list[str]:
        return [self.python, "-P", "-m", "ringfence", *args]

    def popen_kwargs(self) -> dict[str, object]:
        if self.label == "self":
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def __call__(
        self,
        *args: str,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: PLW1510 - callers assert on returncode
            self.argv(args),
            cwd=cwd,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            **self.popen_kwargs(),  # type: ignore[arg-type]
        )

    def py(
        self,
        *args: str,
        cwd: Path | str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """This user's Python (with ringfence importable) on ``args``: a script of a test that
        uses the API as that user."""
        return subprocess.run(  # noqa: PLW1510 - callers assert on returncode
            [self.python, *args],
            cwd=cwd,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            **self.popen_kwargs(),  # type: ignore[arg-type]
        )

    def popen(
        self, *args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(args),
            cwd=cwd,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **self.popen_kwargs(),  # type: ignore[arg-type]
        )

    def sh(
        self, ws: Path, script: str, *flags: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """``ringfence run [flags] -- sh -c script`` in workspace ``ws``."""
        return self("run", *flags, "--", "sh", "-c", script, cwd=ws, **kw)  # type: ignore[arg-type]

    def confined(
        self, ws: Path | str, cmd: Sequence[str], *flags: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """``ringfence run [flags] -- cmd`` in ``ws``, asserting it ran confined (see
        ``Confinement``); stdout comes back without the proof line."""
        c = self.confinement
        r = self("run", *flags, "--", *c.argv(cmd), cwd=ws, **kw)  # type: ignore[arg-type]
        return c.check(r)

    def confined_sh(
        self, ws: Path | str, script: str, *flags: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """``sh(ws, script, *flags)``, asserting it ran confined."""
        return self.confined(ws, ["sh", "-c", script], *flags, **kw)


@pytest.fixture
def rf(request: pytest.FixtureRequest, world_readable_src: Path) -> Iterator[Runner]:
    cleanup: list[Path] = []
    if request.param == "self":
        home = os.environ.get("HOME", "/")
        runner = Runner(
            "self",
            os.getuid(),
            os.getgid(),
            home,
            sys.executable,
            None,
            cleanup,
            str(world_readable_src),
        )
    else:
        user = _test_user()
        if user is None:
            if REQUIRE_UNPRIVILEGED:
                pytest.fail(f"test user {TEST_USER!r} is missing (scripts/test.sh creates it)")
            pytest.skip(f"no unprivileged test user {TEST_USER!r}; run scripts/test.sh")
        runner = Runner(
            "unprivileged",
            user.pw_uid,
            user.pw_gid,
            user.pw_dir,
            "/usr/bin/python3",
            str(world_readable_src),
            cleanup,
            str(world_readable_src),
        )
    yield runner
    for d in cleanup:
        shutil.rmtree(d, ignore_errors=True)
