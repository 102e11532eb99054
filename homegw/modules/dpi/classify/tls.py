"""TLS ClientHello -> server name (SNI, RFC 6066) and ALPN (RFC 7301).

Two entry points over the bytes the caller holds:

- `parse_records(stream)`: a TCP stream's first bytes, TLS records (RFC 8446
  5.1). The handshake bytes of consecutive handshake records are joined, so a
  ClientHello split across records (and, by the caller's reassembly, across
  segments: ~1.6 KB with X25519MLKEM768 key shares) is read whole;
- `parse_handshake(data)`: handshake messages without a record layer (a
  QUIC Initial's CRYPTO stream, RFC 9001 4.1).

Every length is checked twice: against its container's declared end (past
it: MALFORMED, a length that lies) and against the bytes given (past them:
NEED_MORE, the rest has not arrived). Nothing reads past what it was given
and nothing raises. The name is returned as soon as the server_name
extension is whole (the rest of the hello is not needed); ALPN is reported
when it came before it, or when the hello ended without a name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from homegw.modules.dpi.classify.names import hostname

RECORD_HEADER = 5
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
MAX_RECORD = 1 << 14  # RFC 8446 5.1: a plaintext record's length
MAX_HELLO = 1 << 16  # far beyond any real ClientHello (a few KB); above it: MALFORMED
EXT_SERVER_NAME = 0
EXT_ALPN = 16
NAME_TYPE_HOST = 0
MAX_ALPN = 8  # protocols kept


class TlsStatus(Enum):
    NEED_MORE = "need_more"  # a ClientHello so far: more bytes needed
    SNI = "sni"
    NOT_TLS = "not_tls"  # does not start like a TLS handshake record
    NO_SNI = "no_sni"  # a whole ClientHello without a server name
    MALFORMED = "malformed"  # TLS-like, but lengths or the name are wrong


@dataclass(frozen=True, slots=True)
class TlsResult:
    status: TlsStatus
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    needed: int = 0  # NEED_MORE: bytes needed in all, at least (0: not known yet)


NOT_TLS = TlsResult(TlsStatus.NOT_TLS)
MALFORMED = TlsResult(TlsStatus.MALFORMED)


class _Truncated(Exception):
    """A read ran past the bytes given (more may come)."""


class _Malformed(Exception):
    """A read ran past its container's declared end (a length lies)."""


class _Cursor:
    """Reads inside [pos, end) of data; end is a declared length, data may be shorter."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Malformed
        if self.pos + n > len(self.data):
            raise _Truncated
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Cursor:
        """The length-prefixed vector here, as its own cursor (skipped over in this one)."""
        length = self.uint(length_bytes)
        if self.pos + length > self.end:
            raise _Malformed
        inner = _Cursor(self.data, self.pos, self.pos + length)
        self.pos += length
        return inner

    def rest(self) -> bytes:
        return self.take(self.end - self.pos)

    @property
    def done(self) -> bool:
        return self.pos >= self.end


def parse_records(stream: bytes) -> TlsResult:
    """A ClientHello's name from the first bytes of a TLS-over-TCP stream."""
    start = _check_first_header(stream)
    if start is not None:
        return start
    handshake, needed = _join_handshake_records(stream)
    if handshake is None:
        return MALFORMED
    result = parse_handshake(handshake)
    if result.status is TlsStatus.NEED_MORE:
        lower_bound = RECORD_HEADER + result.needed if result.needed else 0
        return replace(result, needed=max(needed, lower_bound, len(stream) + 1))
    return result


def _check_first_header(stream: bytes) -> TlsResult | None:
    """NOT_TLS / NEED_MORE for a stream whose first record header is wrong or partial."""
    if not stream:
        return TlsResult(TlsStatus.NEED_MORE, needed=RECORD_HEADER)
    if stream[0] != CONTENT_HANDSHAKE:
        return NOT_TLS
    if len(stream) >= 2 and stream[1] != 3:
        return NOT_TLS
    if len(stream) >= 3 and stream[2] > 4:
        return NOT_TLS
    if len(stream) < RECORD_HEADER:
        return TlsResult(TlsStatus.NEED_MORE, needed=RECORD_HEADER)
    return None


def _join_handshake_records(stream: bytes) -> tuple[bytes | None, int]:
    """The handshake bytes of the leading handshake records (None: a bad record),
    and the stream length the last, partial record needs (0 if none is partial)."""
    parts: list[bytes] = []
    held = 0
    pos = 0
    while len(stream) - pos >= RECORD_HEADER:
        rtype, major, minor = stream[pos], stream[pos + 1], stream[pos + 2]
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if rtype != CONTENT_HANDSHAKE or major != 3 or minor > 4:
            return None, 0
        if length == 0 or length > MAX_RECORD:
            return None, 0
        chunk = stream[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        parts.append(chunk)
        held += len(chunk)
        if len(chunk) < length:
            return b"".join(parts), pos + RECORD_HEADER + length
        pos += RECORD_HEADER + length
        if _hello_complete(parts[0] if len(parts) == 1 else b"".join(parts)) or held > MAX_HELLO:
            break
    return b"".join(parts), 0


def _hello_complete(handshake: bytes) -> bool:
    return len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big")


def parse_handshake(data: bytes) -> TlsResult:
    """A ClientHello's name from handshake messages (data starts with the hello)."""
    if not data:
        return TlsResult(TlsStatus.NEED_MORE, needed=4)
    if data[0] != HANDSHAKE_CLIENT_HELLO:
        return MALFORMED
    if len(data) < 4:
        return TlsResult(TlsStatus.NEED_MORE, needed=4)
    length = int.from_bytes(data[1:4], "big")
    if length > MAX_HELLO:
        return MALFORMED
    try:
        return _parse_hello(_Cursor(data, 4, 4 + length))
    except _Truncated:
        return TlsResult(TlsStatus.NEED_MORE, needed=4 + length)
    except _Malformed:
        return MALFORMED


def _parse_hello(hello: _Cursor) -> TlsResult:
    if hello.uint(1) != 3:  # legacy_version 3.x
        raise _Malformed
    hello.take(1 + 32)  # minor version, random
    session_id = hello.vector(1)
    suites = hello.vector(2)
    compression = hello.vector(1)
    suites_len = suites.end - suites.pos
    if session_id.end - session_id.pos > 32 or suites_len < 2 or suites_len % 2:
        raise _Malformed
    if compression.done:
        raise _Malformed
    if hello.done:
        return TlsResult(TlsStatus.NO_SNI)  # no extensions at all
    return _parse_extensions(hello.vector(2))


def _parse_extensions(extensions: _Cursor) -> TlsResult:
    alpn: tuple[str, ...] = ()
    while not extensions.done:
        ext_type = extensions.uint(2)
        body = extensions.vector(2)
        if ext_type == EXT_SERVER_NAME:
            raw = _server_name(body)
            if raw is None:
                return TlsResult(TlsStatus.NO_SNI, alpn=alpn)
            name = hostname(raw)
            if name is None:
                return MALFORMED
            return TlsResult(TlsStatus.SNI, sni=name, alpn=alpn)
        if ext_type == EXT_ALPN and not alpn:
            alpn = _alpn(body)
    return TlsResult(TlsStatus.NO_SNI, alpn=alpn)


def _server_name(body: _Cursor) -> bytes | None:
    """The first host_name entry of a server_name extension (None: the list has none).

    The whole list must parse to its exact end: a name whose length byte
    was changed leaves bytes that are no entry, so it cannot pass as a
    shorter name.
    """
    names = body.vector(2)
    if not body.done:
        raise _Malformed
    found: bytes | None = None
    while not names.done:
        name_type = names.uint(1)
        name = names.vector(2).rest()
        if name_type == NAME_TYPE_HOST and found is None:
            found = name
    return found


def _alpn(body: _Cursor) -> tuple[str, ...]:
    protocols = body.vector(2)
    out: list[str] = []
    while not protocols.done and len(out) < MAX_ALPN:
        raw = protocols.vector(1).rest()
        if not raw:
            raise _Malformed
        out.append(raw.decode("ascii", "replace"))
    return tuple(out)
