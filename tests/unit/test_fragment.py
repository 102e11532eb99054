"""RFC 791 fragmentation of the packets the chain punts (homegw/dataplane/
fragment.py): exact bytes of every fragment, options by their copied flag,
fragments of fragments, and the handler's drops."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import DATAPLANE_ID, REASON_FRAGMENT, Nic
from homegw.dataplane.fragment import Fragmenter, FragmentError, fragment_frame
from homegw.dataplane.slowpath import Punt

ETH = Ether(src="02:00:00:00:02:01", dst="02:00:00:00:02:99")
ROUTER_ALERT = b"\x94\x04\x00\x00"  # option 148: copied flag set
RECORD_ROUTE = b"\x07\x07\x04" + bytes(4)  # option 7: not copied


def datagram(size: int, **ip) -> IP:
    header = IP(src="203.0.113.2", dst="198.51.100.80", id=0x1234, ttl=63, **ip)
    return header / UDP(sport=4000, dport=9) / bytes(i % 251 for i in range(size))


def piece(template: IP, payload: bytes, offset: int, mf: bool, options: bytes = b"") -> bytes:
    """One fragment as RFC 791 builds it, by scapy."""
    header = IP(
        src=template.src,
        dst=template.dst,
        id=template.id,
        ttl=template.ttl,
        proto=template.proto,
        tos=template.tos,
        flags="MF" if mf else 0,
        frag=offset // 8,
        options=options,
    )
    return bytes(ETH / header / payload)


def test_fragments_exact_bytes() -> None:
    packet = datagram(2000)
    body = bytes(packet[IP].payload)  # UDP header and data, 2008 bytes
    frames = fragment_frame(bytes(ETH / packet), mtu=1000)
    assert frames == [
        piece(packet, body[0:976], 0, True),
        piece(packet, body[976:1952], 976, True),
        piece(packet, body[1952:], 1952, False),
    ]
    assert all(len(f) - 14 <= 1000 for f in frames)


def test_options_copied_by_their_flag() -> None:
    packet = datagram(1200, options=RECORD_ROUTE + ROUTER_ALERT)  # IHL 8 (32 bytes)
    body = bytes(packet[IP].payload)
    first_room = (1000 - 32) & ~7  # 968
    later_room = (1000 - 24) & ~7  # 976: router alert only
    frames = fragment_frame(bytes(ETH / packet), mtu=1000)
    assert frames == [
        piece(packet, body[:first_room], 0, True, RECORD_ROUTE + ROUTER_ALERT),
        piece(packet, body[first_room:], first_room, False, ROUTER_ALERT),
    ]
    assert len(body) - first_room <= later_room


def test_a_fragment_fragmented_again_keeps_its_offset_and_mf() -> None:
    """A LAN host's 1500-byte fragment (offset 1480, MF) over a 1492 WAN."""
    payload = bytes(i % 7 for i in range(1480))
    middle = IP(
        src="203.0.113.2", dst="198.51.100.80", id=7, ttl=63, proto=17, flags="MF", frag=185
    )
    frames = fragment_frame(bytes(ETH / middle / payload), mtu=1492)
    assert frames == [
        piece(middle, payload[:1472], 1480, True),
        piece(middle, payload[1472:], 1480 + 1472, True),
    ]


@pytest.mark.parametrize(
    "frame, why",
    [
        (bytes(ETH / datagram(2000, flags="DF")), "DF"),
        (bytes(ETH / datagram(2000))[:-1], "total length"),
        (bytes(ETH / IP(version=6) / bytes(100)), "IPv4"),
        (bytes(ETH / datagram(2000)), "no room"),
    ],
    ids=["df", "truncated", "not-ipv4", "mtu-too-small"],
)
def test_what_cannot_be_fragmented(frame: bytes, why: str) -> None:
    with pytest.raises(FragmentError, match=why):
        fragment_frame(frame, mtu=1000 if why != "no room" else 24)


class FakeSocket:
    def __init__(self, ifname: str) -> None:
        self.ifname, self.sent = ifname, []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def close(self) -> None:
        pass


def punt(frame: bytes, nic: int = Nic.WAN, pkt_len: int | None = None) -> Punt:
    length = len(frame) if pkt_len is None else pkt_len
    return Punt(DATAPLANE_ID, REASON_FRAGMENT, 11, length, (12, nic, 0, 0), frame)


def test_handler_sends_the_fragments_out_of_the_egress() -> None:
    sockets: list[FakeSocket] = []
    fragmenter = Fragmenter(
        {Nic.LAN: "lan0", Nic.WAN: "wan0"},
        open_sender=lambda name: sockets.append(FakeSocket(name)) or sockets[-1],
        mtu_of={"wan0": 1000}.__getitem__,
    )
    frame = bytes(ETH / datagram(1400))
    fragmenter.handle(punt(frame))
    fragmenter.handle(punt(frame))
    [sock] = sockets  # one socket per NIC, kept
    assert (sock.ifname, sock.sent) == ("wan0", fragment_frame(frame, 1000) * 2)
    assert (fragmenter.sent, fragmenter.dropped) == (4, 0)


def test_handler_drops_truncated_punts_and_unknown_nics() -> None:
    fragmenter = Fragmenter({Nic.WAN: "wan0"}, open_sender=FakeSocket, mtu_of=lambda _n: 1000)
    frame = bytes(ETH / datagram(1400))
    fragmenter.handle(punt(frame, pkt_len=len(frame) + 100))
    fragmenter.handle(punt(frame, nic=0xFF))
    fragmenter.handle(punt(frame, nic=Nic.LAN))
    fragmenter.handle(punt(bytes(ETH / datagram(1400, flags="DF"))))
    assert (fragmenter.sent, fragmenter.dropped) == (0, 4)
