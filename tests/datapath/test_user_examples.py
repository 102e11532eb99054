"""The example user modules (homegw/usermodules/examples/) compiled as the
gateway compiles them (sdk=True) and run by BPF_PROG_TEST_RUN: exact
verdicts and bytes, what they do to their maps, their counters."""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether

from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.testrun import prog_test_run
from homegw.usermodules.examples.examples import EXAMPLES
from homegw.usermodules.spec import check_source
from tests.datapath.user_kit import (
    F_LOCAL,
    FWD_REDIRECT,
    Decision,
    UserModule,
    mac_key,
    set_cursor,
)

GW_LAN_MAC, GW_WAN_MAC, ISP_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:02:99"
ISOLATED_MAC, OTHER_MAC, THIRD_MAC = "02:48:47:00:00:0a", "02:48:47:00:00:0b", "02:48:47:00:00:0c"
ISOLATED, OTHER, THIRD, GW = "192.168.1.10", "192.168.1.11", "192.168.1.12", "192.168.1.1"
REMOTE = "198.51.100.80"
WAN_IFINDEX, LAN_IFINDEX = 12, 11
EXAMPLE = {e.name: e for e in EXAMPLES}


def load(name: str, pin_dir: str, **defines) -> UserModule:
    example = EXAMPLE[name]
    module = UserModule(example.source_path, name, example.hook, pin_dir, defines)
    return module


@pytest.fixture
def blocklist(dataplane: Dataplane) -> Iterator[UserModule]:
    module = load("mac_blocklist", dataplane.pin_dir)
    set_cursor(dataplane.pin_dir, Decision())
    yield module
    module.close()


def u64_key(mac: str) -> ctypes.c_uint64:
    return ctypes.c_uint64(int.from_bytes(mac_key(mac), "little"))


def from_host(mac: str, src: str, dst: str = REMOTE, l4=None) -> bytes:
    return bytes(Ether(src=mac, dst=GW_LAN_MAC) / IP(src=src, dst=dst, id=7) / (l4 or UDP(dport=9)))


# -- the MAC blocklist -------------------------------------------------------------------
def test_blocklist_drops_a_blocked_mac_and_passes_the_others(blocklist: UserModule) -> None:
    blocklist.bpf["blocked"][u64_key(ISOLATED_MAC)] = ctypes.c_uint8(1)
    blocked, other = from_host(ISOLATED_MAC, ISOLATED), from_host(OTHER_MAC, OTHER)
    assert prog_test_run(blocklist.fd, blocked).verdict == "XDP_DROP"
    passed = prog_test_run(blocklist.fd, other)
    assert (passed.verdict, passed.data) == ("XDP_PASS", other)
    assert blocklist.counters(3) == [1, 1, 0]  # passed, blocked, short


def test_blocklist_lets_a_mac_back_once_removed(blocklist: UserModule) -> None:
    table = blocklist.bpf["blocked"]
    table[u64_key(ISOLATED_MAC)] = ctypes.c_uint8(1)
    frame = from_host(ISOLATED_MAC, ISOLATED)
    assert prog_test_run(blocklist.fd, frame).verdict == "XDP_DROP"
    del table[u64_key(ISOLATED_MAC)]
    assert prog_test_run(blocklist.fd, frame).verdict == "XDP_PASS"
    assert blocklist.counters(3) == [1, 1, 0]


def test_blocklist_matches_the_source_mac_only(blocklist: UserModule) -> None:
    """A frame *to* a blocked MAC (the gateway's answers, other hosts') is not
    the blocked device's own traffic."""
    blocklist.bpf["blocked"][u64_key(ISOLATED_MAC)] = ctypes.c_uint8(1)
    frame = bytes(Ether(src=OTHER_MAC, dst=ISOLATED_MAC) / IP(src=OTHER, dst=ISOLATED) / UDP())
    assert prog_test_run(blocklist.fd, frame).verdict == "XDP_PASS"


# -- isolate ------------------------------------------------------------------------------
@pytest.fixture
def isolate(dataplane: Dataplane) -> Iterator[UserModule]:
    module = load("isolate", dataplane.pin_dir)
    module.bpf["isolated"][u64_key(ISOLATED_MAC)] = ctypes.c_uint8(1)
    yield module
    module.close()


ISOLATE_COUNTERS = EXAMPLE["isolate"].counters


def isolate_run(module: UserModule, frame: bytes, decision: Decision) -> tuple[str, dict]:
    """The verdict, the bytes unchanged, and the counters that moved."""
    set_cursor(module.pin_dir, decision)
    before = module.counters(len(ISOLATE_COUNTERS))
    result = prog_test_run(module.fd, frame)
    assert result.data == frame
    after = module.counters(len(ISOLATE_COUNTERS))
    moved = {n: a - b for n, a, b in zip(ISOLATE_COUNTERS, after, before, strict=True) if a != b}
    return result.verdict, moved


def routed(src_mac: str, out_nic: Nic, out_ifindex: int, in_dst: str = GW_LAN_MAC) -> Decision:
    """The router's decision for a frame it forwards (it saved the MACs the
    frame arrived with and rewrote the frame's)."""
    return Decision(
        fwd=FWD_REDIRECT,
        out_nic=out_nic,
        out_ifindex=out_ifindex,
        in_src_mac=src_mac,
        in_dst_mac=in_dst,
    )


TO_GATEWAY = Decision(flags=F_LOCAL)


def rewritten(frame: bytes, src: str, dst: str) -> bytes:
    packet = Ether(frame)
    packet.src, packet.dst = src, dst
    return bytes(packet)


def test_isolated_device_reaches_the_internet(isolate: UserModule) -> None:
    frame = rewritten(from_host(ISOLATED_MAC, ISOLATED, l4=TCP(dport=443)), GW_WAN_MAC, ISP_MAC)
    decision = routed(ISOLATED_MAC, Nic.WAN, WAN_IFINDEX)
    assert isolate_run(isolate, frame, decision) == ("XDP_REDIRECT", {"internet": 1})


def test_isolated_device_cannot_reach_another_lan_host_through_the_gateway(
    isolate: UserModule,
) -> None:
    frame = rewritten(from_host(ISOLATED_MAC, ISOLATED, dst=OTHER), GW_LAN_MAC, OTHER_MAC)
    decision = routed(ISOLATED_MAC, Nic.LAN, LAN_IFINDEX)
    assert isolate_run(isolate, frame, decision) == ("XDP_DROP", {"to_lan": 1})


GATEWAY_SERVICES = {
    "arp": Ether(src=ISOLATED_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=ISOLATED, pdst=GW),
    "dhcp": Ether(src=ISOLATED_MAC, dst="ff:ff:ff:ff:ff:ff")
    / IP(src="0.0.0.0", dst="255.255.255.255")
    / UDP(sport=68, dport=67),
    "dns udp": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC) / IP(src=ISOLATED, dst=GW) / UDP(dport=53),
    "dns tcp": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC) / IP(src=ISOLATED, dst=GW) / TCP(dport=53),
    "ipv6 nd": Ether(src=ISOLATED_MAC, dst="33:33:ff:00:00:01")
    / IPv6(src="fe80::a", dst="ff02::1:ff00:1")
    / ICMPv6ND_NS(tgt="fe80::1"),
    "dhcpv6": Ether(src=ISOLATED_MAC, dst="33:33:00:01:00:02")
    / IPv6(src="fe80::a", dst="ff02::1:2")
    / UDP(sport=546, dport=547),
}


@pytest.mark.parametrize("service", GATEWAY_SERVICES)
def test_isolated_device_reaches_the_gateways_dhcp_and_dns(
    isolate: UserModule, service: str
) -> None:
    frame = bytes(GATEWAY_SERVICES[service])
    assert isolate_run(isolate, frame, TO_GATEWAY) == ("XDP_PASS", {"service": 1})


GATEWAY_OTHERS = {
    "web ui": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC) / IP(src=ISOLATED, dst=GW) / TCP(dport=443),
    "ping": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC) / IP(src=ISOLATED, dst=GW) / ICMP(),
    "ssh": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC) / IP(src=ISOLATED, dst=GW) / TCP(dport=22),
    "later fragment": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC)
    / IP(src=ISOLATED, dst=GW, frag=8, proto=17)
    / (b"\x00\x35" * 8),
    "mdns": Ether(src=ISOLATED_MAC, dst="01:00:5e:00:00:fb")
    / IP(src=ISOLATED, dst="224.0.0.251")
    / UDP(sport=5353, dport=5353),
    "ipv6 web ui": Ether(src=ISOLATED_MAC, dst=GW_LAN_MAC)
    / IPv6(src="fe80::a", dst="fe80::1")
    / TCP(dport=443),
}


@pytest.mark.parametrize("service", GATEWAY_OTHERS)
def test_isolated_device_reaches_nothing_else_of_the_gateway(
    isolate: UserModule, service: str
) -> None:
    frame = bytes(GATEWAY_OTHERS[service])
    assert isolate_run(isolate, frame, TO_GATEWAY) == ("XDP_DROP", {"to_gateway": 1})


def test_no_device_reaches_an_isolated_one_through_the_gateway(isolate: UserModule) -> None:
    frame = rewritten(from_host(OTHER_MAC, OTHER, dst=ISOLATED), GW_LAN_MAC, ISOLATED_MAC)
    decision = routed(OTHER_MAC, Nic.LAN, LAN_IFINDEX)
    assert isolate_run(isolate, frame, decision) == ("XDP_DROP", {"to_isolated": 1})


def test_other_devices_go_on_as_before(isolate: UserModule) -> None:
    lan = rewritten(from_host(OTHER_MAC, OTHER, dst=THIRD), GW_LAN_MAC, THIRD_MAC)
    assert isolate_run(isolate, lan, routed(OTHER_MAC, Nic.LAN, LAN_IFINDEX)) == (
        "XDP_REDIRECT",
        {"other": 1},
    )
    ui = bytes(Ether(src=OTHER_MAC, dst=GW_LAN_MAC) / IP(src=OTHER, dst=GW) / TCP(dport=443))
    assert isolate_run(isolate, ui, TO_GATEWAY) == ("XDP_PASS", {"other": 1})


def test_the_sender_of_a_frame_for_the_gateway_is_the_frames_own(isolate: UserModule) -> None:
    """The cursor's saved MACs are a forwarded frame's only: with the
    kernel's decision they are stale (another packet's), and an isolated MAC
    left there must not make another device's frame isolated."""
    stale = Decision(flags=F_LOCAL, in_src_mac=ISOLATED_MAC, in_dst_mac=GW_LAN_MAC)
    ui = bytes(Ether(src=OTHER_MAC, dst=GW_LAN_MAC) / IP(src=OTHER, dst=GW) / TCP(dport=443))
    assert isolate_run(isolate, ui, stale) == ("XDP_PASS", {"other": 1})


# -- port bytes ---------------------------------------------------------------------------
@pytest.fixture
def port_bytes(dataplane: Dataplane) -> Iterator[UserModule]:
    module = load("port_bytes", dataplane.pin_dir, PORTS_MAX=3)
    set_cursor(dataplane.pin_dir, Decision())  # the kernel's (no router in this chain)
    yield module
    module.close()


def wan_out(l4, size: int = 0, **ip) -> bytes:
    """A LAN host's frame to the internet, as it arrives on the LAN NIC."""
    packet = Ether(src=OTHER_MAC, dst=GW_LAN_MAC) / IP(src=OTHER, dst=REMOTE, **ip)
    return bytes(packet / l4 / (b"x" * size))


def port_table(module: UserModule) -> dict[tuple[int, int], tuple[int, int]]:
    return {
        (socket.ntohs(key.port), key.proto): (value.packets, value.bytes)
        for key, value in module.bpf["ports"].items()
    }


def test_port_bytes_counts_packets_and_bytes_per_destination_port(port_bytes: UserModule) -> None:
    frames = [wan_out(TCP(dport=443), 100), wan_out(TCP(dport=443), 1000), wan_out(UDP(dport=53))]
    for frame in frames:
        result = prog_test_run(port_bytes.fd, frame)
        assert (result.verdict, result.data) == ("XDP_PASS", frame)
    assert port_table(port_bytes) == {
        (443, 6): (2, len(frames[0]) + len(frames[1])),
        (53, 17): (1, len(frames[2])),
    }
    assert port_bytes.counters(3) == [3, 0, 0]  # counted, table_full, other


def test_port_bytes_key_is_the_port_in_network_order_then_the_protocol(
    port_bytes: UserModule,
) -> None:
    """What the API shows: the key's bytes "0050" "06" "00" for TCP port 80."""
    prog_test_run(port_bytes.fd, wan_out(TCP(dport=80)))
    ((key, _),) = port_bytes.bpf["ports"].items()
    assert bytes(key).hex() == "00500600"


def test_port_bytes_leaves_out_what_has_no_ports(port_bytes: UserModule) -> None:
    others = [
        wan_out(ICMP()),
        wan_out(b"\x01\xbb" * 8, frag=8, proto=6),  # a later fragment
        bytes(Ether(src=GW_WAN_MAC, dst=ISP_MAC) / ARP()),
        wan_out(b"\x01", proto=17),  # the ports cut short
    ]
    for frame in others:
        assert prog_test_run(port_bytes.fd, frame).verdict == "XDP_PASS"
    assert port_table(port_bytes) == {}
    assert port_bytes.counters(3) == [0, 0, len(others)]


def test_port_bytes_counts_a_full_table(port_bytes: UserModule) -> None:
    """PORTS_MAX=3 (an upload's define): the fourth port is not added."""
    for port in (1, 2, 3, 4):
        assert prog_test_run(port_bytes.fd, wan_out(UDP(dport=port))).verdict == "XDP_PASS"
    assert sorted(port_table(port_bytes)) == [(1, 17), (2, 17), (3, 17)]
    assert port_bytes.counters(3) == [3, 1, 0]


def test_port_bytes_leaves_out_what_stays_in_the_home(
    port_bytes: UserModule, dataplane: Dataplane
) -> None:
    """For the gateway itself, or routed back into the LAN: not the home's
    traffic out (counted `local`); routed to the WAN: counted."""
    frame = wan_out(TCP(dport=443))
    for decision in (Decision(flags=F_LOCAL), routed(OTHER_MAC, Nic.LAN, LAN_IFINDEX)):
        set_cursor(dataplane.pin_dir, decision)
        assert prog_test_run(port_bytes.fd, frame).verdict in ("XDP_PASS", "XDP_REDIRECT")
    assert port_table(port_bytes) == {}
    assert port_bytes.counters(4) == [0, 0, 0, 2]
    set_cursor(dataplane.pin_dir, routed(OTHER_MAC, Nic.WAN, WAN_IFINDEX))
    assert prog_test_run(port_bytes.fd, frame).verdict == "XDP_REDIRECT"
    assert port_table(port_bytes) == {(443, 6): (1, len(frame))}


# -- the examples as uploads ---------------------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_each_example_passes_the_source_check(example) -> None:
    check_source(example.source_path.read_text())
    assert example.upload().function == example.name


# -- the README's minimal module ---------------------------------------------------------------
README = Path(__file__).parents[2] / "README.md"


def readme_minimal_module() -> str:
    text = README.read_text()
    section = text[text.index("### The SDK and the examples") :]
    block = section[section.index("**A minimal module**") :]
    return block[block.index("```c\n") + 5 : block.index("```\n", block.index("```c\n") + 5)]


def test_the_readmes_minimal_module_drops_udp_to_port_9(dataplane: Dataplane, tmp_path) -> None:
    source = tmp_path / "drop_discard.bpf.c"
    source.write_text(readme_minimal_module())
    check_source(source.read_text())
    module = UserModule(source, "drop_discard", "xdp", dataplane.pin_dir)
    try:
        set_cursor(dataplane.pin_dir, Decision())
        assert prog_test_run(module.fd, from_host(OTHER_MAC, OTHER, l4=UDP(dport=9))).verdict == (
            "XDP_DROP"
        )
        other = from_host(OTHER_MAC, OTHER, l4=UDP(dport=10))
        assert prog_test_run(module.fd, other).verdict == "XDP_PASS"
        assert module.counters(1) == [1]
    finally:
        module.close()
