"""One policy everywhere: the Python API resolves its policy as the CLI does (user config,
project file, managed ceiling), project-file paths are relative to the project, and the
``subprocess`` arguments a sandboxed command cannot have are refused with the reason.

The sandbox itself runs in tests/sandbox/test_session_popen.py and test_session_layers.py;
these check the decisions (a Session compiles its plan without starting anything)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from ringfence import Mode, Network, Policy, UsageError
from ringfence.cli.flags import resolve_flags
from ringfence.cli.parser import build_parser
from ringfence.engine.resolve import PolicyRequest, resolve
from ringfence.platforms.linux import popen_extras
from ringfence.policy import config
from ringfence.policy.config import ConfigError
from ringfence.policy.model import EnvPolicy, Limits
from ringfence.popen_args import MAX_PASS_FDS, check
from ringfence.session import Session
from ringfence.stdio import PtyFile


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(config, "MANAGED_PATH", str(tmp_path / "managed.toml"))
    monkeypatch.setattr(config.load_ceiling, "__defaults__", (str(tmp_path / "managed.toml"),))
    (tmp_path / "xdg" / "ringfence").mkdir(parents=True)
    (tmp_path / "ws").mkdir()
    return tmp_path


def _user(home: Path, text: str) -> None:
    (home / "xdg" / "ringfence" / "config.toml").write_text(text)


def _project(home: Path, text: str) -> Path:
    path = home / "ws" / ".ringfence.toml"
    path.write_text(text)
    return path


def _cli(home: Path, *flags: str) -> Policy:
    ns = build_parser().parse_args(["run", "--workspace", str(home / "ws"), *flags, "--", "x"])
    return resolve_flags(ns).policy


# -- project-file paths ------------------------------------------------------------------------


def test_relative_project_paths_are_relative_to_the_project(home: Path) -> None:
    ws = home / "ws"
    _project(home, 'deny_read = ["creds.txt", "./keys/", "/srv/abs"]\nprotected = ["~/.x"]\n')
    policy = _cli(home)
    assert policy.deny_read == (str(ws / "creds.txt"), str(ws / "keys"), "/srv/abs")
    assert policy.protected == (os.path.realpath(os.path.expanduser("~/.x")),)


@pytest.mark.parametrize("entry", ["../elsewhere/creds", "a/../../up", ".."])
def test_a_relative_project_path_may_not_climb_out(home: Path, entry: str) -> None:
    path = _project(home, f'\nprotected = ["{entry}"]\n')
    with pytest.raises(ConfigError) as e:
        _cli(home)
    assert str(e.value) == (
        f"{path}:2: protected: {entry!r} leaves the project; a relative path in the project "
        f"file is relative to the project ({home / 'ws'}) and must stay inside it"
    )


def test_user_config_paths_stay_absolute_only(home: Path) -> None:
    _user(home, 'deny_read = ["creds.txt"]\n')
    with pytest.raises(Exception, match=r"'creds\.txt' is relative; give an absolute path"):
        _cli(home)


# -- a whole Policy under the project file and the ceiling --------------------------------------


def test_the_project_file_tightens_a_whole_policy_and_leaves_the_rest(home: Path) -> None:
    _user(home, "strict_git = false\n[env]\nset = { FROM_USER = '1' }\n")  # not read: replaced
    _project(
        home,
        'deny_read = ["creds.txt"]\nstrict_git = true\nnetwork = "off"\n'
        'approval = "untrusted"\n[limits]\nprocesses = 50\n',
    )
    given = Policy(
        workspace=str(home / "ws"),
        deny_read=("/srv/mine",),
        network=Network.ON,
        env=EnvPolicy(set={"MINE": "1"}),
        limits=Limits(memory=1 << 30),
    )
    r = resolve(PolicyRequest(policy=given))
    p = r.policy
    assert p.deny_read == ("/srv/mine", str(home / "ws" / "creds.txt"))
    assert p.strict_git and p.network is Network.OFF and r.approval == "untrusted"
    assert (p.limits.processes, p.limits.memory) == (50, 1 << 30)
    assert p.env == EnvPolicy(set={"MINE": "1"})  # the user's config did not come in
    assert r.settings.sources["deny_read"].startswith("policy + project ")
    untouched = resolve(PolicyRequest(policy=given, project_config=False)).policy
    assert untouched == given


def test_a_project_file_may_not_loosen_a_whole_policy(home: Path) -> None:
    path = _project(home, 'mode = "full-access"\n')
    with pytest.raises(ConfigError, match=rf"^{path}:1: mode: the project file .* may only"):
        resolve(PolicyRequest(policy=Policy(workspace=str(home / "ws"))))


def test_session_resolves_as_the_cli_does(home: Path) -> None:
    ws = home / "ws"
    _user(
        home,
        "strict_git = true\n[env]\nset = { FROM_USER = '1' }\n[profiles.ro]\nmode = 'read-only'\n",
    )
    _project(home, 'deny_read = ["creds.txt"]\n')
    s = Session(workspace=ws)
    assert s.policy == _cli(home)
    assert s.policy is not None and s.policy.strict_git
    assert s.policy.deny_read == (str(ws / "creds.txt"),)
    assert s.policy.env.set == {"FROM_USER": "1"}
    assert Session(workspace=ws, profile="ro").policy.mode is Mode.READ_ONLY  # type: ignore[union-attr]
    given = Session(Policy(workspace=str(ws))).policy
    assert given is not None and not given.strict_git  # a whole Policy replaces the user's file
    assert given.deny_read == (str(ws / "creds.txt"),)  # and the project file still applies
    bare = Session(workspace=ws, config=False).policy
    assert bare == Policy(workspace=str(ws)).validate()


def test_session_layering_refusals(home: Path) -> None:
    ws = str(home / "ws")
    with pytest.raises(UsageError, match="give either the Policy or the profile, not both"):
        Session(Policy(workspace=ws), profile="x")
    with pytest.raises(UsageError, match="which is not read when config files are switched off"):
        Session(workspace=ws, profile="x", config=False)
    with pytest.raises(UsageError, match="differ: give one"):
        Session(Policy(workspace=ws), workspace=home)
    (home / "managed.toml").write_text('forbid_modes = ["read-only"]\n')
    _project(home, 'mode = "read-only"\n')  # tightening, but the ceiling forbids it
    with pytest.raises(ConfigError, match="forbids mode read-only"):
        Session(workspace=ws)
    with pytest.raises(ConfigError, match="forbids mode read-only"):
        Session(Policy(mode=Mode.READ_ONLY, workspace=ws), config=False)


# -- subprocess arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "kind", "message"),
    [
        (
            {"start_new_session": False},
            ValueError,
            "start_new_session=False cannot be had: every sandboxed command starts a session "
            "of its own",
        ),
        (
            {"close_fds": False},
            ValueError,
            "close_fds=False cannot be had: the sandbox's runner starts the command, not this "
            "process",
        ),
        (
            {"text": True, "universal_newlines": False},
            ValueError,
            "text and universal_newlines (its old name) disagree",
        ),
        ({"umask": 0o1000}, ValueError, "umask 0o1000 is not a file mode mask"),
        ({"umask": "022"}, TypeError, "umask must be an integer, not str"),
        ({"bufsize": 1.5}, TypeError, "bufsize must be an integer, not float"),
        ({"pass_fds": [2]}, ValueError, "pass_fds: 2 is stdin, stdout or stderr"),
        ({"pass_fds": [987654]}, ValueError, "pass_fds: descriptor 987654 is not open"),
        ({"pass_fds": 5}, TypeError, "pass_fds must be a collection of descriptor numbers"),
        ({"executable": ""}, ValueError, "executable is empty"),
    ],
)
def test_popen_arguments_that_cannot_be_had_say_why(
    kwargs: dict[str, object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as e:
        check(**kwargs)  # type: ignore[arg-type]
    assert str(e.value).startswith(message)


def test_popen_arguments_that_work() -> None:
    r, w = os.pipe()
    ours = [r, w]  # closed at the end, and only these: other numbers may be anyone's
    try:
        got = check(executable=b"/bin/sh", pass_fds=[w, w, r], umask=0o22, universal_newlines=True)
        assert got.fields() == {"executable": "/bin/sh", "umask": 0o22, "pass_fds": sorted({r, w})}
        assert got.text and check(start_new_session=True, close_fds=True).fields() == {}
        many = [os.dup(r) for _ in range(MAX_PASS_FDS + 1)]
        ours += many
        with pytest.raises(ValueError, match=f"at most {MAX_PASS_FDS}"):
            check(pass_fds=many)
    finally:
        for fd in ours:
            os.close(fd)


def test_pass_fds_land_at_their_numbers_even_where_the_init_holds_one() -> None:
    """The init's own descriptors sit at low numbers; a wanted number it holds is filled in
    the child only, the others in the init before the spawn. Run in a forked child: the init
    is single-threaded, and in pytest's process another thread may be opening a file at a
    "free" number at the same moment (dup2 then fails with EBUSY)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _pass_fds_in_a_single_threaded_process()
            code = 0
        except BaseException:
            traceback.print_exc()  # the assertion, on the test's captured stderr
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _pass_fds_in_a_single_threaded_process() -> None:
    pipes = [os.pipe() for _ in range(3)]
    busy = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # "the init's own" descriptor
    free = max(fd for p in pipes for fd in p) + 7
    wanted = [busy, free, free + 1]
    staged = popen_extras.stage([os.dup(w) for _, w in pipes], wanted)
    assert [n for _, n in staged.in_child] == [busy] and staged.placed == [free, free + 1]
    prog = "import os,sys\nfor n in sys.argv[1:]: os.write(int(n), n.encode())"
    proc = subprocess.Popen(
        [sys.executable, "-c", prog, *map(str, wanted)],
        pass_fds=wanted,
        preexec_fn=staged.child_step(None),  # noqa: PLW1509
    )
    staged.close()
    assert proc.wait() == 0
    assert os.read(busy, 10) == b""  # the init's own is untouched: still /dev/null
    for (r, w), n in zip(pipes, wanted, strict=True):
        os.close(w)
        assert os.read(r, 100) == str(n).encode()
        assert os.read(r, 100) == b""  # EOF: nobody else holds the write end
        os.close(r)
    os.close(busy)
    with pytest.raises(Exception, match="do not match its numbers"):
        popen_extras.stage([os.dup(0)], [5, 6])


def test_a_pty_master_reads_eof_when_the_terminal_hangs_up() -> None:
    master, slave = pty.openpty()
    os.write(slave, b"last words\n")
    os.close(slave)
    f = PtyFile(master, "r+b")
    assert f.read() == b"last words\r\n" and f.read() == b"" and f.read(10) == b""
    f.close()
