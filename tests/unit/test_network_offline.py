"""What a command tried with the network off, and the hints for it (network/offline.py,
escalation.py): which names and addresses are reported, which are proposed (never a local or
private target, never one the managed ceiling forbids), and how a hint widens a policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringfence.errors import PolicyError
from ringfence.escalation import to_allow_text, widen, widenings
from ringfence.network import offline
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import config
from ringfence.policy.model import Mode, Network, Policy


def _plan(network: Network, **kw: Any) -> LinuxPlan:
    return LinuxPlan(True, {}, "/w", 1000, 1000, network, Mode.WORKSPACE_WRITE, **kw)


def _resolve(host: str, rule: str = offline.OFF) -> dict[str, Any]:
    return {"kind": "network", "op": "resolve", "host": host, "port": 0, "rule": rule}


def _connect(host: str, port: int, op: str = "connect") -> dict[str, Any]:
    return {"kind": "network", "op": op, "host": host, "port": port, "rule": offline.OFF}


@pytest.fixture(autouse=True)
def no_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "load_ceiling", lambda path=config.MANAGED_PATH: None)


def test_public_names_are_reported_local_ones_not() -> None:
    names = [
        "pypi.org",
        "vm",
        "printer.local",
        "x.internal",
        "1.2.3.4",
        "a.b.home.arpa",
        "PyPI.org.",
    ]
    got = offline.name_records(names, Network.OFF)
    assert got == [_resolve("pypi.org"), _resolve("PyPI.org.")]


def test_with_the_allowlist_only_names_the_proxy_would_refuse_are_reported() -> None:
    got = offline.name_records(
        ["pypi.org", "evil.example.com"], Network.ALLOWLIST, ("pypi.org",), ()
    )
    assert got == [_resolve("evil.example.com", offline.OUTSIDE_PROXY)]


def test_names_reported_are_bounded() -> None:
    got = offline.name_records([f"h{i}.example.com" for i in range(50)], Network.OFF)
    assert len(got) == offline.MAX_NAMES + 1 and got[-1] == {"kind": "more"}


def test_the_guards_unreachable_events_become_records() -> None:
    reports = [
        {"kind": "unreachable", "path": "2001:4860::1 443", "detail": "tcp"},
        {"kind": "unreachable", "path": "8.8.8.8 53", "detail": "udp"},
        {"kind": "unreachable", "path": "junk"},
        {"kind": "filesystem", "path": "/x"},
    ]
    assert offline.connect_records(reports) == [
        _connect("2001:4860::1", 443),
        _connect("8.8.8.8", 53, "send"),
    ]


def test_the_report_line_names_what_was_tried() -> None:
    line = offline.tried_line([_resolve("pypi.org"), _connect("2001:4860::1", 443)])
    assert line == "network is off: the command tried pypi.org, [2001:4860::1]:443"
    assert offline.tried_line([{"kind": "filesystem"}]) is None


def test_network_off_proposes_the_allowlist_with_that_host_only() -> None:
    got = widenings(_plan(Network.OFF), [_resolve("pypi.org"), _resolve("pypi.org")])
    assert got == [
        {
            "kind": "allow_domain",
            "entry": "pypi.org",
            "flag": "--network allowlist --allow-domain pypi.org",
            "because": "resolve pypi.org",
            "network": "allowlist",
        }
    ]


def test_addresses_are_proposed_only_when_public_and_only_for_tcp() -> None:
    plan = _plan(Network.OFF)
    got = widenings(
        plan,
        [
            _connect("2606:4700::1111", 443),
            _connect("8.8.8.8", 53, "send"),  # UDP: the proxy carries none
            _connect("10.0.0.1", 443),
            _connect("127.0.0.1", 80),
            _connect("169.254.169.254", 80),
            _connect("192.0.2.1", 443),  # documentation range
        ],
    )
    assert [w["flag"] for w in got] == ["--network allowlist --allow-domain [2606:4700::1111]:443"]


def test_local_names_and_network_on_get_no_hint() -> None:
    assert widenings(_plan(Network.OFF), [_resolve("db.internal"), _resolve("localhost")]) == []
    assert widenings(_plan(Network.ON), [_resolve("pypi.org")]) == []


def test_with_the_allowlist_the_hint_is_the_entry_alone() -> None:
    got = widenings(_plan(Network.ALLOWLIST), [_resolve("evil.example.com", offline.OUTSIDE_PROXY)])
    assert [w["flag"] for w in got] == ["--allow-domain evil.example.com"]
    assert "network" not in got[0]


def test_the_managed_ceiling_is_never_exceeded(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(Network.OFF)
    ceiling = config.Ceiling("/etc/ringfence/managed.toml", max_network="off")
    monkeypatch.setattr(config, "load_ceiling", lambda path=config.MANAGED_PATH: ceiling)
    assert widenings(plan, [_resolve("pypi.org")]) == []
    ceiling = config.Ceiling("m", allowed_domains=("*.pythonhosted.org", "pypi.org:443"))
    got = widenings(plan, [_resolve("pypi.org"), _resolve("files.pythonhosted.org")])
    assert [w["entry"] for w in got] == ["files.pythonhosted.org"]  # pypi.org:80 is not covered

    def broken(path: str = config.MANAGED_PATH) -> config.Ceiling:
        raise config.ConfigError("unreadable")

    monkeypatch.setattr(config, "load_ceiling", broken)
    assert widenings(plan, [_resolve("pypi.org")]) == []


def test_resolver_sockets_are_never_proposed() -> None:
    from ringfence.platforms.linux.guard_rules import SOCKET_OUTSIDE

    v = {"kind": "filesystem", "op": "connect", "rule": SOCKET_OUTSIDE}
    plan = _plan(Network.OFF)
    assert widenings(plan, [{**v, "path": "/run/systemd/resolve/io.systemd.Resolve"}]) == []
    assert len(widenings(plan, [{**v, "path": "/run/other.sock"}])) == 1


def test_widen_switches_off_to_the_allowlist_with_exactly_the_hosts(tmp_path: Path) -> None:
    policy = Policy(workspace=str(tmp_path))
    hints = widenings(
        _plan(Network.OFF), [_resolve("pypi.org"), _resolve("files.pythonhosted.org")]
    )
    wider = widen(policy, hints)
    assert wider.effective_network is Network.ALLOWLIST
    assert wider.allow_domains == ("pypi.org", "files.pythonhosted.org")
    assert to_allow_text(hints) == (
        "--network allowlist --allow-domain pypi.org --allow-domain files.pythonhosted.org"
    )
    # Without the switch an allow_domain widening still needs the allowlist already.
    plain = [{k: v for k, v in hints[0].items() if k != "network"}]
    with pytest.raises(PolicyError, match="needs --network allowlist"):
        widen(policy, plain)
    # The switch is from off only: never from the network on.
    with pytest.raises(PolicyError):
        widen(Policy(workspace=str(tmp_path), network=Network.ON), hints)


def test_offline_environment_keeps_the_callers_own_values() -> None:
    got = offline.offline_environment({"PIP_RETRIES": "3"})
    assert "PIP_RETRIES" not in got and got["npm_config_fetch_retries"] == "0"


def test_a_flood_of_local_names_cannot_hide_a_refused_lookup() -> None:
    """Review 27: a command's refused lookup could be pushed out of the session's name log by
    a flood of names no report lists (local ones), and the command was told nothing. Only
    names a report would list now take a place in the log; and a lost window with nothing
    reportable says nothing (review 28: "more" there was a false report)."""
    from ringfence.connection import tried_offline
    from ringfence.network.dns_stub import NameLog

    keep = offline.reportable(Network.OFF)
    names = ["pypi.org", "db.internal", "localhost", "svc1.localhost", "example.com", "vm"]
    assert [n for n in names if keep(n)] == [
        r["host"] for r in offline.name_records(names, Network.OFF)
    ]
    allow = offline.reportable(Network.ALLOWLIST, ["pypi.org"])
    assert (allow("pypi.org"), allow("evil.example.com")) == (False, True)
    log = NameLog(size=8, keep=keep)
    mark = log.mark()
    log.add("pypi.org")
    for i in range(300):
        log.add(f"svc{i}.localhost")
    assert log.since(mark) == (["pypi.org"], False)
    plan = _plan(Network.OFF)
    assert tried_offline(plan, [], [], True) == []
    assert tried_offline(plan, [], ["pypi.org"], True) == [_resolve("pypi.org"), {"kind": "more"}]
