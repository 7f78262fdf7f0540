"""Protected paths stay read-only inside writable roots; git still works."""

from __future__ import annotations

import os
import resource
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

GIT_ID = "-c user.email=t@example.invalid -c user.name=t"


def _chown_tree(root: Path, rf: Runner) -> None:
    for p in [root, *root.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


def _git_repo(path: Path, rf: Runner) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / ".git/hooks/pre-commit").write_text("#!/bin/sh\nexit 0\n")
    _chown_tree(path, rf)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def test_git_init_add_commit_in_the_workspace(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        f"git init -q . && echo a > a && git add a && git {GIT_ID} commit -qm one "
        f"&& echo b > b && git add b && git {GIT_ID} commit -qm two && git log --oneline | wc -l",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"
    log = subprocess.run(
        ["git", "-C", str(ws), "log", "--format=%s"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    assert log.stdout.split() == ["two", "one"] or "dubious ownership" in log.stderr


def test_existing_repo_commit_works_but_hooks_and_config_are_read_only(rf: Runner) -> None:
    ws = rf.mkdir()
    _git_repo(ws, rf)
    before_hooks = _tree(ws / ".git/hooks")
    before_config = (ws / ".git/config").read_bytes()
    script = f"""
    echo a > a && git add a && git {GIT_ID} commit -qm one && echo commit-ok
    echo 'exit 1' > .git/hooks/pre-commit 2>/dev/null && echo HOOK-WRITTEN
    echo evil > .git/hooks/post-checkout 2>/dev/null && echo HOOK-CREATED
    chmod +x .git/hooks/pre-commit.sample 2>/dev/null && echo HOOK-CHMOD
    rm .git/hooks/pre-commit 2>/dev/null && echo HOOK-REMOVED
    git config core.fsmonitor evil 2>/dev/null && echo CONFIG-WRITTEN
    echo '[core]' >> .git/config 2>/dev/null && echo CONFIG-APPENDED
    mv .git/hooks .git/h2 2>/dev/null && echo HOOKS-RENAMED
    mv .git .git-moved 2>/dev/null && echo GIT-RENAMED
    rm -rf .git 2>/dev/null; test -d .git/hooks && echo still-there
    """
    r = rf.confined_sh(ws, script)
    assert "commit-ok" in r.stdout, r.stderr
    for bad in (
        "HOOK-WRITTEN",
        "HOOK-CREATED",
        "HOOK-CHMOD",
        "HOOK-REMOVED",
        "CONFIG-WRITTEN",
        "CONFIG-APPENDED",
        "HOOKS-RENAMED",
        "GIT-RENAMED",
    ):
        assert bad not in r.stdout, r.stdout
    assert "still-there" in r.stdout
    assert _tree(ws / ".git/hooks") == before_hooks
    assert (ws / ".git/config").read_bytes() == before_config


def test_strict_git_makes_all_of_git_read_only(rf: Runner) -> None:
    ws = rf.mkdir()
    _git_repo(ws, rf)
    r = rf.confined_sh(
        ws,
        f"echo a > a && git add a 2>&1; git {GIT_ID} commit -qm x 2>&1; echo a > a2",
        "--strict-git",
    )
    assert "Read-only file system" in r.stdout or "Unable to create" in r.stdout
    assert (ws / "a2").exists()  # the rest of the workspace stays writable
    assert (
        subprocess.run(
            ["git", "-C", str(ws), "rev-parse", "HEAD"], capture_output=True, check=False
        ).returncode
        != 0
    )  # no commit was made


@pytest.mark.parametrize(
    "name", [".vscode", ".idea", ".devcontainer", ".codex", ".claude", ".agents"]
)
def test_existing_tool_config_dirs_are_read_only(rf: Runner, name: str) -> None:
    ws = rf.mkdir()
    (ws / name).mkdir()
    (ws / name / "settings.json").write_text("{}")
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws,
        f"echo x > {name}/tasks.json; echo y > {name}/settings.json; rm -rf {name}; "
        f"mv {name} moved; echo done",
    )
    assert r.stdout.strip() == "done"
    assert sorted(p.name for p in (ws / name).iterdir()) == ["settings.json"]
    assert (ws / name / "settings.json").read_text() == "{}"
    assert not (ws / "moved").exists()


@pytest.mark.parametrize("name", [".envrc", ".mcp.json", ".bashrc", ".profile", ".ringfence.toml"])
def test_existing_protected_files_are_read_only(rf: Runner, name: str) -> None:
    ws = rf.mkdir()
    (ws / name).write_text("# original\n")  # a comment: valid in every one of these formats
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws,
        f"echo evil > {name}; echo evil >> {name}; rm -f {name}; mv {name} x; "
        f"chmod 777 {name}; echo done",
    )
    assert r.stdout.strip() == "done"
    assert (ws / name).read_text() == "# original\n"
    assert not (ws / "x").exists()
    assert "Permission denied" in r.stderr  # the name guard answers first


def test_protect_flag_adds_a_path(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / "build").mkdir()
    (ws / "build" / "out").write_text("keep")
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws, "echo x > build/out; echo y > other; echo done", "--protect", str(ws / "build")
    )
    assert r.stdout.strip() == "done"
    assert (ws / "build/out").read_text() == "keep"
    assert (ws / "other").read_text() == "y\n"


def test_gitdir_pointer_file_is_followed(rf: Runner) -> None:
    """A worktree/submodule-style ``.git`` file: the gitdir it names is protected too."""
    ws, store = rf.mkdir(), rf.mkdir("gitstore-")
    subprocess.run(
        ["git", "init", "-q", "--separate-git-dir", str(store / "repo.git"), str(ws)], check=True
    )
    assert (ws / ".git").is_file()
    (store / "repo.git/hooks/pre-commit").write_text("#!/bin/sh\n")
    _chown_tree(ws, rf)
    _chown_tree(store, rf)
    config_before = (store / "repo.git/config").read_bytes()
    r = rf.confined_sh(
        ws,
        f"echo a > a && git add a && git {GIT_ID} commit -qm one && echo commit-ok; "
        f"echo evil > {store}/repo.git/hooks/pre-commit || echo hook-refused; "
        f"echo x >> {store}/repo.git/config || echo config-refused",
        "--writable",
        str(store),
    )
    assert "commit-ok" in r.stdout, r.stderr
    assert "hook-refused" in r.stdout and "config-refused" in r.stdout
    assert (store / "repo.git/hooks/pre-commit").read_text() == "#!/bin/sh\n"
    assert (store / "repo.git/config").read_bytes() == config_before


def test_submodule_gitdirs_are_protected(rf: Runner) -> None:
    ws = rf.mkdir()
    _git_repo(ws, rf)
    mod = ws / ".git/modules/lib"
    subprocess.run(["git", "init", "-q", "--bare", str(mod)], check=True)
    (mod / "hooks/post-checkout").write_text("#!/bin/sh\n")
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws,
        "echo evil > .git/modules/lib/hooks/post-checkout || echo refused-hook; "
        "echo x >> .git/modules/lib/config || echo refused-config",
    )
    assert "refused-hook" in r.stdout and "refused-config" in r.stdout
    assert (mod / "hooks/post-checkout").read_text() == "#!/bin/sh\n"


def test_symlinked_protected_name_protects_its_target(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / "real-vscode").mkdir()
    (ws / "real-vscode/tasks.json").write_text("{}")
    (ws / ".vscode").symlink_to("real-vscode")
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws, "echo evil > .vscode/tasks.json; echo evil > real-vscode/tasks.json; echo done"
    )
    assert r.stdout.strip() == "done"
    assert (ws / "real-vscode/tasks.json").read_text() == "{}"


def test_symlink_planted_by_an_earlier_run_cannot_widen_the_next(rf: Runner) -> None:
    ws, secret = rf.mkdir(), rf.mkdir("secretdir-")
    (secret / "precious").write_text("keep")
    _chown_tree(secret, rf)
    # run 1 plants a link inside the workspace pointing at a directory outside it
    r1 = rf.confined_sh(ws, f"ln -s {secret} build && echo planted")
    assert "planted" in r1.stdout
    # run 2: the user asks for build/ to be writable; ringfence refuses the planted link
    r2 = rf(
        "run",
        "--writable",
        str(ws / "build"),
        "--",
        "sh",
        "-c",
        f"echo pwned > {ws}/build/precious",
        cwd=ws,
    )
    assert r2.returncode == 2
    assert "symlink" in r2.stderr and str(ws) in r2.stderr
    assert (secret / "precious").read_text() == "keep"


def test_planted_symlink_as_protected_name_redirects_nothing(rf: Runner) -> None:
    """`.git/hooks` replaced (before the run) by a link into the workspace: the target is
    protected, and nothing is mounted through the link."""
    ws = rf.mkdir()
    _git_repo(ws, rf)
    hooks = ws / ".git/hooks"
    for p in hooks.iterdir():
        p.unlink()
    hooks.rmdir()
    (ws / "innocent").mkdir()
    hooks.symlink_to(ws / "innocent")
    _chown_tree(ws, rf)
    r = rf.confined_sh(
        ws, "echo evil > .git/hooks/pre-commit; echo evil > innocent/pre-push; echo done"
    )
    assert r.stdout.strip() == "done"
    assert list((ws / "innocent").iterdir()) == []


@pytest.mark.parametrize(
    "make",
    [
        "echo x > .envrc",
        "echo '{}' > .mcp.json",
        "mkdir -p .vscode && echo '{}' > .vscode/tasks.json",
        "mkdir .devcontainer",
        "ln -s /etc .claude",
        "echo x > sub/.envrc",
        "touch .bashrc",
        "ln -s .envrc decoy && echo x > decoy",
        "echo x > staged && mv staged .envrc",
        "echo x > staged && ln staged .envrc",
        "mkdir -p d/.vscode-staging && mv d/.vscode-staging .vscode",
    ],
)
def test_protected_names_that_do_not_exist_cannot_be_created(rf: Runner, make: str) -> None:
    ws = rf.mkdir()
    (ws / "sub").mkdir()
    _chown_tree(ws, rf)
    r = rf.confined_sh(ws, f"{make}; echo status=$?; echo ok > allowed.txt")
    assert "status=0" not in r.stdout, (r.stdout, r.stderr)
    assert "Permission denied" in r.stderr
    assert (ws / "allowed.txt").read_text() == "ok\n"  # the command really ran
    for name in (
        ".envrc",
        ".mcp.json",
        ".vscode",
        ".devcontainer",
        ".claude",
        "sub/.envrc",
        ".bashrc",
    ):
        assert not os.path.lexists(ws / name), name


def test_gitmodules_changes_only_by_checked_content(rf: Runner) -> None:
    """An existing .gitmodules is never written in place; a rename onto it (what
    `git config -f .gitmodules` does) is checked key by key; a new one is checked when the
    command has ended, and moved aside if it names anything but paths, URLs and branches."""
    ws = rf.mkdir()
    (ws / "old").mkdir()
    (ws / "old/.gitmodules").write_text('[submodule "a"]\n\tpath = a\n\turl = ../a\n')
    _chown_tree(ws, rf)
    nonce = secrets.token_hex(6)
    script = f"""
    cd old
    echo evil >> .gitmodules || echo refused-append
    chmod 600 .gitmodules || echo refused-chmod
    printf '[submodule "a"]\\n\\tpath = a\\n\\tupdate = !touch pwned\\n' > bad.lock
    mv bad.lock .gitmodules || echo refused-bad-rename
    printf '[submodule "a"]\\n\\tpath = a\\n\\turl = ../{nonce}\\n' > good.lock
    mv good.lock .gitmodules && echo good-rename
    cd ..
    mkdir new1 new2
    printf '[submodule "b"]\\n\\tpath = b\\n\\turl = ../{nonce}\\n' > new1/.gitmodules
    printf '[submodule "b"]\\n\\tpath = b\\n\\turl = ext::sh -c x\\n' > new2/.gitmodules
    echo done
    """
    r = rf.confined_sh(ws, script)
    for expected in ("refused-append", "refused-chmod", "refused-bad-rename", "good-rename"):
        assert expected in r.stdout, (expected, r.stdout, r.stderr)
    assert f"url = ../{nonce}" in (ws / "old/.gitmodules").read_text()
    assert "pwned" not in (ws / "old/.gitmodules").read_text()
    assert f"url = ../{nonce}" in (ws / "new1/.gitmodules").read_text()  # checked, kept
    assert not (ws / "new2/.gitmodules").exists()  # checked, moved aside
    assert "ext::" in (ws / "new2/.gitmodules.ringfence-refused").read_text()
    assert "new2/.gitmodules" in r.stderr and "submodule.b.url" in r.stderr


def test_missing_hooks_dir_of_an_existing_repo_cannot_be_created(rf: Runner) -> None:
    ws = rf.mkdir()
    _git_repo(ws, rf)
    for p in (ws / ".git/hooks").iterdir():
        p.unlink()
    (ws / ".git/hooks").rmdir()
    r = rf.confined_sh(
        ws, "mkdir -p .git/hooks && echo evil > .git/hooks/pre-commit; echo status=$?"
    )
    assert "status=0" not in r.stdout
    assert not (ws / ".git/hooks").exists()


def test_nested_repository_is_protected_too(rf: Runner) -> None:
    ws = rf.mkdir()
    nested = ws / "vendor/lib"
    nested.mkdir(parents=True)
    _git_repo(nested, rf)
    _chown_tree(ws, rf)
    config = (nested / ".git/config").read_bytes()
    hook = (nested / ".git/hooks/pre-commit").read_bytes()
    script = f"""
    cd vendor/lib
    echo a > a && git add a && git {GIT_ID} commit -qm one && echo commit-ok
    echo evil > .git/hooks/pre-commit || echo refused-hook-write
    python3 -c "open('.git/hooks/pre-commit', 'r+').write('evil')" 2>/dev/null || echo refused-rplus
    echo evil > .git/hooks/post-merge || echo refused-hook-create
    git config core.fsmonitor evil 2>/dev/null || echo refused-config
    mv .git/hooks/pre-commit.sample .git/hooks/pre-push 2>/dev/null || echo refused-rename-in
    mv .git .git-away 2>/dev/null || echo refused-move-away
    rm -rf .git 2>/dev/null; test -d .git && echo repo-still-there
    """
    r = rf.confined_sh(ws, script)
    for expected in (
        "commit-ok",
        "refused-hook-write",
        "refused-rplus",
        "refused-hook-create",
        "refused-config",
        "refused-rename-in",
        "refused-move-away",
        "repo-still-there",
    ):
        assert expected in r.stdout, (expected, r.stdout, r.stderr)
    assert (nested / ".git/config").read_bytes() == config
    assert (nested / ".git/hooks/pre-commit").read_bytes() == hook
    assert not (nested / ".git/hooks/pre-push").exists()


def test_existing_gitdir_pointer_cannot_be_redirected(rf: Runner) -> None:
    ws, store = rf.mkdir(), rf.mkdir("gitstore-")
    wt = ws / "wt"
    wt.mkdir()
    subprocess.run(
        ["git", "init", "-q", "--separate-git-dir", str(store / "r.git"), str(wt)], check=True
    )
    _chown_tree(ws, rf)
    _chown_tree(store, rf)
    pointer = (wt / ".git").read_text()
    r = rf.confined_sh(
        ws,
        "mkdir -p evil/hooks; echo 'gitdir: ../evil' > wt/.git || echo refused-rewrite; "
        "rm -f wt/.git || echo refused-remove; "
        "echo 'gitdir: ../evil' > p && mv p wt/.git || echo refused-replace",
    )
    for expected in ("refused-rewrite", "refused-remove", "refused-replace"):
        assert expected in r.stdout, (expected, r.stdout, r.stderr)
    assert (wt / ".git").read_text() == pointer


def test_a_new_repository_created_in_the_run_is_the_commands_own(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        f"git init -q fresh && cd fresh && git config user.name t && echo a > a && "
        f"git add a && git {GIT_ID} commit -qm one && echo ok",
    )
    assert r.stdout.strip() == "ok", r.stderr
    assert (ws / "fresh/.git/hooks").is_dir()
    # the next run treats it as an existing repository
    r = rf.confined_sh(ws, "echo evil > fresh/.git/hooks/pre-commit || echo refused")
    assert "refused" in r.stdout


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out.extend(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return out


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # gone (a sleep of the waiting loop)


def test_the_command_cannot_stop_its_guard_and_a_dead_guard_fails_closed(rf: Runner) -> None:
    """The guard is pid 2 of the command's pid namespace, in a Landlock domain outside the
    command's: the command's kill and stop fail (EPERM). Killed from outside (here, by the
    test), every guarded call fails: closed, not open."""
    ws = rf.mkdir()
    script = (
        "kill -9 2 2>/dev/null || echo kill-refused; kill -STOP 2 2>/dev/null || echo "
        "stop-refused; touch ready; while [ ! -e go ]; do sleep 0.05; done; "
        "echo x > .envrc; echo envrc=$?; echo y > plain.txt; echo plain=$?"
    )
    p = rf.popen("run", "--", "sh", "-c", script, cwd=ws)
    try:
        deadline = time.monotonic() + 30
        while not (ws / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # the command (sh) and its guard are the children of the command's init (another
        # init, prepared for the next command, has a guard of its own)
        procs = _descendants(p.pid)
        shells = [q for q in procs if _comm(q) == "sh"]
        # the waiting loop's fork for `sleep` is also "sh" until it execs: not the command
        shell = [q for q in shells if _ppid(q) not in shells]
        assert len(shell) == 1, (shells, shell)
        init = int(Path(f"/proc/{shell[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
        kids = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        guards = [int(q) for q in kids if int(q) != shell[0]]
        assert len(guards) == 1, guards
        os.kill(guards[0], signal.SIGKILL)
        (ws / "go").touch()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "kill-refused" in out and "stop-refused" in out, (out, err)
    assert "envrc=0" not in out and "envrc=" in out
    assert "plain=0" not in out  # every guarded call now fails
    assert not (ws / ".envrc").exists()


def test_nested_hook_cannot_be_disarmed_by_chmod_or_truncate(rf: Runner) -> None:
    """A secret-scanning pre-commit hook in a nested repository stays as it is."""
    ws = rf.mkdir()
    nested = ws / "lib"
    nested.mkdir()
    _git_repo(nested, rf)
    hook = nested / ".git/hooks/pre-commit"
    hook.chmod(0o755)
    script = """
    cd lib
    chmod -x .git/hooks/pre-commit || echo refused-chmod
    truncate -s 0 .git/hooks/pre-commit || echo refused-truncate
    python3 -c "
import os
fd = os.open('.git/hooks/pre-commit', os.O_RDONLY)
try:
    os.fchmod(fd, 0o644)
except PermissionError:
    print('refused-fchmod')
"
    echo data > mine && chmod 600 mine && truncate -s 2 mine && stat -c '%a %s' mine
    """
    r = rf.confined_sh(ws, script)
    for expected in ("refused-chmod", "refused-truncate", "refused-fchmod", "600 2"):
        assert expected in r.stdout, (expected, r.stdout, r.stderr)
    assert hook.stat().st_mode & 0o777 == 0o755
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"


# The same probes with the name guard switched off: the read-only mounts alone must hold.
_MOUNTS_ONLY = """
import dataclasses, os, sys
from ringfence.platforms.linux import hostfacts, landlock
from ringfence.platforms.linux.plan import compile_linux
from ringfence.policy.model import Policy
from ringfence import process

ws = sys.argv[1]
policy = Policy(workspace=ws).validate()
facts = hostfacts.gather(policy, env=os.environ, landlock_abi=landlock.abi_version())
plan = compile_linux(policy, facts, cwd=ws)
plan = dataclasses.replace(
    plan, guard_names=(), guard_paths=(), guard_git="off", socket_roots=()
)
assert not plan.guard_enabled
out = process.run_sandboxed(plan, ["sh", "-c", sys.argv[2]], timeout=60)
sys.exit(out.returncode)
"""


def test_read_only_mounts_hold_without_the_guard(rf: Runner) -> None:
    import subprocess as sp

    ws = rf.mkdir()
    _git_repo(ws, rf)
    (ws / ".envrc").write_text("original\n")
    (ws / ".vscode").mkdir()
    _chown_tree(ws, rf)
    hook = (ws / ".git/hooks/pre-commit").read_text()
    probe = (
        "echo evil > .envrc; chmod 777 .envrc; echo evil > .git/hooks/pre-commit; "
        "echo x >> .git/config; touch .vscode/tasks.json; mv .git .g2; mv .envrc e2; "
        "echo unprotected > .newname && echo created-new-name"
    )
    r = sp.run(
        [rf.python, "-c", _MOUNTS_ONLY, str(ws), probe],
        env=rf.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert "created-new-name" in r.stdout, r.stderr  # the command ran, unguarded
    assert r.stderr.count("Read-only file system") >= 4, r.stderr
    assert r.stderr.count("Device or resource busy") == 2, r.stderr
    assert (ws / ".envrc").read_text() == "original\n"
    assert (ws / ".envrc").stat().st_mode & 0o777 != 0o777
    assert (ws / ".git/hooks/pre-commit").read_text() == hook
    assert not (ws / ".vscode/tasks.json").exists()


_SWAP_AFTER_COMPILE = """
import os, shutil, sys
from ringfence.platforms.linux import hostfacts, landlock
from ringfence.platforms.linux.plan import compile_linux
from ringfence.policy.model import Policy
from ringfence import process

ws, target = sys.argv[1], sys.argv[2]
policy = Policy(workspace=ws).validate()
facts = hostfacts.gather(policy, env=os.environ, landlock_abi=landlock.abi_version())
plan = compile_linux(policy, facts, cwd=ws)
# Between compile and mount, .git/hooks becomes a symlink to a directory outside.
shutil.rmtree(os.path.join(ws, ".git/hooks"))
os.symlink(target, os.path.join(ws, ".git/hooks"))
out = process.run_sandboxed(plan, ["sh", "-c", "echo RAN"], timeout=60)
print(out.returncode, out.message)
"""


def test_a_symlink_swapped_in_after_compile_aborts_the_run(rf: Runner) -> None:
    import subprocess as sp

    ws, outside = rf.mkdir(), rf.mkdir("outside-")
    _git_repo(ws, rf)
    r = sp.run(
        [rf.python, "-c", _SWAP_AFTER_COMPILE, str(ws), str(outside)],
        env=rf.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert r.stdout.startswith("125 "), (r.stdout, r.stderr)
    assert "symlink appeared" in r.stdout
    assert "RAN" not in r.stdout
    assert list(outside.iterdir()) == []


def test_a_link_inside_one_writable_root_cannot_widen_another(rf: Runner) -> None:
    ws, extra, secret = rf.mkdir(), rf.mkdir("extra-"), rf.mkdir("secretdir-")
    (extra / "cache").symlink_to(secret)
    os.lchown(extra / "cache", rf.uid, rf.gid)
    r = rf(
        "run",
        "--writable",
        str(extra),
        "--writable",
        str(extra / "cache"),
        "--",
        "sh",
        "-c",
        f"echo pwned > {extra}/cache/x",
        cwd=ws,
    )
    assert r.returncode == 2 and "symlink" in r.stderr
    assert list(secret.iterdir()) == []


def test_a_git_directory_the_guard_cannot_see_into_is_refused(rf: Runner) -> None:
    """chmod 000 on .git hides HEAD from the guard (it holds no DAC override, even for root):
    it then refuses what it cannot judge instead of guessing "not a repository"."""
    ws = rf.mkdir()
    _git_repo(ws, rf)
    r = rf.confined_sh(
        ws,
        "mkdir -p .git/info; cd .git/info && chmod 000 ../../.git && "
        "{ echo '* filter=x' > attributes || echo refused; }; chmod 755 ../../.git; echo ran",
    )
    assert "refused" in r.stdout and "ran" in r.stdout, (r.stdout, r.stderr)
    assert not (ws / ".git/info/attributes").exists()
    assert "cannot tell whether it is in a git directory" in r.stderr


def test_the_guard_needs_no_source_it_cannot_see(tmp_path: Path) -> None:
    """ringfence installed under the host's /tmp (a CI checkout) is invisible inside the
    sandbox, whose /tmp is its own: the guard must have loaded everything it may need (the
    config parser, ...) before it starts."""
    import shutil
    import sys

    src = Path(tempfile.mkdtemp(prefix="ringfence-src-in-tmp-", dir="/tmp"))
    try:
        shutil.copytree(
            Path(__file__).resolve().parents[2] / "src" / "ringfence", src / "ringfence"
        )
        ws = Path(tempfile.mkdtemp(prefix="ringfence-ws-", dir="/var/tmp"))
        try:
            env = {**os.environ, "PYTHONPATH": str(src)}
            script = (
                "git init -q r && git -C r config core.pager x; "
                "mkdir -p r/.git/sequencer && printf '[options]\\n\\tstrategy = x\\n' > "
                "r/.git/sequencer/opts; echo '[x' > .gitmodules; echo done"
            )
            r = subprocess.run(
                [sys.executable, "-P", "-m", "ringfence", "run", "--", "sh", "-c", script],
                cwd=ws, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert "done" in r.stdout, r.stderr
            assert "name guard failed" not in r.stderr, r.stderr
            assert "core.pager" in r.stderr and "merge strategy" in r.stderr, r.stderr
            assert (ws / ".gitmodules.ringfence-refused").exists()
        finally:
            shutil.rmtree(ws, ignore_errors=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def test_a_protected_name_reached_by_a_chain_of_links_keeps_every_hop(rf: Runner) -> None:
    """.envrc -> envrc.link -> cfg/envrc: the target is read-only and the link in the middle
    cannot be replaced to re-point the protected name."""
    ws = rf.mkdir()
    (ws / "cfg").mkdir()
    (ws / "cfg" / "envrc").write_text("export A=1\n")
    (ws / "envrc.link").symlink_to("cfg/envrc")
    (ws / ".envrc").symlink_to("envrc.link")
    for p in [ws / "cfg", ws / "cfg" / "envrc", ws / "envrc.link", ws / ".envrc"]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    r = rf.confined_sh(
        ws,
        "echo evil >> cfg/envrc 2>/dev/null || echo refused; "
        "rm envrc.link 2>/dev/null && echo evil > envrc.link || echo refused",
    )
    assert r.stdout.split() == ["refused", "refused"], (r.stdout, r.stderr)
    assert (ws / ".envrc").read_text() == "export A=1\n"


def test_a_thousand_protected_paths_under_the_usual_fd_limit(rf: Runner) -> None:
    """Building the view holds one descriptor per bind until it is attached: 1,100 protected
    files need more than the common soft limit of 1,024. The runner raises its soft limit
    while it builds (and puts it back: the command sees the caller's), every file stays
    read-only, and writing next to them works."""
    ws = rf.mkdir()
    names = [f"p{i:04d}" for i in range(1100)]
    for n in names:
        (ws / n).write_text("keep\n")
        os.chown(ws / n, rf.uid, rf.gid)
    flags = [f for n in names for f in ("--protect", str(ws / n))]
    script = (
        'ulimit -Sn; for f in p0000 p0549 p1099; do echo x > "$f" 2>/dev/null && echo "WROTE $f"; '
        f"done; echo {rf.nonce} > free"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        r = rf.confined_sh(ws, script, *flags)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(min(1024, hard))], r.stdout
    assert all((ws / n).read_text() == "keep\n" for n in ("p0000", "p0549", "p1099"))
    assert (ws / "free").read_text().strip() == rf.nonce
