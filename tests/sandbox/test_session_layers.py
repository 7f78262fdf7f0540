"""One policy everywhere, against the real kernel: a Session resolves its policy as
``ringfence run`` does, so what the workspace's ``.ringfence.toml`` hides (named relative to
the project) the API hides too, and the user's config file reaches it.

Each command proves it ran confined (``Confinement``: ``$RINGFENCE_SANDBOX``, a nonce, an
escape write that must not land)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Confinement

import ringfence
from ringfence import AsyncSession, Policy, Session

pytestmark = pytest.mark.sandbox

SECRET = "the-repository-secret"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A repository whose committed project file hides its own ``creds.txt`` (a relative
    path), and a user config that sets an environment variable for every command."""
    xdg = tmp_path / "xdg"
    (xdg / "ringfence").mkdir(parents=True)
    (xdg / "ringfence" / "config.toml").write_text("[env]\nset = { RF_LAYER = 'user' }\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    ws = Path(tempfile.mkdtemp(prefix="ringfence-layers-", dir="/var/tmp"))
    (ws / "creds.txt").write_text(SECRET + "\n")
    (ws / ".ringfence.toml").write_text('deny_read = ["creds.txt"]\n')
    yield ws
    shutil.rmtree(ws, ignore_errors=True)


SCRIPT = 'echo "layer:${RF_LAYER:-none}"; cat creds.txt'


def _cases(ws: Path) -> list[tuple[dict[str, Any], bool, str]]:
    """(Session arguments, creds.txt hidden, what the user config set)."""
    return [
        ({"workspace": ws}, True, "user"),  # exactly as `ringfence run` in the repository
        ({"policy": Policy(workspace=str(ws))}, True, "none"),  # a whole Policy: no user file
        ({"workspace": ws, "config": False}, False, "none"),  # told not to read the files
    ]


def _check(r: Any, confinement: Confinement, hidden: bool, layer: str) -> None:
    out = confinement.strip(r.stdout, r.stderr)
    if hidden:
        assert (r.returncode, out) == (1, f"layer:{layer}\n")
        assert r.stderr == "cat: creds.txt: Permission denied\n"
    else:
        assert (r.returncode, out, r.stderr) == (0, f"layer:{layer}\n{SECRET}\n", "")


def test_a_session_applies_the_project_file_and_the_user_config(
    repo: Path, confinement: Confinement
) -> None:
    for kwargs, hidden, layer in _cases(repo):
        with Session(cwd=str(repo), audit=False, **kwargs) as s:
            r = s.run(confinement.shell(SCRIPT), capture_output=True, text=True)
        _check(r, confinement, hidden, layer)


def test_module_level_run_and_asyncio_resolve_the_same_way(
    repo: Path, confinement: Confinement
) -> None:
    for kwargs, hidden, layer in _cases(repo):
        r = ringfence.run(
            confinement.shell(SCRIPT), cwd=str(repo), capture_output=True, text=True, **kwargs
        )
        _check(r, confinement, hidden, layer)

    async def main() -> None:
        for kwargs, hidden, layer in _cases(repo):
            async with AsyncSession(cwd=str(repo), audit=False, **kwargs) as s:
                r = await s.run(confinement.shell(SCRIPT), capture_output=True, text=True)
            _check(r, confinement, hidden, layer)
        r = await ringfence.arun(
            confinement.shell(SCRIPT), workspace=repo, cwd=str(repo), capture_output=True,
            text=True,
        )  # fmt: skip
        _check(r, confinement, True, "user")

    asyncio.run(main())


def test_a_loosening_project_file_stops_the_session_before_anything_runs(repo: Path) -> None:
    project = repo / ".ringfence.toml"
    project.write_text('deny_read = ["creds.txt"]\nwritable_roots = ["/var/tmp"]\n')
    for kwargs, _, _ in _cases(repo)[:2]:
        with pytest.raises(ringfence.PolicyError) as e:
            Session(**kwargs)
        assert str(e.value).startswith(f"{project}:2: writable_roots: the project file comes")
    with Session(workspace=repo, config=False, audit=False) as s:  # not read: runs
        assert s.run(["true"]).returncode == 0
    with (
        pytest.raises(subprocess.CalledProcessError),
        Session(workspace=repo, config=False, audit=False) as s,
    ):
        s.run(["false"], check=True)
