"""The IPv6 service's pure parts: the facts the datapath gets from the
kernel's state and the prefix plan."""

from __future__ import annotations

import ipaddress

from homegw.modules.ipv6.kernel6 import KernelAddress, KernelState
from homegw.modules.ipv6.lanaddrs import gateway_address
from homegw.modules.ipv6.service import build_facts, pick_source

A = ipaddress.IPv6Address
N = ipaddress.IPv6Network


def addr(text: str, deprecated: bool = False) -> KernelAddress:
    return KernelAddress(ipaddress.IPv6Interface(text), deprecated)


ULA_LAN = N("fd12:3456:789a::/64")
GLOBAL_LAN = N("2001:db8:100:ab00::/64")
OLD_LAN = N("2001:db8:100:cd00::/64")


def test_errors_to_the_lan_come_from_the_global_lan_address_while_it_is_preferred():
    lan = (
        addr("fe80::1/64"),
        addr("fd12:3456:789a::1/64"),
        addr("2001:db8:100:cd00::1/64", deprecated=True),
        addr("2001:db8:100:ab00::1/64"),
    )
    assert pick_source(lan, (ULA_LAN, GLOBAL_LAN, OLD_LAN)) == A("2001:db8:100:ab00::1")
    # renumbered away: the deprecated global one is never picked, the ULA is
    only_old = (lan[0], lan[1], lan[2])
    assert pick_source(only_old, (ULA_LAN, OLD_LAN)) == A("fd12:3456:789a::1")
    assert pick_source((lan[0],)) is None  # link-local only: no source for errors


def test_facts_from_the_kernel_state():
    state = KernelState(
        wan=(addr("fe80::a/64"), addr("2001:db8:ffff:1::1234/128"), addr("2001:db8:ffff:1::5/64")),
        lan=(addr("fe80::1/64"), addr("fd12:3456:789a::1/64"), addr("2001:db8:100:ab00::1/64")),
        wan_gateway=A("fe80::1"),
        wan_mtu=1492,
        lan_mtu=1500,
    )
    inside = (N("2001:db8:100:ab00::/56"), N("fd12:3456:789a::/48"))
    facts = build_facts(state, (ULA_LAN, GLOBAL_LAN), inside)
    assert facts.lan_prefixes == (ULA_LAN, GLOBAL_LAN)
    assert facts.inside == inside
    assert facts.lan_address == A("2001:db8:100:ab00::1")
    assert facts.wan_address == A("2001:db8:ffff:1::5")  # the lowest global one
    assert facts.wan_gateway == A("fe80::1")
    assert (facts.wan_mtu, facts.lan_mtu) == (1492, 1500)
    assert A("fe80::a") in facts.own and A("2001:db8:ffff:1::1234") in facts.own
    assert len(facts.own) == 6 and facts.enabled


def test_the_gateway_is_one_in_each_lan_prefix():
    assert gateway_address(GLOBAL_LAN) == A("2001:db8:100:ab00::1")
