"""The DHCP module's XDP guard through the LAN root (BPF_PROG_TEST_RUN):
bindings, the gateway-MAC rule, the source guard for IPv4 and ARP with its
DHCP rules (client -> server only, rogue servers dropped), per-device
accounting, and the hand-over to the next module."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.dhcp.module import DhcpModule
from homegw.modules.dhcp.service import BINDING_LEASED, BINDING_RESERVED, Binding
from tests.fixtures.stamp import STAMP_PORT, StampModule

GW_MAC, HOST_MAC, OTHER_MAC = "02:00:00:00:01:01", "02:48:47:00:00:01", "02:48:47:00:00:02"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
GW_IP, HOST_IP, OTHER_IP = "192.168.1.1", "192.168.1.100", "192.168.1.101"  # lan.address default
REMOTE_IP = "198.51.100.80"
NO_DROPS = {
    "dropped_ipv4": 0,
    "dropped_arp": 0,
    "devices_full": 0,
    "dropped_gateway_mac": 0,
    "dropped_dhcp_server": 0,
}


@pytest.fixture(scope="module")
def dataplane() -> Iterator[Dataplane]:
    """One dataplane for the module (compiling is the slow part); `guard` resets it."""
    pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
    dp = Dataplane(pin_dir, {})
    try:
        dp.load()
        yield dp
    finally:
        dp.close()
        purge_pins(pin_dir)


@pytest.fixture(scope="module")
def loaded(dataplane: Dataplane) -> DhcpModule:
    config = parse_config(
        {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0"}, "dhcp": {"source_guard": True}}
    )
    module = DhcpModule(config, gateway_mac=GW_MAC)
    dataplane.add_module(module)
    dataplane.add_module(StampModule("A", 16))
    dataplane.set_order(Nic.LAN, ["dhcp", "stampA"])
    return module


def dropped(guard: DhcpModule) -> dict[str, int]:
    """Frames of each device the guard dropped, from the chain's device table."""
    return {mac: traffic.dropped for mac, traffic in guard.device_traffic().items()}


@pytest.fixture
def guard(loaded: DhcpModule) -> DhcpModule:
    """The module with the guard on, HOST_MAC bound and every counter at zero."""
    loaded.set_source_guard(True)
    loaded.set_probe_listener(None)
    loaded.sync_bindings({HOST_MAC: Binding(IPv4Address(HOST_IP), BINDING_LEASED)})
    loaded.bpf["homegw_devices"].clear()
    loaded.bpf["dhcp_guard_stats"].clear()
    return loaded


def udp(
    src_mac: str = HOST_MAC,
    src_ip: str = HOST_IP,
    dport: int = STAMP_PORT,
    sport: int = 40000,
    dst_mac: str = GW_MAC,
    dst_ip: str = REMOTE_IP,
) -> bytes:
    frame = (
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src_ip, dst=dst_ip, id=1)
        / UDP(sport=sport, dport=dport)
        / b"...."
    )
    return bytes(frame)


def dhcp(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, sport: int = 68) -> bytes:
    """A DHCP-sized datagram: client -> server (68 -> 67) or server -> client (67 -> 68)."""
    dport = 67 if sport == 68 else 68
    return bytes(
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src_ip, dst=dst_ip)
        / UDP(sport=sport, dport=dport)
        / (b"\x01" * 300)
    )


def _restamp(frame: bytes) -> bytes:
    """The frame as it leaves the chain after stampA ran on it."""
    packet = Ether(frame)
    packet[UDP].remove_payload()
    packet[UDP].chksum = None
    return bytes(packet / b"A...")


def run(dp: Dataplane, frame: bytes):
    return prog_test_run(dp.root_fd(Nic.LAN, Hook.XDP), frame)


def arp(op: str, src_mac: str, psrc: str, pdst: str, hwsrc: str | None = None) -> bytes:
    return bytes(
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=op, hwsrc=hwsrc or src_mac, psrc=psrc, pdst=pdst)
    )


def test_bound_mac_and_address_pass_unchanged_to_the_next_module(
    dataplane: Dataplane, guard: DhcpModule
) -> None:
    frame = udp()
    result = run(dataplane, frame)
    assert result.verdict == "XDP_PASS"
    assert result.data == _restamp(frame)  # exact bytes: only stampA's change
    assert guard.guard_stats() == {"checked": 1, **NO_DROPS}


def test_spoofed_source_is_dropped_with_the_guard_on(
    dataplane: Dataplane, guard: DhcpModule
) -> None:
    assert run(dataplane, udp(src_ip=OTHER_IP)).verdict == "XDP_DROP"
    assert run(dataplane, udp(src_mac=OTHER_MAC, src_ip=HOST_IP)).verdict == "XDP_DROP"
    tcp = bytes(Ether(src=OTHER_MAC) / IP(src="0.0.0.0", dst="192.168.1.1") / TCP(dport=80))
    assert run(dataplane, tcp).verdict == "XDP_DROP"
    assert guard.guard_stats()["dropped_ipv4"] == 3
    # Only the bound MAC has a device entry: its one spoofed packet.
    assert dropped(guard) == {HOST_MAC: 1}


def test_spoofed_source_passes_with_the_guard_off(dataplane: Dataplane, guard: DhcpModule) -> None:
    guard.set_source_guard(False)
    frame = udp(src_ip=OTHER_IP)
    result = run(dataplane, frame)
    assert result.verdict == "XDP_PASS" and result.data == _restamp(frame)
    assert guard.guard_stats()["checked"] == 0
    assert dropped(guard) == {}  # what passes the router counts, if it forwards it


@pytest.mark.parametrize(
    "frame",
    [
        dhcp(OTHER_MAC, "0.0.0.0", BROADCAST_MAC, "255.255.255.255"),  # DISCOVER, REQUEST
        dhcp(OTHER_MAC, "192.168.1.77", BROADCAST_MAC, "255.255.255.255"),  # REBINDING
        dhcp(OTHER_MAC, "192.168.1.77", GW_MAC, GW_IP),  # RENEWING, a lease we lost
    ],
    ids=["discover", "rebinding", "renewing"],
)
def test_dhcp_client_to_the_server_passes_from_any_source(
    dataplane: Dataplane, guard: DhcpModule, frame: bytes
) -> None:
    result = run(dataplane, frame)
    assert result.verdict == "XDP_PASS" and result.data == frame
    assert guard.guard_stats() == {"checked": 1, **NO_DROPS}


@pytest.mark.parametrize(
    ("dst_mac", "dst_ip"),
    [
        (GW_MAC, "255.255.255.255"),  # limited broadcast, but not in a broadcast frame
        (OTHER_MAC, "255.255.255.255"),
        (BROADCAST_MAC, "192.168.1.255"),  # the subnet's broadcast is not the server
        (BROADCAST_MAC, GW_IP),
        (OTHER_MAC, GW_IP),  # the gateway's address, another device's MAC
        (OTHER_MAC, OTHER_IP),  # a DHCP server on another LAN host
        (GW_MAC, "198.51.100.67"),  # a DHCP server beyond the gateway
    ],
    ids=[
        "bcast-ip-gw-mac",
        "bcast-ip-other-mac",
        "subnet-bcast",
        "gw-ip-bcast-mac",
        "gw-ip-other-mac",
        "lan-host",
        "remote",
    ],
)
def test_dhcp_client_traffic_elsewhere_is_not_exempt(
    dataplane: Dataplane, guard: DhcpModule, dst_mac: str, dst_ip: str
) -> None:
    unbound = dhcp(OTHER_MAC, "192.168.1.77", dst_mac, dst_ip)
    assert run(dataplane, unbound).verdict == "XDP_DROP"
    assert guard.guard_stats() == {"checked": 1, **NO_DROPS, "dropped_ipv4": 1}
    # A bound device with its own address is ordinary traffic (rule 2b).
    bound = dhcp(HOST_MAC, HOST_IP, dst_mac, dst_ip)
    assert run(dataplane, bound).data == bound


def test_other_udp_to_the_server_port_is_not_exempt(
    dataplane: Dataplane, guard: DhcpModule
) -> None:
    assert run(dataplane, udp(OTHER_MAC, "192.168.1.77", 67, 40000, dst_ip=GW_IP)).verdict == (
        "XDP_DROP"
    )
    assert run(dataplane, udp(OTHER_MAC, "192.168.1.77", 6700, 68, dst_ip=GW_IP)).verdict == (
        "XDP_DROP"
    )
    assert guard.guard_stats()["dropped_ipv4"] == 2


def _first_fragment(frame: bytes) -> bytes:
    packet = Ether(frame)
    packet[IP].flags = "MF"
    return bytes(packet)


@pytest.mark.parametrize(
    "frame",
    [
        dhcp(OTHER_MAC, "192.168.1.77", BROADCAST_MAC, "255.255.255.255", sport=67),
        dhcp(HOST_MAC, HOST_IP, BROADCAST_MAC, "255.255.255.255", sport=67),  # bound sender
        dhcp(HOST_MAC, HOST_IP, OTHER_MAC, OTHER_IP, sport=67),  # unicast ACK
        dhcp(HOST_MAC, HOST_IP, GW_MAC, GW_IP, sport=67),  # to the gateway itself
        _first_fragment(dhcp(HOST_MAC, HOST_IP, BROADCAST_MAC, "255.255.255.255", sport=67)),
    ],
    ids=["unbound", "bound", "unicast", "to-gateway", "first-fragment"],
)
def test_rogue_dhcp_server_is_dropped_and_counted(
    dataplane: Dataplane, guard: DhcpModule, frame: bytes
) -> None:
    assert run(dataplane, frame).verdict == "XDP_DROP"
    assert guard.guard_stats() == {"checked": 1, **NO_DROPS, "dropped_dhcp_server": 1}


@pytest.mark.parametrize("source_guard", [True, False], ids=["guard-on", "guard-off"])
def test_frames_with_the_gateway_mac_are_dropped(
    dataplane: Dataplane, guard: DhcpModule, source_guard: bool
) -> None:
    guard.set_source_guard(source_guard)
    impostors = [
        udp(src_mac=GW_MAC, src_ip=GW_IP),
        dhcp(GW_MAC, "0.0.0.0", BROADCAST_MAC, "255.255.255.255"),  # not even DHCP passes
        arp("is-at", GW_MAC, GW_IP, HOST_IP),  # gratuitous ARP for the gateway
        bytes(Ether(src=GW_MAC, dst=HOST_MAC, type=0x86DD) / (b"\x60" + bytes(60))),
    ]
    for frame in impostors:
        assert run(dataplane, frame).verdict == "XDP_DROP"
    stats = guard.guard_stats()
    assert stats == {"checked": 0, **NO_DROPS, "dropped_gateway_mac": len(impostors)}
    assert dropped(guard) == {}


def test_non_ip_frames_pass(dataplane: Dataplane, guard: DhcpModule) -> None:
    ipv6 = bytes(Ether(src=OTHER_MAC, dst=GW_MAC, type=0x86DD) / (b"\x60" + bytes(60)))
    assert run(dataplane, ipv6).data == ipv6


def test_arp_sender_must_be_the_binding(dataplane: Dataplane, guard: DhcpModule) -> None:
    good = arp("who-has", HOST_MAC, HOST_IP, "192.168.1.1")
    assert run(dataplane, good).verdict == "XDP_PASS"
    assert run(dataplane, arp("is-at", OTHER_MAC, HOST_IP, "192.168.1.1")).verdict == "XDP_DROP"
    forged_sha = arp("is-at", HOST_MAC, HOST_IP, "192.168.1.1", hwsrc=OTHER_MAC)
    assert run(dataplane, forged_sha).verdict == "XDP_DROP"
    probe = arp("who-has", OTHER_MAC, "0.0.0.0", OTHER_IP)  # RFC 5227 probe
    assert run(dataplane, probe).verdict == "XDP_PASS"
    stats = guard.guard_stats()
    assert (stats["checked"], stats["dropped_arp"]) == (4, 2)
    assert dropped(guard) == {HOST_MAC: 1}


def test_dropped_probe_answer_reaches_the_server(dataplane: Dataplane, guard: DhcpModule) -> None:
    heard: list[tuple[int, bytes]] = []
    got = threading.Event()
    guard.set_probe_listener(lambda ip, mac: (heard.append((ip, mac)), got.set()))
    assert dataplane.slowpath is not None
    dataplane.slowpath.start()
    answer = bytes(
        Ether(src=OTHER_MAC, dst=GW_MAC)
        / ARP(op="is-at", hwsrc=OTHER_MAC, psrc=OTHER_IP, hwdst=GW_MAC, pdst="0.0.0.0")
    )
    assert run(dataplane, answer).verdict == "XDP_DROP"
    assert got.wait(5)
    assert heard == [(int(IPv4Address(OTHER_IP)), bytes.fromhex(OTHER_MAC.replace(":", "")))]


def test_device_counters_are_per_mac(dataplane: Dataplane, guard: DhcpModule) -> None:
    guard.set_binding(OTHER_MAC, Binding(IPv4Address(OTHER_IP), BINDING_RESERVED))
    host, other = udp(), udp(OTHER_MAC, OTHER_IP)
    for _ in range(3):
        run(dataplane, host)
    run(dataplane, other)
    run(dataplane, udp(OTHER_MAC, HOST_IP))  # spoofed: dropped, counted as such
    run(dataplane, udp(OTHER_MAC, HOST_IP))
    run(dataplane, udp(HOST_MAC, OTHER_IP))
    traffic = guard.device_traffic()
    assert {mac: t.dropped for mac, t in traffic.items()} == {HOST_MAC: 1, OTHER_MAC: 2}
    # what passed is not counted here (the router counts what it forwards)
    assert all(t.from_packets == t.to_packets == 0 for t in traffic.values())
    assert all(0 < t.first_seen <= t.last_seen for t in traffic.values())
    guard.forget_device(OTHER_MAC)
    assert set(guard.device_traffic()) == {HOST_MAC}


def test_bindings_sync_and_removal(dataplane: Dataplane, guard: DhcpModule) -> None:
    wanted = {OTHER_MAC: Binding(IPv4Address(OTHER_IP), BINDING_LEASED | BINDING_RESERVED)}
    guard.sync_bindings(wanted)
    assert guard.bindings() == wanted
    assert run(dataplane, udp()).verdict == "XDP_DROP"  # HOST_MAC lost its binding
    guard.remove_binding(OTHER_MAC)
    assert guard.bindings() == {}
