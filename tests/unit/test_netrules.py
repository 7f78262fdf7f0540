"""Allow/deny entries: parsing, normalisation, and the decision on a name (no DNS)."""

from __future__ import annotations

import pytest

from ringfence.errors import PolicyError
from ringfence.policy.netrules import NetRules, normalize_host, parse_rule


def test_exact_wildcard_and_apex() -> None:
    rules = NetRules.parse(allow=["pypi.org", "*.npmjs.org"])
    assert rules.decide("pypi.org", 443).allowed
    assert not rules.decide("www.pypi.org", 443).allowed  # exact means exact
    assert rules.decide("registry.npmjs.org", 443).allowed
    assert rules.decide("a.b.npmjs.org", 80).allowed
    assert not rules.decide("npmjs.org", 443).allowed  # a wildcard is not the apex
    assert not rules.decide("evilnpmjs.org", 443).allowed  # not a suffix match on text
    assert str(rules.decide("example.com", 443)) == "not in the allowlist"


def test_ports_default_to_80_and_443() -> None:
    rules = NetRules.parse(allow=["example.com", "git.example.com:22"])
    assert rules.decide("example.com", 80).allowed and rules.decide("example.com", 443).allowed
    assert not rules.decide("example.com", 8080).allowed
    assert rules.decide("git.example.com", 22).allowed
    assert not rules.decide("git.example.com", 443).allowed


def test_case_idna_and_trailing_dot() -> None:
    rules = NetRules.parse(allow=["Bücher.Example."])
    assert rules.decide("xn--bcher-kva.example", 443).allowed
    assert rules.decide("BÜCHER.example.", 443).allowed
    assert normalize_host("Example.COM.") == "example.com"


def test_a_deny_without_a_port_covers_every_port() -> None:
    rules = NetRules.parse(allow=["*.example.com:8443", "*.example.com"], deny=["x.example.com"])
    assert not rules.decide("x.example.com", 8443).allowed
    assert rules.decide("y.example.com", 8443).allowed


def test_deny_wins() -> None:
    rules = NetRules.parse(allow=["*.example.com"], deny=["secret.example.com"])
    assert rules.decide("www.example.com", 443).allowed
    d = rules.decide("secret.example.com", 443)
    assert not d.allowed and d.rule == "denied by 'secret.example.com'"


def test_ip_literals_only_when_listed_exactly() -> None:
    rules = NetRules.parse(allow=["*.example.com", "192.0.2.7:8443", "[2001:db8::1]"])
    assert rules.decide("192.0.2.7", 8443).allowed
    assert not rules.decide("192.0.2.7", 443).allowed
    assert not rules.decide("192.0.2.8", 8443).allowed
    assert rules.decide("[2001:db8:0::1]", 443).allowed  # canonical form compared
    d = NetRules.parse(allow=["*.example.com"]).decide("93.184.216.34", 443)
    assert not d.allowed and "IP address" in d.rule


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "empty"),
        ("https://pypi.org", "not a URL"),
        ("pypi.org/simple", "not a URL"),
        ("*.com", "needs a domain"),
        ("a.*.com", "whole first label"),
        ("*.192.0.2.1", "IP address cannot have a wildcard"),
        ("example.com:0", "port"),
        ("example.com:99999", "port"),
        ("exa mple.com", "characters"),
        ("-bad.example.com", "characters"),
        ("[::1", "unclosed"),
        ("a" * 64 + ".com", "label"),
    ],
)
def test_invalid_entries_name_the_entry_and_reason(entry: str, reason: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_rule(entry)
    assert repr(entry) in str(e.value) and reason in str(e.value)
