"""QUIC Initials built by aioquic (v1 and v2), decrypted to their ClientHello's name;
the RFC test vectors for the keys; bad tags, wrong versions, short DCIDs."""

from __future__ import annotations

import itertools
import random
import struct

import pytest

from homegw.modules.dpi.classify import FlowClassifier, Verdict, quic
from homegw.modules.dpi.classify.quic import QuicHello, QuicStatus
from tests.unit.dpi_classify_frames import (
    big_extensions,
    crypto_frame,
    hello_handshake,
    protect_initial,
    quic_initials,
    udp_frame,
    udp_key,
)

VERSIONS = [pytest.param(quic.QUIC_V1, id="v1"), pytest.param(quic.QUIC_V2, id="v2")]
NAME = "www.youtube.com"


@pytest.mark.parametrize(
    ("version", "key", "iv", "hp"),
    [
        # RFC 9001 A.1 and RFC 9369 A.1: DCID 0x8394c8f03e515708
        (quic.QUIC_V1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
         "9f50449e04a0e810283a1e9933adedd2"),
        (quic.QUIC_V2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
         "45b95e15235d6f45a6b19cbcb0294ba9"),
    ],
)  # fmt: skip
def test_initial_keys_match_the_rfc_vectors(version: int, key: str, iv: str, hp: str) -> None:
    keys = quic.initial_keys(version, bytes.fromhex("8394c8f03e515708"))
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (key, iv, hp)


def test_rfc9001_header_protection_mask() -> None:
    # RFC 9001 A.2: sample d1b1c98dd7689fb8ec11d242b123dc9b -> mask 437b9aec36
    keys = quic.initial_keys(quic.QUIC_V1, bytes.fromhex("8394c8f03e515708"))
    assert keys.mask(bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b"))[:5].hex() == "437b9aec36"


@pytest.mark.parametrize("version", VERSIONS)
def test_an_aioquic_initial_gives_its_name(version: int) -> None:
    (datagram,) = quic_initials(NAME, version)
    result = QuicHello().feed(datagram)
    assert (result.status, result.sni, result.version) == (QuicStatus.SNI, NAME, version)
    verdict = FlowClassifier().feed(udp_frame(datagram), 1.0)
    assert verdict == (udp_key(), Verdict("quic", name=NAME))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_big_hello_in_two_initials_in_either_order(version: int) -> None:
    datagrams = quic_initials("video.example.com", version, big=True)
    assert len(datagrams) == 2
    for order in itertools.permutations(datagrams):
        hello = QuicHello()
        assert hello.feed(order[0]).status is QuicStatus.NEED_MORE
        assert hello.feed(order[1]).sni == "video.example.com"
        classifier = FlowClassifier()
        assert classifier.feed(udp_frame(order[0]), 1.0) is None
        assert classifier.feed(udp_frame(order[1]), 1.0) == (
            udp_key(),
            Verdict("quic", name="video.example.com"),
        )


def _handshake_packet(version: int, dcid: bytes, body: bytes) -> bytes:
    """A long-header Handshake packet (not ours to decrypt: skipped by its length)."""
    packet_type = {quic.QUIC_V1: 2, quic.QUIC_V2: 3}[version]
    header = bytes([0xC0 | packet_type << 4]) + struct.pack(">I", version)
    header += bytes([len(dcid)]) + dcid + b"\x00"
    return header + bytes([0x40 | len(body) >> 8, len(body) & 0xFF]) + body


@pytest.mark.parametrize("version", VERSIONS)
def test_coalesced_packets_are_walked(version: int) -> None:
    first, second = quic_initials("video.example.com", version, big=True)
    dcid = first[6 : 6 + first[5]]
    datagram = _handshake_packet(version, dcid, bytes(40)) + first + second + bytes(30)
    assert QuicHello().feed(datagram).sni == "video.example.com"


def initial_end(datagram: bytes) -> int:
    """Where the Initial ends (aioquic pads its datagram with zeros after it)."""
    header = quic.long_header(datagram, 0)
    assert header is not None and 0 < header.end < len(datagram)
    return header.end


@pytest.mark.parametrize("version", VERSIONS)
def test_a_bad_tag_is_malformed_never_a_name(version: int) -> None:
    (datagram,) = quic_initials(NAME, version)
    end = initial_end(datagram)
    for position in range(end):  # any bit changed in the packet: never a name
        broken = bytearray(datagram)
        broken[position] ^= 0x01
        assert QuicHello().feed(bytes(broken)).sni is None, position
    for position in (end - 1, end - 16, end - 17, 30, 60, 200):  # payload and tag
        broken = bytearray(datagram)
        broken[position] ^= 0x80
        hello = QuicHello()
        assert hello.feed(bytes(broken)).status is QuicStatus.MALFORMED
        assert hello.undecryptable == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wrong_version_is_not_quic(version: int) -> None:
    (datagram,) = quic_initials(NAME, version)
    other = {quic.QUIC_V1: quic.QUIC_V2, quic.QUIC_V2: quic.QUIC_V1}[version]
    swapped = datagram[:1] + struct.pack(">I", other) + datagram[5:]
    # the other version numbers its packet types differently: a Retry or 0-RTT, skipped
    assert QuicHello().feed(swapped).status is QuicStatus.NEED_MORE
    as_initial = bytes([datagram[0] ^ 0x10]) + swapped[1:]  # its Initial type bits
    assert QuicHello().feed(as_initial).status is QuicStatus.MALFORMED  # the other keys fail
    unknown = datagram[:1] + struct.pack(">I", 0xFF00001D) + datagram[5:]  # draft-29
    assert QuicHello().feed(unknown).status is QuicStatus.NOT_QUIC
    verdict = FlowClassifier().feed(udp_frame(unknown), 1.0)
    assert verdict == (udp_key(), Verdict("port", app="quic", guess=True))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_short_dcid_is_refused(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    (datagram,) = quic_initials(NAME, version, connection_id_length=4)
    assert datagram[5] == 4
    assert QuicHello().feed(datagram).status is QuicStatus.MALFORMED
    monkeypatch.setattr(quic, "MIN_CLIENT_DCID", 4)  # the rule, not the crypto, refused it
    assert QuicHello().feed(datagram).sni == NAME


@pytest.mark.parametrize("version", VERSIONS)
def test_every_truncation_is_harmless(version: int) -> None:
    (datagram,) = quic_initials(NAME, version)
    end = initial_end(datagram)
    for n in range(end):
        result = QuicHello().feed(datagram[:n])
        assert result.sni is None, n
    assert QuicHello().feed(datagram[:end]).sni == NAME


def test_a_long_header_that_is_not_an_initial_waits() -> None:
    dcid = bytes(range(8))
    handshake = _handshake_packet(quic.QUIC_V1, dcid, bytes(60))
    classifier = FlowClassifier()
    assert classifier.feed(udp_frame(handshake), 1.0) is None
    (initial,) = quic_initials(NAME, quic.QUIC_V1)
    assert classifier.feed(udp_frame(initial), 1.0) == (udp_key(), Verdict("quic", name=NAME))


FRAMES = {
    "padding and ping": (b"\x00\x00\x01\x00", []),
    "crypto": (b"\x06\x00\x03abc\x06\x03\x02de", [(0, b"abc"), (3, b"de")]),
    "ack with ranges": (b"\x02\x05\x00\x01\x01\x01\x01\x06\x00\x01z", [(0, b"z")]),
    "ack ecn": (b"\x03\x05\x00\x00\x01\x01\x01\x01\x06\x00\x01z", [(0, b"z")]),
    "close": (b"\x1c\x0a\x00\x02hi\x06\x00\x01z", [(0, b"z")]),
    "two-byte varint offset": (b"\x06\x40\x10\x01q", [(16, b"q")]),
}


@pytest.mark.parametrize(("payload", "expected"), FRAMES.values(), ids=FRAMES)
def test_initial_frames(payload: bytes, expected: list) -> None:
    assert quic.crypto_frames(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        b"\x08\x00\x01x",  # STREAM: not allowed in an Initial
        b"\x06\x00\x05abc",  # CRYPTO longer than the packet
        b"\x02\x05\x00\xbf\xff\xff\xff\xff\xff\xff\xff\x00",  # 2^62 ACK ranges
        b"\x1c\x0a\x00\x40\xff",  # reason past the end
        b"\x06\x80",  # cut varint
    ],
)
def test_bad_initial_frames(payload: bytes) -> None:
    assert quic.crypto_frames(payload) is None


@pytest.mark.parametrize("version", VERSIONS)
def test_chrome_style_crypto_frames_small_and_shuffled_across_initials(version: int) -> None:
    """Chrome cuts its hello into many small CRYPTO frames, out of order, with PINGs
    and PADDING between, over two Initials: any order of both gives the name."""
    handshake = hello_handshake(big_extensions(b"maps.example.com"))
    pieces = [(at, handshake[at : at + 97]) for at in range(0, len(handshake), 97)]
    random.Random(5).shuffle(pieces)
    half = len(pieces) // 2
    dcid = bytes.fromhex("c0ffee0011223344aa")
    initials = []
    for number, part in enumerate((pieces[:half], pieces[half:])):
        frames = b"".join(crypto_frame(at, data) + b"\x01\x00\x00" for at, data in part)
        initials.append(protect_initial(version, dcid, frames + bytes(40), number))
    assert QuicHello().feed(initials[0]).status is QuicStatus.NEED_MORE
    for order in itertools.permutations(initials):
        classifier = FlowClassifier()
        results = [classifier.feed(udp_frame(datagram), 1.0) for datagram in order]
        assert results == [None, (udp_key(), Verdict("quic", name="maps.example.com"))]
    coalesced = QuicHello().feed(initials[1] + initials[0])
    assert coalesced.sni == "maps.example.com"
    assert coalesced.alpn == ("h2", "http/1.1")


def test_an_initial_whose_crypto_stream_is_past_the_bound_gives_up() -> None:
    handshake = hello_handshake(big_extensions(b"maps.example.com"))
    dcid = bytes(range(8))
    initial = protect_initial(quic.QUIC_V1, dcid, crypto_frame(0, handshake[:600]))
    hello = QuicHello(max_bytes=500)
    assert hello.feed(initial).status is QuicStatus.MALFORMED
