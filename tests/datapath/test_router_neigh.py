"""Next hops through BPF_PROG_TEST_RUN: a flood to an unresolved one punts
once per interval (the rest dropped and counted) and leaves an incomplete
entry; a resolved one is marked used, cheaply."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import time
from collections.abc import Iterator

import pytest
from bcc import BPF
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Nic, be32
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.pinned import PinnedMap
from homegw.modules.router.module import RouterModule
from tests.datapath.punts import PuntLog, one_cpu
from tests.datapath.router_kit import (
    CONFIG,
    HOST,
    HOST_MAC,
    ISP_GW,
    ISP_MAC,
    LAN_MAC,
    WAN_MAC,
    fake_nic,
    forwarded,
    load_router,
    run,
)

OFFLINE = "192.168.1.99"  # a port-forward target that is switched off


@pytest.fixture
def router(dataplane: Dataplane) -> Iterator[RouterModule]:
    with one_cpu():
        yield load_router(dataplane, CONFIG)


def to_lan(dst: str, i: int = 0) -> bytes:
    return bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src="198.51.100.80", dst=dst) / UDP(sport=i) / b"x"
    )


def test_flood_to_an_unresolved_next_hop_punts_once(
    dataplane: Dataplane, router: RouterModule
) -> None:
    punts = PuntLog(dataplane, router)
    for i in range(50):
        assert run(dataplane, Nic.WAN, to_lan(OFFLINE, i)).verdict == "XDP_DROP"
    counters = router.stats()["counters"]  # before the marker punt
    assert counters["neigh_miss"] == 1  # punted; the other 49 dropped here
    assert counters["neigh_limited"] == 49
    got = punts.drain()
    assert [(p.meta[0], p.meta[1], p.packet) for p in got] == [
        (be32(ipaddress.IPv4Address(OFFLINE)), Nic.LAN, to_lan(OFFLINE, 0))
    ]
    assert router.stats()["incomplete"] == [OFFLINE]


def test_next_punt_after_the_interval(dataplane: Dataplane, router: RouterModule) -> None:
    punts = PuntLog(dataplane, router)
    run(dataplane, Nic.WAN, to_lan(OFFLINE, 1))
    # as if the last punt for it went up an interval ago
    table = dataplane.modules["router"].bpf["homegw_neigh"]
    key = ctypes.c_uint32(be32(ipaddress.IPv4Address(OFFLINE)))
    entry = table[key]
    entry.punted_ns -= 200_000_000
    table[key] = entry
    run(dataplane, Nic.WAN, to_lan(OFFLINE, 2))
    run(dataplane, Nic.WAN, to_lan(OFFLINE, 3))
    assert [p.packet for p in punts.drain()] == [to_lan(OFFLINE, 1), to_lan(OFFLINE, 2)]


def test_resolution_replaces_the_incomplete_entry(
    dataplane: Dataplane, router: RouterModule
) -> None:
    run(dataplane, Nic.WAN, to_lan(OFFLINE))
    router.set_neighbour(ipaddress.IPv4Address(OFFLINE), "02:48:47:00:00:63", Nic.LAN)
    frame = to_lan(OFFLINE, 5)
    result = run(dataplane, Nic.WAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        forwarded(frame, LAN_MAC, "02:48:47:00:00:63"),
    )
    assert router.stats()["incomplete"] == []


def test_forwarding_marks_the_next_hop_used(dataplane: Dataplane, router: RouterModule) -> None:
    assert router.maps is not None
    host = ipaddress.IPv4Address(HOST)
    assert router.maps.last_used(host) is None
    before = time.monotonic()
    run(dataplane, Nic.WAN, to_lan(HOST))
    used = router.maps.last_used(host)
    assert used is not None and int(before) - 1 <= used <= time.monotonic()


def test_an_older_neighbour_pin_is_replaced(pin_dir: str) -> None:
    """router_neigh pinned by a homegw with 8-byte values (mac, nic): the
    dataplane unpins it, else the router's programs would not verify."""
    os.makedirs(pin_dir)
    old = BPF(
        text=f'BPF_TABLE_PINNED("hash", u32, u64, router_neigh, 16, "{pin_dir}/router_neigh");'
    )
    old.cleanup()
    dp = Dataplane(pin_dir, {})
    dp.load()
    try:
        load_router(dp, CONFIG)  # verifies against the 24-byte map
        pinned = PinnedMap(f"{pin_dir}/router_neigh")
        assert pinned.value_size == 24
        pinned.close()
    finally:
        dp.close()


def test_a_restart_keeps_resolved_neighbours_and_drops_incomplete_ones(pin_dir: str) -> None:
    """A new process adopts the running chain: forwarding to a resolved next
    hop must not miss (a punt and a dropped packet per next hop and restart)."""
    first = Dataplane(pin_dir, {})
    first.load()
    with one_cpu():
        old = load_router(first, CONFIG)
        run(first, Nic.WAN, to_lan(OFFLINE))  # leaves an incomplete entry
        assert old.stats()["incomplete"] == [OFFLINE]
    first.close()

    second = Dataplane(pin_dir, {})
    second.load()
    try:
        router = RouterModule(parse_config(CONFIG), iface_info=fake_nic, watch_kernel=False)
        second.add_module(router)  # no set_neighbour: only what the first run left
        second.set_order(Nic.WAN, ["router"])
        stats = router.stats()
        assert stats["neighbours"] == {HOST: HOST_MAC, ISP_GW: ISP_MAC}
        assert stats["incomplete"] == []
        assert set(map(str, router.table.entries)) == {HOST, ISP_GW}  # aged as its own
        misses = stats["counters"]["neigh_miss"]  # pinned: the first run's miss is in it
        result = run(second, Nic.WAN, to_lan(HOST))
        assert result.verdict == "XDP_REDIRECT"
        assert router.stats()["counters"]["neigh_miss"] == misses
    finally:
        second.close()
