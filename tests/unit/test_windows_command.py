"""One Windows command end to end over a simulated machine, tree and runner: the plan's grants
are in place (and lost deny entries restored) before the command starts, the runner gets the
plan's user, SIDs and an absolute program, the temporary directory is private and removed,
and every refusal comes before anything runs. Not run on Windows."""

from __future__ import annotations

from pathlib import Path

import pytest
from winsim import Machine, Tree

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import install
from ringfence.platforms.windows.command import resolve_program, run_command
from ringfence.platforms.windows.run import RunResult, RunSpec
from ringfence.policy.model import Limits, Network, PathStyle, Policy

W = PathStyle.WINDOWS
HOME = "C:\\Users\\alice"
TMP = "C:\\Users\\alice\\rf\\tmp"


def machine_and_tree(tmp_path: Path) -> tuple[Machine, Tree, install.Places]:
    places = install.Places(machine=str(tmp_path / "machine"), user=str(tmp_path / "user"))
    m = Machine()
    tree = Tree(
        dirs=["C:\\work", "C:\\work\\.git", "C:\\work\\.git\\hooks", "C:\\work\\src", HOME,
              "C:\\Windows\\System32", "C:\\Users\\alice\\rf", "C:\\Users\\alice\\rf\\tmp"],
        files=["C:\\Windows\\System32\\cmd.exe", "C:\\work\\tool.bat"],
        links={},
    )  # fmt: skip
    for d in ("C:\\Users\\alice\\rf\\tmp",):
        m.acls[d] = "D:(A;;FA;;;alice)"
    return m, tree, places


class Launcher:
    """Stands in for the runner: records the spec and what the machine looked like then."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.specs: list[RunSpec] = []
        self.acls_at_start: dict[str, str] = {}

    def __call__(self, spec: RunSpec) -> RunResult:
        self.specs.append(spec)
        self.acls_at_start = dict(self.m.acls)
        return RunResult(exit_code=3, timed_out=False)


def run(
    tmp_path: Path, m: Machine, tree: Tree, places: install.Places, policy: Policy, **kw: object
) -> tuple[object, Launcher, list[str], list[str]]:
    made: list[str] = []
    removed: list[str] = []
    launch = Launcher(m)
    env = {"PATH": "C:\\Windows\\System32", "PATHEXT": ".EXE;.BAT"}
    ran = run_command(
        policy, ["cmd", "/c", "echo hi"], cwd="C:\\work", env=env, timeout=5, home=HOME,
        places=places, api=m, launch=launch, fs=tree, make_dir=made.append,
        remove_dir=removed.append, tmp_root=TMP, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return ran, launch, made, removed


def test_grants_come_first_and_the_runner_gets_the_plan(tmp_path: Path) -> None:
    m, tree, places = machine_and_tree(tmp_path)
    inst, _ = install.run_setup(m, places)
    policy = Policy(workspace="C:\\work", path_style=W)
    ran, launch, made, removed = run(tmp_path, m, tree, places, policy)
    spec = launch.specs[0]
    assert spec.user == "ringfence-offline" and spec.restricting_sids == (inst.capability_sid,)
    assert spec.argv == ("C:\\Windows\\System32\\cmd.exe", "/c", "echo hi")  # absolute
    assert spec.cwd == "C:\\work" and spec.timeout == 5
    # Before the command ran, the workspace was granted and .git\hooks denied.
    assert f"(A;OICI;modify;;;{inst.capability_sid})" in launch.acls_at_start["C:\\work"]
    assert f"(D;OICI;write;;;{inst.offline_sid})" in launch.acls_at_start["C:\\work\\.git\\hooks"]
    # A private temporary directory, inside the granted tmp root, made and removed.
    temp = spec.env["TEMP"]
    assert temp.startswith("C:\\Users\\alice\\rf\\tmp\\") and temp in made and removed == [temp]
    assert ran.result.exit_code == 3  # type: ignore[attr-defined]
    # The second command adds nothing: the grants are journaled.
    ran2, _, _, _ = run(tmp_path, m, tree, places, policy)
    assert ran2.grants_added == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        (Policy(workspace="C:\\work", limits=Limits(memory=1 << 30), path_style=W),
         UnsupportedError, "memory limit"),
        (Policy(workspace="C:\\Users\\alice", path_style=W), PolicyError, "user profile"),
    ],
)  # fmt: skip
def test_refusals_come_before_anything_runs(
    tmp_path: Path, policy: Policy, error: type[Exception], message: str
) -> None:
    m, tree, places = machine_and_tree(tmp_path)
    install.run_setup(m, places)
    acls = dict(m.acls)
    launch = Launcher(m)
    with pytest.raises(error, match=message):
        run_command(
            policy, ["cmd"], cwd="C:\\work", env={}, timeout=None, home=HOME, places=places,
            api=m, launch=launch, fs=tree, make_dir=lambda p: None, remove_dir=lambda p: None,
            tmp_root=TMP,
        )  # fmt: skip
    assert launch.specs == [] and m.acls == acls


def test_without_setup_nothing_runs(tmp_path: Path) -> None:
    m, tree, places = machine_and_tree(tmp_path)
    launch = Launcher(m)
    with pytest.raises(SandboxError, match="ringfence setup"):
        run_command(
            Policy(workspace="C:\\work", path_style=W), ["cmd"], cwd="C:\\work", env={},
            timeout=None, home=HOME, places=places, api=m, launch=launch, fs=tree, tmp_root=TMP,
        )  # fmt: skip
    assert launch.specs == []


def test_a_cwd_the_sandbox_user_cannot_read_is_refused(tmp_path: Path) -> None:
    m, tree, places = machine_and_tree(tmp_path)
    install.run_setup(m, places)
    launch = Launcher(m)
    with pytest.raises(PolicyError, match="outside what the sandbox user may read"):
        run_command(
            Policy(workspace="C:\\work", path_style=W), ["cmd"], cwd="C:\\Users\\alice",
            env={}, timeout=None, home=HOME, places=places, api=m, launch=launch, fs=tree,
            make_dir=lambda p: None, tmp_root=TMP,
        )  # fmt: skip
    assert launch.specs == []


def test_programs_are_found_as_windows_finds_them() -> None:
    files = {"C:\\Windows\\System32\\cmd.exe", "C:\\tools\\run.bat", "C:\\tools\\x.py"}
    env = {"Path": 'C:\\Windows\\System32;"C:\\tools";relative', "PATHEXT": ".EXE;.BAT"}
    exists = files.__contains__
    assert resolve_program("cmd", env, exists) == "C:\\Windows\\System32\\cmd.exe"
    assert resolve_program("run", env, exists) == "C:\\tools\\run.bat"
    assert resolve_program("x.py", env, exists) == "C:\\tools\\x.py"
    assert resolve_program("c:/tools/run", env, exists) == "C:\\tools\\run.bat"
    with pytest.raises(FileNotFoundError):
        resolve_program("missing", env, exists)
    with pytest.raises(PolicyError, match="relative path"):
        resolve_program("tools\\run", env, exists)


def test_the_cli_glue_holds_the_proxy_port_and_maps_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Windows backend through the engine, with the Windows calls replaced: the proxy
    holds the install's port for the command's lifetime (network off: it refuses everything),
    the allowlist's proxy address reaches the command, a taken port stops the command, exit
    codes map."""
    import socket

    from ringfence.engine import backends
    from ringfence.platforms.windows import command
    from ringfence.platforms.windows.command import Ran
    from ringfence.platforms.windows.plan import WindowsInstall

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = WindowsInstall(**{**WindowsInstall.placeholder().to_dict(), "proxy_port": port})
    places = install.Places(str(tmp_path / "m"), str(tmp_path / "u"))
    monkeypatch.setattr(install.Places, "default", staticmethod(lambda: places))
    monkeypatch.setattr(install, "load_install", lambda p: state)
    seen: dict[str, object] = {}

    def fake_run_command(policy: Policy, argv: list[str], **kw: object) -> Ran:
        with socket.socket() as s:  # the port is held by ringfence's proxy while we run
            seen["port_taken"] = s.connect_ex(("127.0.0.1", port)) == 0
        seen["env"] = kw["env"]
        return Ran(plan=None, result=RunResult(exit_code=7, timed_out=False), grants_added=0)  # type: ignore[arg-type]

    monkeypatch.setattr(command, "run_command", fake_run_command)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def run(policy: Policy, ask: bool = False) -> int:
        backend = backends.select("windows", api=object(), launch=lambda spec: None)
        options = backends.RunOptions(ask=ask)
        return backends.run(policy, "C:\\work", ["cmd"], options, backend).returncode

    policy = Policy(workspace="C:\\work", path_style=W)
    assert run(policy) == 7
    assert seen["port_taken"] is True
    assert "HTTPS_PROXY" not in seen["env"]  # type: ignore[operator]
    allow = Policy(
        workspace="C:\\work", network=Network.ALLOWLIST, allow_domains=("pypi.org",), path_style=W
    )
    assert run(allow) == 7
    assert seen["env"]["HTTPS_PROXY"] == f"http://127.0.0.1:{port}"  # type: ignore[index]
    import json

    log = tmp_path / "state" / "ringfence" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["exit"], r["session"][:8]) for r in records] == [(7, "windows-")] * 2
    # with the network off, asking must not become a way to open it
    with pytest.raises(UnsupportedError, match="--ask without an allowlist"):
        run(policy, ask=True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(UnsupportedError, match="taken by another program"):
            run(policy)
