"""DPI datapath through BPF_PROG_TEST_RUN: flows, classification states,
punts, DNS attribution, accounting both ways, odd headers. Every test runs
on one CPU, so a flow has one per-CPU copy. (Policy: test_dpi_policy.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.l2 import ARP, Ether

from homegw.dataplane.dataplane import Dataplane
from homegw.modules.dpi.maps import slots_of
from tests.datapath.dpi_kit import (
    APP,
    CATEGORY,
    GIVE_UP_AFTER,
    HTTP_GET,
    PUNT_PACKETS,
    REASON_PAYLOAD,
    REMOTE,
    DpiGateway,
    forwarded_down,
    key,
    rst_answer,
    tcp_down,
    tcp_up,
    udp_down,
    udp_up,
)
from tests.datapath.punts import one_cpu
from tests.datapath.router_kit import HOST, HOST_MAC, ISP_MAC, LAN_GW, LAN_MAC, WAN_MAC, forwarded


@pytest.fixture
def gw(dataplane: Dataplane) -> Iterator[DpiGateway]:
    with one_cpu():
        yield DpiGateway(dataplane)


def test_new_flow_is_classifying_and_its_first_payloads_are_punted(gw: DpiGateway) -> None:
    punts = gw.punt_log()
    syn = tcp_up(41000, flags="S", ack=0)
    frames = [tcp_up(41000, HTTP_GET + bytes([i])) for i in range(PUNT_PACKETS + 1)]
    assert gw.lan(syn).data == forwarded(syn, WAN_MAC, ISP_MAC)
    for frame in frames:
        result = gw.lan(frame)
        assert result.verdict == "XDP_REDIRECT"
    got = punts.drain()
    assert [(p.module, p.reason, p.meta[0]) for p in got] == [
        (7, REASON_PAYLOAD, n) for n in range(1, PUNT_PACKETS + 1)
    ]
    assert [p.packet for p in got] == frames[:PUNT_PACKETS]  # as the host sent them
    row = gw.flow(key(41000))
    assert row is not None
    assert (row.state, row.source, row.app, row.mac) == ("classifying", "none", 0, HOST_MAC)
    assert (row.up_packets, row.up_bytes) == (6, len(syn) + sum(map(len, frames)))
    assert row.punted == PUNT_PACKETS + 1  # one packet after the last punt
    assert gw.counters()["punted"] == PUNT_PACKETS


def test_no_payload_no_punt_and_udp_always_payload(gw: DpiGateway) -> None:
    punts = gw.punt_log()
    gw.lan(tcp_up(41001, flags="A"))
    gw.lan(udp_up(41002, payload=b""))
    assert [(p.meta[0], p.packet) for p in punts.drain()] == [(1, udp_up(41002, payload=b""))]


def test_classified_flow_is_done_and_no_longer_punted(gw: DpiGateway) -> None:
    punts = gw.punt_log()
    gw.lan(tcp_up(41010, HTTP_GET))
    gw.maps.classify(key(41010), APP, CATEGORY, "host")
    gw.lan(tcp_up(41010, HTTP_GET))
    assert len(punts.drain()) == 1
    row = gw.flow(key(41010))
    assert row is not None
    assert (row.state, row.source, row.app, row.category) == ("done", "host", APP, CATEGORY)
    assert gw.counters()["classified_host"] == 1


def test_known_verdict_classifies_a_new_copy_at_once(gw: DpiGateway) -> None:
    gw.maps.classify(key(41011), APP, CATEGORY, "sni")
    punts = gw.punt_log()
    gw.lan(tcp_up(41011, HTTP_GET))
    assert punts.drain() == []
    row = gw.flow(key(41011))
    assert row is not None and (row.state, row.source) == ("done", "sni")


def test_dns_attributed_first_packet_is_done(gw: DpiGateway) -> None:
    gw.maps.set_dns(REMOTE, APP, CATEGORY, gw.maps.now_tick() + 60)
    gw.lan(tcp_up(41020, flags="S", ack=0))
    row = gw.flow(key(41020))
    assert row is not None
    assert (row.state, row.source, row.app, row.category) == ("done", "dns", APP, CATEGORY)
    assert gw.counters()["dns_attributed"] == 1


def test_expired_dns_attribution_is_not_used(gw: DpiGateway) -> None:
    gw.maps.set_dns(REMOTE, APP, CATEGORY, gw.maps.now_tick() - 1)
    gw.lan(tcp_up(41021, flags="S", ack=0))
    row = gw.flow(key(41021))
    assert row is not None and row.state == "classifying"
    gw.maps.drop_dns([REMOTE])
    gw.maps.set_dns(REMOTE, APP, CATEGORY, gw.maps.now_tick() + 60)
    gw.maps.drop_dns([REMOTE])
    gw.lan(tcp_up(41022, flags="S", ack=0))
    row = gw.flow(key(41022))
    assert row is not None and row.state == "classifying"


def test_down_packets_count_on_the_same_flow(gw: DpiGateway) -> None:
    up, down = udp_up(41030), udp_down(41030)
    gw.lan(up)
    result = gw.wan(down)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded_down(down))
    row = gw.flow(key(41030, proto=17))
    assert row is not None
    assert (row.up_packets, row.down_packets) == (1, 1)
    assert (row.up_bytes, row.down_bytes) == (len(up), len(down))
    assert row.mac == HOST_MAC
    assert row.first_tick and row.last_tick >= row.first_tick


def test_fin_marks_the_flow(gw: DpiGateway) -> None:
    gw.lan(tcp_up(41040, HTTP_GET))
    row = gw.flow(key(41040))
    assert row is not None and not row.fin
    gw.wan(tcp_down(41040, flags="FA"))
    row = gw.flow(key(41040))
    assert row is not None and row.fin and row.down_packets == 1


def test_gives_up_after_the_punts_and_some_more_packets(gw: DpiGateway) -> None:
    for _ in range(PUNT_PACKETS + GIVE_UP_AFTER - 1):
        gw.lan(tcp_up(41050, HTTP_GET))
    row = gw.flow(key(41050))
    assert row is not None and row.state == "classifying"
    gw.wan(tcp_down(41050))  # any packet counts once the punts are done
    row = gw.flow(key(41050))
    assert row is not None and (row.state, row.source) == ("done", "unknown")
    assert gw.counters()["gave_up"] == 1


def test_forget_removes_flow_and_verdict(gw: DpiGateway) -> None:
    gw.maps.classify(key(41060), APP, CATEGORY, "sni")
    gw.lan(tcp_up(41060, HTTP_GET))
    gw.maps.forget([key(41060)])
    assert gw.flow(key(41060)) is None
    assert gw.maps.classified(key(41060)) is None


def test_punts_per_cpu_are_bounded(dataplane: Dataplane) -> None:
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_PUNTS_PER_TICK=3)
        punts = gw.punt_log()
        frames = [udp_up(41080 + i) for i in range(5)]  # five new flows, one payload each
        start = gw.maps.now_tick()
        while gw.maps.now_tick() == start:  # a fresh tick: its budget all there
            pass
        tick = gw.maps.now_tick()
        for frame in frames:
            assert gw.lan(frame).verdict == "XDP_REDIRECT"
        assert gw.maps.now_tick() == tick, "the runs took more than a tick"
        assert [p.packet for p in punts.drain()] == frames[:3]
        counters = gw.counters()
        assert (counters["punted"], counters["punt_limited"]) == (3, 2)
        assert all(row.punted == 1 for row in gw.maps.flows())


def test_flows_sharing_a_slot_are_counted_apart_and_forgotten(dataplane: Dataplane) -> None:
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_SLOTS=1)  # every flow hashes to slot 0
        first, second = tcp_up(41070, HTTP_GET), tcp_up(41071, HTTP_GET + b"!")
        for frame in (first, second, second):
            gw.lan(frame)
        gw.wan(tcp_down(41070))
        rows = {row.key.lan_port: row for row in gw.maps.flows()}
        assert {port: (r.up_packets, r.down_packets) for port, r in rows.items()} == {
            41070: (1, 1),  # in the slot
            41071: (2, 0),  # in dpi_flows
        }
        assert rows[41071].up_bytes == 2 * len(second)
        gw.maps.forget([key(41070)])
        gw.lan(second)
        gw.lan(tcp_up(41072))  # takes the freed slot
        rows = {row.key.lan_port: row for row in gw.maps.flows()}
        assert {port: r.up_packets for port, r in rows.items()} == {41071: 3, 41072: 1}
        gw.maps.forget([key(41071), key(41072)])
        assert gw.maps.flows() == []
        assert gw.counters()["new_flows"] == 3


@pytest.mark.parametrize(
    "frame",
    [
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst="192.168.1.12") / UDP()),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst=LAN_GW) / TCP(dport=80)),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst="224.0.0.251") / UDP()),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst="255.255.255.255") / UDP()),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src="10.9.9.9", dst=REMOTE) / UDP()),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst=REMOTE) / ICMP()),
        bytes(Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=HOST, pdst=LAN_GW)),
    ],
    ids=["lan-to-lan", "to-gateway", "multicast", "broadcast", "foreign-source", "icmp", "arp"],
)
def test_not_a_flow_is_untouched_and_uncounted(gw: DpiGateway, frame: bytes) -> None:
    with gw.dpi_alone():
        result = gw.lan(frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)
    assert gw.maps.flows() == []
    assert not any(gw.counters().values())


def test_wan_packet_not_routed_to_the_lan_is_not_a_flow(gw: DpiGateway) -> None:
    frame = bytes(Ether(dst="02:00:00:00:02:01") / IP(src=REMOTE, dst="203.0.113.2") / UDP())
    gw.wan(frame)  # for the gateway itself: the router hands it to the kernel
    assert gw.maps.flows() == []


def _odd(ip: bytes, cut: int | None = None) -> bytes:
    frame = bytes(Ether(src=HOST_MAC, dst=LAN_MAC, type=0x0800)) + ip
    return frame[:cut] if cut is not None else frame


def _tcp_doff(doff: int) -> bytes:
    raw = bytearray(bytes(IP(src=HOST, dst=REMOTE) / TCP(sport=1, dport=2)))
    raw[32] = doff << 4
    return bytes(raw)


def _long_total() -> bytes:
    raw = bytearray(bytes(IP(src=HOST, dst=REMOTE) / UDP(sport=1, dport=2)))
    raw[2:4] = (200).to_bytes(2, "big")
    return bytes(raw)


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (_odd(bytes(IP(src=HOST, dst=REMOTE) / UDP()), cut=14 + 19), "bad_truncated_ip"),
        (
            _odd(bytes(IP(src=HOST, dst=REMOTE, options=[IPOption(b"\x01\x01\x01\x00")]) / UDP())),
            "bad_ip_header",
        ),
        (_odd(bytes(IP(src=HOST, dst=REMOTE, flags="MF") / UDP())), "bad_fragment"),
        (_odd(bytes(IP(src=HOST, dst=REMOTE, frag=8, proto=17) / (b"x" * 16))), "bad_fragment"),
        (_odd(_long_total()), "bad_ip_length"),
        (_odd(bytes(IP(src=HOST, dst=REMOTE, proto=6) / (b"x" * 10))), "bad_truncated_l4"),
        (_odd(bytes(IP(src=HOST, dst=REMOTE, proto=17) / (b"x" * 6))), "bad_truncated_l4"),
        (_odd(_tcp_doff(4)), "bad_tcp_doff"),
        (_odd(_tcp_doff(15)), "bad_ip_length"),
    ],
    ids=[
        "ip-cut",
        "ip-options",
        "more-fragments",
        "fragment",
        "total-length",
        "tcp-cut",
        "udp-cut",
        "doff-4",
        "doff-past-end",
    ],
)
def test_odd_headers_pass_untouched_and_are_counted(
    gw: DpiGateway, frame: bytes, counter: str
) -> None:
    with gw.dpi_alone():
        result = gw.lan(frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)
    counts = {name: value for name, value in gw.counters().items() if value}
    assert counts == {counter: 1}
    assert gw.maps.flows() == []


def test_a_classifying_flow_is_never_left_to_the_fast_path(gw: DpiGateway) -> None:
    """DPI must see every packet of a flow it is classifying: it vetoes the
    fast path, so each packet goes through the chain and is counted (the
    router alone would have let the fast path take them from the second
    packet on)."""
    assert gw.dp.fastpath is not None
    up, down = udp_up(41090), udp_down(41090)
    for _ in range(4):
        assert gw.lan(up).verdict == "XDP_REDIRECT"
        assert gw.wan(down).verdict == "XDP_REDIRECT"
    row = gw.flow(key(41090, proto=17))
    assert row is not None and row.state == "classifying"
    assert (row.up_packets, row.down_packets) == (4, 4)
    fast = gw.dp.fastpath.counters()
    assert (fast["learnt"][0], fast["lan_to_wan"][0], fast["wan_to_lan"][0]) == (0, 0, 0)


def test_a_classified_flow_takes_the_fast_path_and_every_packet_is_counted(
    gw: DpiGateway,
) -> None:
    """A DONE flow in its slot: the chain teaches the fast path from its first
    packet each way, the fast path forwards the rest, the exact frames the
    chain would send, and counts them in the slot's meter: the flow's row
    has every packet and byte, its last tick the fast path's."""
    assert gw.dp.fastpath is not None
    gw.maps.classify(key(41091), APP, CATEGORY, "sni")
    up, down = tcp_up(41091, b"u" * 300), tcp_down(41091, b"d" * 900)
    results = [(gw.lan(up), gw.wan(down)) for _ in range(10)]
    assert {(r.verdict, r.data) for r, _ in results} == {
        ("XDP_REDIRECT", forwarded(up, WAN_MAC, ISP_MAC))
    }
    assert {(r.verdict, r.data) for _, r in results} == {("XDP_REDIRECT", forwarded_down(down))}
    fast = gw.dp.fastpath.counters()
    assert (fast["learnt"][0], fast["lan_to_wan"][0], fast["wan_to_lan"][0]) == (2, 9, 9)
    row = gw.flow(key(41091))
    assert row is not None and (row.app, row.source, row.state) == (APP, "sni", "done")
    assert (row.up_packets, row.down_packets) == (10, 10)
    assert (row.up_bytes, row.down_bytes) == (10 * len(up), 10 * len(down))
    assert row.last_tick in (gw.maps.now_tick() - 1, gw.maps.now_tick())


def test_flows_whose_first_bucket_is_full_take_their_second_and_the_fast_path(
    dataplane: Dataplane,
) -> None:
    """Eight flows whose keys all hash to bucket 0 first (one slot per key
    would have put them all in slot 0): each takes a slot of the emptier of
    its two buckets, so all eight are in slots and on the fast path with
    their own meters; a ninth finds both buckets full, lives in dpi_flows
    and stays on the chain."""
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_SLOTS=8)  # two buckets of four slots
        assert gw.dp.fastpath is not None
        ports = [p for p in range(40000, 60000) if slots_of(key(p), 8) == list(range(8))][:9]
        assert len(ports) == 9
        for port in ports:
            gw.maps.classify(key(port), APP, CATEGORY, "sni")
            up = tcp_up(port, b"x" * (port % 50))
            assert {gw.lan(up).data for _ in range(3)} == {forwarded(up, WAN_MAC, ISP_MAC)}
        fast = gw.dp.fastpath.counters()
        assert (fast["learnt"][0], fast["lan_to_wan"][0]) == (8, 16)  # not the ninth
        rows = {row.key.lan_port: (row.up_packets, row.up_bytes) for row in gw.maps.flows()}
        assert rows == {p: (3, 3 * len(tcp_up(p, b"x" * (p % 50)))) for p in ports}
        assert gw.counters()["new_flows"] == 9


def test_a_meter_claimed_again_sends_its_old_flow_through_the_chain(
    dataplane: Dataplane,
) -> None:
    """The fast path counts in a meter only while it has the claim the entry
    was learnt with: once a flow leaves its slot and another claims it, the
    old flow's packets (its entry still young) go through the chain, where
    DPI counts them apart, and never in the new flow's meter."""
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_SLOTS=1)  # every flow hashes to slot 0
        assert gw.dp.fastpath is not None
        for port in (41092, 41093):
            gw.maps.classify(key(port), APP, CATEGORY, "sni")
        old, new = tcp_up(41092, b"o" * 100), tcp_up(41093, b"n" * 200)
        gw.lan(old)  # learnt, counting in slot 0's meter
        gw.lan(old)  # the fast path's
        gw.maps.forget([key(41092)])
        gw.lan(new)  # claims slot 0 (and its meter) anew, learnt
        assert gw.lan(old).data == forwarded(
            old, WAN_MAC, ISP_MAC
        )  # through the chain: in dpi_flows
        gw.lan(new)  # the fast path's, in the meter
        fast = gw.dp.fastpath.counters()
        assert (fast["learnt"][0], fast["lan_to_wan"][0]) == (2, 2)
        rows = {row.key.lan_port: (row.up_packets, row.up_bytes) for row in gw.maps.flows()}
        assert rows == {41092: (1, len(old)), 41093: (2, 2 * len(new))}


def test_a_policy_change_retires_the_fast_path_and_cuts_the_flow(gw: DpiGateway) -> None:
    """The fast path forwards a classified flow without DPI's policy look; a
    block reaches it because the DPI service retires the fast path's
    entries when it writes a policy (invalidate_fastpath: the dataplane's)."""
    gw.maps.classify(key(41094), APP, CATEGORY, "sni")
    up = tcp_up(41094, b"u" * 100)
    gw.lan(up)
    gw.lan(up)
    assert gw.maps.set_policy({(HOST_MAC, "app", APP): "block"})
    assert gw.lan(up).data == forwarded(up, WAN_MAC, ISP_MAC)  # a young entry: the old verdict
    epoch = gw.dp.fastpath.epoch()
    gw.dpi.invalidate_fastpath("dpi policy changed")
    assert gw.dp.fastpath.epoch() == epoch + 1
    result = gw.lan(up)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", rst_answer(up))  # out of the ingress
