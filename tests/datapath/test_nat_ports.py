"""Port allocation over the whole pool with parity kept (RFC 4787 REQ-4),
and fragments on every path, out of order too (REQ-14). BPF_PROG_TEST_RUN
on the real programs."""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from tests.datapath.test_nat import (
    BASE,
    HOSTS,
    ISP_MAC,
    LAN_MAC,
    REMOTE,
    WAN,
    WAN_MAC,
    Gateway,
    from_lan,
    from_wan,
    to_lan,
    to_wan,
)

POOL = (10000, 32767)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    gateway = Gateway({**BASE, "nat": {}})
    yield gateway
    gateway.close()


def with_sport(frame: bytes, sport: int) -> bytes:
    """The Ether/IPv4/UDP frame with another source port, UDP checksum 0."""
    return frame[:34] + sport.to_bytes(2, "big") + frame[36:40] + b"\0\0" + frame[42:]


@pytest.mark.parametrize("used", [0.90, 0.99])
def test_allocation_finds_every_free_port_and_keeps_parity(gw: Gateway, used: float) -> None:
    pool = list(range(POOL[0], POOL[1] + 1))
    rng = random.Random(4787)
    taken = set(rng.sample(pool, int(len(pool) * used)))
    for port in taken:  # held by another host, as the datapath would have bound them
        gw.nat.maps.bind(socket.IPPROTO_UDP, port, ipaddress.IPv4Address("192.168.1.19"), port, 0)
    free = {0: {p for p in pool if p not in taken and p % 2 == 0}}
    free[1] = {p for p in pool if p not in taken and p % 2 == 1}
    template = from_lan("192.168.1.11", UDP(sport=40000, dport=53))
    wanted = len(free[0]) + len(free[1])
    # kernel-range source ports are never kept: every flow is allocated
    for i in range(wanted):
        sport = 40000 + i
        result = gw.lan(with_sport(template, sport))
        assert result.verdict == "XDP_REDIRECT", (i, wanted)
        port = Ether(result.data)[UDP].sport
        parity = sport % 2
        if port % 2 != parity:
            assert not free[parity], f"{port} for {sport} while same-parity ports were free"
        free[port % 2].remove(port)  # a free port, handed out once
    assert free == {0: set(), 1: set()}
    full = gw.lan(with_sport(template, 40000 + wanted))
    assert refused_with_icmp_13(full)  # the pool is full, and only then
    assert gw.nat.stats()["counters"]["ports_exhausted"] == 1


def refused_with_icmp_13(result) -> bool:  # a TestRun result
    """Sent back to the LAN host as ICMP destination unreachable code 13."""
    reply = Ether(result.data)
    return (
        result.verdict == "XDP_REDIRECT"
        and ICMP in reply
        and (reply[ICMP].type, reply[ICMP].code) == (3, 13)
        and reply[IP].dst == "192.168.1.11"
    )


def test_the_web_ui_port_is_never_allocated() -> None:
    gateway = Gateway({**BASE, "webui": {"listen": "192.168.1.1:20000"}, "nat": {}})
    try:
        for port in range(POOL[0], POOL[1] + 1):
            if port not in (20000, 20002):
                gateway.nat.maps.bind(
                    socket.IPPROTO_UDP, port, ipaddress.IPv4Address("192.168.1.19"), port, 0
                )
        template = from_lan("192.168.1.11", UDP(sport=40000, dport=53))
        got = Ether(gateway.lan(with_sport(template, 40000)).data)[UDP].sport
        assert got == 20002
        assert refused_with_icmp_13(gateway.lan(with_sport(template, 40002)))
    finally:
        gateway.close()


# -- fragments -------------------------------------------------------------------------


def lan_fragment(ident: int, proto: int, dst: str = REMOTE, **ip) -> bytes:
    return bytes(
        Ether(src=HOSTS["192.168.1.11"], dst=LAN_MAC)
        / IP(src="192.168.1.11", dst=dst, id=ident, frag=9, proto=proto, **ip)
        / (b"b" * 64)
    )


def test_esp_fragments_follow_their_first(gw: Gateway) -> None:
    first = from_lan(
        "192.168.1.11",
        b"\x00\x00\x10\x01" + bytes(60),
        dst="198.51.100.50",
        proto=socket.IPPROTO_ESP,
        flags="MF",
    )
    assert gw.lan(first).data == to_wan(first)
    later = lan_fragment(1, socket.IPPROTO_ESP, dst="198.51.100.50")
    result = gw.lan(later)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(later))


def test_dmz_fragments_follow_their_first() -> None:
    gateway = Gateway({**BASE, "nat": {"dmz_host": "192.168.1.16"}})
    try:
        first = from_wan(UDP(sport=1111, dport=4000, len=200) / bytes(64), flags="MF")
        assert gateway.wan(first).data == to_lan(first, "192.168.1.16")
        later = bytes(
            Ether(src=ISP_MAC, dst=WAN_MAC)
            / IP(src=REMOTE, dst=WAN, id=2, frag=9, proto=17)
            / (b"d" * 64)
        )
        result = gateway.wan(later)
        assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(later, "192.168.1.16"))
    finally:
        gateway.close()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("direction", ["out", "in"])
def test_a_fragment_before_its_first_is_held_then_sent(direction: str) -> None:
    gateway = Gateway({**BASE, "nat": {"port_forwards": BASE["nat"]["port_forwards"]}})
    run = gateway.lan if direction == "out" else gateway.wan
    sent_again: list = []
    done = threading.Event()

    def reinject(frame: bytes, _ifindex: int) -> None:
        sent_again.append(run(frame))
        done.set()

    gateway.nat.reinject = reinject
    gateway.dp.slowpath.start()
    try:
        if direction == "out":
            first = from_lan(
                "192.168.1.11", UDP(sport=5004, dport=9000, len=1000) / bytes(64), flags="MF"
            )
            later = lan_fragment(1, 17)
            translated = to_wan(later)
        else:
            first = from_wan(UDP(sport=2000, dport=7000, len=1000) / bytes(64), flags="MF")
            later = bytes(
                Ether(src=ISP_MAC, dst=WAN_MAC)
                / IP(src=REMOTE, dst=WAN, id=2, frag=9, proto=17)
                / (b"b" * 64)
            )
            translated = to_lan(later, "192.168.1.13")
        assert run(later).verdict == "XDP_DROP"  # punted: the slow path holds it
        assert wait_for(lambda: gateway.nat.fragments.frames == 1)
        result = run(first)
        assert result.verdict == "XDP_REDIRECT"
        assert done.wait(10)
        assert [(r.verdict, r.data) for r in sent_again] == [("XDP_REDIRECT", translated)]
        counters = gateway.nat.stats()["counters"]
        assert (counters["fragments_punted"], counters["fragment_firsts_notified"]) == (1, 1)
        assert gateway.nat.stats()["fragments"]["sent_again"] == 1
    finally:
        gateway.close()


def test_held_fragments_expire_and_their_first_is_not_waited_for() -> None:
    gateway = Gateway({**BASE, "nat": {}})
    gateway.dp.slowpath.start()
    try:
        assert gateway.lan(lan_fragment(5, 17)).verdict == "XDP_DROP"
        assert wait_for(lambda: gateway.nat.fragments.frames == 1)
        gateway.nat.expire_fragments(time.monotonic_ns() + 3_000_000_000)
        assert gateway.nat.stats()["fragments"]["expired"] == 1
        first = from_lan("192.168.1.11", UDP(sport=5007, dport=9000, len=1000), flags="MF")
        before = gateway.nat.stats()["counters"]["fragment_firsts_notified"]
        gateway.lan(first)
        assert gateway.nat.stats()["counters"]["fragment_firsts_notified"] == before
    finally:
        gateway.close()


def test_early_fragments_are_rate_limited_per_cpu(gw: Gateway) -> None:
    verdicts = [gw.lan(lan_fragment(100 + i, 17)).verdict for i in range(200)]
    assert verdicts == ["XDP_DROP"] * 200
    counters = gw.nat.stats()["counters"]
    # a burst of 32, then 1 per ms: far fewer than 200 in the time this took
    assert 32 <= counters["fragments_punted"] < 200
    assert counters["fragments_punted"] + counters["fragments_dropped"] == 200
