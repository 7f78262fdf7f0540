"""Mixed config files: inside, the settings are there and the credentials are not.

Each test builds a throwaway home for the user running ringfence, with a per-test nonce as the
setting that must stay readable and another as the token that must not; the host's file must
be unchanged afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _home(rf: Runner, files: dict[str, str]) -> Path:
    home = rf.mkdir("home-")
    for rel, text in files.items():
        p = home / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid, follow_symlinks=False)
    return home


def _nonces() -> tuple[str, str]:
    return f"setting{secrets.token_hex(6)}", f"SEKRET{secrets.token_hex(8)}"


@pytest.mark.parametrize("network", ["off", "allowlist"])
def test_npm_sees_the_registry_but_not_the_token(rf: Runner, network: str) -> None:
    setting, token = _nonces()
    registry = f"https://{setting}.example/"
    npmrc = (
        f"registry={registry}\n//{setting}.example/:_authToken={token}\n"
        f"email=me@example.com\nfund=false\n"
    )
    home = _home(rf, {".npmrc": npmrc})
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "npm config get registry; npm config get fund; cat ~/.npmrc; "
        "npm config list --json 2>/dev/null; echo x >> ~/.npmrc || echo NOT-WRITABLE",
        "--network",
        network,
        env={"HOME": str(home)},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == [registry, "false"]
    assert token not in r.stdout and token not in r.stderr
    assert "_authToken" not in r.stdout and "me@example.com" not in r.stdout
    assert "NOT-WRITABLE" in r.stdout
    assert "Unknown env config" not in r.stderr, r.stderr
    assert "Unknown" not in r.stderr, r.stderr
    assert (home / ".npmrc").read_text() == npmrc  # the host's file is untouched


def test_a_symlinked_npmrc_is_scrubbed_at_its_target(rf: Runner) -> None:
    setting, token = _nonces()
    text = f"registry=https://{setting}.example/\n_authToken={token}\n"
    home = _home(rf, {"dotfiles/npmrc": text})
    (home / ".npmrc").symlink_to("dotfiles/npmrc")
    os.chown(home / ".npmrc", rf.uid, rf.gid, follow_symlinks=False)
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "cat ~/.npmrc; echo; cat ~/dotfiles/npmrc", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(f"registry=https://{setting}.example/") == 2
    assert token not in r.stdout
    assert (home / "dotfiles/npmrc").read_text() == text
    assert (home / ".npmrc").is_symlink()


def test_git_keeps_settings_and_loses_credentials(rf: Runner) -> None:
    setting, token = _nonces()
    gitconfig = (
        f"[user]\n\tname = {setting}\n[credential]\n\thelper = store --file /x/{token}\n"
        f'[url "https://{token}@github.com/"]\n\tinsteadOf = https://github.com/\n'
        f"[http]\n\textraHeader = Authorization: Bearer {token}\n"
    )
    home = _home(rf, {".gitconfig": gitconfig})
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "git config --global user.name; git config --global --list; "
        "git config --global credential.helper || echo NO-HELPER",
        env={"HOME": str(home)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == setting
    assert token not in r.stdout and "NO-HELPER" in r.stdout
    assert "url.https://github.com/.insteadof=https://github.com/" in r.stdout
    assert (home / ".gitconfig").read_text() == gitconfig


def test_pip_docker_pypirc(rf: Runner) -> None:
    setting, token = _nonces()
    home = _home(
        rf,
        {
            ".config/pip/pip.conf": (
                f"[global]\nindex-url = https://me:{token}@{setting}.example/simple\n"
            ),
            ".pip/pip.conf": f"[global]\ntimeout = 7\nclient-cert = /k/{token}.pem\n",
            ".docker/config.json": (
                f'{{"auths": {{"r": {{"auth": "{token}"}}}}, "psFormat": "{setting}"}}'
            ),
            ".pypirc": f"[pypi]\nusername = __token__\npassword = {token}\n",
        },
    )
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "cat ~/.pip/pip.conf ~/.docker/config.json ~/.pypirc; "
        "XDG_CONFIG_HOME= cat ~/.config/pip/pip.conf",
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")},
    )
    assert r.returncode == 0, r.stderr
    assert token not in r.stdout
    assert f"https://{setting}.example/simple" in r.stdout
    assert "timeout = 7" in r.stdout and f'"psFormat": "{setting}"' in r.stdout
    assert "[pypi]" in r.stdout


def test_a_file_that_does_not_parse_is_hidden(rf: Runner) -> None:
    setting, token = _nonces()
    broken = f'{{"auths": {{"r": "{token}"}}, "psFormat": "{setting}"'  # no closing brace
    home = _home(rf, {".docker/config.json": broken})
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "cat ~/.docker/config.json; echo END", env={"HOME": str(home)})
    assert token not in r.stdout and setting not in r.stdout
    assert r.stdout.strip().endswith("END")
    assert "Permission denied" in r.stderr
    e = rf("explain", "--", "true", cwd=ws, env={"HOME": str(home)})
    assert "could not be scrubbed" in e.stdout and token not in e.stdout
    assert (home / ".docker/config.json").read_text() == broken


def test_explain_names_removed_keys_not_values(rf: Runner) -> None:
    setting, token = _nonces()
    home = _home(rf, {".npmrc": f"registry=https://{setting}.example/\n_authToken={token}\n"})
    ws = rf.mkdir()
    r = rf("explain", "--", "true", cwd=ws, env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert "scrubbed: ~/.npmrc (removed: _authToken)" in r.stdout
    assert token not in r.stdout and setting not in r.stdout
    j = rf("explain", "--json", "--", "true", cwd=ws, env={"HOME": str(home)})
    assert j.returncode == 0, j.stderr
    assert token not in j.stdout and setting not in j.stdout


def test_the_copy_cannot_be_changed_even_in_a_writable_home(rf: Runner) -> None:
    setting, token = _nonces()
    text = f"registry=https://{setting}.example/\n_authToken={token}\n"
    home = _home(rf, {".npmrc": text})
    r = rf.confined_sh(
        home,
        "echo x >> ~/.npmrc; mv ~/.npmrc ~/moved; rm -f ~/.npmrc; cat ~/.npmrc",
        "--workspace",  # a home directory is a workspace only when named
        str(home),
        env={"HOME": str(home)},
    )
    assert r.stdout == f"registry=https://{setting}.example/\n"
    # A mount point (no rename, no unlink: EBUSY), and in a writable home also a protected
    # path, which the guard refuses first (EACCES).
    assert "Permission denied" in r.stderr or "Device or resource busy" in r.stderr
    assert "(scrubbed copy (read-only): ~/.npmrc)" in r.stderr
    assert "--writable" not in r.stderr
    assert (home / ".npmrc").read_text() == text and not (home / "moved").exists()


def test_a_link_into_a_secret_file_shows_nothing_of_it(rf: Runner) -> None:
    _setting, token = _nonces()
    home = _home(rf, {".vault-token": f"hvs.{token}\n"})
    (home / ".npmrc").symlink_to(".vault-token")
    os.chown(home / ".npmrc", rf.uid, rf.gid, follow_symlinks=False)
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "cat ~/.npmrc; cat ~/.vault-token; echo END", env={"HOME": str(home)})
    assert token not in r.stdout and r.stdout.strip() == "END"
    assert "Permission denied" in r.stderr


def test_review_findings_xdg_elsewhere_includes_and_links_into_tmp(rf: Runner) -> None:
    """~/.config/git/config with $XDG_CONFIG_HOME elsewhere, a file ~/.gitconfig includes,
    and a ~/.npmrc linked into host /tmp: each seen scrubbed, never with its token."""
    setting, token = _nonces()
    home = _home(
        rf,
        {
            ".config/git/config": f"[user]\n\tname = {setting}\n[github]\n\ttoken = {token}a\n",
            ".gitconfig": "[include]\n\tpath = ~/.gitconfig.secrets\n",
            ".gitconfig.secrets": f"[gitlab]\n\ttoken = {token}b\n[core]\n\tpager = {setting}\n",
            "xdg/git/config": "[core]\n\teditor = vi\n",
        },
    )
    in_tmp = Path(tempfile.mkdtemp(prefix="ringfence-npmrc-", dir="/tmp"))
    try:
        (in_tmp / "npmrc").write_text(f"registry=https://{setting}.example/\n_authToken={token}c\n")
        for p in (in_tmp, in_tmp / "npmrc"):
            os.chown(p, rf.uid, rf.gid)
        in_tmp.chmod(0o755)
        (home / ".npmrc").symlink_to(in_tmp / "npmrc")
        os.chown(home / ".npmrc", rf.uid, rf.gid, follow_symlinks=False)
        ws = rf.mkdir()
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "xdg")}
        r = rf.confined_sh(
            ws,
            "cat ~/.config/git/config ~/.gitconfig.secrets ~/.npmrc; "
            "env -u XDG_CONFIG_HOME git config --global --get user.name",
            env=env,
        )
        assert token not in r.stdout + r.stderr, (r.stdout, r.stderr)
        assert r.stdout.count(setting) >= 3, (r.stdout, r.stderr)  # settings kept
    finally:
        shutil.rmtree(in_tmp, ignore_errors=True)
