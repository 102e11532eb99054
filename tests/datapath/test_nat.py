"""NAT IO module through BPF_PROG_TEST_RUN: router + nat in both NICs'
chains, exact bytes out. Tests of the shared gateway use distinct hosts and
ports so they do not see each other's mappings."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.nat.gc import NS, QUARANTINE_S
from homegw.modules.nat.module import NatModule
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import RouterModule

LAN_MAC, WAN_MAC, ISP_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:02:99"
HOSTS = {f"192.168.1.{i}": f"02:48:47:00:00:{i:02x}" for i in range(11, 20)}
WAN, ISP_GW, REMOTE = "203.0.113.2", "203.0.113.1", "198.51.100.80"
LAN_GW = "192.168.1.1"

BASE = {
    "wan": {"interface": "wan0", "mode": "static", "address": f"{WAN}/24", "gateway": ISP_GW},
    "lan": {"interface": "lan0", "address": f"{LAN_GW}/24"},
    "nat": {
        "port_forwards": [
            {
                "protocol": "tcp",
                "external_port": 8080,
                "internal_address": "192.168.1.12",
                "internal_port": 80,
            },
            {"protocol": "udp", "external_port": "7000-7001", "internal_address": "192.168.1.13"},
        ]
    },
}


def fake_nic(ifname: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
    return IfaceInfo(
        11 if ifname == "lan0" else 12,
        LAN_MAC if ifname == "lan0" else WAN_MAC,
        1500,
        True,
        address,
    )


class Gateway:
    def __init__(self, config: dict) -> None:
        self.pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
        self.dp = Dataplane(self.pin_dir, {})
        self.dp.load()
        parsed = parse_config(config)
        self.router = RouterModule(parsed, iface_info=fake_nic, watch_kernel=False)
        self.nat = NatModule(parsed, run_gc=False, interface_mac=lambda _name: LAN_MAC)
        self.dp.add_module(self.router)
        self.dp.add_module(self.nat)
        self.dp.set_order(Nic.LAN, ["router", "nat"])
        self.dp.set_order(Nic.WAN, ["nat", "router"])
        self.router.set_neighbour(ipaddress.IPv4Address(ISP_GW), ISP_MAC, Nic.WAN)
        for ip, mac in HOSTS.items():
            self.router.set_neighbour(ipaddress.IPv4Address(ip), mac, Nic.LAN)

    def lan(self, frame: bytes):
        return prog_test_run(self.dp.root_fd(Nic.LAN, Hook.XDP), frame)

    def wan(self, frame: bytes):
        return prog_test_run(self.dp.root_fd(Nic.WAN, Hook.XDP), frame)

    def close(self) -> None:
        self.dp.close()
        purge_pins(self.pin_dir)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    gateway = Gateway(BASE)
    yield gateway
    gateway.close()


def from_lan(host: str, l4, dst: str = REMOTE, **ip) -> bytes:
    return bytes(Ether(src=HOSTS[host], dst=LAN_MAC) / IP(src=host, dst=dst, id=1, **ip) / l4)


def from_wan(l4, src: str = REMOTE, dst: str = WAN, **ip) -> bytes:
    return bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src=src, dst=dst, id=2, **ip) / l4)


def expect(frame: bytes, src_mac: str, dst_mac: str, **changes) -> bytes:
    """The frame as it must leave: MACs, TTL - 1, the given IP/L4 fields,
    every checksum recomputed by scapy."""
    packet = Ether(frame)
    packet.src, packet.dst = src_mac, dst_mac
    packet[IP].ttl -= 1
    l4 = packet[IP].payload
    for name, value in changes.items():
        target = packet[IP] if name in ("src", "dst") else l4
        setattr(target, name, value)
    del packet[IP].chksum
    if hasattr(l4, "chksum"):
        del l4.chksum
    return bytes(packet)


def to_wan(frame: bytes, **changes) -> bytes:
    return expect(frame, WAN_MAC, ISP_MAC, src=WAN, **changes)


def to_lan(frame: bytes, host: str, **changes) -> bytes:
    return expect(frame, LAN_MAC, HOSTS[host], dst=host, **changes)


def sport_of(data: bytes) -> int:
    return Ether(data)[IP].payload.sport


def test_udp_out_keeps_a_free_port_and_reply_comes_back(gw: Gateway) -> None:
    out = from_lan("192.168.1.11", UDP(sport=5000, dport=53) / b"query")
    result = gw.lan(out)
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == to_wan(out)  # source port 5000 kept
    back = from_wan(UDP(sport=53, dport=5000) / b"answer")
    result = gw.wan(back)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(back, "192.168.1.11"))


def test_port_collision_gets_a_random_pool_port(gw: Gateway) -> None:
    gw.lan(from_lan("192.168.1.11", UDP(sport=5001, dport=53)))
    second = from_lan("192.168.1.14", UDP(sport=5001, dport=53))
    result = gw.lan(second)
    port = sport_of(result.data)
    assert port != 5001 and 10000 <= port <= 32767
    assert result.data == to_wan(second, sport=port)
    # endpoint-independent mapping: the same endpoint to another remote, same port
    again = from_lan("192.168.1.14", UDP(sport=5001, dport=123), dst="198.51.100.99")
    assert sport_of(gw.lan(again).data) == port


def test_kernel_ephemeral_ports_are_not_kept(gw: Gateway) -> None:
    result = gw.lan(from_lan("192.168.1.15", UDP(sport=40000, dport=53)))
    assert 10000 <= sport_of(result.data) <= 32767


def test_tcp_both_ways(gw: Gateway) -> None:
    syn = from_lan("192.168.1.11", TCP(sport=6000, dport=443, flags="S", seq=1000))
    assert gw.lan(syn).data == to_wan(syn)
    synack = from_wan(TCP(sport=443, dport=6000, flags="SA", seq=5000, ack=1001))
    assert gw.wan(synack).data == to_lan(synack, "192.168.1.11")


def test_icmp_echo_both_ways(gw: Gateway) -> None:
    ping = from_lan("192.168.1.11", ICMP(type=8, id=0x1234, seq=1) / b"ping")
    assert gw.lan(ping).data == to_wan(ping)
    pong = from_wan(ICMP(type=0, id=0x1234, seq=1) / b"ping")
    assert gw.wan(pong).data == to_lan(pong, "192.168.1.11")


def test_unsolicited_inbound_dropped(gw: Gateway) -> None:
    result = gw.wan(from_wan(UDP(sport=53, dport=25000)))
    assert result.verdict == "XDP_DROP"


def test_address_port_dependent_filtering(gw: Gateway) -> None:
    gw.lan(from_lan("192.168.1.11", UDP(sport=5002, dport=3478)))
    other_port = from_wan(UDP(sport=3479, dport=5002))
    assert gw.wan(other_port).verdict == "XDP_DROP"
    other_host = from_wan(UDP(sport=3478, dport=5002), src="198.51.100.81")
    assert gw.wan(other_host).verdict == "XDP_DROP"
    same = from_wan(UDP(sport=3478, dport=5002))
    assert gw.wan(same).verdict == "XDP_REDIRECT"


def test_endpoint_independent_filtering() -> None:
    gateway = Gateway({**BASE, "nat": {"filtering": "endpoint-independent"}})
    try:
        gateway.lan(from_lan("192.168.1.11", UDP(sport=5002, dport=3478)))
        anyone = from_wan(UDP(sport=9999, dport=5002), src="198.51.100.81")
        result = gateway.wan(anyone)
        assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(anyone, "192.168.1.11"))
    finally:
        gateway.close()


def test_port_forward_dnat_and_reply(gw: Gateway) -> None:
    syn = from_wan(TCP(sport=41000, dport=8080, flags="S"), src="198.51.100.7")
    result = gw.wan(syn)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(syn, "192.168.1.12", dport=80))
    reply = from_lan("192.168.1.12", TCP(sport=80, dport=41000, flags="SA"), dst="198.51.100.7")
    assert gw.lan(reply).data == to_wan(reply, sport=8080)


def test_port_forward_range_udp(gw: Gateway) -> None:
    packet = from_wan(UDP(sport=1, dport=7001), src="198.51.100.7")
    assert gw.wan(packet).data == to_lan(packet, "192.168.1.13")


def test_hairpin_both_ways(gw: Gateway) -> None:
    request = from_lan("192.168.1.11", TCP(sport=5555, dport=8080, flags="S"), dst=WAN)
    result = gw.lan(request)
    assert result.verdict == "XDP_REDIRECT"
    # the server sees the client's external address and port
    assert result.data == expect(
        request, LAN_MAC, HOSTS["192.168.1.12"], src=WAN, dst="192.168.1.12", dport=80
    )
    reply = from_lan("192.168.1.12", TCP(sport=80, dport=5555, flags="SA"), dst=WAN)
    result = gw.lan(reply)
    assert result.data == expect(
        reply, LAN_MAC, HOSTS["192.168.1.11"], src=WAN, dst="192.168.1.11", sport=8080
    )


def icmp_error_about(offending: bytes, type_: int, code: int) -> ICMP:
    """An ICMP error quoting the offender's IP header + 8 bytes."""
    inner = bytes(Ether(offending)[IP])[:28]
    return ICMP(type=type_, code=code) / inner


def test_icmp_error_inbound_translates_embedded_header(gw: Gateway) -> None:
    out = from_lan("192.168.1.11", UDP(sport=5003, dport=33434), ttl=5)
    left = gw.lan(out).data
    error = from_wan(icmp_error_about(left, 3, 3))
    result = gw.wan(error)
    assert result.verdict == "XDP_REDIRECT"
    # the quote as the host sent it (TTL as it left the gateway), checksums right
    quote = Ether(out)[IP].copy()
    quote.ttl -= 1
    del quote.chksum
    wanted = expect(
        from_wan(ICMP(type=3, code=3) / bytes(IP(bytes(quote)))[:28]),
        LAN_MAC,
        HOSTS["192.168.1.11"],
        dst="192.168.1.11",
    )
    assert result.data == wanted
    inner = Ether(result.data)[IPerror]
    assert (inner.src, inner[UDPerror].sport) == ("192.168.1.11", 5003)


def test_icmp_error_outbound_translates_embedded_header(gw: Gateway) -> None:
    inbound = from_wan(UDP(sport=2000, dport=7000), src="198.51.100.7")
    arrived = gw.wan(inbound).data  # to 192.168.1.13:7000 (port forward)
    error = from_lan("192.168.1.13", icmp_error_about(arrived, 3, 3), dst="198.51.100.7")
    result = gw.lan(error)
    assert result.verdict == "XDP_REDIRECT"
    inner = Ether(result.data)[IPerror]
    assert (inner.dst, inner[UDPerror].dport) == (WAN, 7000)
    assert Ether(result.data)[IP].src == WAN
    # the quote equals what the remote sent, as it left the remote's router
    sent = Ether(inbound)[IP].copy()
    assert bytes(inner)[:8] == bytes(sent)[:8]  # version..id unchanged
    check = Ether(result.data)
    recomputed = Ether(bytes(check))
    del recomputed[IP].chksum, recomputed[ICMP].chksum
    assert bytes(Ether(bytes(recomputed))) == result.data  # outer checksums right


def test_fragments_follow_the_first(gw: Gateway) -> None:
    first = from_lan(
        "192.168.1.11", UDP(sport=5004, dport=9000, len=1000) / (b"a" * 64), flags="MF"
    )
    assert gw.lan(first).data == to_wan(first)
    later = bytes(
        Ether(src=HOSTS["192.168.1.11"], dst=LAN_MAC)
        / IP(src="192.168.1.11", dst=REMOTE, id=1, frag=9, proto=17)
        / (b"b" * 64)
    )
    result = gw.lan(later)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(later))
    orphan = bytes(
        Ether(src=HOSTS["192.168.1.11"], dst=LAN_MAC)
        / IP(src="192.168.1.11", dst=REMOTE, id=77, frag=9, proto=17)
        / b"c"
    )
    assert gw.lan(orphan).verdict == "XDP_DROP"


def test_esp_passthrough(gw: Gateway) -> None:
    esp_out = from_lan(
        "192.168.1.11",
        b"\x00\x00\x10\x01" + bytes(16),
        dst="198.51.100.50",
        proto=socket.IPPROTO_ESP,
    )
    assert gw.lan(esp_out).data == expect(esp_out, WAN_MAC, ISP_MAC, src=WAN)
    esp_in = from_wan(
        b"\x00\x00\x20\x02" + bytes(16), src="198.51.100.50", proto=socket.IPPROTO_ESP
    )
    assert gw.wan(esp_in).data == to_lan(esp_in, "192.168.1.11")


def test_full_table_refuses_with_icmp_13() -> None:
    gateway = Gateway({**BASE, "nat": {"max_sessions": 1024}})
    try:
        for i in range(1024):
            frame = from_lan("192.168.1.11", UDP(sport=1024 + i, dport=53))
            assert gateway.lan(frame).verdict == "XDP_REDIRECT", i
        refused = from_lan("192.168.1.11", UDP(sport=3000, dport=53))
        result = gateway.lan(refused)
        assert result.verdict == "XDP_REDIRECT"
        reply = Ether(result.data)
        assert (reply.dst, reply[IP].src, reply[IP].dst) == (
            HOSTS["192.168.1.11"],
            LAN_GW,
            "192.168.1.11",
        )
        assert (reply[ICMP].type, reply[ICMP].code) == (3, 13)
        assert gateway.nat.stats()["counters"]["refused_table_full"] == 1
        # an existing flow still flows
        again = from_lan("192.168.1.11", UDP(sport=1024, dport=53))
        assert gateway.lan(again).verdict == "XDP_REDIRECT"
    finally:
        gateway.close()


def test_expiry_quarantine_and_release_on_a_fake_clock() -> None:
    gateway = Gateway(BASE)
    try:
        gateway.lan(from_lan("192.168.1.11", UDP(sport=5005, dport=53)))
        start = gateway.nat.collect(0)  # datapath stamps are CLOCK_MONOTONIC ns
        assert start.live_sessions == 1
        now = max(s.last_seen_ns for s in gateway.nat.maps.sessions())
        assert gateway.nat.collect(now + 299 * NS).live_sessions == 1  # UDP: 5 min
        plan = gateway.nat.collect(now + 301 * NS)
        assert (len(plan.expired_sessions), len(plan.quarantine)) == (1, 1)
        # quarantined: port 5005 is not handed out again, to anyone
        reuse = gateway.lan(from_lan("192.168.1.14", UDP(sport=5005, dport=53)))
        assert sport_of(reuse.data) != 5005
        released = gateway.nat.collect(now + (301 + QUARANTINE_S) * NS).release
        assert [(b.ext_port, str(b.internal)) for b in released] == [(5005, "192.168.1.11")]
    finally:
        gateway.close()


def test_port_forwards_change_live() -> None:
    gateway = Gateway(BASE)
    try:
        flow = from_lan("192.168.1.11", UDP(sport=5006, dport=53))
        gateway.lan(flow)  # a flow that must survive the change
        new_rules = parse_config(
            {
                **BASE,
                "nat": {
                    "port_forwards": [
                        {
                            "protocol": "tcp",
                            "external_port": 9090,
                            "internal_address": "192.168.1.14",
                            "internal_port": 22,
                        }
                    ]
                },
            }
        ).nat.port_forwards
        gateway.nat.set_port_forwards(new_rules)
        gone = from_wan(TCP(sport=41000, dport=8080, flags="S"))
        assert gateway.wan(gone).verdict == "XDP_PASS"  # not ours any more: the kernel's
        added = from_wan(TCP(sport=41000, dport=9090, flags="S"))
        assert gateway.wan(added).data == to_lan(added, "192.168.1.14", dport=22)
        back = from_wan(UDP(sport=53, dport=5006))
        assert gateway.wan(back).data == to_lan(back, "192.168.1.11")
    finally:
        gateway.close()


def test_ipv6_goes_on_untranslated_both_ways(gw: Gateway) -> None:
    """No NAT66: what the router forwards over IPv6 leaves as it is (only
    the router's MACs and hop limit), counted ipv6_passed."""
    from scapy.layers.inet6 import IPv6

    from homegw.netfacts import Ipv6Facts

    lan64, isp_router = ipaddress.IPv6Network("2001:db8:100::/64"), ipaddress.IPv6Address("fe80::1")
    host6, remote6 = "2001:db8:100::11", "2001:db8:ffff:80::80"
    gw.router.on_ipv6(
        Ipv6Facts(
            lan_prefixes=(lan64,),
            inside=(ipaddress.IPv6Network("2001:db8:100::/56"),),
            lan_address=ipaddress.IPv6Address("2001:db8:100::1"),
            wan_address=ipaddress.IPv6Address("2001:db8:ffff:1::1001"),
            wan_gateway=isp_router,
        )
    )
    gw.router.set_neighbour(isp_router, ISP_MAC, Nic.WAN)
    gw.router.set_neighbour(ipaddress.IPv6Address(host6), HOSTS["192.168.1.11"], Nic.LAN)
    before = gw.nat.counters()["ipv6_passed"]
    l4 = UDP(sport=40000, dport=53) / b"question"
    out = Ether(src=HOSTS["192.168.1.11"], dst=LAN_MAC) / IPv6(src=host6, dst=remote6) / l4
    result = gw.lan(bytes(out))
    out.src, out.dst, out[IPv6].hlim = WAN_MAC, ISP_MAC, 63
    assert (result.verdict, result.data) == ("XDP_REDIRECT", bytes(out))
    back = (
        Ether(src=ISP_MAC, dst=WAN_MAC) / IPv6(src=remote6, dst=host6) / UDP(sport=53, dport=40000)
    )
    result = gw.wan(bytes(back))
    back.src, back.dst, back[IPv6].hlim = LAN_MAC, HOSTS["192.168.1.11"], 63
    assert (result.verdict, result.data) == ("XDP_REDIRECT", bytes(back))
    assert gw.nat.counters()["ipv6_passed"] - before == 2
