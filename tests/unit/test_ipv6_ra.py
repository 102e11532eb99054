"""Router advertisements: exact bytes, lifetimes, RS parsing of hostile input."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from homegw.modules.ipv6 import ra
from homegw.modules.ipv6.prefixes import LanPrefix

Net = ipaddress.IPv6Network
Addr = ipaddress.IPv6Address
MAC = bytes.fromhex("020000000001")
T0 = 1_000_000.0
LL = Addr("fe80::1")


def test_ra_exact_bytes() -> None:
    advert = ra.Advert(
        source_mac=MAC,
        router_lifetime=600,
        prefixes=(
            ra.Pio(Net("2001:db8:100:ab00::/64"), 5400, 2700),
            ra.Pio(Net("fd12:3456:789a::/64"), 7200, 3600),
        ),
        rdnss=(Addr("fd12:3456:789a::1"),),
        dnssl=("lan",),
        dns_lifetime=600,
        mtu=1500,
        other=True,
    )
    expected = bytes.fromhex(
        "8600 0000 40 40 0258 00000000 00000000"  # RA: hop limit 64, O, lifetime 600
        "0101 020000000001"  # source link-layer address
        "0501 0000 000005dc"  # MTU 1500
        "0304 40 c0 00001518 00000a8c 00000000 20010db80100ab000000000000000000"
        "0304 40 c0 00001c20 00000e10 00000000 fd123456789a00000000000000000000"
        "1903 0000 00000258 fd123456789a00000000000000000001"  # RDNSS
        "1f02 0000 00000258 036c616e00 000000"  # DNSSL "lan", padded to 16
    )
    assert ra.build_ra(advert) == expected
    assert ra.parse_ra(expected) == advert


def test_ra_flags_and_no_options() -> None:
    advert = ra.Advert(source_mac=MAC, router_lifetime=0, managed=True, other=True)
    assert ra.build_ra(advert) == bytes.fromhex("8600000040c0000000000000000000000101020000000001")
    assert ra.parse_ra(ra.build_ra(advert)) == advert


def test_dnssl_two_names_padding() -> None:
    advert = ra.Advert(MAC, 0, dnssl=("home.arpa", "example.test"), dns_lifetime=30)
    option = ra.build_ra(advert)[24:]
    # 8 header + 11 + 14 name bytes = 33 -> 40 (5 units)
    assert option[:2] == b"\x1f\x05" and len(option) == 40
    assert option[8:33] == b"\x04home\x04arpa\x00\x07example\x04test\x00"
    assert option[33:] == bytes(7)
    assert ra.parse_ra(ra.build_ra(advert)).dnssl == ("home.arpa", "example.test")


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".lan", ".".join(["abcdefg"] * 40)])
def test_dnssl_bad_name(bad: str) -> None:
    with pytest.raises(ValueError):
        ra.encode_domain(bad)


def test_pio_lifetimes() -> None:
    delegated = Net("2001:db8:100:ab00::/56")
    net = Net("2001:db8:100:ab00::/64")
    # what is left, capped by RFC 9096's limits
    assert ra.pio_for(LanPrefix(net, T0 + 86400, T0 + 172800, delegated), T0) == ra.Pio(
        net, 5400, 2700
    )
    assert ra.pio_for(LanPrefix(net, T0 + 100.9, T0 + 200.5, delegated), T0) == ra.Pio(
        net, 200, 100
    )
    # deprecated: preferred 0, valid what is left
    assert ra.pio_for(LanPrefix(net, T0 - 5, T0 + 1000, delegated), T0) == ra.Pio(net, 1000, 0)
    # ended: 0 and 0
    assert ra.pio_for(LanPrefix(net, T0 - 5, T0 - 1, delegated), T0) == ra.Pio(net, 0, 0)
    # the ULA: 1 h / 2 h
    ula = Net("fd00:1::/64")
    assert ra.pio_for(LanPrefix(ula, None, None), T0) == ra.Pio(ula, 7200, 3600)


def test_advert_for_router_lifetime_follows_the_default_route() -> None:
    prefixes = [LanPrefix(Net("fd00:1::/64"), None, None)]
    common = dict(source_mac=MAC, max_interval=200, rdnss=[Addr("fd00:1::1")], dnssl=["lan"])
    with_route = ra.advert_for(prefixes, T0, default_router=True, **common)
    assert with_route.router_lifetime == 600 and with_route.dns_lifetime == 600
    assert ra.advert_for(prefixes, T0, default_router=False, **common).router_lifetime == 0
    assert ra.router_lifetime(4000) == 9000


# --- RS parsing ----------------------------------------------------------------

RS = bytes.fromhex("85 00 0000 00000000")
SLLAO = bytes.fromhex("0101 0a0000000002")


def test_rs_valid() -> None:
    assert ra.parse_rs(RS, 255, LL) == ra.Solicitation(LL, None)
    assert ra.parse_rs(RS + SLLAO, 255, LL) == ra.Solicitation(LL, bytes.fromhex("0a0000000002"))
    # unknown options are skipped (RFC 4861 4.1)
    assert ra.parse_rs(RS + bytes.fromhex("fe01 000000000000") + SLLAO, 255, LL).source_mac
    assert ra.parse_rs(RS, 255, Addr("::")) == ra.Solicitation(Addr("::"), None)


@pytest.mark.parametrize(
    ("data", "hop_limit", "source", "reason"),
    [
        (RS, 64, LL, "bad_hop_limit"),  # routed from elsewhere
        (RS, 254, LL, "bad_hop_limit"),
        (RS[:7], 255, LL, "short"),
        (b"", 255, LL, "short"),
        (bytes([134]) + RS[1:], 255, LL, "not_rs"),
        (bytes([133, 1]) + RS[2:], 255, LL, "bad_code"),
        (RS + bytes.fromhex("0100 0a0000000002"), 255, LL, "zero_length_option"),
        (RS + bytes.fromhex("0102 0a0000000002"), 255, LL, "truncated_option"),
        (RS + b"\x01", 255, LL, "truncated_option"),
        (RS + SLLAO, 255, Addr("::"), "lladdr_from_unspecified"),
    ],
)
def test_rs_malformed(data: bytes, hop_limit: int, source: Addr, reason: str) -> None:
    with pytest.raises(ra.Malformed) as caught:
        ra.parse_rs(data, hop_limit, source)
    assert caught.value.reason == reason


def test_rs_fuzz_never_crashes_otherwise() -> None:
    import random

    rng = random.Random(1)
    outcomes = set()
    for _ in range(3000):
        data = RS + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        try:
            ra.parse_rs(data, 255, LL)
            outcomes.add("ok")
        except ra.Malformed as error:
            outcomes.add(error.reason)
    assert outcomes >= {"ok", "zero_length_option", "truncated_option"}


def test_ra_parser_fuzz_raises_only_malformed() -> None:
    import random

    rng = random.Random(2)
    full = ra.build_ra(
        ra.Advert(
            MAC,
            600,
            prefixes=(ra.Pio(Net("2001:db8::/64"), 10, 5),),
            rdnss=(Addr("2001:db8::1"),),
            dnssl=("lan",),
            dns_lifetime=60,
            mtu=1500,
        )
    )
    parsed = 0
    for _ in range(3000):
        data = bytearray(full[: rng.randrange(len(full) + 1)])
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            ra.parse_ra(bytes(data))
            parsed += 1
        except ra.Malformed:
            pass
    assert parsed > 100


def test_ra_parser_rejects_bad_prefix_length() -> None:
    data = ra.build_ra(ra.Advert(MAC, 0, prefixes=(ra.Pio(Net("2001:db8::/64"), 1, 1),)))
    bad = data[:24] + struct.pack("!BBB", 3, 4, 200) + data[27:]
    with pytest.raises(ra.Malformed, match="bad_prefix_length"):
        ra.parse_ra(bad)


# --- the advertiser's socket helpers ---------------------------------------------


def test_icmp6_filter_passes_rs_only() -> None:
    from homegw.modules.ipv6.advertiser import icmp6_filter_pass_only

    words = struct.unpack("=8I", icmp6_filter_pass_only(133))
    blocked = {t for t in range(256) if words[t >> 5] >> (t & 31) & 1}
    assert blocked == set(range(256)) - {133}


def test_hop_limit_from_ancillary_data() -> None:
    import socket

    from homegw.modules.ipv6.advertiser import hop_limit_of

    ok = [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("=i", 255))]
    assert hop_limit_of(ok) == 255
    assert hop_limit_of([]) == -1  # missing: never 255, so the RS is dropped
    assert hop_limit_of([(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, b"\xff")]) == -1
