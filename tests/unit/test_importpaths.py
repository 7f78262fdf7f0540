"""Which ``sys.path`` entries lie where the sandbox may write (importpaths.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_a_link_in_a_writable_root_counts_wherever_it_points(tmp_path: Path) -> None:
    """A command can re-aim a symlink it owns: an entry through one is as writable as the
    link itself, even while it points outside (review 40 ran host code so, unwarned)."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    outside.mkdir()
    ws.mkdir()
    (ws / "src").symlink_to(outside)
    (tmp_path / "hop").symlink_to(ws / "src")  # a link outside, through one inside
    entries = [str(ws / "src"), str(tmp_path / "hop"), str(outside)]
    assert writable_entries([str(ws)], entries, "/") == entries[:2]


def test_a_writable_directory_inside_an_entry_counts(tmp_path: Path) -> None:
    """A package directory made writable (``--writable site-packages/anyio``) is imported
    from; a writable place somewhere below ``/`` is not what an entry of ``/`` means."""
    site = tmp_path / "site-packages"
    (site / "anyio").mkdir(parents=True)
    assert writable_entries([str(site / "anyio")], [str(site), "/"], "/") == [str(site)]
    scripts = tmp_path / "scripts"  # your script's directory, with a workspace below it
    (scripts / "project").mkdir(parents=True)
    (scripts / "pytest").mkdir()  # ... unless it is named like a module this process imported
    assert writable_entries([str(scripts / "project")], [str(scripts)], "/") == []
    assert writable_entries([str(scripts / "pytest")], [str(scripts)], "/") == [str(scripts)]


def test_the_loader_paths_and_the_dropped_working_directory_are_import_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ringfence import importpaths, importplaces

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/lib::{tmp_path}/lib")
    monkeypatch.setenv("LD_PRELOAD", f"{tmp_path}/pre/libx.so /usr/lib/liby.so")
    monkeypatch.setattr(importplaces, "_dropped", [str(tmp_path / "ws")])
    places = importpaths.import_places()
    for want in (
        "/opt/lib",
        str(tmp_path),
        f"{tmp_path}/lib",
        f"{tmp_path}/pre",
        str(tmp_path / "ws"),
    ):
        assert want in places, want
    monkeypatch.delenv("LD_LIBRARY_PATH")
    monkeypatch.delenv("LD_PRELOAD")
    assert not any(p in ("", ".", "/") for p in importpaths.import_places()[len(sys.path) :])


def test_python_c_and_python_m_places_are_where_the_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 41: ``""`` (python -c) was judged against "/", and the dropped working directory
    of python -m was not in a kept request's key, so a ``-P`` run's native entry served it."""
    from ringfence import importpaths, importplaces
    from ringfence.plancache import key

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    assert importpaths.writable_imports([str(tmp_path)]) == [str(tmp_path)]
    monkeypatch.setattr(sys, "path", sys.path[1:])
    base = key.request_key(["run"], str(tmp_path), {})
    monkeypatch.setattr(importplaces, "_dropped", [str(tmp_path)])
    assert key.request_key(["run"], str(tmp_path), {}) != base
