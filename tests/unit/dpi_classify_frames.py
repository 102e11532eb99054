"""Builders for the DPI classifier tests: frames, real and hand-built ClientHellos,
QUIC Initials made by aioquic."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import time

from homegw.modules.dpi.classify.packet import IPPROTO_TCP, IPPROTO_UDP, FlowKey

LAN, REMOTE = "192.168.1.10", "203.0.113.7"
MAC_LAN, MAC_GW = bytes.fromhex("024847000001"), bytes.fromhex("024847000099")
ACK_PSH = 0x18
SYN, FIN = 0x02, 0x01
X25519MLKEM768 = 0x11EC  # draft-ietf-tls-ecdhe-mlkem: 1184 + 32 key share bytes
MLKEM_SHARE = 1216


def ipv4(proto: int, body: bytes, src: str = LAN, dst: str = REMOTE, frag: int = 0,
         options: bytes = b"") -> bytes:  # fmt: skip
    ihl = 5 + len(options) // 4
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(body), 1, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    ) + options  # fmt: skip
    return header + body  # checksum 0: the datapath checked the packet, the classifier does not


def ethernet(ip: bytes, ethertype: int = 0x0800) -> bytes:
    return MAC_GW + MAC_LAN + struct.pack(">H", ethertype) + ip


def tcp_frame(payload: bytes, seq: int = 1000, flags: int = ACK_PSH, sport: int = 50000,
              dport: int = 443, src: str = LAN, dst: str = REMOTE) -> bytes:  # fmt: skip
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq % (1 << 32), 1, 5 << 4, flags, 64240, 0, 0)
    return ethernet(ipv4(IPPROTO_TCP, tcp + payload, src, dst))


def udp_frame(payload: bytes, sport: int = 50001, dport: int = 443, src: str = LAN,
              dst: str = REMOTE) -> bytes:  # fmt: skip
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0)
    return ethernet(ipv4(IPPROTO_UDP, udp + payload, src, dst))


def tcp_key(sport: int = 50000, dport: int = 443) -> FlowKey:
    return FlowKey(LAN, REMOTE, sport, dport, IPPROTO_TCP)


def udp_key(sport: int = 50001, dport: int = 443) -> FlowKey:
    return FlowKey(LAN, REMOTE, sport, dport, IPPROTO_UDP)


def segments(stream: bytes, cuts: list[int], seq: int = 1000) -> list[bytes]:
    """stream cut at the given offsets, as TCP frames with their sequence numbers."""
    bounds = [0, *cuts, len(stream)]
    return [tcp_frame(stream[a:b], seq=seq + a) for a, b in zip(bounds, bounds[1:], strict=False)]


def ssl_client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """The ClientHello records Python's ssl (OpenSSL) sends first."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server, as it should
        tls.do_handshake()
    return outgoing.read()


def vec(length_bytes: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def extension(ext_type: int, data: bytes) -> bytes:
    return struct.pack(">H", ext_type) + vec(2, data)


def sni_extension(name: bytes) -> bytes:
    return extension(0, vec(2, b"\x00" + vec(2, name)))


def alpn_extension(*protocols: bytes) -> bytes:
    return extension(16, vec(2, b"".join(vec(1, p) for p in protocols)))


def big_extensions(name: bytes, alpn_first: bool = True) -> list[bytes]:
    """A post-quantum browser's extensions: the 1.2 KB ML-KEM key share before the name."""
    shares = struct.pack(">H", X25519MLKEM768) + vec(2, os.urandom(MLKEM_SHARE))
    shares += struct.pack(">H", 0x001D) + vec(2, os.urandom(32))
    exts = [
        extension(51, vec(2, shares)),  # key_share
        extension(43, vec(1, b"\x03\x04\x03\x03")),  # supported_versions
        extension(10, vec(2, struct.pack(">HH", X25519MLKEM768, 0x001D))),  # supported_groups
        extension(13, vec(2, struct.pack(">HHH", 0x0403, 0x0804, 0x0401))),  # signature_algs
        extension(21, bytes(180)),  # padding
    ]
    if alpn_first:
        exts.append(alpn_extension(b"h2", b"http/1.1"))
    exts.append(sni_extension(name))
    return exts


def hello_handshake(extensions: list[bytes] | None, session_id: bytes = bytes(32)) -> bytes:
    """A ClientHello handshake message (None: without an extensions block)."""
    body = b"\x03\x03" + bytes(range(32)) + vec(1, session_id)
    body += vec(2, struct.pack(">HHH", 0x1301, 0x1302, 0x1303)) + b"\x01\x00"
    if extensions is not None:
        body += vec(2, b"".join(extensions))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(handshake: bytes, split_at: list[int] | None = None) -> bytes:
    """handshake in TLS records (split at the given handshake offsets)."""
    bounds = [0, *(split_at or []), len(handshake)]
    return b"".join(
        b"\x16\x03\x01" + vec(2, handshake[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
    )


def big_client_hello(name: str = "video.example.com") -> bytes:
    """A 1.6 KB ClientHello (one record) with the name after an ML-KEM key share."""
    return records(hello_handshake(big_extensions(name.encode())))


def quic_initials(server_name: str, version: int, connection_id_length: int = 8,
                  big: bool = False) -> list[bytes]:  # fmt: skip
    """The datagrams an aioquic client sends first (one Initial each).

    big: the ClientHello gets an ML-KEM-sized key share (before the name, as
    aioquic puts key_share first), so the hello needs two Initials.
    """
    from aioquic import tls as aioquic_tls
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    configuration = QuicConfiguration(
        is_client=True,
        server_name=server_name,
        alpn_protocols=["h3"],
        supported_versions=[version],
        connection_id_length=connection_id_length,
    )
    connection = QuicConnection(configuration=configuration)
    original = aioquic_tls.push_client_hello

    def push_big_hello(buf, hello):  # type: ignore[no-untyped-def]
        hello.key_share = [(X25519MLKEM768, os.urandom(MLKEM_SHARE)), *hello.key_share]
        original(buf, hello)

    if big:
        aioquic_tls.push_client_hello = push_big_hello
    try:
        now = time.time()
        connection.connect(("203.0.113.7", 443), now=now)
        return [datagram for datagram, _addr in connection.datagrams_to_send(now=now)]
    finally:
        aioquic_tls.push_client_hello = original


def protect_initial(version: int, dcid: bytes, payload: bytes, packet_number: int = 0) -> bytes:
    """A client Initial carrying payload (frames), protected as RFC 9001 5 says.

    For frame layouts aioquic does not send (Chrome's CRYPTO frames cut small
    and out of order); the keys are the ones checked against the RFC vectors.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from homegw.modules.dpi.classify import quic

    keys = quic.initial_keys(version, dcid)
    payload += bytes(max(0, 20 - len(payload)))  # room for the header protection sample
    length = 4 + len(payload) + 16
    first = 0xC0 | quic.INITIAL_TYPE[version] << 4 | 0x03  # 4-byte packet number
    header = bytes([first]) + struct.pack(">I", version) + bytes([len(dcid)]) + dcid
    header += b"\x00\x00" + struct.pack(">H", 0x4000 | length)  # no SCID, no token
    pn = packet_number.to_bytes(4, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ packet_number).to_bytes(12, "big")
    packet = bytearray(header + pn + keys.aead.encrypt(nonce, payload, header + pn))
    sample = bytes(packet[len(header) + 4 : len(header) + 20])
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sample)
    packet[0] ^= mask[0] & 0x0F
    for i in range(4):
        packet[len(header) + i] ^= mask[1 + i]
    return bytes(packet)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def varint(value: int) -> bytes:
    if value < 0x40:
        return bytes([value])
    if value < 0x4000:
        return struct.pack(">H", 0x4000 | value)
    return struct.pack(">I", 0x80000000 | value)
