"""Every snippet in README.md and docs/ does what the page says (see docsnippets.py).

Python and shell blocks run for real, in a fresh directory with a throwaway HOME, with this
tree's ``ringfence`` first on PATH; config blocks are read the way ringfence (or the MCP client
the page is about) reads them. A block that cannot run here says why, next to the block.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from docsnippets import PARSE_LANGS, ROOT, RUN_LANGS, TEXT_LANGS, Block, all_blocks

from ringfence.cli.parser import build_parser

pytestmark = pytest.mark.sandbox

BLOCKS = all_blocks()
BIN = Path(sys.executable).parent


def _id(b: Block) -> str:
    return b.name


def test_every_block_says_how_it_is_checked() -> None:
    """A new block must be runnable, parseable, or plainly text; a skip must say why."""
    unknown = [b.name for b in BLOCKS if b.lang not in (*RUN_LANGS, *PARSE_LANGS, *TEXT_LANGS)]
    assert unknown == [], "label these blocks python, sh, json, toml or text"
    reasonless = [b.name for b in BLOCKS if "skip" in b.marks and not b.marks["skip"]]
    assert reasonless == []


@pytest.fixture
def place() -> Iterator[tuple[Path, dict[str, str]]]:
    """A project directory and an environment: a throwaway HOME, this tree's ringfence, a
    private directory for session sockets. Under /var/tmp, not /tmp: inside a sandbox /tmp is
    the workspace's own writable layer, so a home there would not be read-only as a real one
    is."""
    base = Path(tempfile.mkdtemp(prefix="ringfence-docs-", dir="/var/tmp"))
    home = base / "home"
    project = base / "project"
    sessions = base / "sessions"
    home.mkdir()
    project.mkdir()
    sessions.mkdir(mode=0o700)
    (project / "README.md").write_text("a project for the docs' snippets\n")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "RINGFENCE_SESSION_DIR": str(sessions),
    }
    try:
        yield project, env
    finally:
        for sock in sessions.glob("*.sock"):  # a block that failed half-way leaves its server
            subprocess.run(
                [str(BIN / "ringfence"), "session", "stop", "--name", sock.stem],
                env=env, capture_output=True, timeout=30, check=False,
            )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _installed_steps_removed(script: str) -> str:
    """``pip install .`` / ``pip install '.[mcp]'`` / ``pipx install .``: this test runs from
    the installation they make, so check that one instead of installing again."""
    import importlib.metadata

    assert importlib.metadata.version("ringfence")
    script = re.sub(
        r"(?:pipx?|python3? -m pip) install [^&\n;]+?(?:&&\s*|$)", "", script, flags=re.M
    )
    return script


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in RUN_LANGS], ids=_id)
def test_code_blocks_run(block: Block, place: tuple[Path, dict[str, str]]) -> None:
    if "skip" in block.marks:
        pytest.skip(f"{block.name}: {block.marks['skip']}")
    project, env = place
    if "synopsis" in block.marks:
        _check_synopsis(block, env)
        return
    text = block.text
    if "installed" in block.marks:
        text = _installed_steps_removed(text)
    if block.lang == "python":
        argv = [sys.executable, "-c", text]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", text]
    r = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    want = int(block.marks.get("exit", "0"))
    assert r.returncode == want, f"{block.name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def _check_synopsis(block: Block, env: dict[str, str]) -> None:
    """Each ``ringfence ...`` form on a line: its subcommand's --help works and names every
    flag the line uses; a ``python SCRIPT`` line: the script's --help does."""
    for raw in block.text.splitlines():
        line = raw.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line.replace("|", " "))
        starts = [i for i, w in enumerate(words) if w == "ringfence" and i + 1 < len(words)]
        starts = [i for i in starts if re.fullmatch(r"[a-z]+", words[i + 1])]
        if starts:
            words = words[starts[-1] :]
            sub = [w for w in words[1:3] if re.fullmatch(r"[a-z]+", w)]
            cmd = [str(BIN / "ringfence"), *sub[:1]]
            if sub[:1] in (["session"], ["config"]) and len(sub) > 1:
                cmd.append(sub[1])
        elif len(words) > 1 and words[1].endswith(".py"):
            cmd = [sys.executable, str(ROOT / words[1])]
        else:
            continue
        r = subprocess.run(
            [*cmd, "--help"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert r.returncode == 0, f"{block.name}: {' '.join(cmd)} --help: {r.stderr}"
        flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(words))
        missing = [f for f in flags if f not in r.stdout]
        assert missing == [], f"{block.name}: `{line}` uses flags its --help does not know"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in PARSE_LANGS], ids=_id)
def test_config_blocks_are_read_as_their_reader_reads_them(block: Block, tmp_path: Path) -> None:
    data = json.loads(block.text) if block.lang == "json" else tomllib.loads(block.text)
    servers = data.get("mcpServers") or data.get("servers") or data.get("mcp_servers")
    if servers is not None:  # an MCP client's configuration: the command line must parse
        entry = servers["ringfence"]
        assert entry["command"] == "ringfence"
        build_parser(entry["args"][0]).parse_args(
            [a.replace("${workspaceFolder}", ".") for a in entry["args"]]
        )
        return
    if block.lang == "json":  # a sample of what ringfence writes: the keys the code writes
        if "outcome" in data and "version" in data:
            from ringfence.engine.result import RunResult

            assert set(data) == set(RunResult(0).to_dict()), f"{block.name}: record keys"
        return
    if "[[rule]]" in block.text:
        from ringfence.approval.rules import parse

        assert parse(block.text, block.name).rules
        return
    from ringfence.policy import config

    path = tmp_path / "config.toml"
    path.write_text(block.text)
    settings = config.Settings()
    xdg = {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    (tmp_path / "ringfence").mkdir()
    (tmp_path / "ringfence" / "config.toml").write_text(block.text)
    is_managed = any(k in data for k in ("forbid_modes", "max_network", "require_approval"))
    if is_managed:
        config.load_ceiling(str(path))
    else:
        config.load_user(settings, xdg, None)
        assert settings.values, f"{block.name}: nothing was read"
    assert os.path.exists(path)
