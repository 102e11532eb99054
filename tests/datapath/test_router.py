"""Router IO module through BPF_PROG_TEST_RUN: exact bytes out of the LAN and
WAN roots with the router in the chain."""

from __future__ import annotations

import ipaddress
import struct
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import REASON_NEIGH_MISS, RouterModule

LAN_MAC, WAN_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
HOST_MAC, ISP_MAC = "02:48:47:00:00:01", "02:00:00:00:02:99"
HOST, LAN_GW, WAN_GW_IP, ISP_GW = "192.168.1.11", "192.168.1.1", "203.0.113.2", "203.0.113.1"
NIC_INFO = {"lan0": (11, LAN_MAC, 1500), "wan0": (12, WAN_MAC, 1500)}

CONFIG = {
    "wan": {"interface": "wan0", "mode": "static", "address": f"{WAN_GW_IP}/24", "gateway": ISP_GW},
    "lan": {"interface": "lan0", "address": f"{LAN_GW}/24"},
    "router": {
        "routes": [
            {"destination": "10.0.0.0/8", "via": "203.0.113.9"},
            {"destination": "10.1.0.0/16", "via": "203.0.113.10"},
        ]
    },
}


def fake_nic(ifname: str, address: ipaddress.IPv4Address | None, up: bool = True) -> IfaceInfo:
    ifindex, mac, mtu = NIC_INFO[ifname]
    return IfaceInfo(ifindex, mac, mtu, up, address)


NO_STATIC_ROUTES = {**CONFIG, "router": {"routes": []}}


@pytest.fixture(params=["trie", "subnets"])
def router(dataplane: Dataplane, request: pytest.FixtureRequest) -> RouterModule:
    """With static routes the datapath searches the LPM trie; without, it routes
    by the NICs' subnets and the default route. Both must forward alike."""
    return load_router(dataplane, CONFIG if request.param == "trie" else NO_STATIC_ROUTES)


@pytest.fixture
def trie_router(dataplane: Dataplane) -> RouterModule:
    return load_router(dataplane, CONFIG)


def load_router(dataplane: Dataplane, config: dict) -> RouterModule:
    module = RouterModule(parse_config(config), iface_info=fake_nic, watch_kernel=False)
    dataplane.add_module(module)
    dataplane.set_order(Nic.LAN, ["router"])
    dataplane.set_order(Nic.WAN, ["router"])
    module.set_neighbour(ipaddress.IPv4Address(ISP_GW), ISP_MAC, Nic.WAN)
    module.set_neighbour(ipaddress.IPv4Address(HOST), HOST_MAC, Nic.LAN)
    return module


def lan_frame(dst: str = "198.51.100.80", ttl: int = 64, size: int = 0, **ip) -> bytes:
    payload = b"x" * size
    return bytes(
        Ether(src=HOST_MAC, dst=LAN_MAC)
        / IP(src=HOST, dst=dst, ttl=ttl, id=1, **ip)
        / UDP(sport=40000, dport=53)
        / payload
    )


def run(dp: Dataplane, nic: Nic, frame: bytes):  # noqa: ANN201
    return prog_test_run(dp.root_fd(nic, Hook.XDP), frame)


def icmp_error(frame: bytes, type_: int, code: int, rest: int, src: str, our_mac: str) -> bytes:
    """What RFC 792 says the gateway answers: quote = IP header + 8 bytes."""
    offender = Ether(frame)
    quote = bytes(offender[IP])[:28]
    body = struct.pack("!BBHI", type_, code, 0, rest) + quote
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    reply = (
        Ether(src=our_mac, dst=offender.src)
        / IP(src=src, dst=offender[IP].src, ttl=64, tos=0xC0, id=0, flags=0, proto=1)
        / body
    )
    return bytes(reply)


def forwarded(frame: bytes, src_mac: str, dst_mac: str) -> bytes:
    packet = Ether(frame)
    packet.src, packet.dst = src_mac, dst_mac
    packet[IP].ttl -= 1
    del packet[IP].chksum
    return bytes(packet)


def test_lan_to_wan_rewrites_macs_ttl_and_checksum(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame()
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == forwarded(frame, WAN_MAC, ISP_MAC)


def test_wan_to_lan(dataplane: Dataplane, router) -> None:  # noqa: ANN001
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


def test_neighbour_miss_goes_to_the_slow_path(dataplane: Dataplane, router) -> None:  # noqa: ANN001
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


def test_ttl_1_answered_with_time_exceeded(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame(ttl=1)
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_TX"
    assert result.data == icmp_error(frame, 11, 0, 0, LAN_GW, LAN_MAC)


def test_df_over_mtu_answered_with_frag_needed(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame(size=1600, flags="DF")
    result = run(dataplane, Nic.LAN, frame)
    assert result.verdict == "XDP_TX"
    assert result.data == icmp_error(frame, 3, 4, 1500, LAN_GW, LAN_MAC)


def test_over_mtu_without_df_goes_to_the_kernel_to_fragment(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame(size=1600)
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)


def test_ip_options_forwarded(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame(options=[b"\x01\x01\x01\x00"])  # NOP NOP NOP EOL: IHL 6
    assert Ether(frame)[IP].ihl == 6
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))


def test_ttl_1_with_ip_options_left_to_the_kernel(dataplane: Dataplane, router) -> None:  # noqa: ANN001
    frame = lan_frame(ttl=1, options=[b"\x01\x01\x01\x00"])
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_PASS", frame)


def test_fragments_forwarded(dataplane: Dataplane, router) -> None:  # noqa: ANN001
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
    frame: bytes,  # noqa: ANN001
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
    assert (result.verdict, result.data) == ("XDP_TX", icmp_error(frame, 3, 0, 0, LAN_GW, LAN_MAC))


def test_wan_link_down_answered_with_net_unreachable(dataplane: Dataplane) -> None:
    def wan_down(ifname: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
        return fake_nic(ifname, address, up=ifname != "wan0")

    module = RouterModule(parse_config(CONFIG), iface_info=wan_down, watch_kernel=False)
    dataplane.add_module(module)
    dataplane.set_order(Nic.LAN, ["router"])
    frame = lan_frame()
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_TX", icmp_error(frame, 3, 0, 0, LAN_GW, LAN_MAC))


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
    assert stats["devices"][HOST_MAC] == {
        "tx_packets": 3,
        "tx_bytes": 3 * len(up),
        "rx_packets": 1,
        "rx_bytes": len(down),
    }
