"""The router's RFC 1812 / RFC 1122 rules through BPF_PROG_TEST_RUN, exact
bytes: IPv4 header validation, martians, link-layer broadcasts, when an ICMP
error may be sent, how much it quotes, and quotes of NAT-translated packets."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.module import IOModule
from homegw.modules.router.module import RouterModule
from tests.datapath.router_kit import (
    CONFIG,
    HOST,
    HOST_MAC,
    ISP_MAC,
    LAN_GW,
    LAN_MAC,
    WAN_GW_IP,
    WAN_MAC,
    fake_nic,
    forwarded,
    icmp_error,
    lan_frame,
    load_router,
    run,
)

REMOTE = "198.51.100.80"


@pytest.fixture
def router(dataplane: Dataplane) -> RouterModule:
    return load_router(dataplane, CONFIG)


def lan_packet(payload, ttl: int = 1, src: str = HOST, dst: str = REMOTE, **ip) -> bytes:
    return bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=src, dst=dst, ttl=ttl, **ip) / payload)


def counters(router: RouterModule) -> dict[str, int]:
    return {k: v for k, v in router.stats()["counters"].items() if v}


# -- IPv4 header validation ----------------------------------------------------


def corrupt(frame: bytes, offset: int, value: bytes, fix_checksum: bool = True) -> bytes:
    """frame with bytes at IP offset `offset` replaced (checksum recomputed)."""
    raw = bytearray(frame)
    raw[14 + offset : 14 + offset + len(value)] = value
    if fix_checksum:
        ihl = (raw[14] & 0xF) * 4
        raw[24:26] = b"\x00\x00"
        words = sum(int.from_bytes(raw[14 + i : 16 + i], "big") for i in range(0, ihl, 2))
        while words >> 16:
            words = (words & 0xFFFF) + (words >> 16)
        raw[24:26] = (~words & 0xFFFF).to_bytes(2, "big")
    return bytes(raw)


GOOD = lan_frame(size=20)
BAD_HEADERS = {
    "version-6": (corrupt(GOOD, 0, b"\x65"), "bad_version"),
    "ihl-4": (corrupt(GOOD, 0, b"\x44"), "bad_ihl"),
    "checksum": (corrupt(GOOD, 10, b"\x12\x34", fix_checksum=False), "bad_checksum"),
    "total-over-frame": (corrupt(GOOD, 2, (len(GOOD) - 14 + 1).to_bytes(2, "big")), "bad_length"),
    "total-under-ihl": (corrupt(GOOD, 2, (19).to_bytes(2, "big")), "bad_length"),
    "options-past-frame": (corrupt(GOOD[:40], 0, b"\x4f"), "bad_length"),
    "truncated": (GOOD[:30], "bad_length"),
    "to-the-gateway": (corrupt(lan_frame(LAN_GW), 10, b"\x00\x01", False), "bad_checksum"),
}


@pytest.mark.parametrize("frame, reason", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_ipv4_headers_dropped_by_reason(
    dataplane: Dataplane, router: RouterModule, frame: bytes, reason: str
) -> None:
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counters(router) == {reason: 1}


def test_ethernet_padding_is_not_a_bad_length(dataplane: Dataplane, router: RouterModule) -> None:
    frame = lan_frame() + bytes(18)  # 42-byte frame padded to 60 by the sender
    assert run(dataplane, Nic.LAN, frame).data == forwarded(frame, WAN_MAC, ISP_MAC)


# -- what is not forwarded -----------------------------------------------------


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "33:33:00:00:00:01"])
@pytest.mark.parametrize("ttl", [64, 1])
def test_link_layer_broadcast_to_unicast_ip_dropped(
    dataplane: Dataplane, router: RouterModule, mac: str, ttl: int
) -> None:
    frame = bytes(Ether(src=HOST_MAC, dst=mac) / IP(src=HOST, dst=REMOTE, ttl=ttl) / UDP())
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counters(router) == {"link_broadcast": 1}  # and no ICMP error about it


MARTIANS = {
    "from-0/8": ("0.0.0.0", REMOTE),
    "from-127/8": ("127.0.0.1", REMOTE),
    "from-multicast": ("224.0.0.1", REMOTE),
    "from-class-e": ("240.0.0.1", REMOTE),
    "from-broadcast": ("255.255.255.255", REMOTE),
    "from-lan-broadcast": ("192.168.1.255", REMOTE),
    "to-0/8": (HOST, "0.1.2.3"),
    "to-127/8": (HOST, "127.0.0.1"),
    "to-class-e": (HOST, "240.0.0.1"),
}


@pytest.mark.parametrize("ttl", [64, 1])
@pytest.mark.parametrize("src, dst", MARTIANS.values(), ids=MARTIANS.keys())
def test_martians_dropped_not_handed_to_the_kernel(
    dataplane: Dataplane, router: RouterModule, src: str, dst: str, ttl: int
) -> None:
    result = run(dataplane, Nic.LAN, lan_packet(UDP(), ttl=ttl, src=src, dst=dst))
    assert result.verdict == "XDP_DROP"
    assert counters(router) == {"martian": 1}


def test_wan_back_out_of_the_wan_dropped(dataplane: Dataplane, router: RouterModule) -> None:
    frame = bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src=REMOTE, dst="8.8.8.8") / UDP())
    assert run(dataplane, Nic.WAN, frame).verdict == "XDP_DROP"
    assert counters(router) == {"wan_to_wan": 1}


def test_lan_back_out_of_the_lan_forwarded_here(dataplane: Dataplane) -> None:
    """A static route via a router on the LAN: forwarded in XDP, not by the
    kernel (whose forward chain drops what XDP forwards)."""
    config = {
        **CONFIG,
        "router": {"routes": [{"destination": "10.9.0.0/16", "via": "192.168.1.250"}]},
    }
    router = load_router(dataplane, config)
    lan_router_mac = "02:48:47:00:00:fa"
    router.set_neighbour(ipaddress.IPv4Address("192.168.1.250"), lan_router_mac, Nic.LAN)
    frame = lan_frame("10.9.1.2")
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        forwarded(frame, LAN_MAC, lan_router_mac),
    )


# -- when an ICMP error may be sent (RFC 1812 4.3.2.7) -----------------------------

NO_ERROR_ABOUT = {
    "icmp-dest-unreachable": lan_packet(ICMP(type=3, code=1) / bytes(28)),
    "icmp-time-exceeded": lan_packet(ICMP(type=11) / bytes(28)),
    "icmp-redirect": lan_packet(ICMP(type=5) / bytes(28)),
    "icmp-unknown-type": lan_packet(ICMP(type=42) / bytes(8)),
    "non-first-fragment": lan_packet(bytes(40), proto=17, frag=10),
}


@pytest.mark.parametrize("frame", NO_ERROR_ABOUT.values(), ids=NO_ERROR_ABOUT.keys())
def test_no_icmp_error_about_errors_or_later_fragments(
    dataplane: Dataplane, router: RouterModule, frame: bytes
) -> None:
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counters(router) == {"ttl_exceeded": 1, "icmp_suppressed": 1}


ERROR_ABOUT = {
    "icmp-echo": lan_packet(ICMP(type=8, id=7, seq=1) / b"ping"),
    "icmp-timestamp": lan_packet(ICMP(type=13) / bytes(12)),
    "first-fragment": lan_packet(UDP(sport=1, dport=2) / bytes(32), flags="MF"),
}


@pytest.mark.parametrize("frame", ERROR_ABOUT.values(), ids=ERROR_ABOUT.keys())
def test_icmp_error_about_queries_and_first_fragments(
    dataplane: Dataplane, router: RouterModule, frame: bytes
) -> None:
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp_error(frame, 11, 0, 0, LAN_GW, LAN_MAC),
    )


# -- how much an error quotes (RFC 1812 4.3.2.3) ----------------------------------


@pytest.mark.parametrize("size", [0, 31, 32, 520, 521, 1000, 1400])
def test_quote_holds_what_fits_in_576_bytes(
    dataplane: Dataplane, router: RouterModule, size: int
) -> None:
    frame = lan_frame(ttl=1, size=size)
    result = run(dataplane, Nic.LAN, frame)
    expected = icmp_error(frame, 11, 0, 0, LAN_GW, LAN_MAC)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", expected)
    assert len(result.data) - 14 == min(576, 28 + len(frame) - 14)


# -- quotes of packets NAT translated on their way in --------------------------------


class FakeDnat(IOModule):
    name = "fakedn"
    module_id = 7
    source = Path(__file__).parent / "fake_dnat.bpf.c"
    xdp_function = "fake_dnat_xdp"


@pytest.mark.parametrize(
    "l4",
    [UDP(sport=5353, dport=8081) / (b"q" * 100), TCP(sport=5353, dport=8081, flags="S")],
    ids=["udp", "tcp"],
)
@pytest.mark.parametrize("ttl, df, error", [(1, False, (11, 0, 0)), (64, True, (3, 4, 1000))])
def test_error_about_a_translated_packet_quotes_it_as_sent(
    dataplane: Dataplane,
    l4,
    ttl: int,
    df: bool,
    error: tuple,
) -> None:
    load_router(dataplane, CONFIG, iface_info=functools.partial(fake_nic, lan_mtu=1000))
    dataplane.add_module(FakeDnat())
    dataplane.set_order(Nic.WAN, ["fakedn", "router"])
    sent = (
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IP(src=REMOTE, dst=WAN_GW_IP, ttl=ttl, id=9, flags="DF" if df else 0)
        / l4
    )
    if df:
        sent = sent / (b"z" * 1000)
    frame = bytes(sent)
    result = run(dataplane, Nic.WAN, frame)
    as_sent = bytes(Ether(frame)[IP])
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp_error(frame, *error, WAN_GW_IP, WAN_MAC, quoted=as_sent),
    )
