"""Every helper of the user-module SDK (homegw/dataplane/include/homegw_user.h)
through BPF_PROG_TEST_RUN: a probe module (user_sdk_probe.bpf.c), compiled as
the gateway compiles a user module, keeps what each helper returned in its
maps; punts arrive through a real SlowPath on the pin dir's ring."""

from __future__ import annotations

import ctypes
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.libbpf import obj_get
from homegw.dataplane.pinned import PinnedMap, possible_cpus
from homegw.dataplane.slowpath import Punt
from homegw.dataplane.testrun import _lib, prog_test_run
from tests.datapath.punts import one_cpu
from tests.datapath.user_kit import (
    F_DNAT,
    F_LOCAL,
    FWD_KERNEL,
    FWD_REDIRECT,
    USER_MODULE_ID,
    Decision,
    UserModule,
    mac_bytes,
    mac_key,
    set_cursor,
)

PROBE = Path(__file__).parent / "user_sdk_probe.bpf.c"
HOST_MAC, GW_MAC, OTHER_MAC = "02:48:47:00:00:01", "02:00:00:00:01:01", "02:48:47:00:00:02"
LO_IFINDEX = 1  # TEST_RUN's packets come in on the namespace's loopback
PUNT_MAX = 1514
NO_IP = 0xFFFFFFFF
PROGRAMS = {
    "parse_xdp": "xdp",
    "parse_tc": "tc",
    "count_xdp": "xdp",
    "punt_xdp": "xdp",
    "punt_tc": "tc",
    "decision_xdp": "xdp",
    "decision_tc": "tc",
    "device_xdp": "xdp",
}


class Punts:
    """The probe's punts, as the SlowPath handed them over."""

    def __init__(self) -> None:
        self.received: list[Punt] = []
        self._changed = threading.Condition()

    def handle(self, punt: Punt) -> None:
        with self._changed:
            self.received.append(punt)
            self._changed.notify_all()

    def wait(self, count: int) -> list[Punt]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.received) >= count, timeout=10)
            taken, self.received = self.received[:count], self.received[count:]
            return taken


@dataclass
class Probe:
    module: UserModule
    fds: dict[str, int]
    punts: Punts

    @property
    def pin_dir(self) -> str:
        return self.module.pin_dir

    def run(self, program: str, frame: bytes):
        return prog_test_run(self.fds[program], frame, hook=PROGRAMS[program])

    def table(self, name: str):
        return self.module.bpf[name][ctypes.c_int(0)]


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
    dataplane = Dataplane(pin_dir, {})
    dataplane.load()
    module = UserModule(PROBE, "parse_xdp", "xdp", pin_dir)
    try:
        fds = {name: module.load(name, hook) for name, hook in PROGRAMS.items()}
        punts = Punts()
        assert dataplane.slowpath is not None
        dataplane.slowpath.register_module(USER_MODULE_ID, punts.handle)
        dataplane.slowpath.start()
        yield Probe(module, fds, punts)
    finally:
        module.close()
        dataplane.close()
        purge_pins(pin_dir)


# -- hgw_parse ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parsed:
    ip_offset: int = NO_IP
    proto: int = 0x0800
    l4proto: int = 0
    first_fragment: int = 1
    sport: int = 0
    dport: int = 0


def parsed(probe: Probe, frame: bytes, program: str = "parse_xdp") -> Parsed:
    assert probe.run(program, frame).data == frame
    out = probe.table("parsed")
    assert (out.ret, out.eth_offset, out.len) == (0, 0, len(frame))
    return Parsed(out.ip_offset, out.proto, out.l4proto, out.first_fragment, out.sport, out.dport)


def eth(proto: int | None = None) -> Ether:
    """An Ethernet header; scapy sets its type from what follows, else `proto`."""
    if proto is None:
        return Ether(src=HOST_MAC, dst=GW_MAC)
    return Ether(src=HOST_MAC, dst=GW_MAC, type=proto)


def ipv4_header(ihl: int, version: int = 4, proto: int = 17) -> bytes:
    """20 bytes of an IPv4 header with any IHL and version."""
    return (
        bytes([version << 4 | ihl, 0]) + struct.pack("!HHHBBH", 40, 1, 0, 64, proto, 0) + bytes(8)
    )


FRAMES = {
    "arp": (bytes(eth() / ARP()), Parsed(proto=0x0806)),
    "vlan": (bytes(eth() / Dot1Q(vlan=5) / IP() / UDP()), Parsed(proto=0x8100)),
    "ipv6": (bytes(eth() / IPv6() / UDP(sport=1, dport=2)), Parsed(proto=0x86DD)),
    "udp": (
        bytes(eth() / IP(src="192.168.1.11", dst="8.8.8.8") / UDP(sport=40000, dport=53)),
        Parsed(14, l4proto=17, sport=40000, dport=53),
    ),
    "tcp": (bytes(eth() / IP() / TCP(sport=1234, dport=443)), Parsed(14, 0x0800, 6, 1, 1234, 443)),
    "ipv4 with options": (
        bytes(eth() / IP(options=[IPOption_NOP()] * 8) / TCP(sport=5, dport=6)),
        Parsed(14, l4proto=6, sport=5, dport=6),
    ),
    "icmp": (bytes(eth() / IP() / ICMP()), Parsed(14, l4proto=1)),
    "first fragment": (
        bytes(eth() / IP(flags="MF", frag=0) / UDP(sport=7, dport=8) / (b"x" * 16)),
        Parsed(14, l4proto=17, sport=7, dport=8),
    ),
    "later fragment": (
        bytes(eth() / IP(frag=3, proto=17) / (b"\x00\x07\x00\x08" * 4)),
        Parsed(14, l4proto=17, first_fragment=0),
    ),
    "ip header cut short": (bytes(eth(0x0800)) + ipv4_header(5)[:19], Parsed()),
    "bad ihl": (bytes(eth(0x0800)) + ipv4_header(4) + bytes(8), Parsed()),
    "bad version": (bytes(eth(0x0800)) + ipv4_header(5, version=6) + bytes(8), Parsed()),
    "options cut short": (bytes(eth(0x0800)) + ipv4_header(15) + bytes(8), Parsed()),
    "udp ports cut short": (bytes(eth() / IP(proto=17) / b"\x9c\x40\x00"), Parsed(14, l4proto=17)),
    "tcp after options, ports cut short": (
        bytes(eth() / IP(proto=6, options=[IPOption_NOP()] * 4) / b"\x00\x01"),
        Parsed(14, l4proto=6),
    ),
}


@pytest.mark.parametrize("shape", FRAMES)
def test_hgw_parse_xdp(probe: Probe, shape: str) -> None:
    frame, expected = FRAMES[shape]
    assert parsed(probe, frame) == expected


@pytest.mark.parametrize("shape", ["udp", "ipv4 with options", "later fragment", "bad ihl"])
def test_hgw_parse_tc(probe: Probe, shape: str) -> None:
    frame, expected = FRAMES[shape]
    assert parsed(probe, frame, "parse_tc") == expected


# -- counters -----------------------------------------------------------------------------------
def test_hgw_count_and_count_add(probe: Probe) -> None:
    before = probe.module.counters(16)
    frame = bytes(eth() / IP() / UDP() / (b"x" * 50))
    for _ in range(3):
        assert probe.run("count_xdp", frame).verdict == "XDP_PASS"
    moved = [a - b for a, b in zip(probe.module.counters(16), before, strict=True)]
    assert moved == [3, 3 * len(frame)] + [0] * 13 + [6]


# -- punts --------------------------------------------------------------------------------------
def punted(probe: Probe, program: str, frames: list[bytes]) -> list[Punt]:
    with one_cpu():  # one ring: the punts arrive in order
        for frame in frames:
            probe.run(program, frame)
    return probe.punts.wait(len(frames))


def test_hgw_punt_xdp_reaches_the_slow_path(probe: Probe) -> None:
    small = bytes(eth() / IP() / UDP(dport=9) / b"hello")
    big = bytes(eth() / IP() / UDP(dport=9) / (b"y" * 2000))
    assert probe.run("punt_xdp", small).verdict == "XDP_DROP"
    probe.punts.wait(1)
    assert punted(probe, "punt_xdp", [small, big]) == [
        Punt(USER_MODULE_ID, 7, LO_IFINDEX, len(small), (0x11223344, len(small), 0, 0), small),
        Punt(USER_MODULE_ID, 7, LO_IFINDEX, len(big), (0x11223344, len(big), 0, 0), big[:PUNT_MAX]),
    ]


def test_hgw_punt_tc_reaches_the_slow_path(probe: Probe) -> None:
    small = bytes(eth() / IP() / TCP(dport=22))
    big = bytes(eth() / IP() / UDP() / (b"z" * 1600))
    assert probe.run("punt_tc", small).verdict == "TC_ACT_SHOT"
    probe.punts.wait(1)
    assert punted(probe, "punt_tc", [small, big]) == [
        Punt(USER_MODULE_ID, 9, LO_IFINDEX, len(small), (0xAABBCCDD, len(small), 0, 0), small),
        Punt(USER_MODULE_ID, 9, LO_IFINDEX, len(big), (0xAABBCCDD, len(big), 0, 0), big[:PUNT_MAX]),
    ]


PUNT_BURST, PUNT_LIMITED = 64, -16  # HGW_PUNT_BURST, HGW_PUNT_LIMITED


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_hgw_punts_are_held_to_a_rate(probe: Probe, hook: str) -> None:
    """At HGW_PUNT_RATE=1 a second, a burst of 70 punts in one run (well
    under a second) sends the first 64 and refuses 6, counted as limited."""
    limited = UserModule(PROBE, f"punt_{hook}", hook, probe.pin_dir, {"HGW_PUNT_RATE": 1})
    try:
        frame = bytes(eth() / IP() / UDP(dport=9))
        with one_cpu():
            prog_test_run(limited.fd, frame, hook=hook, repeat=PUNT_BURST + 6)
        assert len(probe.punts.wait(PUNT_BURST)) == PUNT_BURST
        assert limited.bpf["punt_ret"][ctypes.c_int(0)].value == PUNT_LIMITED
        budgets = limited.bpf["hgw_punt_budget"][ctypes.c_int(0)]
        assert sum(b.limited for b in budgets) == 6
    finally:
        limited.close()


def test_a_punt_within_the_rate_returns_0(probe: Probe) -> None:
    probe.run("punt_xdp", bytes(eth() / IP() / UDP()))
    probe.punts.wait(1)
    assert probe.table("punt_ret").value == 0


# -- the decision and the chain's next module ------------------------------------------------------
ROUTED = Decision(
    nic=Nic.LAN,
    ifindex=11,
    fwd=FWD_REDIRECT,
    out_ifindex=12,
    out_nic=Nic.WAN,
    flags=F_DNAT,
    in_src_mac=HOST_MAC,
    in_dst_mac=GW_MAC,
)
LOCAL = Decision(nic=Nic.WAN, ifindex=12, fwd=FWD_KERNEL, flags=F_LOCAL, in_src_mac=OTHER_MAC)


def decision_seen(probe: Probe) -> tuple[int, tuple]:
    d = probe.table("decided")
    fields = (d.nic, d.ifindex, d.fwd, d.out_ifindex, d.out_nic, d.flags)
    macs = (bytes(d.in_src_mac), bytes(d.in_dst_mac))
    return probe.table("decided_ret").value, fields + macs


def as_seen(decision: Decision, macs: bool) -> tuple:
    """What hgw_decision should give for a cursor holding `decision`: the
    arrival MACs only when `macs` (a routed frame), else zeros."""
    fields = (decision.nic, decision.ifindex, decision.fwd, decision.out_ifindex)
    fields += (decision.out_nic, decision.flags)
    if not macs:
        return (*fields, bytes(6), bytes(6))
    return (*fields, mac_bytes(decision.in_src_mac), mac_bytes(decision.in_dst_mac))


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_hgw_decision_copies_the_routers_decision(probe: Probe, hook: str) -> None:
    set_cursor(probe.pin_dir, ROUTED, hook)
    frame = bytes(eth() / IP() / UDP())
    verdict = probe.run(f"decision_{hook}", frame).verdict
    assert verdict == {"xdp": "XDP_REDIRECT", "tc": "TC_ACT_OK"}[hook]
    assert decision_seen(probe) == (0, as_seen(ROUTED, macs=True))


@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_hgw_decision_of_the_kernel_has_no_arrival_macs(probe: Probe, hook: str) -> None:
    """The cursor's saved MACs are another packet's when nothing was routed."""
    set_cursor(probe.pin_dir, LOCAL, hook)
    verdict = probe.run(f"decision_{hook}", bytes(eth() / IP() / UDP())).verdict
    assert verdict == {"xdp": "XDP_PASS", "tc": "TC_ACT_OK"}[hook]
    assert decision_seen(probe) == (0, as_seen(LOCAL, macs=False))


# -- the device table ----------------------------------------------------------------------------
def set_device(pin_dir: str, mac: str, per_cpu: list[tuple[int, int, int, int, int]]) -> None:
    """homegw_devices[mac], one value per CPU (what the router counted there)."""
    values = b"".join(struct.pack("<5Q4I", *v, 0, 0, 0, 0) for v in per_cpu)
    key = ctypes.create_string_buffer(mac_key(mac), 8)
    buf = ctypes.create_string_buffer(values, len(values))
    fd = obj_get(f"{pin_dir}/devices")
    try:
        assert _lib().bpf_map_update_elem(fd, key, buf, 0) == 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(fd)


def device_seen(probe: Probe, frame: bytes) -> tuple:
    assert probe.run("device_xdp", frame).verdict == "XDP_PASS"
    out = probe.table("device")
    v = out.view
    view = (v.from_packets, v.from_bytes, v.to_packets, v.to_bytes, v.dropped)
    return out.ret, out.paused, out.same_mac, out.key, view


def test_hgw_device_reads_this_cpus_view_of_a_known_device(probe: Probe) -> None:
    cpus = possible_cpus()
    set_device(
        probe.pin_dir, HOST_MAC, [(10 + c, 1000 + c, 20 + c, 2000 + c, c) for c in range(cpus)]
    )
    cpu = min(os.sched_getaffinity(0))
    with one_cpu():
        seen = device_seen(probe, bytes(eth() / IP() / UDP()))
    key = int.from_bytes(mac_key(HOST_MAC), "little")
    assert seen == (0, 0, 0, key, (10 + cpu, 1000 + cpu, 20 + cpu, 2000 + cpu, cpu))


def test_hgw_device_of_an_unknown_device(probe: Probe) -> None:
    frame = bytes(Ether(src=OTHER_MAC, dst=GW_MAC) / IP() / UDP())
    ret, paused, _, _, _ = device_seen(probe, frame)
    assert (ret, paused) == (-1, 0)


def test_hgw_device_paused_and_same_mac(probe: Probe) -> None:
    policy = PinnedMap(f"{probe.pin_dir}/device_policy")
    try:
        policy.update(mac_key(OTHER_MAC), struct.pack("<I", 1))  # HOMEGW_DEVICE_PAUSED
        to_itself = bytes(Ether(src=OTHER_MAC, dst=OTHER_MAC) / IP() / UDP())
        assert device_seen(probe, to_itself)[1:3] == (1, 1)
        policy.update(mac_key(OTHER_MAC), struct.pack("<I", 0))
        assert device_seen(probe, to_itself)[1:3] == (0, 1)
    finally:
        policy.close()
