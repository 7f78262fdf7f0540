"""A session's runner starts as you, outside every boundary, usually from inside the workspace
the sandbox may write: it must import nothing from there.

``python -m`` put the working directory first on the runner's ``sys.path``, and the runner
took the environment's ``PYTHONPATH`` (often a directory of the project): a module the
sandboxed command planted there (``pickle.py``, which the runner imports first) ran as the
user, unconfined, when the next session started (an outside review, with a planted
``pickle.py``, as root and outside the run's cgroups). The runner now starts isolated
(``connection.runner_argv``).
"""

from __future__ import annotations

import os

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

PLANTED = "open({marker!r}, 'w').write('ran')\nraise SystemExit(3)\n"
# The host of the test below imports from that directory itself (PYTHONPATH, by the test's
# choice): only the runner (started isolated) leaves its mark.
IN_THE_RUNNER = "import sys\nif sys.flags.isolated:\n    open({marker!r}, 'w').write('ran')\n"

API_SCRIPT = """
import sys
from ringfence import Policy, Session
ws, nonce = sys.argv[1:3]
with Session(Policy(workspace=ws), cwd=ws) as s:
    r = s.run(["sh", "-c", "echo proof-$((6*7))-$0", nonce], capture_output=True, text=True)
print(r.stdout.strip(), r.returncode)
"""


def test_the_runner_imports_nothing_from_the_workspace_or_pythonpath(rf: Runner) -> None:
    ws, elsewhere, on_path = rf.mkdir(), rf.mkdir(), rf.mkdir()
    markers = [elsewhere / "cwd-pickle", elsewhere / "cwd-resource", elsewhere / "path-resource"]
    # the runner's first import (the plan arrives pickled), and one only the runner makes
    (ws / "pickle.py").write_text(PLANTED.format(marker=str(markers[0])))
    (ws / "resource.py").write_text(PLANTED.format(marker=str(markers[1])))
    (on_path / "resource.py").write_text(PLANTED.format(marker=str(markers[2])))
    script = elsewhere / "api.py"  # not in the workspace: the host's own sys.path[0]
    script.write_text(API_SCRIPT)
    path = os.pathsep.join(p for p in (str(on_path), rf.env().get("PYTHONPATH")) if p)
    r = rf.py(str(script), str(ws), rf.nonce, cwd=ws, env={"PYTHONPATH": path})
    assert [m.name for m in markers if m.exists()] == [], r.stderr
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"proof-42-{rf.nonce} 0", r.stdout  # the session ran it


PTY_SCRIPT = """
import sys
from ringfence import Policy, Session
ws, nonce, marker = sys.argv[1:4]
plant = f"open({marker!r}, 'w').write('ran')"
with Session(Policy(workspace=ws), cwd=ws) as s:
    s.run(["python3", "-c", f"open('termios.py', 'w').write({plant!r})"], check=True)
    p = s.spawn(["sh", "-c", "echo pty-$((6*7))-$0", nonce], pty=True)
    out, _ = p.communicate(timeout=60)
print(out.decode().strip())
"""


def test_the_host_imports_nothing_a_command_leaves_late(rf: Runner) -> None:
    """Under ``python -c`` in the workspace, the working directory is first on the host's own
    ``sys.path``: a module ringfence imported only on first use (``termios``, for a terminal's
    end of input) was taken from there. The modules it needs are imported with it now, and
    the API warns that such a place is importable."""
    ws, elsewhere = rf.mkdir(), rf.mkdir()
    marker = elsewhere / "planted-termios-ran"
    r = rf.py("-c", PTY_SCRIPT, str(ws), rf.nonce, str(marker), cwd=ws)
    assert not marker.exists(), r.stderr
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"pty-42-{rf.nonce}", r.stdout
    assert (ws / "termios.py").exists()  # the command did plant it
    assert f"Python imports from '{ws}', which the sandbox may write" in r.stderr


OWN_CODE_SCRIPT = """
import sys
import ringfence
from ringfence import Policy, Session
ws, nonce = sys.argv[1:3]
assert ringfence.__file__.startswith(ws), ringfence.__file__
probe = (
    "echo x >> src/ringfence/__init__.py || echo refused-append; "
    "touch src/ringfence/planted.py || echo refused-new; "
    "mv src/ringfence src/moved || echo refused-move; "
    "echo mine-$0 > mine"
)
with Session(Policy(workspace=ws), cwd=ws) as s:
    r = s.run(["sh", "-c", probe, nonce], capture_output=True, text=True)
print(r.stdout.strip())
"""


def test_ringfence_in_the_workspace_stays_read_only(rf: Runner) -> None:
    """ringfence run from inside the workspace (its checkout, or the project's virtualenv):
    a command may not change the code that builds its next sandbox."""
    import shutil

    ws, elsewhere = rf.mkdir(), rf.mkdir()
    shutil.copytree(rf.src_copy, ws / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(ws / "src"):
        for name in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(name, rf.uid, rf.gid)
    # what an earlier command could leave beside ringfence (only ringfence's own directory
    # is read-only): modules the standard library imports if they exist (copy: org.python)
    markers = []
    for name in ("_sha2.py", "org/__init__.py"):
        markers.append(elsewhere / f"planted-{name.replace('/', '-')}")
        (ws / "src" / name).parent.mkdir(exist_ok=True)
        (ws / "src" / name).write_text(IN_THE_RUNNER.format(marker=str(markers[-1])))
    script = elsewhere / "own.py"
    script.write_text(OWN_CODE_SCRIPT)
    env = {"PYTHONPATH": str(ws / "src")}
    r = rf.py("-P", str(script), str(ws), rf.nonce, cwd=elsewhere, env=env)
    assert [m.name for m in markers if m.exists()] == [], r.stderr  # the runner took none
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused-append", "refused-new", "refused-move"], r.stdout
    assert (ws / "mine").read_text() == f"mine-{rf.nonce}\n"  # the rest of it is writable
    assert not (ws / "src/ringfence/planted.py").exists()


WARNING = "ringfence: warning: ringfence imports Python modules from"


def test_ringfence_importing_from_the_workspace_says_so_on_every_run(rf: Runner) -> None:
    """ringfence run started from a virtualenv inside the workspace: its other packages,
    .pth files and bin/ stay writable (only ringfence's own files are read-only), so the user
    is told, on every run, cached ones included; the native launcher (which imports nothing
    to tell it) keeps no entry for such a request, so every run takes a path that says so."""
    from ringfence.platforms.linux import native

    ws = rf.mkdir()
    (ws / "lib").mkdir()
    os.chown(ws / "lib", rf.uid, rf.gid)
    inside = {"PYTHONPATH": ":".join(filter(None, [rf.pythonpath, str(ws / "lib")]))}
    script = "echo ran-$0"
    # (the environment is part of a request's key: compiled, compiled and kept, run kept)
    for how in ("off", "explain", "explain"):
        env = {**inside, "RINGFENCE_NATIVE": how}
        r = rf("run", "--", "sh", "-c", script, rf.nonce, cwd=ws, env=env)
        assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
        assert f"{WARNING} {str(ws / 'lib')!r}" in r.stderr, r.stderr
        assert r.stderr.count(WARNING) == 1, r.stderr
        if how == "explain" and native.available():
            assert "ringfence: not run by the native launcher: no kept request" in r.stderr
    # the bytecode cache read from the workspace (PYTHONPYCACHEPREFIX: every module's .pyc,
    # ringfence's own too, comes from there; review 39 ran host code so)
    cache = {"PYTHONPYCACHEPREFIX": str(ws / "pyc")}
    for how in ("off", "explain", "explain"):
        r = rf(
            "run",
            "--",
            "sh",
            "-c",
            script,
            rf.nonce,
            cwd=ws,
            env={**cache, "RINGFENCE_NATIVE": how},
        )
        assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
        assert f"{WARNING} {str(ws / 'pyc')!r}" in r.stderr, r.stderr
    # without that path, the same request is not warned about and runs natively once kept
    for kept in (False, True):
        env = {"RINGFENCE_NATIVE": "explain"}
        r = rf("run", "--", "sh", "-c", script, rf.nonce, cwd=ws, env=env)
        assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
        assert WARNING not in r.stderr, r.stderr
        if kept and native.available() and rf.native_guard:  # (not from a clone in /tmp)
            assert "not run by the native launcher" not in r.stderr, r.stderr


def test_python_m_ringfence_from_the_workspace_says_so(rf: Runner) -> None:
    """``python -m ringfence`` imported ``ringfence`` from the working directory before any
    of its code ran: a ``ringfence/`` a command leaves in the workspace runs next time, as
    you (review 40). It takes the directory off its path, and now says so; ``-P`` does not
    look there at all."""
    import subprocess

    ws = rf.mkdir()
    script = "echo ran-$0"
    for flags, told in ((["-m"], True), (["-P", "-m"], False)):
        r = subprocess.run(  # noqa: PLW1510 - asserted below
            [rf.python, *flags, "ringfence", "run", "--", "sh", "-c", script, rf.nonce],
            cwd=ws,
            env=rf.env(),
            capture_output=True,
            text=True,
            timeout=60,
            **rf.popen_kwargs(),  # type: ignore[arg-type]
        )
        assert (r.returncode, r.stdout) == (0, f"ran-{rf.nonce}\n"), r.stderr
        assert (f"{WARNING} {str(ws)!r}" in r.stderr) is told, r.stderr
