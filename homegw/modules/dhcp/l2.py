"""Link-layer helpers of the DHCP server: ARP probes and frames to a MAC.

Both use AF_PACKET sockets on the LAN interface, created in the caller's
network namespace. Interface facts (index, MAC) come from ioctls on those
sockets, so they are right even when the caller's /sys belongs to another
namespace.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
from dataclasses import dataclass

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
PACKET_OUTGOING = 4
SIOCGIFHWADDR = 0x8927
ARP_BODY = struct.Struct("!HHBBH6s4s6s4s")  # Ethernet/IPv4 ARP, 28 bytes
ETH_HEADER = 14
BROADCAST_MAC = b"\xff" * 6


def interface_mac(sock: socket.socket, ifname: str) -> bytes:
    """The hardware address of `ifname` in the namespace of `sock`."""
    req = struct.pack("256s", ifname.encode()[:15])
    return fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, req)[18:24]


def internet_checksum(data: bytes) -> bytes:
    """Internet checksum, returned as the two bytes to put in the header."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))  # native order: the sum is order-independent
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    return struct.pack("=H", ~total & 0xFFFF)


def ipv4_udp(src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 + UDP packet (checksums filled in) carrying `payload`."""
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, socket.IPPROTO_UDP, udp_len)
    check = internet_checksum(pseudo + udp)
    if check == b"\0\0":
        check = b"\xff\xff"
    udp = udp[:6] + check + udp[8:]
    header = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0, src, dst)
    return header[:10] + internet_checksum(header) + header[12:] + udp


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: int
    target_ip: int


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP body of an Ethernet frame, or None when it is not Ethernet/IPv4 ARP."""
    if len(frame) < ETH_HEADER + ARP_BODY.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _, tpa = ARP_BODY.unpack_from(frame, ETH_HEADER)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return ArpPacket(op, sha, int.from_bytes(spa, "big"), int.from_bytes(tpa, "big"))


class ArpSocket:
    """Sends RFC 5227 probes (sender IP 0.0.0.0) and reads every ARP frame."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            self.sock.bind((ifname, ETH_P_ARP))
            self.sock.setblocking(False)
            self.mac = interface_mac(self.sock, ifname)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def probe(self, address: int) -> None:
        body = ARP_BODY.pack(
            1,
            ETH_P_IP,
            6,
            4,
            ARP_REQUEST,
            self.mac,
            b"\0" * 4,
            b"\0" * 6,
            address.to_bytes(4, "big"),
        )
        self.sock.send(BROADCAST_MAC + self.mac + struct.pack("!H", ETH_P_ARP) + body)

    def receive(self, limit: int = 64) -> list[ArpPacket]:
        """ARP packets that arrived (not our own), up to `limit`."""
        got = []
        for _ in range(limit):
            try:
                frame, addr = self.sock.recvfrom(128)
            except BlockingIOError:
                break
            arp = parse_arp(frame)
            if arp is not None and addr[2] != PACKET_OUTGOING and arp.sender_mac != self.mac:
                got.append(arp)
        return got

    def close(self) -> None:
        self.sock.close()


class FrameSender:
    """Sends IPv4/UDP packets to a given MAC, bypassing ARP (RFC 2131 §4.1:
    a client with no address yet gets its reply unicast to chaddr)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        # Protocol 0: a send-only socket; it receives nothing.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)

    def send(self, mac: bytes, src: int, dst: int, sport: int, dport: int, payload: bytes) -> None:
        packet = ipv4_udp(src, dst, sport, dport, payload)
        self.sock.sendto(packet, (self.ifname, ETH_P_IP, 0, 0, mac))

    def close(self) -> None:
        self.sock.close()
