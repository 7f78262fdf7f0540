"""The address guard names its ranges: registries in documentation ranges stay reachable."""

from __future__ import annotations

import pytest

from ringfence.network.addrguard import why_blocked


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd12::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_local_and_metadata_addresses_are_blocked(address: str) -> None:
    assert why_blocked(address) is not None


@pytest.mark.parametrize(
    "address",
    [
        "203.0.113.10",  # TEST-NET-3: where the package registries resolve on these machines
        "198.51.100.7",
        "192.0.2.1",
        "151.101.0.223",
        "172.32.0.1",  # just past 172.16/12
        "2001:db8::1",
        "2a04:4e42::223",
        "::ffff:203.0.113.10",
    ],
)
def test_public_and_documentation_addresses_pass(address: str) -> None:
    assert why_blocked(address) is None


def test_the_reason_names_the_range() -> None:
    meta = why_blocked("169.254.169.254")
    assert meta == "169.254.169.254 is link-local (cloud metadata lives here)"
    assert why_blocked("::ffff:10.0.0.1") == "10.0.0.1 is private (RFC 1918)"
