"""DPI policy in the datapath through BPF_PROG_TEST_RUN: exact RSTs for
blocked TCP both ways, UDP dropped, a policy change cutting an established
flow, ALLOW over BLOCK, ALL for unknown flows; and a fuzz of random frames
that DPI must never change unless it blocks them."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.dataplane import Dataplane
from tests.datapath.dpi_kit import (
    APP,
    CATEGORY,
    HTTP_GET,
    REMOTE,
    DpiGateway,
    forwarded_down,
    key,
    rst_answer,
    rst_down,
    tcp_down,
    tcp_up,
    udp_down,
    udp_up,
)
from tests.datapath.punts import one_cpu
from tests.datapath.router_kit import HOST, HOST_MAC, LAN_MAC

OTHER_MAC = "02:48:47:00:00:99"


@pytest.fixture
def gw(dataplane: Dataplane) -> Iterator[DpiGateway]:
    with one_cpu():
        yield DpiGateway(dataplane)


def _block_app(gw: DpiGateway, mac: str = HOST_MAC) -> None:
    """As DpiService.decide writes a policy: the fast path's flows retired."""
    assert gw.maps.set_policy({(mac, "app", APP): "block"})
    gw.dpi.invalidate_fastpath("dpi policy changed")


@pytest.mark.parametrize(
    "frame",
    [
        tcp_up(42000, HTTP_GET),  # ACK set: seq = its ack
        tcp_up(42000, flags="S", ack=0),  # seq 0, RST|ACK, ack = seq + 1
        tcp_up(42000, b"abc", flags="F", ack=0),  # ack = seq + 3 + 1
    ],
    ids=["ack", "syn", "fin-no-ack"],
)
def test_blocked_tcp_up_is_answered_with_a_rst(gw: DpiGateway, frame: bytes) -> None:
    gw.maps.classify(key(42000), APP, CATEGORY, "sni")
    _block_app(gw)
    result = gw.lan(frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", rst_answer(frame))
    assert gw.counters()["blocked_tcp_up"] == 1


def test_blocked_tcp_down_becomes_a_rst_to_the_client(gw: DpiGateway) -> None:
    gw.maps.classify(key(42001), APP, CATEGORY, "sni")
    _block_app(gw)
    frame = tcp_down(42001, b"x" * 300)
    result = gw.wan(frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", rst_down(frame))
    assert gw.counters()["blocked_tcp_down"] == 1


def test_blocked_udp_is_dropped_both_ways(gw: DpiGateway) -> None:
    gw.maps.classify(key(42002, proto=17), APP, CATEGORY, "quic")
    _block_app(gw)
    assert gw.lan(udp_up(42002)).verdict == "XDP_DROP"
    assert gw.wan(udp_down(42002)).verdict == "XDP_DROP"
    assert gw.counters()["blocked_udp"] == 2


def test_policy_change_cuts_an_established_flow_and_unblocking_passes_it(gw: DpiGateway) -> None:
    gw.maps.classify(key(42003), APP, CATEGORY, "sni")
    frame = tcp_up(42003, HTTP_GET)
    assert gw.lan(frame).verdict == "XDP_REDIRECT"
    row = gw.flow(key(42003))
    assert row is not None and (row.state, row.verdict) == ("done", "pass")
    gen = gw.maps.policy_generation()
    _block_app(gw)
    assert gw.maps.policy_generation() == gen + 1
    assert gw.lan(frame).data == rst_answer(frame)
    assert gw.maps.set_policy({})
    gw.dpi.invalidate_fastpath("dpi policy changed")
    result = gw.lan(frame)
    assert result.verdict == "XDP_REDIRECT" and Ether(result.data)[TCP].payload.load == HTTP_GET


def test_another_devices_policy_does_not_apply(gw: DpiGateway) -> None:
    gw.maps.classify(key(42004), APP, CATEGORY, "sni")
    _block_app(gw, OTHER_MAC)
    assert Ether(gw.lan(tcp_up(42004, HTTP_GET)).data)[TCP].payload.load == HTTP_GET


def test_category_block(gw: DpiGateway) -> None:
    gw.maps.classify(key(42005), APP, CATEGORY, "sni")
    gw.maps.set_policy({(HOST_MAC, "category", CATEGORY): "block"})
    frame = tcp_up(42005, HTTP_GET)
    assert gw.lan(frame).data == rst_answer(frame)


def test_allow_app_beats_a_category_block(gw: DpiGateway) -> None:
    gw.maps.classify(key(42006), APP, CATEGORY, "sni")
    gw.maps.set_policy({(HOST_MAC, "category", CATEGORY): "block", (HOST_MAC, "app", APP): "allow"})
    result = gw.lan(tcp_up(42006, HTTP_GET))
    assert result.verdict == "XDP_REDIRECT" and Ether(result.data)[TCP].dport == 443
    gw.maps.classify(key(42007), APP + 1, CATEGORY, "sni")  # another app of the category
    frame = tcp_up(42007, HTTP_GET)
    assert gw.lan(frame).data == rst_answer(frame)


def test_all_blocks_unknown_flows_from_their_first_packet(gw: DpiGateway) -> None:
    gw.maps.set_policy({(HOST_MAC, "all", 0): "block"})
    syn = tcp_up(42008, flags="S", ack=0)
    assert gw.lan(syn).data == rst_answer(syn)
    row = gw.flow(key(42008))
    assert row is not None and (row.state, row.verdict) == ("classifying", "block")


def test_dns_attributed_flow_blocked_from_its_first_packet(gw: DpiGateway) -> None:
    gw.maps.set_dns(REMOTE, APP, CATEGORY, gw.maps.now_tick() + 60)
    _block_app(gw)
    syn = tcp_up(42009, flags="S", ack=0)
    assert gw.lan(syn).data == rst_answer(syn)


def test_set_policy_writes_only_the_difference(gw: DpiGateway) -> None:
    entries = {(HOST_MAC, "app", APP): "block", (HOST_MAC, "all", 0): "allow"}
    assert gw.maps.set_policy(entries)
    gen = gw.maps.policy_generation()
    assert gen != 0
    assert not gw.maps.set_policy(entries)  # nothing to write: no new generation
    assert gw.maps.policy_generation() == gen
    assert gw.maps.set_policy({(HOST_MAC, "app", APP): "allow"})
    assert gw.maps.policy() == {(HOST_MAC, "app", APP): "allow"}
    assert gw.maps.policy_generation() == gen + 1


def _random_frame(rng: random.Random, sport: int) -> bytes:
    """A LAN host's TCP or UDP frame with a random payload, maybe cut short or
    with random header bytes after the addresses."""
    payload = rng.randbytes(rng.choice([0, 1, 5, 40, 300, 1400]))
    if rng.random() < 0.5:
        l4 = TCP(sport=sport, dport=rng.choice([443, 80, 22]), flags=rng.choice(["S", "PA", "A"]))
    else:
        l4 = UDP(sport=sport, dport=rng.choice([443, 53, 3478]))
    frame = bytearray(
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IP(src=HOST, dst=REMOTE) / l4 / payload)
    )
    if rng.random() < 0.3:  # scribble over the transport header
        for _ in range(rng.randrange(1, 6)):
            frame[rng.randrange(34, min(len(frame), 54))] = rng.randrange(256)
    if rng.random() < 0.3:
        frame = frame[: rng.randrange(14, len(frame) + 1)]
    return bytes(frame)


def test_fuzz_random_frames_pass_unchanged(gw: DpiGateway) -> None:
    rng = random.Random(1212)
    with gw.dpi_alone():
        for i in range(400):
            frame = _random_frame(rng, 43000 + i % 50)
            result = gw.lan(frame)
            assert (result.verdict, result.data) == ("XDP_PASS", frame), frame.hex()


def test_fuzz_blocked_frames_are_dropped_or_exact_rsts(gw: DpiGateway) -> None:
    rng = random.Random(1213)
    gw.maps.set_policy({(HOST_MAC, "all", 0): "block"})
    seen = set()
    with gw.dpi_alone():
        for i in range(300):
            frame = _random_frame(rng, 44000 + i % 50)
            before = gw.counters()
            result = gw.lan(frame)
            after = gw.counters()
            if after["blocked_tcp_up"] > before["blocked_tcp_up"]:
                assert (result.verdict, result.data) == ("XDP_REDIRECT", rst_answer(frame))
                seen.add("rst")
            elif after["blocked_udp"] > before["blocked_udp"]:
                assert result.verdict == "XDP_DROP"
                seen.add("drop")
            else:  # not a flow's packet (odd headers): untouched
                assert (result.verdict, result.data) == ("XDP_PASS", frame), frame.hex()
                seen.add("untouched")
    assert seen == {"rst", "drop", "untouched"}


def test_unblocked_down_packet_goes_on_unchanged(gw: DpiGateway) -> None:
    frame = tcp_down(42010, b"y" * 100)
    assert gw.wan(frame).data == forwarded_down(frame)


def test_full_flow_table_still_holds_flows_to_the_policy(dataplane: Dataplane) -> None:
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_MAX_FLOWS=2, DPI_SLOTS=1)
        gw.maps.classify(key(42100), APP, CATEGORY, "sni")
        _block_app(gw)
        for sport in (42101, 42102, 42105):  # fill the slot and the table
            gw.lan(tcp_up(sport, HTTP_GET))
        gw.maps.set_dns(REMOTE, APP + 1, CATEGORY, gw.maps.now_tick() + 60)
        gw.maps.set_policy({(HOST_MAC, "app", APP): "block", (HOST_MAC, "app", APP + 1): "block"})
        blocked = tcp_up(42100, HTTP_GET)  # classified, no room: still blocked
        assert gw.lan(blocked).data == rst_answer(blocked)
        syn = tcp_up(42103, flags="S", ack=0)  # DNS-attributed, no room: still blocked
        assert gw.lan(syn).data == rst_answer(syn)
        _block_app(gw)  # APP + 1 no longer blocked
        assert gw.lan(udp_up(42104)).verdict == "XDP_REDIRECT"
        assert gw.counters()["flows_full"] == 3
        assert {row.key.lan_port for row in gw.maps.flows()} == {42101, 42102, 42105}
