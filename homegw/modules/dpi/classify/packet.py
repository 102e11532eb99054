"""Ethernet / IPv4 / TCP / UDP decoding of a frame punted by the DPI datapath.

The datapath punts copies of a flow's first payload packets from a LAN host
(source) to the internet (destination), so the flow key is taken from the
source's side. Everything is checked before it is read:

- Ethernet: 14 bytes, one optional 802.1Q tag, EtherType IPv4;
- IPv4: version 4, IHL >= 5 (options skipped), total length >= header and
  <= what the frame holds (the frame's padding is cut off by the total length);
- fragments: only a first fragment (offset 0) carries the ports; a later one
  is dropped; a first fragment's payload is what it holds (a UDP length
  pointing past it is expected then);
- TTL 0 or 1: the gateway will not forward it, so the server never sees it
  (DPI-evasion tools send decoy hellos that way): dropped;
- TCP: data offset >= 5 and inside the packet; UDP: length 8.. the packet's.

`parse_frame` returns a :class:`Segment` or None; a drop's reason is counted
into the caller's Counter when one is given (counted drops, never a raise).
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

ETH_LEN = 14
VLAN_LEN = 4
ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04


class FlowKey(NamedTuple):
    """A flow from the LAN host's side (as struct dpi_flow_key)."""

    lan_addr: str
    remote_addr: str
    lan_port: int
    remote_port: int
    proto: int  # IPPROTO_TCP or IPPROTO_UDP


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoded packet: its flow, TCP sequence number (0 for UDP) and payload."""

    key: FlowKey
    seq: int
    payload: bytes
    syn: bool = False
    fin: bool = False  # FIN or RST
    fragment: bool = False  # a first fragment: the payload is cut short


def _drop(drops: Counter[str] | None, reason: str) -> None:
    """Count a dropped frame by reason (the caller returns None)."""
    if drops is not None:
        drops[reason] += 1


def parse_frame(frame: bytes, drops: Counter[str] | None = None) -> Segment | None:
    """The segment a frame carries, or None (counted in drops by reason)."""
    if len(frame) < ETH_LEN:
        return _drop(drops, "short_frame")
    ethertype = int.from_bytes(frame[12:14], "big")
    ip_start = ETH_LEN
    if ethertype == ETH_P_8021Q:
        if len(frame) < ETH_LEN + VLAN_LEN:
            return _drop(drops, "short_frame")
        ethertype = int.from_bytes(frame[16:18], "big")
        ip_start += VLAN_LEN
    if ethertype != ETH_P_IP:
        return _drop(drops, "not_ipv4")
    return _parse_ipv4(memoryview(frame)[ip_start:], drops)


def _parse_ipv4(ip: memoryview, drops: Counter[str] | None) -> Segment | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return _drop(drops, "bad_ip_header")
    header_len = (ip[0] & 0x0F) * 4
    total_len = int.from_bytes(ip[2:4], "big")
    if header_len < 20 or total_len < header_len or total_len > len(ip):
        return _drop(drops, "bad_ip_header")
    frag = int.from_bytes(ip[6:8], "big")
    if frag & IP_OFFSET_MASK:
        return _drop(drops, "later_fragment")
    if ip[8] <= 1:  # dies at the gateway: never reaches the server (a DPI-evasion decoy)
        return _drop(drops, "ttl_expires")
    proto = ip[9]
    src = socket.inet_ntoa(ip[12:16])
    dst = socket.inet_ntoa(ip[16:20])
    body = ip[header_len:total_len]
    fragment = bool(frag & IP_MF)
    if proto == IPPROTO_TCP:
        return _parse_tcp(body, src, dst, fragment, drops)
    if proto == IPPROTO_UDP:
        return _parse_udp(body, src, dst, fragment, drops)
    return _drop(drops, "not_tcp_udp")


def _parse_tcp(
    tcp: memoryview, src: str, dst: str, fragment: bool, drops: Counter[str] | None
) -> Segment | None:
    if len(tcp) < 20:
        return _drop(drops, "bad_tcp_header")
    data_offset = (tcp[12] >> 4) * 4
    if data_offset < 20 or data_offset > len(tcp):
        return _drop(drops, "bad_tcp_header")
    flags = tcp[13]
    key = FlowKey(
        src, dst, int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big"), IPPROTO_TCP
    )
    return Segment(
        key,
        int.from_bytes(tcp[4:8], "big"),
        bytes(tcp[data_offset:]),
        syn=bool(flags & TCP_SYN),
        fin=bool(flags & (TCP_FIN | TCP_RST)),
        fragment=fragment,
    )


def _parse_udp(
    udp: memoryview, src: str, dst: str, fragment: bool, drops: Counter[str] | None
) -> Segment | None:
    if len(udp) < 8:
        return _drop(drops, "bad_udp_header")
    length = int.from_bytes(udp[4:6], "big")
    if length < 8 or (length > len(udp) and not fragment):
        return _drop(drops, "bad_udp_header")
    key = FlowKey(
        src, dst, int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big"), IPPROTO_UDP
    )
    return Segment(key, 0, bytes(udp[8:length]), fragment=fragment)
