"""The DHCP module's XDP guard through the LAN root (BPF_PROG_TEST_RUN):
bindings, the source guard for IPv4 and ARP, per-device accounting, and
the hand-over to the next module."""

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
from homegw.modules.dhcp.module import DeviceCounters, DhcpModule
from homegw.modules.dhcp.service import BINDING_LEASED, BINDING_RESERVED, Binding
from tests.fixtures.stamp import STAMP_PORT, StampModule

GW_MAC, HOST_MAC, OTHER_MAC = "02:00:00:00:01:01", "02:48:47:00:00:01", "02:48:47:00:00:02"
HOST_IP, OTHER_IP = "192.168.1.100", "192.168.1.101"


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


@pytest.fixture
def guard(loaded: DhcpModule) -> DhcpModule:
    """The module with the guard on, HOST_MAC bound and every counter at zero."""
    loaded.set_source_guard(True)
    loaded.set_probe_listener(None)
    loaded.sync_bindings({HOST_MAC: Binding(IPv4Address(HOST_IP), BINDING_LEASED)})
    loaded.bpf["dhcp_devices"].clear()
    loaded.bpf["dhcp_guard_stats"].clear()
    return loaded


def udp(
    src_mac: str = HOST_MAC, src_ip: str = HOST_IP, dport: int = STAMP_PORT, sport: int = 40000
) -> bytes:
    frame = (
        Ether(src=src_mac, dst=GW_MAC)
        / IP(src=src_ip, dst="198.51.100.80", id=1)
        / UDP(sport=sport, dport=dport)
        / b"...."
    )
    return bytes(frame)


def _restamp(frame: bytes) -> bytes:
    """The frame as it leaves the chain after stampA ran on it."""
    packet = Ether(frame)
    packet[UDP].remove_payload()
    packet[UDP].chksum = None
    return bytes(packet / b"A...")


def run(dp: Dataplane, frame: bytes):  # noqa: ANN201
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
    assert guard.guard_stats() == {
        "checked": 1,
        "dropped_ipv4": 0,
        "dropped_arp": 0,
        "devices_full": 0,
    }


def test_spoofed_source_is_dropped_with_the_guard_on(
    dataplane: Dataplane, guard: DhcpModule
) -> None:
    assert run(dataplane, udp(src_ip=OTHER_IP)).verdict == "XDP_DROP"
    assert run(dataplane, udp(src_mac=OTHER_MAC, src_ip=HOST_IP)).verdict == "XDP_DROP"
    tcp = bytes(Ether(src=OTHER_MAC) / IP(src="0.0.0.0", dst="192.168.1.1") / TCP(dport=80))
    assert run(dataplane, tcp).verdict == "XDP_DROP"
    assert guard.guard_stats()["dropped_ipv4"] == 3
    # Only the bound MAC has a device entry: its one spoofed packet.
    assert guard.device_counters() == {HOST_MAC: DeviceCounters(0, 0, 1)}


def test_spoofed_source_passes_with_the_guard_off(dataplane: Dataplane, guard: DhcpModule) -> None:
    guard.set_source_guard(False)
    frame = udp(src_ip=OTHER_IP)
    result = run(dataplane, frame)
    assert result.verdict == "XDP_PASS" and result.data == _restamp(frame)
    assert guard.guard_stats()["checked"] == 0
    assert guard.device_counters() == {HOST_MAC: DeviceCounters(1, len(frame), 0)}


def test_dhcp_to_the_server_always_passes(dataplane: Dataplane, guard: DhcpModule) -> None:
    discover = bytes(
        Ether(src=OTHER_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / (b"\x01" * 300)
    )
    result = run(dataplane, discover)
    assert result.verdict == "XDP_PASS" and result.data == discover
    rebinding = udp(src_mac=OTHER_MAC, src_ip="192.168.1.77", dport=67, sport=68)
    assert run(dataplane, rebinding).verdict == "XDP_PASS"
    assert run(dataplane, udp(OTHER_MAC, "192.168.1.77", 67, 40000)).verdict == "XDP_DROP"


def test_gateway_and_non_ip_frames_pass(dataplane: Dataplane, guard: DhcpModule) -> None:
    assert run(dataplane, udp(src_mac=GW_MAC, src_ip="10.1.1.1")).verdict == "XDP_PASS"
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
    assert guard.device_counters()[HOST_MAC] == DeviceCounters(1, len(good), 1)


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
    assert guard.device_counters() == {
        HOST_MAC: DeviceCounters(3, 3 * len(host), 0),
        OTHER_MAC: DeviceCounters(1, len(other), 1),
    }
    guard.forget_device(OTHER_MAC)
    assert set(guard.device_counters()) == {HOST_MAC}


def test_bindings_sync_and_removal(dataplane: Dataplane, guard: DhcpModule) -> None:
    wanted = {OTHER_MAC: Binding(IPv4Address(OTHER_IP), BINDING_LEASED | BINDING_RESERVED)}
    guard.sync_bindings(wanted)
    assert guard.bindings() == wanted
    assert run(dataplane, udp()).verdict == "XDP_DROP"  # HOST_MAC lost its binding
    guard.remove_binding(OTHER_MAC)
    assert guard.bindings() == {}
