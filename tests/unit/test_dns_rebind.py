"""Which upstream answers count as pointing into the home: the edges of every
range, IPv4-mapped IPv6, and the same verdict as ipaddress gives for each."""

from __future__ import annotations

import ipaddress
import random

import pytest

from homegw.modules.dns.rebind import PRIVATE_NETWORKS, RebindGuard, is_private

EDGES = {
    "9.255.255.255": False,
    "10.0.0.0": True,
    "10.255.255.255": True,
    "11.0.0.0": False,
    "100.63.255.255": False,
    "100.64.0.0": True,
    "100.127.255.255": True,
    "100.128.0.0": False,
    "172.15.255.255": False,
    "172.16.0.1": True,
    "172.31.255.255": True,
    "172.32.0.0": False,
    "192.168.0.0": True,
    "198.51.100.7": False,  # documentation space is public here
    "0.1.2.3": True,
    "127.0.0.1": True,
    "169.254.9.9": True,
    "::": True,
    "::1": True,
    "::2": False,
    "fbff:ffff::1": False,
    "fc00::1": True,
    "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": True,
    "fe80::1": True,
    "febf::1": True,
    "fec0::1": False,
    "::ffff:192.168.1.5": True,
    "::ffff:8.8.8.8": False,
    "2001:db8::1": False,
    "not an address": False,
    "": False,
    "1.2.3": False,
}


@pytest.mark.parametrize(("address", "private"), EDGES.items())
def test_range_edges(address: str, private: bool) -> None:
    assert is_private(address) is private


def by_ipaddress(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in PRIVATE_NETWORKS)


def test_same_verdict_as_ipaddress_for_random_addresses() -> None:
    rng = random.Random(53)
    for _ in range(5000):
        v4 = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        v6 = str(ipaddress.IPv6Address(rng.getrandbits(128)))
        for address in (v4, v6, "::ffff:" + v4, f"fe{rng.randrange(256):02x}::1"):
            assert is_private(address) is by_ipaddress(address), address


def test_allowed_domain_may_point_home() -> None:
    guard = RebindGuard(True, ["corp.example"])
    assert guard.violates("evil.example.test", ["198.51.100.1", "10.0.0.5"])
    assert not guard.violates("vpn.corp.example", ["10.0.0.5"])
    assert not guard.violates("www.example.test", ["198.51.100.1"])
    assert not RebindGuard(False).violates("evil.example.test", ["10.0.0.5"])
