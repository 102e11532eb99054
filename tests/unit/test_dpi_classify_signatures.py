"""Fixed signatures: each one's positive, and near misses that must not match."""

from __future__ import annotations

import os
import struct

import pytest

from homegw.modules.dpi.classify import APP_IDS, FlowClassifier, Verdict, ports
from tests.unit.dpi_classify_frames import tcp_frame, tcp_key, udp_frame, udp_key

NEUTRAL = 40000  # a port the port table does not know


def stun(msg_type: int = 0x0001, length: int = 8, cookie: bytes = b"\x21\x12\xa4\x42",
         attributes: bytes | None = None) -> bytes:  # fmt: skip
    body = attributes if attributes is not None else b"\x80\x22\x00\x04test"
    return struct.pack(">HH", msg_type, length) + cookie + os.urandom(12) + body


def wireguard(kind: int, size: int, reserved: bytes = b"\x00\x00\x00") -> bytes:
    return bytes([kind]) + reserved + os.urandom(size - 4)


def openvpn(first: int = 0x38, session: bytes = b"\x11" * 8) -> bytes:
    return bytes([first]) + session + b"\x00" + b"\x00\x00\x00\x00"


def dhcp(op: int = 1, cookie: bytes = b"\x63\x82\x53\x63") -> bytes:
    return bytes([op, 1, 6, 0]) + bytes(232) + cookie + b"\x35\x01\x01\xff"


DHT_PING = b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe"
BT_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + os.urandom(40)
SSDP = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n\r\n'
MDNS_QUERY = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05local\x00\x00\x0c\x00\x01"

UDP_POSITIVES = [
    ("stun", stun(), NEUTRAL, NEUTRAL),
    ("stun", stun(length=0, attributes=b""), NEUTRAL, NEUTRAL),
    ("wireguard", wireguard(1, 148), NEUTRAL, NEUTRAL),
    ("wireguard", wireguard(2, 92), NEUTRAL, NEUTRAL),
    ("wireguard", wireguard(3, 64), NEUTRAL, NEUTRAL),
    ("wireguard", wireguard(4, 32 + 16 * 5), NEUTRAL, NEUTRAL),
    ("openvpn", openvpn(), NEUTRAL, NEUTRAL),
    ("openvpn", openvpn(0x50), NEUTRAL, NEUTRAL),
    ("bittorrent", DHT_PING, NEUTRAL, NEUTRAL),
    ("dhcp", dhcp(), 68, 67),
    ("ntp", b"\x23" + bytes(47), NEUTRAL, 123),
    ("ntp", b"\x1b" + bytes(47 + 20), NEUTRAL, 123),  # v3 with a 20-byte MAC
    ("mdns", MDNS_QUERY, 5353, 5353),
    ("ssdp", SSDP, NEUTRAL, 1900),
    ("ssdp", b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\n\r\n", NEUTRAL, 1900),
]


@pytest.mark.parametrize(("app", "payload", "sport", "dport"), UDP_POSITIVES)
def test_udp_signatures(app: str, payload: bytes, sport: int, dport: int) -> None:
    result = FlowClassifier().feed(udp_frame(payload, sport=sport, dport=dport), 1.0)
    assert result == (udp_key(sport, dport), Verdict("signature", app=app))


UDP_NEAR_MISSES = {
    "stun wrong cookie": (stun(cookie=b"\x21\x12\xa4\x43"), NEUTRAL),
    "stun length not the rest": (stun(length=12), NEUTRAL),
    "stun length not 4n": (stun(length=6, attributes=b"\x80\x22\x00\x02ab"), NEUTRAL),
    "stun top bits": (stun(msg_type=0xC001), NEUTRAL),
    "wireguard size": (wireguard(1, 149), NEUTRAL),
    "wireguard reserved": (wireguard(1, 148, reserved=b"\x00\x01\x00"), NEUTRAL),
    "wireguard type 5": (wireguard(5, 148), NEUTRAL),
    "wireguard data not 16n": (wireguard(4, 32 + 17), NEUTRAL),
    "openvpn key id 1": (openvpn(0x39), NEUTRAL),
    "openvpn other opcode": (openvpn(0x40), NEUTRAL),
    "openvpn no session": (openvpn(session=bytes(8)), NEUTRAL),
    "openvpn short": (openvpn()[:13], NEUTRAL),
    "dht not a query": (DHT_PING.replace(b"1:y1:q", b"1:y1:r"), NEUTRAL),
    "dhcp no cookie": (dhcp(cookie=b"\x63\x82\x53\x64"), 67),
    "dhcp wrong op": (dhcp(op=3), 67),
    "ntp mode 0": (b"\x20" + bytes(47), 123),
    "ntp version 0": (b"\x03" + bytes(47), 123),
    "ntp 47 bytes": (b"\x23" + bytes(46), 123),
    "ntp other port": (b"\x23" + bytes(47), 124),
    "mdns opcode 1": (MDNS_QUERY[:2] + b"\x08" + MDNS_QUERY[3:], 5353),
    "mdns other port": (MDNS_QUERY, 5354),
    "ssdp other method": (SSDP.replace(b"M-SEARCH", b"GET"), 1900),
    "ssdp other port": (SSDP, 1901),
}


@pytest.mark.parametrize(("payload", "dport"), UDP_NEAR_MISSES.values(), ids=UDP_NEAR_MISSES)
def test_udp_near_misses_are_no_signature(payload: bytes, dport: int) -> None:
    result = FlowClassifier().feed(udp_frame(payload, sport=NEUTRAL, dport=dport), 1.0)
    assert result is not None
    _key, verdict = result
    assert verdict.source in ("port", "unknown")
    assert verdict == Verdict("unknown") or verdict.guess


TCP_POSITIVES = [
    ("ssh", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
    ("ssh", b"SSH-1.99-Cisco-1.25\r\n"),
    ("bittorrent", BT_HANDSHAKE),
    ("openvpn", b"\x00\x0e" + openvpn()),
    ("stun", stun()),
]


@pytest.mark.parametrize(("app", "payload"), TCP_POSITIVES)
def test_tcp_signatures(app: str, payload: bytes) -> None:
    result = FlowClassifier().feed(tcp_frame(payload, dport=NEUTRAL), 1.0)
    assert result == (tcp_key(dport=NEUTRAL), Verdict("signature", app=app))


def test_a_banner_split_across_segments_waits() -> None:
    classifier = FlowClassifier()
    assert classifier.feed(tcp_frame(b"SSH-2", seq=1, dport=NEUTRAL), 1.0) is None
    assert classifier.feed(tcp_frame(b".0-x\r\n", seq=6, dport=NEUTRAL), 1.0) == (
        tcp_key(dport=NEUTRAL),
        Verdict("signature", app="ssh"),
    )


TCP_NEAR_MISSES = {
    "ssh 3.0": b"SSH-3.0-x\r\n",
    "ssh lower case": b"ssh-2.0-x\r\n",
    "bittorrent case": b"\x13BitTorrent protocoL" + bytes(48),
    "bittorrent length byte": b"\x14BitTorrent protocol" + bytes(48),
    "openvpn prefix lies": b"\x00\x0f" + openvpn(),
    "openvpn key id": b"\x00\x0e" + openvpn(0x3A),
}


@pytest.mark.parametrize("payload", TCP_NEAR_MISSES.values(), ids=TCP_NEAR_MISSES)
def test_tcp_near_misses_are_no_signature(payload: bytes) -> None:
    classifier = FlowClassifier()
    classifier.feed(tcp_frame(b"", seq=999, flags=0x02, dport=NEUTRAL), 1.0)  # start known
    assert classifier.feed(tcp_frame(payload, dport=NEUTRAL), 1.0) == (
        tcp_key(dport=NEUTRAL),
        Verdict("unknown"),
    )


def test_signatures_over_the_wrong_transport_do_not_match() -> None:
    ssh_over_udp = FlowClassifier().feed(udp_frame(b"SSH-2.0-x\r\n", dport=NEUTRAL), 1.0)
    assert ssh_over_udp == (udp_key(dport=NEUTRAL), Verdict("unknown"))
    classifier = FlowClassifier()
    classifier.feed(tcp_frame(b"", seq=999, flags=0x02, dport=NEUTRAL), 1.0)
    wireguard_over_tcp = classifier.feed(tcp_frame(wireguard(1, 148), dport=NEUTRAL), 1.0)
    assert wireguard_over_tcp == (tcp_key(dport=NEUTRAL), Verdict("unknown"))


@pytest.mark.parametrize(
    ("proto", "port", "app"),
    [(6, 443, "https"), (6, 80, "http"), (17, 443, "quic"), (17, 51820, "wireguard"),
     (6, 853, "dot"), (17, 123, "ntp")],
)  # fmt: skip
def test_port_guesses(proto: int, port: int, app: str) -> None:
    key = tcp_key(dport=port) if proto == 6 else udp_key(dport=port)
    assert ports.guess(key) == app
    assert FlowClassifier().give_up(key) == Verdict("port", app=app, guess=True)


def test_every_app_id_is_an_id() -> None:
    assert {"stun", "wireguard", "openvpn", "bittorrent", "ssh", "dhcp", "ntp", "mdns"} <= APP_IDS
    assert "ssdp" in APP_IDS and "https" in APP_IDS
    assert all(app.replace("_", "").isalnum() and app.islower() for app in APP_IDS)
