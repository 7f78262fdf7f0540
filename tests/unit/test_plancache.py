"""The plan cache's parts: the codec that never runs code, the recorder of what a compile
asked the file system, the private store and the request key."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from ringfence.plancache import codec, facts, key, store
from ringfence.policy.model import Limits, Mode, Network, Policy


def test_codec_round_trips_ringfence_dataclasses_and_enums() -> None:
    value = {
        "policy": Policy(workspace="/w", network=Network.ALLOWLIST, allow_domains=("a.org",)),
        "limits": Limits(memory=1 << 30),
        "mode": Mode.READ_ONLY,
        "set": frozenset({1, 2}),
        "list": [b"x", None, 1.5],
    }
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "forged",
    [
        (0, "os:system", (("command", "true"),)),  # not ringfence's
        (0, "builtins:eval", ()),
        (0, "ringfence.oneshot:Keeper", ()),  # ringfence's, but not a dataclass
        (1, "ringfence.policy.model:Policy", "x"),  # a dataclass named as an enum
        (0, "ringfence.policy.model:Policy.__init__", ()),  # not a class name
        (0, "ringfence.policy.model:Limits", (("nope", 1),)),  # fields of another version
        (0, "ringfence.session:Session", ()),  # not a module plans are made of
        (7, "ringfence.policy.model:Limits", ()),  # a dataclass named as a named tuple
        (99, "x"),
        "plain string at the top is fine",
    ],
)
def test_codec_builds_nothing_but_ringfence_data(forged: object) -> None:
    data = marshal.dumps(forged)
    if isinstance(forged, str):
        assert codec.decode(data) == forged
        return
    with pytest.raises(codec.CodecError):
        codec.decode(data)


def _golden_cases() -> list[str]:
    from test_linux_golden import CASES

    return sorted(CASES)


@pytest.mark.parametrize("name", _golden_cases())
def test_codec_round_trips_real_linux_plans_type_for_type(name: str) -> None:
    from test_linux_golden import CASES

    from ringfence.platforms.linux.plan import compile_linux

    policy, host = CASES[name]
    plan = compile_linux(policy, host, cwd=policy.workspace or "/")
    back = codec.decode(codec.encode(plan))
    assert back == plan
    assert repr(back) == repr(plan)  # named tuples and enums come back as themselves


def test_codec_refuses_to_keep_foreign_objects() -> None:
    with pytest.raises(codec.CodecError):
        codec.encode(object())
    with pytest.raises(codec.CodecError):
        codec.encode(Path("/x"))


def _record(fn: object) -> facts.Recorder:
    rec = facts.Recorder()
    with facts.recording(rec):
        fn()  # type: ignore[operator]
    return rec


def test_recorder_answers_and_notices_every_change(tmp_path: Path) -> None:
    conf = tmp_path / "conf.toml"
    conf.write_text("a = 1\n")
    sub = tmp_path / "dir"
    sub.mkdir()
    link = tmp_path / "link"
    link.symlink_to(conf)

    def compile_like() -> None:
        with open(conf) as f:
            f.read()
        os.path.exists(tmp_path / "missing")
        os.listdir(sub)
        os.path.realpath(link)
        os.path.isdir(sub)

    rec = _record(compile_like)
    assert rec.uncacheable is None
    answers = rec.answers()
    assert answers is not None
    ops = {op for op, _ in answers}
    assert {"read", "stat", "listdir", "lstat", "readlink"} <= ops
    assert facts.unchanged(answers) is None
    os.utime(sub, (1, 1))  # a directory's times are not an answer
    assert facts.unchanged(answers) is None
    changes = [
        lambda: conf.write_text("a = 2\n"),
        lambda: (tmp_path / "missing").write_text(""),
        lambda: (sub / "new").write_text(""),
        lambda: (link.unlink(), link.symlink_to(tmp_path / "missing")),
    ]
    for change in changes:
        change()
        assert facts.unchanged(answers) is not None
        rec = _record(compile_like)
        answers = rec.answers()
        assert answers is not None and facts.unchanged(answers) is None


def test_recorder_refuses_what_it_cannot_replay(tmp_path: Path) -> None:
    before = (os.stat, os.open, open)

    def writes() -> None:
        with open(tmp_path / "out", "w") as f:
            f.write("x")

    assert _record(writes).uncacheable is not None
    rec = _record(lambda: os.close(os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)))
    assert rec.uncacheable is not None and "write" in rec.uncacheable
    assert rec.answers() is None
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        rec = _record(lambda: os.stat("out", dir_fd=fd))
    finally:
        os.close(fd)
    assert rec.uncacheable is not None and "descriptor" in rec.uncacheable
    assert (os.stat, os.open, open) == before  # the wrappers are gone afterwards


def test_recorder_notes_a_change_during_the_compile(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("1")
    rec = facts.Recorder()
    with facts.recording(rec):
        os.stat(f)
    f.write_bytes(b"22")  # changed before the plan was kept
    assert rec.answers() is None  # the host changed under the compile: not kept


def test_effects_are_noted_not_asked(tmp_path: Path) -> None:
    rec = facts.Recorder()
    target = tmp_path / "state"
    with facts.recording(rec):
        got = facts.effect("mk", lambda p: os.makedirs(p, exist_ok=True) or "made", str(target))
    assert got == "made" and target.is_dir()
    assert rec.effects == [("mk", (str(target),), "made")]
    assert rec.asked == {} and rec.uncacheable is None


def _entry(tmp_path: Path) -> store.Entry:
    return store.Entry(Policy(workspace=str(tmp_path)), {"timeout": 5.0}, {}, ())


SECRET = b"s" * 32


def test_store_round_trip_and_private_files(tmp_path: Path) -> None:
    d = tmp_path / "plans"
    store.save(str(d), "k", _entry(tmp_path), SECRET)
    assert d.stat().st_mode & 0o777 == 0o700
    assert (d / "k").stat().st_mode & 0o777 == 0o600
    got = store.load(str(d), "k", SECRET)
    assert got is not None and got.plan == Policy(workspace=str(tmp_path))
    assert got.options == {"timeout": 5.0}
    (d / "k").chmod(0o644)
    assert store.load(str(d), "k", SECRET) is None  # readable by others: not ours to trust
    (d / "k").chmod(0o600)
    d.chmod(0o755)
    assert store.load(str(d), "k", SECRET) is None  # a directory others may write into
    d.chmod(0o700)
    assert store.load(str(d), "k", b"t" * 32) is None  # sealed with another key
    kept = (d / "k").read_bytes()
    (d / "other").write_bytes(kept)
    (d / "other").chmod(0o600)
    assert store.load(str(d), "other", SECRET) is None  # moved to another request's name
    forged = bytearray(kept)
    forged[-5] ^= 1
    (d / "k").write_bytes(bytes(forged))
    assert store.load(str(d), "k", SECRET) is None  # altered
    (d / "k").write_bytes(b"junk")
    assert store.load(str(d), "k", SECRET) is None
    (d / "k").unlink()
    (tmp_path / "real").write_bytes(kept)
    (d / "k").symlink_to(tmp_path / "real")
    assert store.load(str(d), "k", SECRET) is None


def test_store_keeps_a_bounded_number_of_entries(tmp_path: Path) -> None:
    d = tmp_path / "plans"
    for i in range(store.MAX_ENTRIES + 5):
        store.save(str(d), f"k{i}", _entry(tmp_path), SECRET)
    assert len(list(d.iterdir())) == store.MAX_ENTRIES


def test_store_never_fails_a_run(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    store.save(str(tmp_path / "ro" / "plans"), "k", _entry(tmp_path), SECRET)  # no exception
    assert store.load(str(tmp_path / "nowhere"), "k", SECRET) is None


def test_key_changes_with_every_part_of_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    base = key.request_key(["run"], "/w", {"A": "1"})
    assert key.request_key(["run"], "/w", {"A": "1"}) == base
    assert key.request_key(["run", "--network", "on"], "/w", {"A": "1"}) != base
    assert key.request_key(["run"], "/v", {"A": "1"}) != base
    assert key.request_key(["run"], "/w", {"A": "2"}) != base
    assert key.request_key(["run"], "/w", {"A": "1", "B": ""}) != base
    assert key.request_key(["run", "x y"], "/w", {}) != key.request_key(["run", "x", "y"], "/w", {})
    # where ringfence imports from: a .pth file added later puts a workspace directory on it
    # (the kept request would otherwise run natively, without the warning: an outside review)
    monkeypatch.setattr(key.sys, "path", [*key.sys.path, "/w/lib"])
    assert key.request_key(["run"], "/w", {"A": "1"}) != base
    monkeypatch.undo()
    assert key.request_key(["run"], "/w", {"A": "1"}) == base
    monkeypatch.setattr(key, "__version__", "99.0")
    assert key.request_key(["run"], "/w", {"A": "1"}) != base


@pytest.mark.parametrize(
    "name",
    ["krb5cc_1000", "krb5cc", "ssh-XXabc", "ssh-", "ssh", "tmux-1000", "screens", "screensx",
     ".X11-unix", "x.X11-unix", "[odd]", "a*b", "", "uscreens"],
)  # fmt: skip
def test_tmp_secret_matching_is_fnmatch(name: str) -> None:
    import fnmatch

    from ringfence.platforms.linux.tmp_entries import matches
    from ringfence.policy.defaults import TMP_DENY_READ

    patterns = (*TMP_DENY_READ, "a[*]b", "?odd*", "[[]odd]")
    expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
    assert matches(name, patterns) is expected


def test_audit_times_are_what_datetime_writes() -> None:
    """The audit log's timestamps are made without importing datetime (a one-shot cost)."""
    import datetime
    import random

    from ringfence.audit import iso_utc

    rng = random.Random(18)
    samples = [0.0, 1.9995, 1.9999995, 1700000000.0004, 1700000000.9996]
    samples += [rng.uniform(0, 4e9) for _ in range(20_000)]
    for t in samples:
        expected = datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(
            timespec="milliseconds"
        )
        assert iso_utc(t) == expected, t


def test_key_covers_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    base = key.request_key(["run"], "/w", {})
    monkeypatch.setattr(key, "_boot_id", lambda: "another-boot")
    booted = key.request_key(["run"], "/w", {})
    assert booted != base
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, "9.9.9", real.version, real.machine))
    monkeypatch.setattr(key.os, "uname", lambda: fake)
    assert key.request_key(["run"], "/w", {}) not in (base, booted)


def test_a_kept_plan_depends_on_ringfence_own_files(tmp_path: Path) -> None:
    from ringfence.engine.contract import RunOptions
    from ringfence.oneshot import Pending
    from ringfence.plancache.keeper import Keeper

    keeper = Keeper(Pending(str(tmp_path / "plans"), "k", SECRET, ["true"]))
    with keeper.recording():
        os.stat(tmp_path)
    keeper.keep(Policy(workspace=str(tmp_path)), RunOptions(timeout=3.0), ["other"])
    assert not (tmp_path / "plans" / "k").exists()  # not the command the fast path would run
    keeper.keep(Policy(workspace=str(tmp_path)), RunOptions(timeout=3.0), ["true"])
    entry = store.load(str(tmp_path / "plans"), "k", SECRET)
    assert entry is not None and entry.options["timeout"] == 3.0
    own = {path for op, path in entry.answers if op == "stat" and "/ringfence/" in path}
    assert facts.__file__ in own and key.__file__ in own
    assert ("stat", str(tmp_path)) in entry.answers


def test_the_cache_lives_where_sandboxes_have_it_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """As hostfacts finds ringfence's state: a relative $HOME is not where the state is."""
    from ringfence.policy.paths import account_home

    home = account_home()
    assert home is not None
    assert key.directory({"HOME": "relhome"}) == os.path.join(home, ".cache/ringfence/plans")
    assert key.directory({"HOME": "/h", "XDG_CACHE_HOME": "rel"}) == "/h/.cache/ringfence/plans"
    assert key.directory({"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == "/x/ringfence/plans"


def test_the_seal_key_is_out_of_every_sandbox() -> None:
    """Keyring calls are refused by the filter every sandboxed plan installs, in both
    isolation modes: the seal's key cannot be read from inside."""
    from test_linux_golden import CASES

    from ringfence.platforms.linux import seccomp
    from ringfence.platforms.linux.plan import compile_linux

    assert {"keyctl", "add_key", "request_key"} <= {name for name, _ in seccomp.DENIED}
    for name in ("linux_default", "linux_reduced"):
        policy, host = CASES[name]
        assert compile_linux(policy, host, cwd=policy.workspace or "/").seccomp is not None


def test_a_listed_directory_records_only_the_names_asked(tmp_path: Path) -> None:
    """realpaths lists a directory asked about many names; a kept plan depends on those
    names' presence, not on every other file that comes and goes there (a workspace)."""
    from ringfence.platforms.linux.realpaths import LIST_AFTER, RealPaths

    root = tmp_path / "ws"
    root.mkdir()
    (root / "present").write_text("")
    asked = [str(root / f"absent{i}") for i in range(LIST_AFTER + 2)] + [str(root / "present")]
    rec = _record(lambda: [RealPaths()(p) for p in asked])
    answers = rec.answers()
    assert answers is not None and ("scandir", str(root)) not in answers
    (root / "unrelated").write_text("")
    assert facts.unchanged(answers) is None
    (root / "absent3").write_text("")
    assert facts.unchanged(answers) == ("lstat", str(root / "absent3"))


def test_a_file_too_large_to_digest_makes_the_compile_uncacheable(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(facts._READ_LIMIT + 10)

    def reads() -> None:
        with open(big, "rb") as f:
            f.read()

    rec = _record(reads)
    assert rec.uncacheable is not None and "too large" in rec.uncacheable
