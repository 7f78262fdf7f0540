"""The view is exactly the policy wherever its paths lie, and workspaces do not meet.

Host /tmp is readable inside (the harness's scripts and venvs are there), writes land in a
per-workspace layer that the workspace's later commands see and nobody else does; paths the
policy names under /tmp get their treatment; the user's /tmp secrets and ringfence's own state
are hidden; tool caches are per workspace; $HOME is never a workspace by default.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


@pytest.fixture
def host_tmp(rf: Runner) -> Iterator[Path]:
    """A directory in the host's real /tmp, owned by the runner's user, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-hosttmp-", dir="/tmp"))
    d.chmod(0o755)
    os.chown(d, rf.uid, rf.gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _own(rf: Runner, path: Path) -> None:
    os.chown(path, rf.uid, rf.gid)


def test_host_tmp_is_readable_writes_stay_in_the_workspace_layer(
    rf: Runner, host_tmp: Path
) -> None:
    nonce = secrets.token_hex(8)
    script = host_tmp / "tool.sh"
    script.write_text(f"#!/bin/sh\necho tool-{nonce}\n")
    script.chmod(0o755)
    _own(rf, script)
    ws, other = rf.mkdir(), rf.mkdir()
    mark = f"ringfence-layer-{nonce}"
    r = rf.confined_sh(
        ws, f"{script} && echo inside-{nonce} > /tmp/{mark} && echo {nonce} > {script}"
    )
    assert r.returncode == 0, r.stderr
    assert f"tool-{nonce}" in r.stdout  # a script the harness left in host /tmp runs
    assert not Path("/tmp", mark).exists()  # the host's /tmp is untouched
    assert script.read_text().startswith("#!/bin/sh")
    # The same workspace's next command sees its layer; another workspace does not.
    r = rf.confined_sh(ws, f"cat /tmp/{mark}; cat {script}")
    assert f"inside-{nonce}" in r.stdout and r.stdout.count(nonce) == 2, r.stdout
    r = rf.confined_sh(other, f"cat /tmp/{mark} 2>&1; cat {script}")
    assert "No such file" in r.stdout and f"tool-{nonce}" in r.stdout, r.stdout
    # ringfence clean removes the layer.
    r = rf("clean", "--workspace", str(ws))
    assert r.returncode == 0 and "removed" in r.stdout, r.stderr
    r = rf.confined_sh(ws, f"cat /tmp/{mark} 2>&1")
    assert "No such file" in r.stdout


def test_paths_under_host_tmp_get_their_policy(rf: Runner, host_tmp: Path) -> None:
    nonce = secrets.token_hex(8)
    ws = host_tmp / "ws"
    ws.mkdir()
    _own(rf, ws)
    (ws / "creds.txt").write_text(f"secret-{nonce}\n")
    (ws / "notes.txt").write_text(f"notes-{nonce}\n")
    for f in ("creds.txt", "notes.txt"):
        _own(rf, ws / f)
    r = rf.confined_sh(
        ws,
        f"cat creds.txt; cat notes.txt; echo w-{nonce} > out.txt",
        "--deny-read",
        str(ws / "creds.txt"),
    )
    assert f"secret-{nonce}" not in r.stdout + r.stderr
    assert "Permission denied" in r.stderr
    assert f"notes-{nonce}" in r.stdout
    assert (ws / "out.txt").read_text() == f"w-{nonce}\n"  # the workspace is the host's
    # Read-only from a /tmp directory: it starts there and cannot write there.
    r = rf.confined(ws, ["sh", "-c", "pwd; echo x > ro.txt"], "--mode", "read-only")
    assert r.stdout.strip() == str(ws), r.stderr
    assert "Read-only file system" in r.stderr and not (ws / "ro.txt").exists()


def test_host_sockets_and_secrets_in_tmp_stay_out_of_reach(rf: Runner) -> None:
    nonce = secrets.token_hex(6)
    krb = Path(f"/tmp/krb5cc_rftest{nonce}")
    agent = Path(f"/tmp/ssh-rftest{nonce}")
    sock_path = f"/tmp/ringfence-sock-{nonce}"
    server = socket.socket(socket.AF_UNIX)
    try:
        krb.write_text(f"ticket-{nonce}\n")
        _own(rf, krb)
        agent.mkdir()
        (agent / "agent.1").write_text(f"agent-{nonce}\n")
        for p in (agent, agent / "agent.1"):
            _own(rf, p)
        server.bind(sock_path)
        os.chmod(sock_path, 0o777)
        server.listen()
        ws = rf.mkdir()
        probe = (
            "import socket,sys\n"
            f"for p in ({str(krb)!r}, {str(agent / 'agent.1')!r}):\n"
            "    try: print(open(p).read().strip())\n"
            "    except OSError as e: print('hidden', e.errno)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"try: s.connect({sock_path!r}); print('connected')\n"
            "except OSError as e: print('refused', e.errno)\n"
        )
        r = rf.confined(ws, ["python3", "-c", probe])
        assert r.returncode == 0, r.stderr
        assert nonce not in r.stdout, r.stdout
        assert r.stdout.count("hidden") == 2 and "refused" in r.stdout, r.stdout
    finally:
        server.close()
        krb.unlink(missing_ok=True)
        shutil.rmtree(agent, ignore_errors=True)
        Path(sock_path).unlink(missing_ok=True)


def test_ringfence_state_is_hidden_and_caches_are_per_workspace(rf: Runner) -> None:
    nonce = secrets.token_hex(8)
    a, b = rf.mkdir(), rf.mkdir()
    cache_vars = (
        "PIP_CACHE_DIR",
        "UV_CACHE_DIR",
        "npm_config_cache",
        "YARN_CACHE_FOLDER",
        "CARGO_HOME",
        "GOMODCACHE",
        "GOCACHE",
        "GRADLE_USER_HOME",
    )
    plant = "; ".join(
        f'mkdir -p "${v}" && echo {nonce} > "${v}/planted-{v}" && echo "${v}"' for v in cache_vars
    )
    plant += (
        '; mkdir -p "$GRADLE_USER_HOME/init.d"'
        f' && echo {nonce} > "$GRADLE_USER_HOME/init.d/x.gradle"'
        f'; printf \'[build]\\nrustc-wrapper = "/bin/{nonce}"\\n\' > "$CARGO_HOME/config.toml"'
    )
    r = rf.confined_sh(a, plant)
    assert r.returncode == 0, r.stderr
    dirs_a = r.stdout.split()
    assert len(dirs_a) == len(cache_vars) and all(Path(d).is_dir() for d in dirs_a)
    look = "; ".join(f'ls -A "${v}" 2>/dev/null; echo "${v}"' for v in cache_vars)
    cache_base = Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence"
    state = Path(rf.env()["XDG_STATE_HOME"]) / "ringfence"
    audit = state / "audit.jsonl"
    assert audit.exists()  # A's run was recorded, argv and all
    look += f"; grep -r {nonce} {cache_base} 2>&1; cat {audit} 2>&1 | head -3; echo end"
    r = rf.confined_sh(b, look)
    assert r.returncode == 0, r.stderr
    assert f"{audit}: Permission denied" in r.stdout or f"{audit}: No such file" in r.stdout
    assert nonce not in r.stdout, r.stdout  # nothing of A's, and A's state is out of sight
    assert not set(dirs_a) & set(r.stdout.split())
    assert "Permission denied" in r.stdout  # ringfence's own state: hidden
    if shutil.which("cargo"):
        (b / "Cargo.toml").write_text('[package]\nname = "p"\nversion = "0.1.0"\n')
        (b / "src").mkdir()
        (b / "src" / "main.rs").write_text("fn main() {}\n")
        for p in (b / "Cargo.toml", b / "src", b / "src" / "main.rs"):
            _own(rf, p)
        r = rf.confined_sh(b, "cargo build --offline -q 2>&1; echo status=$?")
        assert nonce not in r.stdout, r.stdout  # A's rustc-wrapper is not B's


def test_home_is_not_a_workspace_by_default(rf: Runner) -> None:
    home = rf.mkdir("home-")
    nonce = secrets.token_hex(6)
    env = {"HOME": str(home)}
    r = rf("run", "--", "true", cwd=home, env=env)
    assert r.returncode == 2 and "pass --workspace explicitly" in r.stderr, r.stderr
    r = rf("run", "--", "true", cwd="/", env=env)
    assert r.returncode == 2 and "root directory" in r.stderr, r.stderr
    # Named explicitly it runs, and what runs later with the user's rights stays read-only.
    writes = (
        ".config/systemd/user/x.service",
        ".local/bin/git",
        ".pam_environment",
        "bin/ls",
        ".config/autostart/x.desktop",
        ".ssh/authorized_keys",
    )
    script = "; ".join(
        f'mkdir -p "$(dirname {w})" 2>/dev/null; echo {nonce} > {w} 2>/dev/null || echo refused'
        for w in writes
    )
    script += f"; echo {nonce} > project.txt && echo wrote"
    r = rf.confined(home, ["sh", "-c", script], "--workspace", str(home), env=env)
    assert r.stdout.count("refused") == len(writes), (r.stdout, r.stderr)
    assert "wrote" in r.stdout and (home / "project.txt").read_text() == f"{nonce}\n"
    for w in writes:
        assert not (home / w).exists(), w


def test_the_sandbox_gets_half_the_inotify_quota(rf: Runner) -> None:
    ws = rf.mkdir()
    with open("/proc/sys/user/max_inotify_instances") as f:
        host = int(f.read())
    hold = (
        "import ctypes,sys,time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "n = 0\n"
        "while n < 100000 and libc.inotify_init() >= 0:\n"
        "    n += 1\n"
        "print(n, ctypes.get_errno(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        rf.argv(["run", "--", "python3", "-c", hold]),
        cwd=ws,
        env=rf.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and int(line[1]) == 24, line  # EMFILE inside
        taken = int(line[0])
        assert 0 < taken <= host // 2
        # The same user outside still has head room while the sandbox holds all it may.
        code = (
            "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            "print('ok' if libc.inotify_init() >= 0 else ctypes.get_errno())"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            **rf.popen_kwargs(),  # type: ignore[arg-type]
        )
        assert out.stdout.strip() == "ok"
    finally:
        proc.communicate(input="", timeout=30)


def test_explain_shows_the_tmp_layer_and_the_hidden_state(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf("explain", "--", "true", cwd=ws)
    assert r.returncode == 0, r.stderr
    assert "overlay    /tmp" in r.stdout
    assert "this workspace's private /tmp layer" in r.stdout
    assert "ringfence's own state hidden" in r.stdout
    assert "this workspace's tool caches" in r.stdout


def test_a_layer_file_survives_and_time_passes(rf: Runner) -> None:
    """clean --older-than keeps what was used recently and removes what was not."""
    ws = rf.mkdir()
    assert rf.confined_sh(ws, "true").returncode == 0
    r = rf("clean", "--older-than", "1", "--dry-run")
    assert str(ws) not in r.stdout
    marker = next(
        p
        for p in (Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence" / "workspaces").glob("*/workspace")
        if p.read_text().strip() == str(ws)
    )
    old = time.time() - 3 * 86400
    os.utime(marker, (old, old))
    r = rf("clean", "--older-than", "1")
    assert r.returncode == 0 and str(ws) in r.stdout, r.stdout
    assert not marker.parent.exists()
    assert ctypes is not None


def test_clean_keeps_the_state_of_a_running_sandbox(rf: Runner) -> None:
    ws = rf.mkdir()
    nonce = secrets.token_hex(6)
    proc = rf.popen(
        "run", "--", "sh", "-c", f"echo {nonce} > /tmp/kept && touch started && sleep 30", cwd=ws
    )
    try:
        deadline = time.monotonic() + 30
        while not (ws / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        r = rf("clean", "--workspace", str(ws))
        assert r.returncode == 1 and "in use" in r.stderr, (r.stdout, r.stderr)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    r = rf.confined_sh(ws, "cat /tmp/kept")
    assert r.stdout.strip() == nonce  # the layer survived the refused clean
    r = rf("clean", "--workspace", str(ws))
    assert r.returncode == 0 and "removed" in r.stdout, r.stderr


def test_a_writable_home_keeps_every_hidden_entry_and_xdg_place(rf: Runner) -> None:
    """With --workspace $HOME, what a shell, runtime or desktop reads at start from a hidden
    entry of home, or from $XDG_CONFIG_HOME/$XDG_DATA_HOME elsewhere, stays read-only, existing
    or not; the rest of home and the tool caches stay writable."""
    home = rf.mkdir("home-")
    cfg, data = home / "cfg", home / "data"
    for d in (cfg, data, home / ".config"):
        d.mkdir()
        _own(rf, d)
    (home / ".tmux.conf").write_text("set -g x\n")
    _own(rf, home / ".tmux.conf")
    nonce = secrets.token_hex(6)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(cfg), "XDG_DATA_HOME": str(data)}
    writes = (
        ".bash_aliases",
        ".tmux.conf",
        ".local/lib/python3.11/site-packages/x.pth",
        ".config/Code/User/settings.json",
        ".newtool/init.sh",
        "cfg/git/config",
        "cfg/systemd/user/x.service",
        "data/applications/x.desktop",
        "go/bin/tool",
    )
    script = "; ".join(
        f'mkdir -p "$(dirname {w})" 2>/dev/null; echo {nonce} >> {w} 2>/dev/null || echo refused'
        for w in writes
    )
    script += (
        f"; echo {nonce} > notes.txt && echo wrote; mv .tmux.conf t 2>/dev/null || echo kept"
        f'; echo {nonce} > "$PIP_CACHE_DIR/x" && echo cache-ok'
    )
    r = rf.confined(home, ["sh", "-c", script], "--workspace", str(home), env=env)
    assert r.stdout.count("refused") == len(writes), (r.stdout, r.stderr)
    assert "wrote" in r.stdout and "kept" in r.stdout and "cache-ok" in r.stdout, r.stdout
    assert (home / "notes.txt").read_text() == f"{nonce}\n"
    assert (home / ".tmux.conf").read_text() == "set -g x\n"
    for w in writes:
        assert not (home / w).exists() or w == ".tmux.conf", w


def test_a_protected_path_in_host_tmp_is_the_hosts_file(rf: Runner, host_tmp: Path) -> None:
    conf = host_tmp / "conf.sh"
    conf.write_text("original\n")
    _own(rf, conf)
    ws = rf.mkdir()
    r = rf.confined_sh(ws, f"echo tampered > {conf}; cat {conf}")
    assert r.stdout.strip() == "tampered"  # written in this workspace's layer only
    assert conf.read_text() == "original\n"
    r = rf.confined_sh(
        ws, f"cat {conf}; echo again > {conf} || echo refused", "--protect", str(conf)
    )
    assert r.stdout.split() == ["original", "refused"], (r.stdout, r.stderr)


def test_without_home_set_the_accounts_secrets_stay_hidden(rf: Runner) -> None:
    """$HOME unset: the account's own home (the password database) is what holds its
    secrets. Only for the throwaway test user: nothing is written into a real home."""
    if rf.label == "self":
        pytest.skip("writes a secret into the account's home: the throwaway user's only")
    ws = rf.mkdir()
    secret = Path(rf.home) / ".vault-token"
    nonce = secrets.token_hex(8)
    secret.write_text(f"hvs.{nonce}\n")
    _own(rf, secret)
    try:
        r = subprocess.run(
            rf.argv(["run", "--", "cat", str(secret)]),
            cwd=ws,
            env={k: v for k, v in rf.env().items() if k != "HOME"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **rf.popen_kwargs(),  # type: ignore[arg-type]
        )
        assert nonce not in r.stdout and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    finally:
        secret.unlink()


@pytest.mark.parametrize("workspace", ["home", "dotfiles"])
def test_what_home_start_up_links_point_to_stays_read_only(rf: Runner, workspace: str) -> None:
    """Dotfiles kept as symlinks (GNU stow): their targets are start-up files too, existing
    or not, whichever writable root holds them; so are git's global config wherever
    GIT_CONFIG_GLOBAL puts it, init.templateDir, and a symlink on the way to $HOME."""
    home = rf.mkdir("home-")
    dot = home / "dotfiles"
    for d in (dot / "tmux", dot / "bin", home / ".config" / "tmux", home / ".local" / "bin"):
        d.mkdir(parents=True, exist_ok=True)
    (dot / "tmux" / "tmux.conf").write_text("set -g x\n")
    (dot / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (dot / "gitconfig").write_text(f"[init]\n\ttemplateDir = {dot}/templates\n")
    (dot / "templates").mkdir()
    (home / ".config" / "tmux" / "tmux.conf").symlink_to("../../dotfiles/tmux/tmux.conf")
    (home / ".local" / "bin" / "hello").symlink_to("../../dotfiles/bin/hello")
    (home / ".bash_aliases").symlink_to("dotfiles/bash_aliases")  # not there yet
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    ws = home if workspace == "home" else dot
    nonce = secrets.token_hex(6)
    writes = (
        "tmux/tmux.conf",
        "bin/hello",
        "bash_aliases",
        "gitconfig",
        "templates/hooks/post-checkout",
    )
    script = "; ".join(
        f'mkdir -p "$(dirname {dot}/{w})" 2>/dev/null; echo {nonce} >> {dot}/{w} 2>/dev/null '
        "|| echo refused"
        for w in writes
    )
    env = {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(dot / "gitconfig")}
    r = rf.confined(ws, ["sh", "-c", script], "--workspace", str(ws), env=env)
    assert r.stdout.count("refused") == len(writes), (r.stdout, r.stderr)
    assert nonce not in (dot / "tmux" / "tmux.conf").read_text()
    assert not (dot / "bash_aliases").exists()
    assert not (dot / "templates" / "hooks").exists()


def test_a_symlink_on_the_way_to_home_cannot_be_re_pointed(rf: Runner) -> None:
    anc = rf.mkdir("anc-")
    (anc / "realhome").mkdir()
    (anc / "homelink").symlink_to("realhome")
    for p in [anc / "realhome", anc / "homelink"]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    env = {"HOME": str(anc / "homelink")}
    r = rf.confined_sh(
        anc, "rm homelink && ln -s evil homelink && echo re-pointed || echo refused",
        "--workspace", str(anc), env=env,
    )  # fmt: skip
    assert "refused" in r.stdout, (r.stdout, r.stderr)
    assert os.readlink(anc / "homelink") == "realhome"


def test_a_writable_home_keeps_path_dirs_and_toolchains(rf: Runner) -> None:
    home = rf.mkdir("home-")
    for d in ("tools", "miniconda3/bin", "share"):
        (home / d).mkdir(parents=True)
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid)
    env = {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "share"),
        "PATH": f"{home}/tools:/usr/local/bin:/usr/bin:/bin",
    }
    writes = ("tools/git", "miniconda3/bin/conda", "node_modules/x/index.js",
              "share/dbus-1/services/x.service")  # fmt: skip
    script = "; ".join(
        f'mkdir -p "$(dirname {w})" 2>/dev/null; echo x > {w} 2>/dev/null || echo refused'
        for w in writes
    )
    r = rf.confined(home, ["sh", "-c", script], "--workspace", str(home), env=env)
    assert r.stdout.count("refused") == len(writes), (r.stdout, r.stderr)
    for w in writes:
        assert not (home / w).exists(), w


def test_every_hop_of_a_start_up_link_and_the_global_hooks_path_stay(rf: Runner) -> None:
    """A chain ~/.bashrc -> dotfiles/bashrc -> real/bashrc: the middle link cannot be
    replaced; a stow --no-folding link deep in .config is found; git's global
    core.hooksPath is protected whatever repositories the workspace holds."""
    home = rf.mkdir("home-")
    dot = home / "dotfiles"
    (dot / "real").mkdir(parents=True)
    (dot / "real" / "bashrc").write_text("# rc\n")
    (dot / "bashrc").symlink_to("real/bashrc")
    (home / ".bashrc").symlink_to("dotfiles/bashrc")
    unit = home / ".config" / "systemd" / "user"
    unit.mkdir(parents=True)
    (dot / "sync.service").write_text("[Service]\nExecStart=/usr/bin/true\n")
    (unit / "sync.service").symlink_to("../../../dotfiles/sync.service")
    (home / ".gitconfig").write_text("[core]\n\thooksPath = ~/dotfiles/githooks\n")
    (dot / "githooks").mkdir()
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    script = (
        "rm bashrc 2>/dev/null && echo 'echo PWNED' > bashrc || echo refused; "
        "sed -i s,true,evil, sync.service 2>/dev/null || echo refused; "
        "echo x > githooks/pre-commit 2>/dev/null || echo refused"
    )
    r = rf.confined(dot, ["sh", "-c", script], "--workspace", str(dot), env={"HOME": str(home)})
    assert r.stdout.count("refused") == 3, (r.stdout, r.stderr)
    assert (home / ".bashrc").read_text() == "# rc\n"
    assert "true" in (dot / "sync.service").read_text()
    assert not (dot / "githooks" / "pre-commit").exists()


def test_a_link_anywhere_in_homes_hidden_entries_keeps_its_target(rf: Runner) -> None:
    """~/.ssh/config -> ../dotfiles/ssh_config (in a masked directory, deeper than any fixed
    list): the target stays read-only in a dotfiles workspace."""
    home = rf.mkdir("home-")
    dot = home / "dotfiles"
    dot.mkdir()
    (dot / "ssh_config").write_text("Host *\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").symlink_to("../dotfiles/ssh_config")
    deep = home / ".config" / "nvim" / "lua" / "user" / "plug"
    deep.mkdir(parents=True)
    (dot / "a.lua").write_text("-- a\n")
    (deep / "a.lua").symlink_to(dot / "a.lua")
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    r = rf.confined_sh(
        dot,
        "echo '  LocalCommand x' >> ssh_config 2>/dev/null || echo refused; "
        "echo 'os.execute(1)' >> a.lua 2>/dev/null || echo refused; "
        "mkdir -p .gemini 2>/dev/null || echo refused",
        "--workspace",
        str(dot),
        env={"HOME": str(home)},
    )
    assert r.stdout.split() == ["refused"] * 3, (r.stdout, r.stderr)
    assert (dot / "ssh_config").read_text() == "Host *\n"
    assert (dot / "a.lua").read_text() == "-- a\n"


def test_a_linked_config_directory_is_masked_and_protected_at_its_real_place(
    rf: Runner,
) -> None:
    """~/.config -> dotcfg (dotfile managers do this): the deny-read defaults under it are
    masked where they really are (the run used to refuse), and with home as the workspace
    the persistence places under it stay protected, existing or not."""
    home = rf.mkdir("home-")
    (home / "dotcfg" / "gh").mkdir(parents=True)
    nonce = secrets.token_hex(6)
    (home / "dotcfg" / "gh" / "hosts.yml").write_text(f"token: {nonce}\n")
    (home / ".config").symlink_to("dotcfg")
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    ws = rf.mkdir()
    env = {"HOME": str(home)}
    r = rf.confined_sh(ws, "cat ~/.config/gh/hosts.yml", env=env)
    assert r.returncode != 125, r.stderr
    assert nonce not in r.stdout and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    r = rf.confined_sh(
        home, "mkdir -p .config/systemd/user 2>/dev/null && echo made || echo refused",
        "--workspace", str(home), env=env,
    )  # fmt: skip
    assert "refused" in r.stdout, (r.stdout, r.stderr)
    assert not (home / "dotcfg" / "systemd").exists()


def test_sandboxes_of_one_new_workspace_start_at_once(rf: Runner) -> None:
    """Several one-shot runs started together on a workspace none has used yet all mount its
    `/tmp` layer: overlayfs remakes `work/work` as it mounts, and a second mount at that
    moment saw it missing ("cannot mount this workspace's /tmp layer ... No such file or
    directory"; found by an outside review)."""
    for _ in range(5):
        ws = rf.mkdir()
        runs = [
            rf.popen(
                "run", "--", "sh", "-c", f"echo {rf.nonce} > /tmp/n{i} && cat /tmp/n{i}", cwd=ws
            )
            for i in range(4)
        ]
        outs = [(p.communicate(timeout=60), p.returncode) for p in runs]
        for (out, err), rc in outs:
            assert rc == 0 and "cannot mount" not in err, err
            assert out.strip() == rf.nonce


_VANISH = """
import dataclasses, json, os, sys
from ringfence.platforms.linux import hostfacts, landlock, native, native_image
from ringfence.platforms.linux.plan import compile_linux
from ringfence.policy.model import Policy
from ringfence import process

ws, how, secret = sys.argv[1], sys.argv[2], sys.argv[3]
policy = Policy(workspace=ws).validate()
facts = hostfacts.gather(policy, env=os.environ, landlock_abi=landlock.abi_version())
plan = compile_linux(policy, facts, cwd=ws)
assert any(op.target == secret for op in plan.mounts), "the secret is masked"
os.unlink(secret)  # gone between the compile and the mounts
argv = ["sh", "-c", f"test -e {secret} && echo SEEN; echo RAN"]
if how == "python":
    print("RESULT", process.run_sandboxed(plan, argv, timeout=60, audit=False).returncode)
else:
    print("RESULT", native.launch(native_image.encode(plan), argv).value)
"""


@pytest.mark.parametrize("how", ["python", "native"])
def test_a_tmp_secret_gone_before_the_mounts_leaves_nothing_to_hide(rf: Runner, how: str) -> None:
    from ringfence.platforms.linux import native

    if how == "native" and not native.available():
        pytest.skip("the native launcher was not built here")
    if how == "native":
        rf.needs_native_guard()
    """A credential cache in the host's /tmp, masked by the plan, removed before the sandbox
    mounts its view (kdestroy, or test_tmp_view's own probe): the run goes on (it failed with
    "cannot open mount point", breaking concurrent suites)."""
    ws = rf.mkdir()
    secret = Path(f"/tmp/krb5cc_rfvanish{os.getpid()}{how}")
    secret.write_text("ticket")
    os.chown(secret, rf.uid, rf.gid)
    try:
        r = rf.py("-c", _VANISH, str(ws), how, str(secret), cwd=ws)
    finally:
        secret.unlink(missing_ok=True)
    assert r.stdout.split() == ["RAN", "RESULT", "0"], (r.stdout, r.stderr)


def test_a_command_holding_the_layers_lock_does_not_stall_other_sandboxes(rf: Runner) -> None:
    """Review 19: sandboxes of one workspace take turns on a lock to mount its /tmp layer,
    and a command in reduced isolation can reach the layer and hold that lock; a sandbox
    starting meanwhile waits for it a bounded time, then mounts (it waited until the holder
    ended before)."""
    ws = rf.mkdir()
    assert rf("run", "--", "true", cwd=ws).returncode == 0  # the layer exists now
    cache = Path(rf.env()["XDG_CACHE_HOME"]) / "ringfence" / "workspaces"
    (work,) = [p / "tmp" / "work" for p in cache.iterdir() if ws.name in p.name]
    hold = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(work)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = rf.popen("run", "--isolation", "reduced", "--", "/usr/bin/python3", "-c", hold, cwd=ws)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n", holder.stderr
        r = rf("run", "--", "sh", "-c", "echo mounted", cwd=ws, timeout=40)
        assert r.stdout.strip() == "mounted", r.stderr
        assert holder.poll() is None  # the lock was still held: the run did not wait it out
    finally:
        holder.terminate()  # passed on to the holding command, which ends
        holder.communicate(timeout=30)
