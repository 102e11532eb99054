"""TLS ClientHello parsing: real hellos from Python's ssl, a hand-built 1.6 KB
post-quantum one, and hellos whose lengths or names lie."""

from __future__ import annotations

import struct

import pytest

from homegw.modules.dpi.classify import tls
from homegw.modules.dpi.classify.names import hostname
from homegw.modules.dpi.classify.tls import TlsStatus
from tests.unit.dpi_classify_frames import (
    alpn_extension,
    big_client_hello,
    big_extensions,
    extension,
    hello_handshake,
    records,
    sni_extension,
    ssl_client_hello,
    vec,
)


def test_a_real_openssl_hello_gives_its_name_lower_cased() -> None:
    hello = ssl_client_hello("WWW.Example.COM", alpn=["h2", "http/1.1"])
    assert hello[0] == 0x16
    result = tls.parse_records(hello)
    assert result.status is TlsStatus.SNI
    assert result.sni == "www.example.com"


def test_a_hello_without_a_name_is_no_sni() -> None:
    assert tls.parse_records(ssl_client_hello(None)).status is TlsStatus.NO_SNI
    assert tls.parse_records(records(hello_handshake(None))).status is TlsStatus.NO_SNI
    no_name = [alpn_extension(b"h2"), extension(43, vec(1, b"\x03\x04"))]
    result = tls.parse_records(records(hello_handshake(no_name)))
    assert (result.status, result.alpn) == (TlsStatus.NO_SNI, ("h2",))


def test_alpn_before_the_name_is_reported() -> None:
    result = tls.parse_records(big_client_hello("video.example.com"))
    assert len(big_client_hello()) >= 1600
    assert result == tls.TlsResult(TlsStatus.SNI, "video.example.com", ("h2", "http/1.1"))


def test_every_prefix_of_a_real_hello_needs_more_and_names_nothing() -> None:
    hello = ssl_client_hello("shop.example.org")
    for n in range(len(hello)):
        result = tls.parse_records(hello[:n])
        if result.status is TlsStatus.SNI:  # the name is whole before the hello is
            assert result.sni == "shop.example.org"
            continue
        assert result.status is TlsStatus.NEED_MORE, n
        assert result.needed > n


def test_every_prefix_of_a_big_hello_needs_more_until_the_name_is_whole() -> None:
    hello = big_client_hello("video.example.com")
    name_end = hello.index(b"video.example.com") + len("video.example.com")
    for n in range(len(hello)):
        result = tls.parse_records(hello[:n])
        expected = TlsStatus.SNI if n >= name_end else TlsStatus.NEED_MORE
        assert result.status is expected, n


@pytest.mark.parametrize("cuts", [[700], [5, 1000], [1, 2, 3, 600, 1200]])
def test_a_hello_split_across_records_is_joined(cuts: list[int]) -> None:
    handshake = hello_handshake(big_extensions(b"cdn.example.net"))
    stream = records(handshake, split_at=cuts)
    assert tls.parse_records(stream).sni == "cdn.example.net"
    for n in range(len(stream)):
        assert tls.parse_records(stream[:n]).status in (TlsStatus.NEED_MORE, TlsStatus.SNI)


def test_the_handshake_without_records_is_what_quic_carries() -> None:
    handshake = hello_handshake([sni_extension(b"quic.example.com")])
    assert tls.parse_handshake(handshake).sni == "quic.example.com"
    assert tls.parse_handshake(handshake[:10]).status is TlsStatus.NEED_MORE
    assert tls.parse_handshake(b"").status is TlsStatus.NEED_MORE
    assert tls.parse_handshake(b"\x02" + handshake[1:]).status is TlsStatus.MALFORMED


@pytest.mark.parametrize(
    "stream",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x17\x03\x03\x00\x10" + bytes(16),  # application data
        b"\x16\x02\x00",  # SSL 2-ish
        b"\x16\x03\x09\x00\x10",  # no such minor version
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ],
)
def test_not_tls(stream: bytes) -> None:
    assert tls.parse_records(stream).status is TlsStatus.NOT_TLS


def _hello_with(sni_ext: bytes) -> bytes:
    return records(hello_handshake([alpn_extension(b"h2"), sni_ext]))


LYING = {
    "record longer than 2^14": b"\x16\x03\x01\x40\x01" + bytes(100),
    "empty record": b"\x16\x03\x01\x00\x00",
    "second record not handshake": records(hello_handshake([sni_extension(b"a.example")]), [10])[
        :15
    ]
    + b"\x17"
    + bytes(200),
    "handshake longer than any hello": b"\x16\x03\x01\x00\x08\x01\xff\xff\xff" + bytes(4),
    "server hello": records(b"\x02" + hello_handshake(None)[1:]),
    "session id over 32": records(hello_handshake(None, session_id=bytes(33))),
    "extension runs past its block": _hello_with(struct.pack(">HH", 0, 500) + b"\x00\x05"),
    "name list longer than the extension": _hello_with(
        extension(0, vec(2, b"\x00" + vec(2, b"a.example"))[:-3])
    ),
    "name longer than the list": _hello_with(
        extension(0, b"\x00\x06\x00\x00\x40abcdef")  # 64-byte name in a 6-byte list
    ),
    "list shorter than the extension": _hello_with(
        extension(0, vec(2, b"\x00" + vec(2, b"a.example")) + b"junk")
    ),
    "empty alpn protocol": records(hello_handshake([extension(16, vec(2, b"\x00"))])),
}


@pytest.mark.parametrize("stream", LYING.values(), ids=LYING.keys())
def test_lying_lengths_are_malformed(stream: bytes) -> None:
    assert tls.parse_records(stream).status is TlsStatus.MALFORMED


def test_a_handshake_length_shorter_than_its_extensions_is_malformed() -> None:
    handshake = hello_handshake([sni_extension(b"a.example.com")])
    short = handshake[:1] + (len(handshake) - 4 - 8).to_bytes(3, "big") + handshake[4:]
    assert tls.parse_records(records(short)).status is TlsStatus.MALFORMED


def _nested(block: int, first_extension: int) -> bytes:
    """A hello claiming a `block`-byte extensions block whose first extension claims more."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + vec(2, b"\x13\x01") + b"\x01\x00"
    body += block.to_bytes(2, "big") + b"\x00\x00" + first_extension.to_bytes(2, "big")
    handshake = b"\x01" + (len(body) - 4 + block).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + vec(2, handshake)


def test_nested_huge_lengths_wait_when_consistent_and_never_read_past() -> None:
    stream = _nested(0x8000, 0x7000)  # consistent so far: wait for bytes that never come
    result = tls.parse_records(stream)
    assert result.status is TlsStatus.NEED_MORE
    assert result.needed > len(stream)
    assert tls.parse_records(_nested(0x8000, 0xFFFF)).status is TlsStatus.MALFORMED
    # a 64 KB extensions block makes the hello longer than MAX_HELLO: no hello is
    assert tls.parse_records(_nested(0xFFFF, 0xFFF0)).status is TlsStatus.MALFORMED


@pytest.mark.parametrize(
    "name",
    [
        b"exa mple.com",
        b"example..com",
        b".example.com",
        b"example.com.",
        b"-example.com",
        b"example-.com",
        b"ex_ample.com",
        b"a" * 64 + b".com",
        (b"a" * 62 + b".") * 4 + b"com",  # 255 bytes
        b"192.0.2.1",
        b"caf\xc3\xa9.example",
        b"",
        b"evil.com\x00.youtube.com",
    ],
)
def test_a_name_that_is_no_host_name_is_malformed(name: bytes) -> None:
    assert hostname(name) is None
    assert tls.parse_records(_hello_with(sni_extension(name))).status is TlsStatus.MALFORMED


def test_host_names_that_are_fine() -> None:
    assert hostname(b"XN--BCHER-KVA.example") == "xn--bcher-kva.example"
    assert hostname(b"a" * 63 + b".b") == "a" * 63 + ".b"
    assert hostname(b"localhost") == "localhost"
    assert hostname(b"3com.com") == "3com.com"
    assert hostname((b"a" * 62 + b".") * 4 + b"c") is not None  # 253 bytes
    assert hostname((b"a" * 62 + b".") * 4 + b"cd") is None  # 254


def test_the_first_host_name_entry_wins_and_other_types_are_skipped() -> None:
    names = b"\x07" + vec(2, b"other.type") + b"\x00" + vec(2, b"first.example")
    names += b"\x00" + vec(2, b"second.example")
    assert tls.parse_records(_hello_with(extension(0, vec(2, names)))).sni == "first.example"
    empty = extension(0, vec(2, b""))
    assert tls.parse_records(_hello_with(empty)).status is TlsStatus.NO_SNI


@pytest.mark.parametrize("delta", [-3, -2, -1, 1, 2])
def test_a_name_length_that_lies_never_gives_a_shorter_or_longer_name(delta: int) -> None:
    stream = bytearray(_hello_with(sni_extension(b"www.youtube.com")))
    at = stream.index(b"www.youtube.com") - 1  # the low byte of the name's length
    stream[at] += delta
    assert tls.parse_records(bytes(stream)).status is TlsStatus.MALFORMED
