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


def is_private(address: str) -> bool:
    """True for addresses inside a home network (IPv4-mapped IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in PRIVATE_NETWORKS)


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
