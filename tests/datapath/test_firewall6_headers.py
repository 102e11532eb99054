"""IPv6 firewall through BPF_PROG_TEST_RUN, the parsing side: extension
headers walked (or dropped by rule, never misparsed), routing header type 0,
fragments, malformed headers, martian destinations; the verdict, the
untouched frame and the one counter that moved."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.datapath.firewall6_kit import (
    A6,
    HOST,
    HOST_MAC,
    OTHER_HOST,
    REMOTE,
    REMOTE2,
    Firewall6,
    firewall_with_pinholes,
    from_lan,
    from_wan,
    only_session,
)
from tests.datapath.test_nat import ISP_MAC, LAN_MAC, WAN_MAC

fw = pytest.fixture(scope="module", name="fw")(firewall_with_pinholes)


# --- extension headers --------------------------------------------------------------


@pytest.mark.parametrize("side", ["wan", "lan"])
def test_routing_header_type_0_dropped(fw: Firewall6, side: str) -> None:
    rh0 = IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8:ffff:80::1"])
    for segments_left in (1, 0):
        rh0.segleft = segments_left
        l4 = rh0 / UDP(sport=50030, dport=53)
        frame = from_wan(l4) if side == "wan" else from_lan(l4)
        assert fw.dropped(getattr(fw, side), frame) == "v6_routing_type0"


def test_other_routing_headers_are_walked(fw: Firewall6) -> None:
    rh2 = IPv6ExtHdrRouting(type=2, segleft=0, addresses=[HOST])  # Mobile IPv6 home address
    out = from_lan(rh2 / UDP(sport=50031, dport=53) / b"q")
    assert fw.passed(fw.lan, out) == "v6_lan_outbound"
    back = from_wan(IPv6ExtHdrDestOpt() / UDP(sport=53, dport=50031) / b"a")
    assert fw.passed(fw.wan, back) == "v6_wan_reply"


def authentication_header(next_header: int) -> Raw:
    """AH (RFC 4302): 12 bytes and a 12-byte ICV; its length counts 4-byte
    units minus 2 (where the other headers count 8-byte units minus 1)."""
    return Raw(bytes([next_header, 24 // 4 - 2, 0, 0]) + bytes(20))


def test_authentication_header_length_in_4_byte_units(fw: Firewall6) -> None:
    out = from_lan(authentication_header(17) / UDP(sport=50032, dport=53) / b"q", nh=51)
    assert fw.passed(fw.lan, out) == "v6_lan_outbound"
    back = from_wan(authentication_header(17) / UDP(sport=53, dport=50032) / b"a", nh=51)
    assert fw.passed(fw.wan, back) == "v6_wan_reply"
    assert only_session(fw, 50032).remote_port == 53


def test_a_chain_of_headers_is_walked_to_the_transport(fw: Firewall6) -> None:
    chain = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(type=4, segleft=0)
    syn = chain / IPv6ExtHdrDestOpt() / TCP(sport=40600, dport=22, flags="S")
    assert fw.dropped(fw.wan, from_wan(syn)) == "v6_unsolicited"
    # the same behind the headers to a pinhole: the port was read where it is
    to_pinhole = chain / TCP(sport=40600, dport=8080, flags="S")
    assert fw.passed(fw.wan, from_wan(to_pinhole)) == "v6_wan_pinhole"


def dest_opts(count: int, last=None) -> object:
    packet = last if last is not None else UDP(sport=40700, dport=8080)
    for _ in range(count):
        packet = IPv6ExtHdrDestOpt() / packet
    return packet


@pytest.mark.parametrize("side", ["wan", "lan"])
def test_extension_header_chains_walked_or_dropped(fw: Firewall6, side: str) -> None:
    send = getattr(fw, side)
    make = from_wan if side == "wan" else from_lan
    assert fw.dropped(send, make(dest_opts(7))) == "v6_ext_too_many"
    too_long = bytes(IPv6ExtHdrDestOpt(nh=60, len=63)) + bytes(504)  # 512 bytes, then another
    assert fw.dropped(
        send, make(Raw(too_long + bytes(IPv6ExtHdrDestOpt(nh=17))) / UDP(), nh=60)
    ) == ("v6_ext_too_many")
    # a header announcing another that is not in the frame
    truncated = bytes(IPv6ExtHdrDestOpt(nh=60, len=1)) + bytes(8)
    assert fw.dropped(send, make(Raw(truncated), nh=60)) == "v6_ext_truncated"
    hop_second = IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(sport=40700, dport=8080)
    assert fw.dropped(send, make(hop_second)) == "v6_ext_hop_not_first"
    # the transport header cut short behind the headers
    cut = bytes(IPv6ExtHdrDestOpt(nh=6)) + bytes(10)
    assert fw.dropped(send, make(Raw(cut), nh=60)) == "v6_malformed"


# --- fragments ----------------------------------------------------------------------


def test_later_fragment_before_its_first_dropped(fw: Firewall6) -> None:
    frame = from_wan(IPv6ExtHdrFragment(nh=17, offset=100, id=0xBAD) / Raw(bytes(64)))
    assert fw.dropped(fw.wan, frame) == "v6_fragment_unadmitted"


def test_fragments_of_an_admitted_first_fragment_pass(fw: Firewall6) -> None:
    fw.passed(fw.lan, from_lan(UDP(sport=50040, dport=53) / b"q"))
    reply = UDP(sport=53, dport=50040) / (b"a" * 40)
    first = IPv6ExtHdrFragment(nh=17, m=1, id=0x1001) / Raw(bytes(reply)[:16])
    later = IPv6ExtHdrFragment(nh=17, offset=2, id=0x1001) / Raw(bytes(reply)[16:])
    assert fw.passed(fw.wan, from_wan(first)) == "v6_wan_reply"
    assert fw.passed(fw.wan, from_wan(later)) == "v6_wan_fragment"
    # the same id from another remote, or to another host, was not admitted
    assert fw.dropped(fw.wan, from_wan(later, src=REMOTE2)) == "v6_fragment_unadmitted"
    assert fw.dropped(fw.wan, from_wan(later, dst=OTHER_HOST)) == "v6_fragment_unadmitted"


def test_fragments_of_a_refused_first_fragment_dropped(fw: Firewall6) -> None:
    knock = UDP(sport=53, dport=50041) / (b"k" * 40)
    first = IPv6ExtHdrFragment(nh=17, m=1, id=0x1002) / Raw(bytes(knock)[:16])
    later = IPv6ExtHdrFragment(nh=17, offset=2, id=0x1002) / Raw(bytes(knock)[16:])
    assert fw.dropped(fw.wan, from_wan(first)) == "v6_unsolicited"
    assert fw.dropped(fw.wan, from_wan(later)) == "v6_fragment_unadmitted"


def test_first_fragment_without_the_whole_transport_header_dropped(fw: Firewall6) -> None:
    """RFC 7112: the first fragment carries the whole header chain."""
    tiny = IPv6ExtHdrFragment(nh=6, m=1, id=0x1003) / Raw(bytes(8))  # 8 of TCP's 20 bytes
    assert fw.dropped(fw.wan, from_wan(tiny)) == "v6_malformed"
    assert fw.dropped(fw.lan, from_lan(tiny)) == "v6_malformed"


def test_outbound_later_fragments_go_out(fw: Firewall6) -> None:
    later = IPv6ExtHdrFragment(nh=17, offset=2, id=0x1004) / Raw(bytes(32))
    assert fw.passed(fw.lan, from_lan(later)) == "v6_lan_outbound"


# --- malformed ----------------------------------------------------------------------


def ipv6_frame(src_mac: str, dst_mac: str, packet: bytes) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac, type=0x86DD)) + packet


GOOD = bytes(IPv6(src=REMOTE, dst=HOST) / UDP(sport=1, dport=2) / b"data")
MALFORMED = {
    "version 4": bytes([0x45]) + GOOD[1:],
    "payload length past the frame": GOOD[:4] + (len(GOOD) - 20).to_bytes(2, "big") + GOOD[6:],
    "payload length 0 (a jumbogram)": GOOD[:4] + bytes(2) + GOOD[6:],
    "half a header": GOOD[:30],
    "UDP header cut short": GOOD[:4] + (4).to_bytes(2, "big") + GOOD[6:44],
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_ipv6_dropped_on_both_nics(fw: Firewall6, name: str) -> None:
    packet = MALFORMED[name]
    assert fw.dropped(fw.wan, ipv6_frame(ISP_MAC, WAN_MAC, packet)) == "v6_malformed"
    lan_packet = packet.replace(A6(REMOTE).packed, A6(REMOTE2).packed)  # swap roles
    lan_packet = lan_packet.replace(A6(HOST).packed, A6(REMOTE).packed, 1)
    lan_packet = lan_packet.replace(A6(REMOTE2).packed, A6(HOST).packed, 1)
    assert fw.dropped(fw.lan, ipv6_frame(HOST_MAC, LAN_MAC, lan_packet)) == "v6_malformed"


@pytest.mark.parametrize("dst", ["::1", "::", "::ffff:203.0.113.5"])
def test_martian_destinations_dropped(fw: Firewall6, dst: str) -> None:
    assert fw.dropped(fw.lan, from_lan(UDP(dport=9), dst=dst)) == "v6_martian_destination"
    assert fw.dropped(fw.wan, from_wan(UDP(dport=9), dst=dst)) == "v6_martian_destination"
