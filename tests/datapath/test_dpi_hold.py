"""A device with an app or category block holds each TCP flow's first
payload packet until the slow path's verdict, through BPF_PROG_TEST_RUN: the
packet (or a QUIC Initial) goes to the slow path only (dropped, counted
held), its retransmission meets the verdict (a RST for a blocked app, on its
way for another); a retransmission before any verdict, another device, a SYN
with data, UDP to another port and a punt over the budget are not held."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from homegw.dataplane.dataplane import Dataplane
from tests.datapath.dpi_kit import (
    APP,
    CATEGORY,
    HTTP_GET,
    DpiGateway,
    key,
    rst_answer,
    tcp_up,
    udp_up,
)
from tests.datapath.punts import PuntLog, one_cpu
from tests.datapath.router_kit import HOST_MAC

OTHER_MAC = "02:48:47:00:00:99"


def holding(mac: str = HOST_MAC) -> dict[tuple[str, str, int], str]:
    """A category block of the device, as DpiService writes it."""
    return {(mac, "category", CATEGORY): "block", (mac, "hold", 0): "hold"}


@pytest.fixture
def gw(dataplane: Dataplane) -> Iterator[DpiGateway]:
    with one_cpu():
        gw = DpiGateway(dataplane)
        assert gw.maps.set_policy(holding())
        yield gw


@pytest.fixture
def punts(gw: DpiGateway) -> PuntLog:
    """A reader on the perf ring: without one no punt is sent, none held."""
    return gw.punt_log()


def _passes(result_data: bytes, payload: bytes) -> bool:
    return bytes(Ether(result_data)[TCP].payload) == payload


def test_a_blocked_apps_first_request_reaches_only_the_slow_path(
    gw: DpiGateway, punts: PuntLog
) -> None:
    syn = tcp_up(42300, flags="S", ack=0)
    assert gw.lan(syn).verdict == "XDP_REDIRECT"
    request = tcp_up(42300, HTTP_GET)
    assert gw.lan(request).verdict == "XDP_DROP"
    assert [(p.meta[0], p.packet) for p in punts.drain()] == [(1, request)]
    assert gw.counters()["held"] == 1
    gw.maps.classify(key(42300), APP, CATEGORY, "sni")
    assert gw.lan(request).data == rst_answer(request)  # the client's retransmission
    row = gw.flow(key(42300))
    assert row is not None and (row.state, row.verdict) == ("done", "block")


def test_an_allowed_apps_retransmission_goes_on(gw: DpiGateway, punts: PuntLog) -> None:
    request = tcp_up(42301, HTTP_GET)
    assert gw.lan(request).verdict == "XDP_DROP"
    gw.maps.classify(key(42301), APP, CATEGORY + 1, "sni")  # another category
    result = gw.lan(request)
    assert result.verdict == "XDP_REDIRECT" and _passes(result.data, HTTP_GET)
    assert gw.counters()["held"] == 1


def test_a_quic_initial_is_held_until_its_verdict(gw: DpiGateway, punts: PuntLog) -> None:
    initial = udp_up(42308)  # to port 443
    assert gw.lan(initial).verdict == "XDP_DROP"
    gw.maps.classify(key(42308, proto=17), APP, CATEGORY, "quic")
    assert gw.lan(initial).verdict == "XDP_DROP"  # blocked now
    counters = gw.counters()
    assert (counters["held"], counters["blocked_udp"]) == (1, 1)


def test_a_retransmission_before_the_verdict_goes_on(gw: DpiGateway, punts: PuntLog) -> None:
    request = tcp_up(42302, HTTP_GET)
    assert gw.lan(request).verdict == "XDP_DROP"
    result = gw.lan(request)
    assert result.verdict == "XDP_REDIRECT" and _passes(result.data, HTTP_GET)
    assert [p.meta[0] for p in punts.drain()] == [1, 2]  # punted all the same
    assert gw.counters()["held"] == 1


@pytest.mark.parametrize(
    "frame",
    [
        tcp_up(42303, b"early data", flags="S", ack=0),  # a SYN's RTO is a second
        udp_up(42304, dport=3478),  # not QUIC: other UDP retries slowly
    ],
    ids=["syn-with-data", "udp"],
)
def test_not_held(gw: DpiGateway, punts: PuntLog, frame: bytes) -> None:
    assert gw.lan(frame).verdict == "XDP_REDIRECT"
    assert gw.counters()["held"] == 0


def test_another_devices_hold_does_not_apply(gw: DpiGateway, punts: PuntLog) -> None:
    assert gw.maps.set_policy(holding(OTHER_MAC))
    result = gw.lan(tcp_up(42305, HTTP_GET))
    assert result.verdict == "XDP_REDIRECT" and _passes(result.data, HTTP_GET)
    assert gw.counters()["held"] == 0


def test_a_punt_over_the_budget_holds_nothing(dataplane: Dataplane) -> None:
    """No copy reached the slow path: no verdict is coming, the packet goes on."""
    with one_cpu():
        gw = DpiGateway(dataplane, DPI_PUNTS_PER_TICK=1)
        gw.punt_log()
        assert gw.maps.set_policy(holding())
        start = gw.maps.now_tick()
        while gw.maps.now_tick() == start:  # a fresh tick: its budget all there
            pass
        tick = gw.maps.now_tick()
        assert gw.lan(tcp_up(42306, HTTP_GET)).verdict == "XDP_DROP"
        result = gw.lan(tcp_up(42307, HTTP_GET))
        assert gw.maps.now_tick() == tick, "the runs took more than a tick"
        assert result.verdict == "XDP_REDIRECT" and _passes(result.data, HTTP_GET)
        counters = gw.counters()
        assert (counters["held"], counters["punt_limited"]) == (1, 1)
