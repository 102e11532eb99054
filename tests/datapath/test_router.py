"""Router IO module through BPF_PROG_TEST_RUN: exact bytes out of the LAN and
WAN roots with the router in the chain."""

from __future__ import annotations

import ipaddress
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import REASON_NEIGH_MISS, RouterModule
from tests.datapath.router_kit import (
    CONFIG,
    HOST,
    HOST_MAC,
    ISP_MAC,
    LAN_GW,
    LAN_MAC,
    NO_STATIC_ROUTES,
    WAN_MAC,
    fake_nic,
    forwarded,
    icmp_error,
    lan_frame,
    load_router,
    run,
)


@pytest.fixture(params=["trie", "subnets"])
def router(dataplane: Dataplane, request: pytest.FixtureRequest) -> RouterModule:
    """With static routes the datapath searches the LPM trie; without, it routes
    by the NICs' subnets and the default route. Both must forward alike."""
    return load_router(dataplane, CONFIG if request.param == "trie" else NO_STATIC_ROUTES)


@pytest.fixture
def trie_router(dataplane: Dataplane) -> RouterModule:
    return load_router(dataplane, CONFIG)


def test_lan_to_wan_rewrites_macs_ttl_and_checksum(dataplane: Dataplane, router) -> None:
    frame = lan_frame()
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == forwarded(frame, WAN_MAC, ISP_MAC)


def test_wan_to_lan(dataplane: Dataplane, router) -> None:
    frame = bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IP(src="198.51.100.80", dst=HOST, ttl=50)
        / UDP(sport=53, dport=40000)
        / b"answer"
    )
    result = run(dataplane, Nic.WAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == forwarded(frame, LAN_MAC, HOST_MAC)


def test_longest_prefix_wins(dataplane: Dataplane, trie_router: RouterModule) -> None:
    router = trie_router
    router.set_neighbour(ipaddress.IPv4Address("203.0.113.9"), "02:00:00:00:00:09", Nic.WAN)
    router.set_neighbour(ipaddress.IPv4Address("203.0.113.10"), "02:00:00:00:00:10", Nic.WAN)
    cases = {"10.1.2.3": "02:00:00:00:00:10", "10.2.3.4": "02:00:00:00:00:09", "8.8.8.8": ISP_MAC}
    for dst, next_hop_mac in cases.items():
        frame = lan_frame(dst)
        assert run(dataplane, Nic.LAN, frame).data == forwarded(frame, WAN_MAC, next_hop_mac)


def test_neighbour_miss_goes_to_the_slow_path(dataplane: Dataplane, router) -> None:
    got: list = []
    done = threading.Event()
    dataplane.slowpath.register(
        router.module_id, REASON_NEIGH_MISS, lambda p: (got.append(p), done.set())
    )
    dataplane.slowpath.start()
    frame = lan_frame("192.168.1.99")  # .99 is on the LAN but not resolved yet
    frame = bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / Ether(frame)[IP])
    result = run(dataplane, Nic.WAN, frame)
    assert result.verdict == "XDP_DROP"
    assert done.wait(10)
    punt = got[0]
    assert ipaddress.IPv4Address(punt.meta[0].to_bytes(4, "little")) == ipaddress.IPv4Address(
        "192.168.1.99"
    )
    assert (punt.meta[1], punt.packet) == (Nic.LAN, frame)


def test_ttl_1_answered_with_time_exceeded(dataplane: Dataplane, router) -> None:
    frame = lan_frame(ttl=1)
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_REDIRECT"  # back out of the LAN NIC, see homegw_tx_xdp
    assert result.data == icmp_error(frame, 11, 0, 0, LAN_GW, LAN_MAC)


def test_df_over_mtu_answered_with_frag_needed(dataplane: Dataplane, router) -> None:
    frame = lan_frame(size=1600, flags="DF")
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == icmp_error(frame, 3, 4, 1500, LAN_GW, LAN_MAC)


def test_ip_options_forwarded(dataplane: Dataplane, router) -> None:
    frame = lan_frame(options=[b"\x01\x01\x01\x00"])  # NOP NOP NOP EOL: IHL 6
    assert Ether(frame)[IP].ihl == 6
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))


def test_ttl_1_with_ip_options_answered_here(dataplane: Dataplane, router) -> None:
    """Not left to the kernel (which no longer forwards for XDP): the quote
    carries the options."""
    frame = lan_frame(ttl=1, options=[b"\x01\x01\x01\x00"])
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp_error(frame, 11, 0, 0, LAN_GW, LAN_MAC),
    )


def test_fragments_forwarded(dataplane: Dataplane, router) -> None:
    first = lan_frame(size=100, flags="MF")
    later = bytes(
        Ether(src=HOST_MAC, dst=LAN_MAC)
        / IP(src=HOST, dst="198.51.100.80", ttl=64, id=1, frag=13, proto=17)
        / (b"y" * 40)
    )
    for frame in (first, later):
        result = run(dataplane, Nic.LAN, frame)
        assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))


@pytest.mark.parametrize(
    "frame",
    [
        lan_frame(LAN_GW),  # for the gateway itself
        lan_frame("192.168.1.255"),  # subnet broadcast: the kernel's business
        lan_frame("255.255.255.255"),
        lan_frame("224.0.0.251"),
        bytes(Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=HOST, pdst=LAN_GW)),
        bytes(Ether(src=HOST_MAC, dst=LAN_MAC, type=0x86DD) / (b"\x60" + bytes(60))),
        bytes(Ether(src=HOST_MAC, dst="02:00:00:00:07:07") / IP(src=HOST, dst="8.8.8.8")),
    ],
    ids=["local", "subnet-broadcast", "broadcast", "multicast", "arp", "ipv6", "not-our-mac"],
)
def test_not_forwarded_here_goes_to_the_kernel_unchanged(
    dataplane: Dataplane,
    router,
    frame: bytes,
) -> None:
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)


def test_no_route_answered_with_net_unreachable(dataplane: Dataplane) -> None:
    dhcp_without_lease = {**CONFIG, "wan": {"interface": "wan0", "mode": "dhcp"}}
    module = RouterModule(parse_config(dhcp_without_lease), iface_info=fake_nic, watch_kernel=False)
    dataplane.add_module(module)
    dataplane.set_order(Nic.LAN, ["router"])
    frame = lan_frame()
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp_error(frame, 3, 0, 0, LAN_GW, LAN_MAC),
    )


def test_wan_link_down_answered_with_net_unreachable(dataplane: Dataplane) -> None:
    def wan_down(ifname: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
        return fake_nic(ifname, address, up=ifname != "wan0")

    module = RouterModule(parse_config(CONFIG), iface_info=wan_down, watch_kernel=False)
    dataplane.add_module(module)
    dataplane.set_order(Nic.LAN, ["router"])
    frame = lan_frame()
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == (
        "XDP_REDIRECT",
        icmp_error(frame, 3, 0, 0, LAN_GW, LAN_MAC),
    )


def test_counters_per_nic_and_device(dataplane: Dataplane, router: RouterModule) -> None:
    up, down = (
        lan_frame(size=10),
        bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src="198.51.100.80", dst=HOST) / UDP() / b"z"),
    )
    for _ in range(3):
        run(dataplane, Nic.LAN, up)
    run(dataplane, Nic.WAN, down)
    stats = router.stats()
    assert stats["counters"]["forwarded"] == 4
    assert stats["nics"] == {"lan": (1, len(down)), "wan": (3, 3 * len(up))}
    host = stats["devices"][HOST_MAC]
    assert (host.from_packets, host.from_bytes, host.to_packets, host.to_bytes, host.dropped) == (
        3,
        3 * len(up),
        1,
        len(down),
        0,
    )
    assert 0 < host.first_seen <= host.last_seen
