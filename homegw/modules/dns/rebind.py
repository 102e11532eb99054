"""DNS-rebinding protection: upstream answers must not point into the home.

A name on the internet that resolves to a private, loopback or link-local
address lets a web page reach devices behind the gateway (DNS rebinding).
Such upstream answers are refused (dnsmasq's ``stop-dns-rebind``), except for
domains the user allows (``dns.rebind_allow``, like ``rebind-domain-ok``).

The ranges are spelled out: Python's ``is_private`` also counts the
documentation networks (198.51.100.0/24...), which are public here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from homegw.modules.dns.blocklists import suffixes

PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
    )
)


#: (first, last) of each range as integers, by address family: every upstream
#: answer is checked, so the test is a few integer comparisons, not ipaddress.
_RANGES = {
    version: tuple(
        (int(net.network_address), int(net.broadcast_address))
        for net in PRIVATE_NETWORKS
        if net.version == version
    )
    for version in (4, 6)
}
_V4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96


def is_private(address: str) -> bool:
    """True for addresses inside a home network (IPv4-mapped IPv6 included)."""
    try:
        value, version = int.from_bytes(socket.inet_pton(socket.AF_INET, address)), 4
    except OSError:
        try:
            value, version = int.from_bytes(socket.inet_pton(socket.AF_INET6, address)), 6
        except OSError:
            return False
        if value >> 32 == 0xFFFF:
            value, version = value - _V4_MAPPED, 4
    return any(first <= value <= last for first, last in _RANGES[version])


class RebindGuard:
    def __init__(self, enabled: bool, allow: Iterable[str] = ()) -> None:
        self.enabled = enabled
        self.allow = frozenset(a.lower().rstrip(".") for a in allow)

    def violates(self, name: str, addresses: Iterable[str]) -> bool:
        """Whether an upstream answer for name with these addresses must be refused."""
        if not self.enabled:
            return False
        bad = [a for a in addresses if is_private(a)]
        if not bad:
            return False
        return not any(suffix in self.allow for suffix in suffixes(name))
