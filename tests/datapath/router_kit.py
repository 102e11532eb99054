"""What the router's datapath tests share: a fake pair of NICs, the router
loaded in both chains, frames, and the exact answers the router must give."""

from __future__ import annotations

import ipaddress
import struct

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import checksum

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.testrun import RunResult, prog_test_run
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import RouterModule

LAN_MAC, WAN_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
HOST_MAC, ISP_MAC = "02:48:47:00:00:01", "02:00:00:00:02:99"
HOST, LAN_GW, WAN_GW_IP, ISP_GW = "192.168.1.11", "192.168.1.1", "203.0.113.2", "203.0.113.1"
LAN_IFINDEX, WAN_IFINDEX = 11, 12
NIC_INFO = {"lan0": (LAN_IFINDEX, LAN_MAC, 1500), "wan0": (WAN_IFINDEX, WAN_MAC, 1500)}
ICMP_ERROR_MAX = 576  # IP bytes of an ICMP error (RFC 1812 4.3.2.3)

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
NO_STATIC_ROUTES = {**CONFIG, "router": {"routes": []}}


def fake_nic(
    ifname: str,
    address: ipaddress.IPv4Address | None,
    up: bool = True,
    wan_mtu: int = 1500,
    lan_mtu: int = 1500,
) -> IfaceInfo:
    ifindex, mac, _ = NIC_INFO[ifname]
    return IfaceInfo(ifindex, mac, wan_mtu if ifname == "wan0" else lan_mtu, up, address)


def load_router(dataplane: Dataplane, config: dict, iface_info=fake_nic) -> RouterModule:
    module = RouterModule(parse_config(config), iface_info=iface_info, watch_kernel=False)
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


def run(dp: Dataplane, nic: Nic, frame: bytes) -> RunResult:
    return prog_test_run(dp.root_fd(nic, Hook.XDP), frame)


def icmp_error(
    frame: bytes,
    type_: int,
    code: int,
    rest: int,
    src: str,
    our_mac: str,
    quoted: bytes | None = None,
) -> bytes:
    """The error RFC 1812 says the gateway answers: as much of the offending
    IP packet (or of `quoted`, the packet as the remote sent it) as fits in
    576 bytes, after a 20-byte IP and an 8-byte ICMP header."""
    offender = Ether(frame)
    quote = (quoted if quoted is not None else bytes(offender[IP]))[: ICMP_ERROR_MAX - 28]
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
