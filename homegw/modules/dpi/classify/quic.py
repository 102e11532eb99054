"""QUIC Initial packets -> the ClientHello's server name.

A client's Initial packets (RFC 9000 17.2.2) are encrypted with keys anyone
can derive from the Destination Connection ID (RFC 9001 5.2; RFC 9369 3.3
for QUIC v2: its own salt, labels and long-header type numbers):

1. long header: form and fixed bits, version (v1 0x00000001, v2 0x6b3343cf),
   DCID (8..20 bytes for a client's Initial: RFC 9000 7.2), SCID, token,
   length; coalesced packets (RFC 9000 12.2) are walked by their length;
2. initial secret = HKDF-Extract(salt, DCID), client secret = Expand-Label
   "client in", then key / iv / hp (AES-128-GCM, "quic " or "quicv2 " labels);
3. header protection (RFC 9001 5.4): AES-ECB of the 16-byte sample 4 bytes
   after the packet number's start masks the first byte's low 4 bits and the
   packet number (1..4 bytes);
4. AEAD: nonce = iv XOR packet number, the header is the associated data;
   a bad tag is a packet that is not what it claims (counted, skipped);
5. frames allowed in an Initial: PADDING, PING, ACK (skipped), CRYPTO,
   CONNECTION_CLOSE; anything else is a protocol violation (skipped packet);
6. the CRYPTO frames' data by offset, across frames and Initial packets
   (Chrome's ~1.6 KB ClientHello fills two, and Chrome cuts it into many
   small CRYPTO frames sent out of order) into a bounded `Reassembler`
   (bytes, pieces), read with `tls.parse_handshake`.

The crypto is the `cryptography` package (OpenSSL) and the standard
library's HMAC-SHA256 for HKDF. Nothing raises on bad input.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from homegw.modules.dpi.classify import tls
from homegw.modules.dpi.classify.reassembly import Reassembler

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
SALTS = {
    QUIC_V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    QUIC_V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
LABEL_PREFIX = {QUIC_V1: b"quic ", QUIC_V2: b"quicv2 "}
INITIAL_TYPE = {QUIC_V1: 0, QUIC_V2: 1}  # long-header packet type bits
RETRY_TYPE = {QUIC_V1: 3, QUIC_V2: 0}
MIN_CLIENT_DCID = 8
MAX_CID = 20
SAMPLE_LEN = 16
FRAME_PADDING, FRAME_PING, FRAME_ACK, FRAME_ACK_ECN = 0x00, 0x01, 0x02, 0x03
FRAME_CRYPTO, FRAME_CLOSE = 0x06, 0x1C
MAX_PACKETS_PER_DATAGRAM = 8


class QuicStatus(Enum):
    NOT_QUIC = "not_quic"  # no long header of a version we know
    NEED_MORE = "need_more"  # QUIC, but the ClientHello is not whole yet
    SNI = "sni"
    NO_SNI = "no_sni"
    MALFORMED = "malformed"  # undecryptable, bad frames, or a bad ClientHello


@dataclass(frozen=True, slots=True)
class QuicResult:
    status: QuicStatus
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    version: int = 0


class _Truncated(Exception):
    pass


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """The client's Initial packet protection for one (version, DCID)."""

    key: bytes
    iv: bytes
    hp: bytes
    aead: AESGCM = field(repr=False, compare=False)

    def mask(self, sample: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        return encryptor.update(sample)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with an empty context (RFC 8446 7.1), length <= 32."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()[:length]


@functools.lru_cache(maxsize=256)
def initial_keys(version: int, dcid: bytes) -> InitialKeys:
    """Client Initial keys for a known version (RFC 9001 5.2, RFC 9369 3.3.1-3.3.2)."""
    client = hkdf_expand_label(hkdf_extract(SALTS[version], dcid), b"client in", 32)
    prefix = LABEL_PREFIX[version]
    key = hkdf_expand_label(client, prefix + b"key", 16)
    return InitialKeys(
        key,
        hkdf_expand_label(client, prefix + b"iv", 12),
        hkdf_expand_label(client, prefix + b"hp", 16),
        AESGCM(key),
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 16) at pos, and the position after it."""
    if pos >= len(data):
        raise _Truncated
    length = 1 << (data[pos] >> 6)
    if pos + length > len(data):
        raise _Truncated
    value = int.from_bytes(data[pos : pos + length], "big") & ((1 << (8 * length - 2)) - 1)
    return value, pos + length


def is_long_header(datagram: bytes) -> bool:
    """A QUIC long header of a version we can decrypt (form and fixed bits set)."""
    return (
        len(datagram) >= 7
        and datagram[0] & 0xC0 == 0xC0
        and int.from_bytes(datagram[1:5], "big") in SALTS
    )


@dataclass(slots=True)
class LongHeader:
    """A long-header packet's place in its datagram."""

    version: int
    packet_type: int
    dcid: bytes
    start: int  # the first byte of its header in the datagram
    pn_offset: int  # where the packet number starts (0 for a Retry)
    end: int  # the packet's end in the datagram (0 for a Retry: no length field)


def long_header(datagram: bytes, pos: int) -> LongHeader | None:
    """The long-header packet at pos (None: not one of ours, or truncated)."""
    try:
        if len(datagram) - pos < 7 or datagram[pos] & 0xC0 != 0xC0:
            return None
        version = int.from_bytes(datagram[pos + 1 : pos + 5], "big")
        if version not in SALTS:
            return None
        packet_type = (datagram[pos] >> 4) & 0x03
        p = pos + 5
        dcid_len = datagram[p]
        dcid = datagram[p + 1 : p + 1 + dcid_len]
        p += 1 + dcid_len
        if dcid_len > MAX_CID or p >= len(datagram) or datagram[p] > MAX_CID:
            return None
        p += 1 + datagram[p]
        if packet_type == RETRY_TYPE[version]:
            return LongHeader(version, packet_type, dcid, pos, 0, 0)
        if packet_type == INITIAL_TYPE[version]:
            token_len, p = _varint(datagram, p)
            p += token_len
        length, p = _varint(datagram, p)
        if p + length > len(datagram):
            return None
        return LongHeader(version, packet_type, dcid, pos, p, p + length)
    except _Truncated:
        return None


def decrypt_initial(datagram: bytes, packet: LongHeader) -> bytes | None:
    """The plaintext payload of a client Initial (None: it does not decrypt)."""
    if len(packet.dcid) < MIN_CLIENT_DCID:
        return None
    sample_at = packet.pn_offset + 4
    if sample_at + SAMPLE_LEN > packet.end:
        return None
    keys = initial_keys(packet.version, packet.dcid)
    mask = keys.mask(datagram[sample_at : sample_at + SAMPLE_LEN])
    first = datagram[packet.start] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    protected = datagram[packet.pn_offset : packet.pn_offset + pn_len]
    pn_bytes = bytes(b ^ m for b, m in zip(protected, mask[1:], strict=False))
    header = bytes([first]) + datagram[packet.start + 1 : packet.pn_offset] + pn_bytes
    nonce = int.from_bytes(keys.iv, "big") ^ int.from_bytes(pn_bytes, "big")
    try:
        plaintext = keys.aead.decrypt(
            nonce.to_bytes(12, "big"), datagram[packet.pn_offset + pn_len : packet.end], header
        )
    except InvalidTag:
        return None
    if first & 0x0C:  # reserved bits must be zero once unprotected (RFC 9000 17.2)
        return None
    return plaintext


def crypto_frames(payload: bytes) -> list[tuple[int, bytes]] | None:
    """(offset, data) of an Initial's CRYPTO frames (None: a frame not allowed or cut)."""
    frames: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(payload):
            frame_type = payload[pos]
            pos += 1
            if frame_type in (FRAME_PADDING, FRAME_PING):
                continue
            if frame_type == FRAME_CRYPTO:
                offset, pos = _varint(payload, pos)
                length, pos = _varint(payload, pos)
                if pos + length > len(payload):
                    return None
                frames.append((offset, payload[pos : pos + length]))
                pos += length
            elif frame_type in (FRAME_ACK, FRAME_ACK_ECN):
                pos = _skip_ack(payload, pos, ecn=frame_type == FRAME_ACK_ECN)
            elif frame_type == FRAME_CLOSE:
                pos = _skip_close(payload, pos)
            else:
                return None
    except _Truncated:
        return None
    return frames


def _skip_ack(payload: bytes, pos: int, ecn: bool) -> int:
    """The position after an ACK frame's fields (RFC 9000 19.3)."""
    _largest, pos = _varint(payload, pos)
    _delay, pos = _varint(payload, pos)
    ranges, pos = _varint(payload, pos)
    _first, pos = _varint(payload, pos)
    if ranges * 2 > len(payload) - pos:  # each (gap, length) takes 2 bytes at least
        raise _Truncated
    for _ in range(2 * ranges + (3 if ecn else 0)):
        _value, pos = _varint(payload, pos)
    return pos


def _skip_close(payload: bytes, pos: int) -> int:
    """The position after a CONNECTION_CLOSE frame's fields (RFC 9000 19.19)."""
    _code, pos = _varint(payload, pos)
    _frame, pos = _varint(payload, pos)
    reason, pos = _varint(payload, pos)
    if pos + reason > len(payload):
        raise _Truncated
    return pos + reason


class QuicHello:
    """One flow's client Initials: the CRYPTO stream rebuilt, then its ClientHello."""

    def __init__(self, max_bytes: int = 8192, max_frames: int = 128) -> None:
        self._crypto = Reassembler(max_bytes, max_frames, start=0)
        self.version = 0
        self.initials = 0  # Initial packets decrypted
        self.undecryptable = 0  # Initial-looking packets that did not decrypt or parse

    def feed(self, datagram: bytes) -> QuicResult:
        """Add a datagram's Initials; the result so far."""
        if not is_long_header(datagram):
            return QuicResult(QuicStatus.NOT_QUIC)
        pos = 0
        for _ in range(MAX_PACKETS_PER_DATAGRAM):
            packet = long_header(datagram, pos)
            if packet is None or packet.end == 0:
                break
            if packet.packet_type == INITIAL_TYPE[packet.version]:
                self._add_initial(datagram, packet)
            pos = packet.end
        return self.result()

    def _add_initial(self, datagram: bytes, packet: LongHeader) -> None:
        payload = decrypt_initial(datagram, packet)
        frames = crypto_frames(payload) if payload is not None else None
        if frames is None:
            self.undecryptable += 1
            return
        self.initials += 1
        self.version = packet.version
        for offset, data in frames:
            self._crypto.add(offset, data)

    def result(self) -> QuicResult:
        """What the CRYPTO stream so far says."""
        if not self.initials:
            status = QuicStatus.MALFORMED if self.undecryptable else QuicStatus.NEED_MORE
            return QuicResult(status)
        hello = tls.parse_handshake(self._crypto.prefix())
        status = _STATUS[hello.status]
        if status is QuicStatus.NEED_MORE and self._crypto.overflow:
            status = QuicStatus.MALFORMED  # a hello bigger than the bound
        return QuicResult(status, hello.sni, hello.alpn, self.version)


_STATUS = {
    tls.TlsStatus.NEED_MORE: QuicStatus.NEED_MORE,
    tls.TlsStatus.SNI: QuicStatus.SNI,
    tls.TlsStatus.NO_SNI: QuicStatus.NO_SNI,
    tls.TlsStatus.NOT_TLS: QuicStatus.MALFORMED,
    tls.TlsStatus.MALFORMED: QuicStatus.MALFORMED,
}
