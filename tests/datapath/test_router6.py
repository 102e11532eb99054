"""The router's IPv6 forwarding through BPF_PROG_TEST_RUN: exact bytes out of
the LAN and WAN roots with the router in the chain and static IPv6 facts."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from collections.abc import Iterator
from dataclasses import replace

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.router.module import REASON_NEIGH6_MISS, RouterModule
from homegw.netfacts import Ipv6Facts
from tests.datapath.punts import PuntLog, one_cpu
from tests.datapath.router_kit import (
    HOST_MAC,
    ISP_MAC,
    LAN_MAC,
    NO_STATIC_ROUTES,
    WAN_MAC,
    fake_nic,
    load_router,
    run,
)

A = ipaddress.IPv6Address
N = ipaddress.IPv6Network
HOST6, OTHER6, OFFLINE6 = "2001:db8:100::11", "fd12:3456:789a:1::12", "2001:db8:100::99"
OTHER_MAC = "02:48:47:00:00:02"
REMOTE6 = "2001:db8:ffff:80::80"
LAN_ADDRESS, WAN_ADDRESS, ISP_ROUTER = "2001:db8:100::1", "2001:db8:ffff:1::1001", "fe80::1"
FACTS = Ipv6Facts(
    lan_prefixes=(N("2001:db8:100::/64"), N("fd12:3456:789a:1::/64")),
    inside=(N("2001:db8:100::/56"), N("fd12:3456:789a::/48")),
    lan_address=A(LAN_ADDRESS),
    wan_address=A(WAN_ADDRESS),
    own=(A(LAN_ADDRESS), A("fd12:3456:789a:1::1"), A("fe80::2"), A(WAN_ADDRESS), A("fe80::3")),
    wan_gateway=A(ISP_ROUTER),
)
HOMEGW_F_LOCAL = 1  # homegw.h
QUOTE_MAX = 1280 - 48  # an ICMPv6 error is at most 1280 bytes (RFC 4443 2.4 c)


def load_router6(dataplane: Dataplane, facts: Ipv6Facts = FACTS, config=None) -> RouterModule:
    router = load_router(dataplane, config or NO_STATIC_ROUTES)
    router.on_ipv6(facts)
    router.set_neighbour(A(ISP_ROUTER), ISP_MAC, Nic.WAN)
    router.set_neighbour(A(HOST6), HOST_MAC, Nic.LAN)
    router.set_neighbour(A(OTHER6), OTHER_MAC, Nic.LAN)
    return router


@pytest.fixture
def router(dataplane: Dataplane) -> RouterModule:
    return load_router6(dataplane)


def from_lan(dst: str = REMOTE6, hlim: int = 64, src: str = HOST6, *, l4: Packet | None = None):
    l4 = l4 if l4 is not None else UDP(sport=40000, dport=53) / b"question"
    return bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IPv6(src=src, dst=dst, hlim=hlim) / l4)


def from_wan(dst: str = HOST6, hlim: int = 50, src: str = REMOTE6, size: int = 0) -> bytes:
    return bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IPv6(src=src, dst=dst, hlim=hlim)
        / UDP(sport=53, dport=40000)
        / (b"answer" + b"a" * size)
    )


def forwarded(frame: bytes, src_mac: str, dst_mac: str) -> bytes:
    """Only the MACs and the hop limit change (IPv6 has no header checksum)."""
    hop_limit = frame[14 + 7] - 1
    return (
        bytes(Ether(dst=dst_mac, src=src_mac, type=0x86DD))
        + frame[14:21]
        + bytes([hop_limit])
        + frame[22:]
    )


def icmp6_error(frame: bytes, error: Packet, src: str, our_mac: str) -> bytes:
    """The error RFC 4443 says the gateway answers, its checksum by scapy:
    as much of the offending packet as fits in 1280 bytes."""
    offender = Ether(frame)
    length = 40 + offender[IPv6].plen
    quote = frame[14 : 14 + length][:QUOTE_MAX]
    reply = (
        Ether(src=our_mac, dst=offender.src)
        / IPv6(src=src, dst=offender[IPv6].src, hlim=64, tc=0, fl=0)
        / error
        / Raw(quote)
    )
    return bytes(reply)


def counter(router: RouterModule, name: str) -> int:
    return router.counters()[name]


def test_lan_to_wan_via_the_isp_router(dataplane: Dataplane, router: RouterModule) -> None:
    frame = from_lan()
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))
    assert counter(router, "v6_forwarded") == 1


def test_wan_to_lan_next_hop_is_the_destination(dataplane: Dataplane, router: RouterModule) -> None:
    frame = from_wan()
    result = run(dataplane, Nic.WAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, LAN_MAC, HOST_MAC))
    assert Ether(result.data)[IPv6].hlim == 49


def test_lan_to_another_lan_prefix_on_link(dataplane: Dataplane, router: RouterModule) -> None:
    frame = from_lan(OTHER6)
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, LAN_MAC, OTHER_MAC))


def test_hop_limit_1_answered_with_time_exceeded(
    dataplane: Dataplane, router: RouterModule
) -> None:
    frame = from_lan(hlim=1)
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_REDIRECT"  # back out of the LAN NIC, see homegw_tx_xdp
    assert result.data == icmp6_error(frame, ICMPv6TimeExceeded(code=0), LAN_ADDRESS, LAN_MAC)
    assert counter(router, "v6_hop_limit_exceeded") == 1


def test_hop_limit_1_from_the_wan_answered_from_the_wan_address(
    dataplane: Dataplane, router: RouterModule
) -> None:
    frame = from_wan(hlim=1)
    result = run(dataplane, Nic.WAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == icmp6_error(frame, ICMPv6TimeExceeded(code=0), WAN_ADDRESS, WAN_MAC)


def test_checksum_is_what_a_receiver_verifies(dataplane: Dataplane, router: RouterModule) -> None:
    """scapy recomputes the checksum with the pseudo-header when it is unset:
    the datapath's must equal it."""
    result = run(dataplane, Nic.LAN, from_lan(hlim=1, l4=ICMPv6EchoRequest(id=7, data=b"ping")))
    answer = Ether(result.data)
    sent = answer[ICMPv6TimeExceeded].cksum
    del answer[ICMPv6TimeExceeded].cksum
    assert Ether(bytes(answer))[ICMPv6TimeExceeded].cksum == sent


def test_over_the_mtu_answered_with_packet_too_big(
    dataplane: Dataplane, router: RouterModule
) -> None:
    frame = from_wan(size=1600)
    result = run(dataplane, Nic.WAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == icmp6_error(frame, ICMPv6PacketTooBig(mtu=1500), WAN_ADDRESS, WAN_MAC)
    assert len(result.data) == 14 + 1280
    assert counter(router, "v6_packet_too_big") == 1


def test_the_facts_mtu_is_the_limit(dataplane: Dataplane) -> None:
    load_router6(dataplane, replace(FACTS, wan_mtu=1280))
    fits, too_big = from_lan(l4=UDP() / (b"x" * 1232)), from_lan(l4=UDP() / (b"x" * 1233))
    assert run(dataplane, Nic.LAN, fits).verdict == "XDP_REDIRECT"
    result = run(dataplane, Nic.LAN, too_big)
    assert result.data == icmp6_error(too_big, ICMPv6PacketTooBig(mtu=1280), LAN_ADDRESS, LAN_MAC)


def test_inside_but_not_a_lan_prefix_is_unreachable(
    dataplane: Dataplane, router: RouterModule
) -> None:
    """RFC 7084 WPD-5: the delegated prefix's unused /64s are not sent to the ISP."""
    for dst in ("2001:db8:100:5::1", "fd12:3456:789a:2::1"):
        frame = from_lan(dst)
        result = run(dataplane, Nic.LAN, frame)
        assert (result.verdict, result.data) == (
            "XDP_REDIRECT",
            icmp6_error(frame, ICMPv6DestUnreach(code=0), LAN_ADDRESS, LAN_MAC),
        )
    assert counter(router, "v6_unreachable") == 2


def test_no_default_router_is_unreachable(dataplane: Dataplane) -> None:
    load_router6(dataplane, replace(FACTS, wan_gateway=None))
    frame = from_lan()
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp6_error(frame, ICMPv6DestUnreach(code=0), LAN_ADDRESS, LAN_MAC),
    )


def test_wan_to_wan_dropped(dataplane: Dataplane, router: RouterModule) -> None:
    for dst in ("2001:db8:ffff:80::81", "2001:db8:100:5::1"):  # elsewhere; inside, not on the LAN
        assert run(dataplane, Nic.WAN, from_wan(dst)).verdict == "XDP_DROP"
    assert counter(router, "v6_wan_to_wan") == 2


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        ("fe80::11", "v6_link_local_source"),
        ("::1", "v6_martian"),
        ("::", "v6_martian"),
        ("ff02::1", "v6_martian"),
        ("::ffff:192.0.2.1", "v6_martian"),
    ],
)
def test_sources_nobody_may_forward_from_dropped(
    dataplane: Dataplane, router: RouterModule, src: str, reason: str
) -> None:
    assert run(dataplane, Nic.LAN, from_lan(src=src)).verdict == "XDP_DROP"
    assert counter(router, reason) == 1


def test_martian_destination_dropped(dataplane: Dataplane, router: RouterModule) -> None:
    for dst in ("::1", "::ffff:192.0.2.1"):
        assert run(dataplane, Nic.LAN, from_lan(dst)).verdict == "XDP_DROP"
    assert counter(router, "v6_martian") == 2


def test_hop_by_hop_options_dropped(dataplane: Dataplane, router: RouterModule) -> None:
    frame = from_lan(l4=IPv6ExtHdrHopByHop() / UDP() / b"x")
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counter(router, "v6_hop_by_hop") == 1


@pytest.mark.parametrize(
    "ext",
    [
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrFragment(offset=0, m=1, id=7),
        IPv6ExtHdrFragment(offset=100, m=0, id=7),
        IPv6ExtHdrRouting(type=4, segleft=0, addresses=[]),
        IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrFragment(m=1),
    ],
    ids=["destination-options", "first-fragment", "later-fragment", "routing", "three"],
)
def test_extension_headers_forwarded_untouched(
    dataplane: Dataplane, router: RouterModule, ext: Packet
) -> None:
    frame = from_lan(l4=ext / UDP(sport=1, dport=2) / (b"z" * 40))
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))


def raw_v6(first_word: int, payload_len: int, next_header: int, body: bytes) -> bytes:
    header = struct.pack("!IHBB", first_word, payload_len, next_header, 64)
    header += A(HOST6).packed + A(REMOTE6).packed
    return bytes(Ether(src=HOST_MAC, dst=LAN_MAC, type=0x86DD)) + header + body


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (raw_v6(0x60000000, 8, 17, b"")[: 14 + 30], "v6_bad_length"),  # not even the fixed header
        (raw_v6(0x60000000, 100, 17, bytes(8)), "v6_bad_length"),  # payload past the frame
        (raw_v6(0x40000000, 8, 17, bytes(8)), "v6_bad_version"),
        (raw_v6(0x60000000, 4, 60, bytes(4)), "v6_truncated"),  # options header cut short
        (raw_v6(0x60000000, 16, 60, bytes([60, 1]) + bytes(14)), "v6_truncated"),  # next one cut
        (raw_v6(0x60000000, 16, 60, bytes([17, 2]) + bytes(14)), "v6_truncated"),  # 24 of 16 bytes
        (raw_v6(0x60000000, 56, 60, (bytes([60, 0]) + bytes(6)) * 7), "v6_too_many_headers"),
    ],
    ids=["short", "payload-length", "version", "ext-cut", "next-ext-cut", "ext-long", "seven"],
)
def test_bad_packets_dropped_per_reason(
    dataplane: Dataplane, router: RouterModule, frame: bytes, reason: str
) -> None:
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counter(router, reason) == 1


@pytest.mark.parametrize(
    "dst",
    [LAN_ADDRESS, WAN_ADDRESS, "fe80::2", "fe80::99", "ff02::1", "ff02::1:ff00:11", "ff05::1:3"],
    ids=["own-lan", "own-wan", "own-link-local", "link-local", "all-nodes", "solicited", "dhcp"],
)
def test_for_the_kernel_passed_unchanged(
    dataplane: Dataplane, router: RouterModule, dst: str
) -> None:
    frame = from_lan(dst)
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)
    own = ipaddress.IPv6Address(dst) in FACTS.own
    assert counter(router, "v6_to_kernel") == (0 if own else 1)  # own: HOMEGW_F_LOCAL instead


def test_ipv6_off_goes_to_the_kernel(dataplane: Dataplane) -> None:
    router = load_router(dataplane, NO_STATIC_ROUTES)  # no on_ipv6: no LAN prefix
    frame = from_lan()
    assert (run(dataplane, Nic.LAN, frame).data, counter(router, "v6_to_kernel")) == (frame, 1)


def test_no_error_about_an_icmpv6_error(dataplane: Dataplane, router: RouterModule) -> None:
    frame = from_lan(hlim=1, l4=ICMPv6DestUnreach() / b"quoted")
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert counter(router, "v6_icmp_suppressed") == 1
    echo = from_lan(hlim=1, l4=ICMPv6EchoRequest(id=1))
    result = run(dataplane, Nic.LAN, echo)
    assert result.data == icmp6_error(echo, ICMPv6TimeExceeded(code=0), LAN_ADDRESS, LAN_MAC)


@pytest.fixture
def one_cpu_router(dataplane: Dataplane) -> Iterator[RouterModule]:
    with one_cpu():
        yield load_router6(dataplane)


def test_neighbour_miss_punted_with_the_next_hop(
    dataplane: Dataplane, one_cpu_router: RouterModule
) -> None:
    router = one_cpu_router
    punts = PuntLog(dataplane, router, (router.module_id, REASON_NEIGH6_MISS + Nic.LAN))
    frames = [from_wan(OFFLINE6, size=i) for i in range(5)]
    for frame in frames:
        assert run(dataplane, Nic.WAN, frame).verdict == "XDP_DROP"
    assert (counter(router, "v6_neigh_miss"), counter(router, "v6_neigh_limited")) == (1, 4)
    got = punts.drain()
    assert len(got) == 1
    punt = got[0]
    next_hop = b"".join(word.to_bytes(4, "little") for word in punt.meta)
    assert (A(next_hop), punt.reason, punt.packet) == (
        A(OFFLINE6),
        REASON_NEIGH6_MISS + Nic.LAN,
        frames[0],
    )
    assert router.stats()["incomplete"] == [OFFLINE6]
    router.set_neighbour(A(OFFLINE6), "02:48:47:00:00:63", Nic.LAN)  # resolved: forwarded
    frame = from_wan(OFFLINE6)
    result = run(dataplane, Nic.WAN, frame)
    assert result.data == forwarded(frame, LAN_MAC, "02:48:47:00:00:63")


def test_wan_router_miss_punted_for_the_wan(
    dataplane: Dataplane, one_cpu_router: RouterModule
) -> None:
    router = one_cpu_router
    router.maps.del_neighbour(A(ISP_ROUTER))
    punts = PuntLog(dataplane, router, (router.module_id, REASON_NEIGH6_MISS + Nic.WAN))
    frame = from_lan()
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    punt = punts.drain()[0]
    assert (punt.reason, punt.meta[0].to_bytes(4, "little")) == (
        REASON_NEIGH6_MISS + Nic.WAN,
        A(ISP_ROUTER).packed[:4],
    )


def test_paused_device_dropped_both_ways(dataplane: Dataplane) -> None:
    config = {**NO_STATIC_ROUTES, "devices": [{"mac": HOST_MAC, "paused": True}]}
    router = load_router6(dataplane, config=config)
    assert run(dataplane, Nic.LAN, from_lan()).verdict == "XDP_DROP"
    assert run(dataplane, Nic.WAN, from_wan()).verdict == "XDP_DROP"
    other = from_wan(OTHER6)
    assert run(dataplane, Nic.WAN, other).data == forwarded(other, LAN_MAC, OTHER_MAC)
    assert counter(router, "v6_device_paused") == 2
    assert router.stats()["devices"][HOST_MAC].dropped == 2
    assert router.apply(parse_config(NO_STATIC_ROUTES))  # resumed: the next frame goes
    assert run(dataplane, Nic.LAN, from_lan()).verdict == "XDP_REDIRECT"


def test_device_counted_and_neighbours_listed(dataplane: Dataplane, router: RouterModule) -> None:
    up, down = from_lan(), from_wan()
    run(dataplane, Nic.LAN, up)
    run(dataplane, Nic.WAN, down)
    host = router.stats()["devices"][HOST_MAC]
    assert (host.from_packets, host.from_bytes, host.to_packets, host.to_bytes) == (
        1,
        len(up),
        1,
        len(down),
    )
    rows = {row["address"]: row for row in router.tables()["neighbours"]()}
    assert rows[ISP_ROUTER] == {"address": ISP_ROUTER, "mac": ISP_MAC, "state": "reachable"}
    assert rows[HOST6]["mac"] == HOST_MAC
    assert counter(router, "forwarded") == 2  # both families' packets out of the NICs


@pytest.mark.parametrize(
    ("nic", "frame"),
    [
        (Nic.LAN, from_lan(src="2001:db8:5555::11")),  # not the home's
        (Nic.WAN, from_wan(src="2001:db8:100:9::1")),  # the home's own space, from outside
        (Nic.WAN, from_wan(src="fd12:3456:789a:1::12")),
    ],
    ids=["lan-foreign", "wan-delegated", "wan-ula"],
)
def test_spoofed_sources_dropped(
    dataplane: Dataplane, router: RouterModule, nic: Nic, frame: bytes
) -> None:
    assert run(dataplane, nic, frame).verdict == "XDP_DROP"
    assert counter(router, "v6_spoofed_source") == 1


def test_renumbering_replaces_prefixes_and_own_addresses(
    dataplane: Dataplane, router: RouterModule
) -> None:
    """A new delegated prefix: the old one's /64 and addresses are gone from
    the maps, the new one's are there (renumbered ISP pool 2001:db8:200::/40)."""
    new_lan = "2001:db8:200::1"
    router.on_ipv6(
        replace(
            FACTS,
            lan_prefixes=(N("2001:db8:200::/64"),),
            inside=(N("2001:db8:200::/56"),),
            lan_address=A(new_lan),
            own=(A(new_lan), A(WAN_ADDRESS)),
        )
    )
    router.set_neighbour(A("2001:db8:200::11"), HOST_MAC, Nic.LAN)
    assert run(dataplane, Nic.WAN, from_wan()).verdict == "XDP_DROP"  # old /64: not ours now
    assert counter(router, "v6_wan_to_wan") == 1
    moved = from_wan("2001:db8:200::11")
    assert run(dataplane, Nic.WAN, moved).data == forwarded(moved, LAN_MAC, HOST_MAC)
    old_own = from_wan(LAN_ADDRESS)
    assert run(dataplane, Nic.WAN, old_own).verdict == "XDP_DROP"  # no longer the gateway's
    new_own = from_wan(new_lan)
    assert (run(dataplane, Nic.WAN, new_own).verdict, counter(router, "v6_to_kernel")) == (
        "XDP_PASS",
        0,
    )


def cursor_flags(dataplane: Dataplane) -> int:
    """HOMEGW_F_* the last packet left in this CPU's chain cursor (one_cpu)."""
    per_cpu = dataplane.modules["router"].bpf["cursor_xdp"].getvalue(ctypes.c_int(0))
    return per_cpu[min(os.sched_getaffinity(0))].flags


def test_own_addresses_marked_local(dataplane: Dataplane, one_cpu_router: RouterModule) -> None:
    for dst, local in ((WAN_ADDRESS, True), ("fe80::2", True), ("ff02::1", False)):
        assert run(dataplane, Nic.LAN, from_lan(dst)).verdict == "XDP_PASS"
        assert bool(cursor_flags(dataplane) & HOMEGW_F_LOCAL) is local, dst


def test_no_error_without_an_address_on_that_side(dataplane: Dataplane) -> None:
    """No global WAN address yet: nothing to send an error to the WAN from."""
    router = load_router6(dataplane, replace(FACTS, wan_address=None))
    assert run(dataplane, Nic.WAN, from_wan(hlim=1)).verdict == "XDP_DROP"
    assert counter(router, "v6_hop_limit_exceeded") == 1


def test_a_restart_keeps_resolved_ipv6_neighbours(pin_dir: str) -> None:
    """router_neigh6 is pinned: a new process adopts its resolved entries and
    forwards to them without a miss; incomplete ones are dropped."""
    first = Dataplane(pin_dir, {})
    first.load()
    with one_cpu():
        old = load_router6(first)
        run(first, Nic.WAN, from_wan(OFFLINE6))  # leaves an incomplete entry
        assert OFFLINE6 in old.stats()["incomplete"]
    first.close()

    second = Dataplane(pin_dir, {})
    second.load()
    try:
        router = RouterModule(
            parse_config(NO_STATIC_ROUTES), iface_info=fake_nic, watch_kernel=False
        )
        second.add_module(router)  # no set_neighbour: only what the first run left
        second.set_order(Nic.WAN, ["router"])
        router.on_ipv6(FACTS)
        stats = router.stats()
        assert {HOST6, OTHER6, ISP_ROUTER} <= set(stats["neighbours"])
        assert OFFLINE6 not in stats["incomplete"]
        assert A(HOST6) in router.table.entries  # aged as its own
        frame = from_wan()
        assert run(second, Nic.WAN, frame).data == forwarded(frame, LAN_MAC, HOST_MAC)
        assert counter(router, "v6_neigh_miss") == 1  # pinned: only the first run's
    finally:
        second.close()
