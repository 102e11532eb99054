"""The kernel path's IPv6 rules (RFC 6092 simple security when Linux
forwards, the gateway's input from the WAN): the ruleset text, and nft
accepting every variant (checked with ``nft -c`` in a private network
namespace, which vanishes with the command)."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from homegw import kernelpath
from homegw.config import parse_config

PINHOLES = (
    kernelpath.Pinhole6("tcp", "8080", "::1234", True),
    kernelpath.Pinhole6("udp", "27000-27010", "2001:db8:100:1::55", False),
)


def chain(path: kernelpath.KernelPath, name: str) -> list[str]:
    text = kernelpath.ruleset(path)
    body = text[text.index(f"chain {name}") :]
    body = body[: body.index("\n    }")]
    return [line.strip() for line in body.splitlines()[2:] if line.strip()]


def path(**fields) -> kernelpath.KernelPath:
    return kernelpath.KernelPath(
        "lan0", "wan0", **{"kernel_forwards": True, "masquerade": False, **fields}
    )


def test_input_accepts_dhcpv6_replies() -> None:
    rules = chain(path(), "input")
    assert 'iifname "wan0" meta nfproto ipv6 udp sport 547 udp dport 546 accept' in rules
    assert not any("icmpv6 type echo-request" in r for r in rules)  # wan_ping is IPv4's


@pytest.mark.parametrize("forwards", [False, True])
def test_input_from_the_wan_ends_in_a_drop_for_both_families(forwards: bool) -> None:
    """The admin surface (web UI, DNS, SSH): nothing from the WAN is accepted
    by port but DHCP and DHCPv6 client replies; the chain ends in a drop
    that matches IPv6 as IPv4 (an inet table, no family in the rule)."""
    rules = [
        r for r in chain(path(kernel_forwards=forwards), "input") if r.startswith('iifname "wan0"')
    ]
    by_port = [r for r in rules if "dport" in r]
    assert by_port == [
        'iifname "wan0" udp sport 67 udp dport 68 accept',
        'iifname "wan0" meta nfproto ipv6 udp sport 547 udp dport 546 accept',
    ]
    assert rules[-1] == 'iifname "wan0" counter drop comment "from the WAN, not the gateway\'s own"'
    assert not any(r.endswith("accept") and "tcp" in r for r in rules)


def test_forward_chain_with_the_router_in_xdp_forwards_no_ipv6() -> None:
    rules = chain(path(kernel_forwards=False, ipv6_pinholes=PINHOLES), "forward")
    assert rules == [
        'iifname "lan0" oifname "lan0" accept',
        'counter drop comment "default deny"',
    ]
    assert not any("ip6" in r or "icmpv6" in r for r in rules)


def test_forward_chain_rfc6092_when_linux_forwards() -> None:
    rules = chain(path(ipv6_pinholes=PINHOLES), "forward")
    assert rules == [
        "ct state established,related accept",
        "ct state invalid counter drop",
        'icmpv6 type != { 1-4, 128, 129, 144-147 } counter drop comment "RFC 4890: not forwarded"',
        'iifname "lan0" oifname "lan0" accept',
        'iifname "lan0" oifname "wan0" accept',
        'iifname "wan0" oifname "lan0" ip6 daddr & ::ffff:ffff:ffff:ffff == ::1234 tcp dport 8080 '
        "accept",
        'iifname "wan0" oifname "lan0" ip6 daddr 2001:db8:100:1::55 udp dport 27000-27010 accept',
        'iifname "wan0" oifname "lan0" icmpv6 type echo-request limit rate 100/second accept',
        'counter drop comment "default deny"',
    ]


def test_no_echo_to_lan_hosts_without_ipv6_ping_lan() -> None:
    rules = chain(path(ipv6_ping_lan=False), "forward")
    assert not any("echo-request" in r for r in rules)
    # IPv4 WAN -> LAN stays IPv4 only with forward_wan_to_lan
    routed = chain(path(forward_wan_to_lan=True, ipv6_ping_lan=False), "forward")
    assert 'iifname "wan0" oifname "lan0" meta nfproto ipv4 accept' in routed


def test_ipv6_options_from_config() -> None:
    config = parse_config(
        {
            "wan": {"interface": "wan0"},
            "lan": {"interface": "lan0"},
            "firewall": {
                "ipv6_ping_lan": False,
                "ipv6_pinholes": [
                    {"protocol": "both", "port": "27000-27010", "host": "2001:db8:100:1::55"},
                    {"protocol": "tcp", "port": 8080, "host": "::1234"},
                ],
            },
        }
    )
    assert kernelpath.ipv6_options(config) == {
        "ipv6_ping_lan": False,
        "ipv6_pinholes": (
            kernelpath.Pinhole6("tcp", "27000-27010", "2001:db8:100:1::55", False),
            kernelpath.Pinhole6("udp", "27000-27010", "2001:db8:100:1::55", False),
            kernelpath.Pinhole6("tcp", "8080", "::1234", True),
        ),
    }


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="no nft")
def test_every_ipv6_variant_is_accepted_by_nft() -> None:
    for forwards, ping, ping_lan, pinholes in itertools.product((False, True), repeat=4):
        ruleset = kernelpath.ruleset(
            path(
                kernel_forwards=forwards,
                wan_ping=ping,
                ipv6_ping_lan=ping_lan,
                ipv6_pinholes=PINHOLES if pinholes else (),
            )
        )
        check = subprocess.run(
            ["unshare", "--net", "nft", "-c", "-f", "-"],
            input=ruleset,
            text=True,
            capture_output=True,
        )
        assert check.returncode == 0, (forwards, ping, ping_lan, pinholes, check.stderr)
