"""Firewall IO module through BPF_PROG_TEST_RUN: the default chains (WAN
[firewall, nat, router], LAN [firewall, router, nat]), a verdict and the exact
bytes out for every rule, and the counter of every drop by reason."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether

from homegw.config import parse_config
from homegw.dataplane.abi import META_REINJECTED, Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.firewall.maps import DROPS
from homegw.modules.firewall.module import FirewallModule
from homegw.modules.nat.module import NatModule
from homegw.modules.router.module import RouterModule
from tests.datapath.firewall6_kit import dropped_once
from tests.datapath.test_nat import (
    BASE,
    HOSTS,
    ISP_GW,
    ISP_MAC,
    LAN_GW,
    LAN_MAC,
    REMOTE,
    WAN,
    WAN_MAC,
    fake_nic,
    from_lan,
    from_wan,
    to_lan,
    to_wan,
)
from tests.datapath.test_nat import (
    Gateway as NatGateway,
)

LAN_HOST = "192.168.1.11"
ROUTED_NET, ROUTED_VIA = "10.20.0.0/16", "192.168.1.19"  # a network behind a LAN router


class Gateway(NatGateway):
    """Firewall, router and (unless disabled) NAT in the default chain order."""

    def __init__(self, overrides: dict | None = None) -> None:  # builds its own chain
        self.pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
        self.dp = Dataplane(self.pin_dir, {})
        self.dp.load()
        config = parse_config({**BASE, **(overrides or {})})
        self.firewall = FirewallModule(config, run_gc=False)
        self.router = RouterModule(config, iface_info=fake_nic, watch_kernel=False)
        modules = [self.firewall, self.router]
        if config.nat.enabled:
            modules.append(NatModule(config, run_gc=False))
        for module in modules:
            self.dp.add_module(module)
        order = [n for n in config.dataplane.order.lan if n in self.dp.modules]
        self.dp.set_order(Nic.LAN, order)
        self.dp.set_order(Nic.WAN, [n for n in config.dataplane.order.wan if n in self.dp.modules])
        self.router.set_neighbour(ipaddress.IPv4Address(ISP_GW), ISP_MAC, Nic.WAN)
        for ip, mac in HOSTS.items():
            self.router.set_neighbour(ipaddress.IPv4Address(ip), mac, Nic.LAN)

    def set_wan(self, address: str) -> None:
        """A new WAN lease, applied as the appliance does."""
        wan = ipaddress.IPv4Interface(address)
        self.firewall.set_wan(wan)
        self.router.set_wan(wan, ipaddress.IPv4Address(ISP_GW))
        if "nat" in self.dp.modules:
            self.dp.modules["nat"].module.set_wan(wan)

    def counters(self) -> dict[str, int]:
        return self.firewall.stats()["counters"]

    def dropped(self, send, frame: bytes) -> str:
        return dropped_once(self.counters, send, frame)

    def passed(self, send, frame: bytes) -> dict[str, int]:
        """Send the frame; it must go to the kernel untouched with no drop
        counted. Returns how much each counter moved."""
        before = self.counters()
        result = send(frame)
        assert (result.verdict, result.data) == ("XDP_PASS", frame)
        moved = {name: value - before[name] for name, value in self.counters().items()}
        assert not any(moved[reason] for reason in DROPS), moved
        return moved


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    gateway = Gateway({"router": {"routes": [{"destination": ROUTED_NET, "via": ROUTED_VIA}]}})
    yield gateway
    gateway.close()


@pytest.fixture
def make_gateway() -> Iterator:
    made: list[Gateway] = []

    def make(overrides: dict) -> Gateway:
        made.append(Gateway(overrides))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


def wan_probe(dst: str, l4=None, src: str = REMOTE) -> bytes:
    """From the WAN segment, routed at the WAN address's MAC."""
    return from_wan(ICMP(id=7, seq=1) if l4 is None else l4, src=src, dst=dst)


PROBES = {
    "ping": ICMP(id=7, seq=1),
    "tcp": TCP(sport=40001, dport=22, flags="S"),
    "udp": UDP(sport=40002, dport=53) / b"x",
}


@pytest.mark.parametrize("kind", PROBES)
@pytest.mark.parametrize("dst", [LAN_HOST, LAN_GW, "192.168.1.255"])
def test_wan_to_lan_addresses_dropped(gw: Gateway, kind: str, dst: str) -> None:
    assert gw.dropped(gw.wan, wan_probe(dst, PROBES[kind])) == "wan_to_lan"


def test_wan_to_networks_routed_behind_the_lan_dropped(gw: Gateway) -> None:
    assert gw.dropped(gw.wan, wan_probe("10.20.3.4")) == "wan_to_lan"


@pytest.mark.parametrize("dst", [REMOTE, "203.0.113.77", "224.0.0.251", "127.0.0.1"])
def test_wan_to_wan_transit_dropped(gw: Gateway, dst: str) -> None:
    assert gw.dropped(gw.wan, wan_probe(dst, PROBES["udp"])) == "wan_transit"


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        ("192.168.1.50", "wan_spoofed_lan_source"),
        ("10.20.9.9", "wan_spoofed_lan_source"),  # behind a LAN router
        (WAN, "wan_spoofed_own_address"),
        (LAN_GW, "wan_spoofed_own_address"),
        ("127.0.0.1", "wan_martian_source"),
        ("0.0.0.0", "wan_martian_source"),
        ("0.1.2.3", "wan_martian_source"),
        ("224.0.0.1", "wan_martian_source"),
        ("255.255.255.255", "wan_martian_source"),
    ],
)
def test_wan_spoofed_sources_dropped(gw: Gateway, src: str, reason: str) -> None:
    # to the WAN address, which would otherwise go on to NAT and the kernel
    assert gw.dropped(gw.wan, wan_probe(WAN, PROBES["udp"], src=src)) == reason


def truncated(frame: bytes, keep: int) -> bytes:
    return frame[: 14 + keep]


MALFORMED = {
    "ten bytes of header": truncated(wan_probe(WAN), 10),
    "ihl 4": bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src=REMOTE, dst=WAN, ihl=4) / ICMP()),
    "ihl past the end": truncated(
        bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src=REMOTE, dst=WAN, ihl=15) / (b"\0" * 8)), 28
    ),
    "total length past the end": truncated(wan_probe(WAN, UDP() / (b"y" * 40)), 40),
    "version 6 in an IPv4 frame": bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC, type=0x0800) / IPv6(src="2001:db8::1", dst="2001:db8::2")
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_ipv4_dropped_on_both_nics(gw: Gateway, name: str) -> None:
    assert gw.dropped(gw.wan, MALFORMED[name]) == "malformed"
    assert gw.dropped(gw.lan, MALFORMED[name]) == "malformed"


def test_nat_session_reply_gets_in(gw: Gateway) -> None:
    out = from_lan(LAN_HOST, UDP(sport=5600, dport=53) / b"query")
    result = gw.lan(out)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(out))
    back = from_wan(UDP(sport=53, dport=5600) / b"answer")
    result = gw.wan(back)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(back, LAN_HOST))
    # the same datagram from another remote has no session: NAT drops it
    other = from_wan(UDP(sport=53, dport=5600) / b"answer", src="198.51.100.99")
    assert gw.wan(other).verdict == "XDP_DROP"


def test_port_forward_gets_in(gw: Gateway) -> None:
    syn = from_wan(TCP(sport=33333, dport=8080, flags="S"))
    result = gw.wan(syn)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == to_lan(syn, "192.168.1.12", dport=80)


def test_dmz_host_gets_the_rest(make_gateway) -> None:
    dmz = make_gateway({"nat": {"dmz_host": "192.168.1.13"}})
    knock = from_wan(UDP(sport=4444, dport=5555) / b"knock")
    result = dmz.wan(knock)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(knock, "192.168.1.13"))
    # but not straight to the DMZ host's LAN address
    assert dmz.dropped(dmz.wan, wan_probe("192.168.1.13", UDP(dport=5555))) == "wan_to_lan"


GATEWAYS_OWN = {
    "DNS reply to the gateway's resolver": from_wan(
        UDP(sport=53, dport=40000) / b"answer", src="198.51.100.53"
    ),
    "TCP reply to the gateway": from_wan(TCP(sport=443, dport=45000, flags="SA")),
    "ICMP echo to the WAN address": wan_probe(WAN),
    "DHCP offer broadcast": bytes(
        Ether(src=ISP_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=ISP_GW, dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / b"offer"
    ),
    "DHCP ack to the WAN subnet's broadcast": from_wan(
        UDP(sport=67, dport=68) / b"ack", src=ISP_GW, dst="203.0.113.255"
    ),
    "DHCP offer unicast to an address not ours yet": from_wan(
        UDP(sport=67, dport=68) / b"offer", src=ISP_GW, dst="203.0.113.77"
    ),
    "ARP": bytes(Ether(src=ISP_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=ISP_GW, pdst=WAN)),
    "IPv6 to all nodes (the kernel's nftables decides)": bytes(
        Ether(src=ISP_MAC, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::1", dst="ff02::1")
        / ICMPv6EchoRequest()
    ),
}


@pytest.mark.parametrize("name", GATEWAYS_OWN)
def test_gateways_own_traffic_goes_to_the_kernel_untouched(gw: Gateway, name: str) -> None:
    moved = gw.passed(gw.wan, GATEWAYS_OWN[name])
    assert moved["wan_passed"] + moved["non_ipv4"] + moved["v6_wan_passed"] == 1


def test_wan_ping_false_drops_echo_to_the_wan_address(make_gateway) -> None:
    quiet = make_gateway({"firewall": {"wan_ping": False}})
    assert quiet.dropped(quiet.wan, wan_probe(WAN)) == "wan_ping_dropped"
    # other ICMP for the gateway still goes up (the kernel's guard decides)
    reply = from_wan(ICMP(type=0, id=9, seq=1))
    assert quiet.wan(reply).verdict == "XDP_PASS"


def test_forward_wan_to_lan_routes_a_routed_lan(make_gateway) -> None:
    routed = make_gateway({"nat": {"enabled": False}, "firewall": {"forward_wan_to_lan": True}})
    ping = wan_probe(LAN_HOST)
    result = routed.wan(ping)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(ping, LAN_HOST))
    assert routed.counters()["wan_forwarded"] == 1
    # never the gateway's own LAN address or the LAN's broadcast, never spoofed
    assert routed.dropped(routed.wan, wan_probe(LAN_GW)) == "wan_to_lan"
    assert routed.dropped(routed.wan, wan_probe("192.168.1.255")) == "wan_to_lan"
    spoofed = wan_probe(LAN_HOST, src="192.168.1.12")
    assert routed.dropped(routed.wan, spoofed) == "wan_spoofed_lan_source"
    assert routed.dropped(routed.wan, wan_probe(REMOTE)) == "wan_transit"


def test_nat_off_without_forwarding_keeps_the_lan_closed(make_gateway) -> None:
    routed = make_gateway({"nat": {"enabled": False}})
    assert routed.dropped(routed.wan, wan_probe(LAN_HOST)) == "wan_to_lan"


@pytest.mark.parametrize("src", ["10.9.9.9", "198.51.100.80", LAN_GW, "127.0.0.1", "0.0.0.0"])
@pytest.mark.parametrize("dst", [REMOTE, WAN, "192.168.1.12"])
def test_lan_spoofed_source_dropped(gw: Gateway, src: str, dst: str) -> None:
    frame = bytes(
        Ether(src=HOSTS[LAN_HOST], dst=LAN_MAC) / IP(src=src, dst=dst) / UDP(sport=1, dport=2)
    )
    assert gw.dropped(gw.lan, frame) == "lan_spoofed_source"


def test_lan_host_and_network_behind_a_lan_router_reach_the_wan(gw: Gateway) -> None:
    out = from_lan(LAN_HOST, TCP(sport=5601, dport=80, flags="S"))
    result = gw.lan(out)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(out))
    behind = bytes(
        Ether(src=HOSTS[ROUTED_VIA], dst=LAN_MAC)
        / IP(src="10.20.1.1", dst=REMOTE, id=1)
        / UDP(sport=5602, dport=53)
    )
    result = gw.lan(behind)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(behind))


LAN_TO_GATEWAY = {
    "DHCP discover": bytes(
        Ether(src=HOSTS[LAN_HOST], dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / b"discover"
    ),
    "DHCP request to the gateway": bytes(
        Ether(src=HOSTS[LAN_HOST], dst=LAN_MAC)
        / IP(src="0.0.0.0", dst=LAN_GW)
        / UDP(sport=68, dport=67)
        / b"request"
    ),
    "a foreign address asking the gateway": bytes(
        Ether(src=HOSTS[LAN_HOST], dst=LAN_MAC) / IP(src="10.9.9.9", dst=LAN_GW) / ICMP()
    ),
    "mDNS from a foreign address": bytes(
        Ether(src=HOSTS[LAN_HOST], dst="01:00:5e:00:00:fb")
        / IP(src="169.254.3.3", dst="224.0.0.251")
        / UDP(sport=5353, dport=5353)
    ),
    "a LAN host to the gateway": from_lan(LAN_HOST, ICMP(), dst=LAN_GW),
    "ARP": bytes(Ether(src=HOSTS[LAN_HOST], dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=LAN_GW)),
}


@pytest.mark.parametrize("name", LAN_TO_GATEWAY)
def test_lan_traffic_for_the_gateway_goes_up(gw: Gateway, name: str) -> None:
    moved = gw.passed(gw.lan, LAN_TO_GATEWAY[name])
    assert moved["lan_passed"] + moved["non_ipv4"] == 1


def test_wan_address_followed_live(make_gateway) -> None:
    dhcp = make_gateway({"wan": {"interface": "wan0", "mode": "dhcp"}})
    # no WAN address yet: nothing is ours on the WAN, a DHCP offer still is
    assert dhcp.dropped(dhcp.wan, wan_probe(WAN)) == "wan_transit"
    offer = GATEWAYS_OWN["DHCP offer broadcast"]
    assert dhcp.wan(offer).verdict == "XDP_PASS"
    dhcp.set_wan(f"{WAN}/24")
    assert dhcp.wan(wan_probe(WAN)).verdict == "XDP_PASS"
    assert dhcp.dropped(dhcp.wan, wan_probe(WAN, src=WAN)) == "wan_spoofed_own_address"
    dhcp.set_wan("203.0.113.9/24")
    assert dhcp.dropped(dhcp.wan, wan_probe(WAN)) == "wan_transit"
    assert dhcp.firewall.stats()["wan_address"] == "203.0.113.9/24"


def test_reinjected_frame_goes_on_after_nat_translated_it(gw: Gateway) -> None:
    """What the router holds for a neighbour after NAT translated a port
    forward, re-injected by the slow path with the marker: it passed the
    firewall already. The same frame from the wire is WAN -> LAN."""
    translated = from_wan(TCP(sport=33334, dport=80, flags="S"), dst="192.168.1.12")
    assert gw.dropped(gw.wan, translated) == "wan_to_lan"
    before = gw.counters()["reinjected"]
    root = gw.dp.root_fd(Nic.WAN, Hook.XDP)
    result = prog_test_run(root, translated, meta=META_REINJECTED)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(translated, "192.168.1.12"))
    assert gw.counters()["reinjected"] == before + 1
    # other metadata is no marker
    assert prog_test_run(root, translated, meta=bytes(4)).verdict == "XDP_DROP"
