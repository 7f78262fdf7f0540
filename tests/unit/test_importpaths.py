"""Which ``sys.path`` entries lie where the sandbox may write (importpaths.py)."""

from __future__ import annotations

from pathlib import Path

from ringfence.importpaths import writable_entries


def test_entries_in_a_writable_root_are_found(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "lib").mkdir(parents=True)
    (tmp_path / "ws2").mkdir()
    path = ["", str(ws / "lib"), str(tmp_path / "ws2"), "/usr/lib/python3"]
    assert writable_entries([str(ws)], path, str(ws)) == [str(ws), str(ws / "lib")]


def test_the_sandboxs_private_tmp_is_not_the_hosts(tmp_path: Path) -> None:
    assert writable_entries(["/tmp", "/dev/shm"], ["/tmp/x", "/dev/shm"], "/") == []


def test_a_link_into_a_writable_root_counts(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "link").symlink_to(ws)
    assert writable_entries([str(ws)], [str(tmp_path / "link")], "/") == [str(tmp_path / "link")]
