"""``firewall.ipv6_ping_lan`` and ``firewall.ipv6_pinholes``: validation with
key paths, and the rules the datapath gets (pure)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from homegw.config import ConfigError, parse_config
from homegw.modules.firewall.maps6 import pinhole_value, session_key, settings_value
from homegw.modules.firewall.sessions6 import (
    NS,
    TCP_FIN_IN,
    TCP_FIN_OUT,
    TCP_REPLY,
    TCP_RST,
    PinholeRule,
    Session6,
    Timeouts6,
    expired,
    pinhole_rules,
    settings6,
)
from homegw.netfacts import Ipv6Facts

BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0"}}
A6 = ipaddress.IPv6Address


def firewall(**keys) -> object:
    return parse_config({**BASE, "firewall": keys}).firewall


def errors_of(**keys) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        firewall(**keys)
    return caught.value.errors


def test_defaults() -> None:
    config = firewall()
    assert (config.ipv6_ping_lan, config.ipv6_pinholes) == (True, ())


def test_pinholes_expand_to_one_rule_per_protocol() -> None:
    config = firewall(
        ipv6_pinholes=[
            {"name": "web", "protocol": "tcp", "port": 443, "host": "::1234"},
            {"protocol": "both", "port": "27000-27010", "host": "2001:db8:100:1::55"},
        ]
    )
    assert pinhole_rules(config) == (
        PinholeRule(socket.IPPROTO_TCP, 443, 443, A6("::1234"), True),
        PinholeRule(socket.IPPROTO_TCP, 27000, 27010, A6("2001:db8:100:1::55"), False),
        PinholeRule(socket.IPPROTO_UDP, 27000, 27010, A6("2001:db8:100:1::55"), False),
    )
    value = pinhole_value(pinhole_rules(config)[0])
    assert (value.proto, value.flags, value.port_low, value.port_high) == (6, 1, 443, 443)
    assert bytes(value.host) == A6("::1234").packed


@pytest.mark.parametrize(
    ("pinhole", "message"),
    [
        (
            {"port": 80, "host": "ff02::1"},
            "firewall.ipv6_pinholes.0.host: ff02::1 is not a LAN host's address or "
            "interface id (::1234)",
        ),
        (
            {"port": 80, "host": "fe80::1"},
            "firewall.ipv6_pinholes.0.host: fe80::1 is not a LAN host's address or "
            "interface id (::1234)",
        ),
        (
            {"port": 80, "host": "::"},
            "firewall.ipv6_pinholes.0.host: :: is not a LAN host's address or "
            "interface id (::1234)",
        ),
        ({"port": 0, "host": "::5"}, "firewall.ipv6_pinholes.0.port:"),
        ({"port": 80, "host": "10.0.0.1"}, "firewall.ipv6_pinholes.0.host:"),
        ({"port": 80, "host": "::5", "protocol": "icmp"}, "firewall.ipv6_pinholes.0.protocol:"),
        ({"host": "::5"}, "firewall.ipv6_pinholes.0.port:"),
        ({"port": 80, "host": "::5", "to": 1}, "firewall.ipv6_pinholes.0.to:"),
    ],
)
def test_bad_pinholes_named_by_key_path(pinhole: dict, message: str) -> None:
    found = errors_of(ipv6_pinholes=[pinhole])
    assert len(found) == 1 and found[0].startswith(message), found


def test_overlapping_pinholes_of_one_host() -> None:
    found = errors_of(
        ipv6_pinholes=[
            {"protocol": "both", "port": "1000-2000", "host": "::5"},
            {"protocol": "tcp", "port": 8000, "host": "::5"},
            {"protocol": "udp", "port": 1500, "host": "::5"},
            {"protocol": "udp", "port": 1500, "host": "::6"},  # another host: fine
        ]
    )
    assert found == ["firewall.ipv6_pinholes.2.port: udp 1500 overlaps firewall.ipv6_pinholes.0"]


def test_too_many_pinhole_rules() -> None:
    many = [{"protocol": "both", "port": 1000 + i, "host": "::5"} for i in range(33)]
    assert errors_of(ipv6_pinholes=many) == [
        "firewall.ipv6_pinholes: 66 rules (protocol both counts twice), at most 64"
    ]


def test_settings_from_facts_and_config() -> None:
    facts = Ipv6Facts(
        lan_prefixes=(ipaddress.IPv6Network("2001:db8:100:1::/64"),),
        inside=(ipaddress.IPv6Network("2001:db8:100::/56"), ipaddress.IPv6Network("fd00::/48")),
        own=(A6("fe80::1"), A6("2001:db8:100:1::1"), A6("fe80::1")),
    )
    settings = settings6(firewall(ipv6_ping_lan=False), facts)
    assert settings.flags == 0
    assert [str(n) for n in settings.inside] == [
        "2001:db8:100::/56",
        "2001:db8:100:1::/64",
        "fd00::/48",
    ]
    assert settings.own == (A6("2001:db8:100:1::1"), A6("fe80::1"))
    value = settings_value(settings)
    assert (value.flags, value.pinholes) == (0, 0)
    assert list(value.timeout_ns) == [300 * NS, 7440 * NS, 240 * NS, 60 * NS, 300 * NS]
    assert settings6(firewall(), facts).flags == 1


def session(proto: int, idle_s: int, tcp_seen: int = 0) -> Session6:
    now = 10_000 * NS
    return Session6(
        A6("2001:db8:100:1::5"), A6("2001:db8::80"), 5000, 80, proto, now - idle_s * NS, tcp_seen
    )


@pytest.mark.parametrize(
    ("proto", "tcp_seen", "timeout"),
    [
        (socket.IPPROTO_UDP, 0, 300),
        (socket.IPPROTO_ICMPV6, 0, 60),
        (socket.IPPROTO_ESP, 0, 300),
        (socket.IPPROTO_TCP, 0, 240),  # no reply yet: transitory
        (socket.IPPROTO_TCP, TCP_REPLY, 7440),
        (socket.IPPROTO_TCP, TCP_REPLY | TCP_FIN_OUT, 7440),  # half closed
        (socket.IPPROTO_TCP, TCP_REPLY | TCP_FIN_OUT | TCP_FIN_IN, 240),
        (socket.IPPROTO_TCP, TCP_REPLY | TCP_RST, 240),
    ],
)
def test_expiry_by_protocol_and_tcp_state(proto: int, tcp_seen: int, timeout: int) -> None:
    now = 10_000 * NS
    assert not expired([session(proto, timeout, tcp_seen)], now, Timeouts6())
    old = session(proto, timeout + 1, tcp_seen)
    assert expired([old], now, Timeouts6()) == [old]


def test_session_key_in_network_order() -> None:
    key = session_key(session(socket.IPPROTO_TCP, 0))
    assert bytes(key) == (
        A6("2001:db8:100:1::5").packed
        + A6("2001:db8::80").packed
        + (5000).to_bytes(2, "big")
        + (80).to_bytes(2, "big")
        + bytes([6, 0, 0, 0])
    )


def test_more_addresses_than_the_maps_hold_are_cut_with_a_warning(caplog) -> None:
    many = tuple(A6(f"2001:db8::{i:x}") for i in range(300))
    settings = settings6(firewall(), Ipv6Facts(own=many))
    assert settings.own == tuple(sorted(many))[:256]
    assert "keeping the first 64 and 256" in caplog.text
