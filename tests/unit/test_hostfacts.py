"""What the compiler learns about the host: gitdir pointers, submodules, symlinked names.

These touch only throwaway directories under pytest's tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

from ringfence.platforms.linux import hostfacts
from ringfence.policy import paths
from ringfence.policy.model import Policy


def _gather(ws: Path, **kw: object) -> hostfacts.HostFacts:
    policy = Policy(workspace=str(ws), **kw).validate()  # type: ignore[arg-type]
    return hostfacts.gather(policy, env={"HOME": str(ws / "home")}, landlock_abi=6)


def test_gitdir_pointer_and_commondir_are_resolved(tmp_path: Path) -> None:
    ws, main = tmp_path / "wt", tmp_path / "main"
    (main / ".git/worktrees/wt").mkdir(parents=True)
    (main / ".git/worktrees/wt/commondir").write_text("../..\n")
    ws.mkdir()
    (ws / ".git").write_text(f"gitdir: {main}/.git/worktrees/wt\n")
    facts = _gather(ws)
    gd = str(main / ".git/worktrees/wt")
    assert facts.gitdirs == {str(ws / ".git"): gd}
    assert facts.commondirs == {gd: str(main / ".git")}


def test_relative_gitdir_and_garbage(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (tmp_path / "store/repo.git").mkdir(parents=True)
    ws.mkdir()
    (ws / ".git").write_text("gitdir: ../store/repo.git")
    assert _gather(ws).gitdirs == {str(ws / ".git"): str(tmp_path / "store/repo.git")}
    (ws / ".git").write_text("not a pointer")
    assert _gather(ws).gitdirs == {}
    (ws / ".git").write_text("")
    assert _gather(ws).gitdirs == {}


def test_submodule_listing_is_bounded_and_finds_nested_names(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for mod in ("a", "group/b", "a/modules/inner"):
        d = ws / ".git/modules" / mod
        d.mkdir(parents=True)
        (d / "HEAD").write_text("ref: refs/heads/main\n")
    found = _gather(ws).modules[str(ws / ".git")]
    assert set(found) == {str(ws / ".git/modules" / m) for m in ("a", "group/b", "a/modules/inner")}
    for i in range(hostfacts.MAX_MODULES + 10):
        d = ws / f".git/modules/many{i:04d}"
        d.mkdir()
        (d / "HEAD").write_text("x")
    assert len(_gather(ws).modules[str(ws / ".git")]) == hostfacts.MAX_MODULES


def test_symlinked_protected_name_records_its_target(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "real").mkdir(parents=True)
    (ws / ".vscode").symlink_to("real")
    info = _gather(ws).info(str(ws / ".vscode"))
    assert info is not None and info.kind == "symlink" and info.real == str(ws / "real")
    assert _gather(ws).info(str(ws / "real")) == hostfacts.PathInfo("dir", str(ws / "real"))


def test_symlinks_on_path(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert paths.symlinks_on_path(str(tmp_path / "link/b")) == [str(tmp_path / "link")]
    assert paths.symlinks_on_path(str(tmp_path / "a/b")) == [
        p for p in paths.symlinks_on_path(str(tmp_path)) if os.path.islink(p)
    ]


def test_hooks_path_directories_are_found_for_the_repo_and_its_submodules(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".git/modules/sub").mkdir(parents=True)
    (ws / ".git/config").write_text("[core]\n\thooksPath = .husky\n")
    (ws / ".git/modules/sub/HEAD").write_text("ref: refs/heads/main\n")
    (ws / ".git/modules/sub/config").write_text(
        "[core]\n\tworktree = ../../../sub\n\thooksPath = hooks-dir\n"
    )
    (ws / ".husky").mkdir()
    facts = _gather(ws)
    assert facts.hooks_paths[str(ws / ".git")] == str(ws / ".husky")
    assert facts.hooks_paths[str(ws / ".git/modules/sub")] == str(ws / "sub/hooks-dir")
    assert facts.info(str(ws / ".husky")) is not None  # the plan can mount it read-only


def test_included_configs_and_a_relative_global_hooks_path_are_found(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "ws" / "home"
    (ws / ".git").mkdir(parents=True)
    home.mkdir()
    (ws / ".git/config").write_text("[include]\n\tpath = ../extra.cfg\n")
    (ws / "extra.cfg").write_text('[includeIf "gitdir:x"]\n\tpath = more.cfg\n')
    (home / ".gitconfig").write_text("[core]\n\thooksPath = .githooks\n")
    facts = hostfacts.gather(
        Policy(workspace=str(ws)).validate(),
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / "nope")},
        landlock_abi=6,
    )
    assert str(ws / "extra.cfg") in facts.git_includes
    assert str(ws / "more.cfg") in facts.git_includes  # nested, relative to its includer
    assert facts.global_hooks_path == ".githooks"
    assert facts.hooks_paths[str(ws / ".git")] == str(ws / ".githooks")


def test_mixed_config_files_are_read_and_scrubbed(tmp_path: Path) -> None:
    ws, home = tmp_path, tmp_path / "home"
    (home / "dotfiles").mkdir(parents=True)
    (home / "dotfiles/npmrc").write_text("registry=https://r.example/\n_authToken=SEKRET\n")
    (home / "dotfiles/npmrc").chmod(0o640)
    (home / ".npmrc").symlink_to("dotfiles/npmrc")
    (home / ".docker").mkdir()
    (home / ".docker/config.json").write_text("{not json")
    (home / ".pypirc").mkdir()  # a directory is not a file to scrub
    facts = _gather(ws)
    npmrc = facts.scrub_files[str(home / ".npmrc")]
    assert npmrc.real == str(home / "dotfiles/npmrc")
    assert npmrc.content == b"registry=https://r.example/\n" and npmrc.removed == ("_authToken",)
    assert npmrc.mode == 0o440
    assert facts.info(npmrc.real) is not None
    docker = facts.scrub_files[str(home / ".docker/config.json")]
    assert docker.content is None and docker.error and "not JSON" in docker.error
    assert str(home / ".pypirc") not in facts.scrub_files
    assert _gather(ws, default_deny_read=False).scrub_files == {}
