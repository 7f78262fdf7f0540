"""Which resolved addresses an allowed name may not lead to (unless local targets are allowed).

The ranges are named one by one rather than taken from ``ipaddress``'s ``is_private``, which
also covers the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) and more: a guard built on it refuses real public hosts on networks that use
them. An IPv6 address that embeds an IPv4 one (mapped, NAT64) is judged by the IPv4 address.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598)"),
    ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
    ("100.100.100.200/32", "cloud metadata"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_NETS = tuple((ipaddress.ip_network(net), why) for net, why in BLOCKED)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def why_blocked(address: str | IPAddress) -> str | None:
    """The reason ``address`` is refused as a destination, or None if it may be reached."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    for net, why in _NETS:
        if ip.version == net.version and ip in net:
            return f"{ip} is {why}"
    return None
