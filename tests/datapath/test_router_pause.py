"""Pausing a LAN device (the `devices` config section) in the router's
datapath, through BPF_PROG_TEST_RUN: its frames are dropped in both
directions and counted, other devices' are forwarded byte for byte, and a
pause or resume decides the very next frame."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.router.module import RouterModule
from tests.datapath.router_kit import (
    HOST,
    HOST_MAC,
    ISP_MAC,
    LAN_MAC,
    NO_STATIC_ROUTES,
    WAN_MAC,
    forwarded,
    lan_frame,
    load_router,
    run,
)

OTHER, OTHER_MAC = "192.168.1.12", "02:48:47:00:00:02"


def paused(*macs: str) -> dict:
    return {**NO_STATIC_ROUTES, "devices": [{"mac": mac, "paused": True} for mac in macs]}


def set_config(router: RouterModule, config: dict) -> None:
    assert router.apply(parse_config(config))


def from_wan(dst: str = HOST) -> bytes:
    return bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IP(src="198.51.100.80", dst=dst, ttl=50)
        / UDP(sport=80, dport=40000)
        / b"download"
    )


def other_frame() -> bytes:
    return bytes(Ether(src=OTHER_MAC, dst=LAN_MAC) / IP(src=OTHER, dst="198.51.100.80") / UDP())


def test_paused_device_dropped_both_ways_others_forwarded(dataplane: Dataplane) -> None:
    router = load_router(dataplane, paused(HOST_MAC))
    router.set_neighbour(ipaddress.IPv4Address(OTHER), OTHER_MAC, Nic.LAN)
    up, down = lan_frame(size=10), from_wan()
    assert run(dataplane, Nic.LAN, up).verdict == "XDP_DROP"
    assert run(dataplane, Nic.WAN, down).verdict == "XDP_DROP"
    other_up, other_down = other_frame(), from_wan(OTHER)
    out = run(dataplane, Nic.LAN, other_up)
    assert (out.verdict, out.data) == ("XDP_REDIRECT", forwarded(other_up, WAN_MAC, ISP_MAC))
    out = run(dataplane, Nic.WAN, other_down)
    assert (out.verdict, out.data) == ("XDP_REDIRECT", forwarded(other_down, LAN_MAC, OTHER_MAC))
    stats = router.stats()
    assert stats["counters"]["device_paused"] == 2
    assert stats["counters"]["forwarded"] == 2
    host = stats["devices"][HOST_MAC]
    assert (host.from_packets, host.to_packets, host.dropped) == (0, 0, 2)
    other = stats["devices"][OTHER_MAC]
    assert (other.from_packets, other.to_packets, other.dropped) == (1, 1, 0)


def test_pause_and_resume_decide_the_very_next_frame(dataplane: Dataplane) -> None:
    router = load_router(dataplane, NO_STATIC_ROUTES)
    up, down = lan_frame(), from_wan()
    for _ in range(2):  # the device's per-CPU entry exists and cached "not paused"
        assert run(dataplane, Nic.LAN, up).data == forwarded(up, WAN_MAC, ISP_MAC)
        assert run(dataplane, Nic.WAN, down).data == forwarded(down, LAN_MAC, HOST_MAC)
    generation = router.maps.policy.generation()
    set_config(router, paused(HOST_MAC))
    assert router.maps.policy.generation() == generation + 1
    assert run(dataplane, Nic.LAN, up).verdict == "XDP_DROP"
    assert run(dataplane, Nic.WAN, down).verdict == "XDP_DROP"
    set_config(router, NO_STATIC_ROUTES)
    out = run(dataplane, Nic.LAN, up)
    assert (out.verdict, out.data) == ("XDP_REDIRECT", forwarded(up, WAN_MAC, ISP_MAC))
    out = run(dataplane, Nic.WAN, down)
    assert (out.verdict, out.data) == ("XDP_REDIRECT", forwarded(down, LAN_MAC, HOST_MAC))
    assert router.stats()["counters"]["device_paused"] == 2
    assert router.maps.policy.generation() == generation + 2


def test_unchanged_policy_is_not_written_again(dataplane: Dataplane) -> None:
    router = load_router(dataplane, paused(HOST_MAC))
    generation = router.maps.policy.generation()
    set_config(router, {**paused(HOST_MAC), "router": {"neighbour_timeout": "10m"}})
    assert router.maps.policy.generation() == generation
    assert router.maps.policy.paused() == {HOST_MAC}


def test_paused_device_without_room_in_the_table_still_dropped(dataplane: Dataplane) -> None:
    """A LAN host that fills the device table with made-up MACs must not
    free a paused device from its pause."""
    router = load_router(dataplane, paused(HOST_MAC))
    table = router.maps.devices._table
    for i in range(4096):
        table[table.Key(0x0200_0000_0000 + i)] = table.Leaf()
    assert run(dataplane, Nic.LAN, lan_frame()).verdict == "XDP_DROP"
    assert run(dataplane, Nic.WAN, from_wan()).verdict == "XDP_DROP"
    counters = router.stats()["counters"]
    assert counters["device_paused"] == 2


def test_to_the_gateway_itself_still_works(dataplane: Dataplane) -> None:
    """What a paused device sends to the gateway (DNS, the web UI) is not
    forwarded: the router hands it on to the kernel untouched."""
    router = load_router(dataplane, paused(HOST_MAC))
    frame = lan_frame(dst="192.168.1.1")
    out = run(dataplane, Nic.LAN, frame)
    assert (out.verdict, out.data) == ("XDP_PASS", frame)
    assert router.stats()["counters"]["device_paused"] == 0
