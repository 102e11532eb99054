"""Fragmentation for the chain's HOMEGW_F_FRAGMENT punts (RFC 791 3.2).

The router marks a packet over the egress MTU without DF; the chain's end
(homegw_finish_xdp) punts it, translated by NAT by then, with module
DATAPLANE_ID and reason REASON_FRAGMENT (meta0 egress ifindex, meta1 egress
Nic). Here it is cut into fragments that keep its identification, carry the
right offsets and MF bits (a fragment being fragmented again keeps its own
offset and its last piece its MF), and sent out of the egress NIC by the
packet-out socket. Options: the first fragment keeps them all; the others
carry only those with the copied flag (RFC 791: security, source routes,
router alert...), padded with end-of-options to a 32-bit boundary.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from homegw.dataplane.abi import Nic
from homegw.dataplane.slowpath import PacketOut, Punt

log = logging.getLogger(__name__)

ETH_HLEN = 14
IP_DF, IP_MF, IP_OFFSET = 0x4000, 0x2000, 0x1FFF
OPT_EOL, OPT_NOP, OPT_COPIED = 0, 1, 0x80
SIOCGIFMTU = 0x8921


class FragmentError(ValueError):
    """The frame cannot be fragmented (malformed, DF, MTU too small)."""


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def copied_options(options: bytes) -> bytes:
    """The options a non-first fragment carries (copied flag set), padded."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2 or i + options[i + 1] > len(options):
            raise FragmentError("malformed IP option")
        length = options[i + 1]
        if kind & OPT_COPIED:
            out += options[i : i + length]
        i += length
    out += bytes(-len(out) % 4)
    return bytes(out)


def _header(base: bytes, options: bytes, length: int, frag_field: int) -> bytes:
    """base: the original 20-byte header; a new one with options and fields."""
    ihl = (20 + len(options)) // 4
    header = bytearray(base[:20] + options)
    header[0] = 0x40 | ihl
    struct.pack_into("!H", header, 2, length)
    struct.pack_into("!H", header, 6, frag_field)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, _checksum(bytes(header)))
    return bytes(header)


def fragment_packet(packet: bytes, mtu: int) -> list[bytes]:
    """RFC 791 fragments of one IPv4 packet, none over mtu bytes."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise FragmentError("not an IPv4 packet")
    hlen = (packet[0] & 0xF) * 4
    (total,) = struct.unpack_from("!H", packet, 2)
    (frag_field,) = struct.unpack_from("!H", packet, 6)
    if hlen < 20 or total < hlen or total > len(packet):
        raise FragmentError("bad IPv4 header or total length")
    if frag_field & IP_DF:
        raise FragmentError("DF is set")
    options, payload = packet[20:hlen], packet[hlen:total]
    later_options = copied_options(options)
    offset, last_mf = frag_field & IP_OFFSET, frag_field & IP_MF
    fragments = []
    position = 0
    while position < len(payload):
        opts = options if position == 0 else later_options
        room = (mtu - 20 - len(opts)) & ~7
        if room <= 0:
            raise FragmentError(f"MTU {mtu} leaves no room for data")
        piece = payload[position : position + room]
        more = IP_MF if position + len(piece) < len(payload) else last_mf
        field_value = more | (offset + position // 8)
        fragments.append(_header(packet, opts, 20 + len(opts) + len(piece), field_value) + piece)
        position += len(piece)
    return fragments


def fragment_frame(frame: bytes, mtu: int) -> list[bytes]:
    """The same for an Ethernet frame: each fragment behind the frame's header."""
    if len(frame) < ETH_HLEN or frame[12:14] != b"\x08\x00":
        raise FragmentError("not an IPv4 Ethernet frame")
    return [frame[:ETH_HLEN] + piece for piece in fragment_packet(frame[ETH_HLEN:], mtu)]


def interface_mtu(ifname: str) -> int:
    """The MTU of ifname in this process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16si12x", ifname.encode(), 0)
        return struct.unpack_from("16si", fcntl.ioctl(sock, SIOCGIFMTU, request))[1]


@dataclass
class Fragmenter:
    """The REASON_FRAGMENT handler: fragment and send out of the egress NIC."""

    interfaces: dict[Nic, str]
    open_sender: Callable[[str], PacketOut] = PacketOut
    mtu_of: Callable[[str], int] = interface_mtu
    sent: int = 0  # fragments
    dropped: int = 0  # punts not sent: truncated, malformed, unknown NIC
    _senders: dict[str, PacketOut] = field(default_factory=dict)

    def handle(self, punt: Punt) -> None:
        nic = punt.meta[1]
        ifname = self.interfaces.get(Nic(nic)) if nic in set(Nic) else None
        if ifname is None:
            self._drop(f"no egress NIC {nic}")
            return
        if punt.pkt_len > len(punt.packet):
            self._drop(f"only {len(punt.packet)} of its {punt.pkt_len} bytes were punted")
            return
        try:
            fragments = fragment_frame(punt.packet, self.mtu_of(ifname))
        except (FragmentError, OSError) as exc:
            self._drop(str(exc))
            return
        if ifname not in self._senders:
            self._senders[ifname] = self.open_sender(ifname)
        for piece in fragments:
            self._senders[ifname].send(piece)
        self.sent += len(fragments)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a packet to fragment: %s", why)

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
