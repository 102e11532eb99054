"""DNS wire format: strict query parsing and walking resource records.

Queries from the LAN are parsed here, by hand, not by dnslib: every malformed
input (short header, truncated name, compression loop, label over 63 bytes,
name over 255 bytes, counts that do not match the data) raises
:class:`BadQuery` with the rcode to answer, or :class:`Drop` when there is not
even a header to answer to. Nothing else may escape (the fuzz tests hold this).
Upstream answers are parsed with dnslib (see :mod:`homegw.modules.dns.message`);
:func:`ttl_offsets` walks a packed message to find each record's TTL field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER = struct.Struct(">HHHHHH")
HEADER_LEN = 12
MAX_NAME = 255  # RFC 1035 2.3.4: a name's wire form, length bytes included
MAX_LABEL = 63
MAX_POINTERS = 64  # each pointer must also go strictly backwards: no loops

# Header flag bits (the 16-bit word after the ID).
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
RCODE_MASK = 0x000F

# Rcodes (RFC 1035, 6891).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

# Types and classes this module treats specially.
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_AAAA = 1, 2, 5, 6, 12, 28
TYPE_OPT, TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 41, 251, 252, 255
CLASS_IN = 1

CLASSIC_UDP_SIZE = 512  # without EDNS (RFC 1035 4.2.1)
OUR_UDP_SIZE = 1232  # what we advertise and accept over UDP (DNS flag day 2020)
MAX_UDP_SIZE = 4096
#: Our OPT record: root owner, type 41, class = UDP size 1232, TTL 0, no options.
OPT_RECORD = b"\x00" + struct.pack(">HHIH", TYPE_OPT, OUR_UDP_SIZE, 0, 0)


class Drop(Exception):
    """Not answerable at all (no full header, or a response sent to us)."""


class BadQuery(Exception):
    """A query to answer with an error rcode (FORMERR, NOTIMP, BADVERS...)."""

    def __init__(self, rcode: int, reason: str) -> None:
        super().__init__(reason)
        self.rcode = rcode


@dataclass(frozen=True, slots=True)
class Edns:
    udp_size: int  # the client's UDP payload size, clamped to 512..4096
    version: int


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: one question, maybe an OPT record."""

    id: int
    flags: int
    qname: bytes  # wire form as the client wrote it (case kept), uncompressed
    qtype: int
    qclass: int
    edns: Edns | None
    #: The question section as echoed in a reply: name, type, class.
    question: bytes = field(init=False, repr=False)
    #: Cache key: the question with the name lower-cased (DNS is case-blind).
    key: bytes = field(init=False, repr=False)
    #: The name in presentation form, lower case (what policies and logs see).
    name: str = field(init=False, repr=False)

    def __post_init__(self) -> None:  # computed once: every query needs all three
        question = self.qname + struct.pack(">HH", self.qtype, self.qclass)
        object.__setattr__(self, "question", question)
        object.__setattr__(self, "key", question.lower())
        object.__setattr__(self, "name", name_to_text(self.qname.lower()))

    @property
    def udp_limit(self) -> int:
        """Largest UDP reply this client accepts."""
        return self.edns.udp_size if self.edns else CLASSIC_UDP_SIZE


class BadQueryWithQuery(BadQuery):
    """A well-formed query that still gets an error rcode (BADVERS)."""

    def __init__(self, rcode: int, reason: str, query: Query) -> None:
        super().__init__(rcode, reason)
        self.query = query


def read_name(msg: bytes, offset: int) -> tuple[bytes, int]:
    """Read a (possibly compressed) name at offset.

    Returns its uncompressed wire form and the offset just after it in msg.
    Pointers must point strictly before the label sequence that holds them,
    so a chain of pointers always ends.
    """
    i, end = offset, len(msg)
    while i < end:  # the common case: no pointer, every label well-formed
        length = msg[i]
        if length == 0:
            if i + 1 - offset > MAX_NAME:
                break
            return bytes(msg[offset : i + 1]), i + 1
        if length > MAX_LABEL:
            break
        i += length + 1
    return _read_name_strictly(msg, offset)


def _read_name_strictly(msg: bytes, offset: int) -> tuple[bytes, int]:
    out = bytearray()
    end = -1
    floor = offset  # a pointer must go below every position read so far
    hops = 0
    while True:
        if offset >= len(msg):
            raise BadQuery(FORMERR, "name runs past the end of the message")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(msg):
                raise BadQuery(FORMERR, "truncated compression pointer")
            target = ((length & 0x3F) << 8) | msg[offset + 1]
            hops += 1
            if target >= floor or hops > MAX_POINTERS:
                raise BadQuery(FORMERR, "compression pointer loop or forward pointer")
            if end < 0:
                end = offset + 2
            offset = floor = target
            continue
        if length > MAX_LABEL:
            raise BadQuery(FORMERR, f"label length byte {length:#x} is invalid")
        if offset + 1 + length > len(msg):
            raise BadQuery(FORMERR, "label runs past the end of the message")
        out += msg[offset : offset + 1 + length]
        if len(out) > MAX_NAME:
            raise BadQuery(FORMERR, "name longer than 255 bytes")
        offset += 1 + length
        if length == 0:
            return bytes(out), (end if end >= 0 else offset)


def skip_name(msg: bytes, offset: int) -> int:
    """Offset just after the name at offset (pointers are not followed)."""
    while True:
        if offset >= len(msg):
            raise BadQuery(FORMERR, "name runs past the end of the message")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length > MAX_LABEL:
            raise BadQuery(FORMERR, f"label length byte {length:#x} is invalid")
        offset += 1 + length
        if length == 0:
            return offset


def _read_opt(msg: bytes, offset: int) -> tuple[Edns, int]:
    """The OPT record at offset (owner name already known to be root)."""
    if offset + 11 > len(msg):
        raise BadQuery(FORMERR, "truncated OPT record")
    _rtype, udp, _ercode, version, _flags, rdlen = struct.unpack_from(">HHBBHH", msg, offset + 1)
    end = offset + 11 + rdlen
    if end > len(msg):
        raise BadQuery(FORMERR, "OPT record data runs past the end of the message")
    size = min(max(udp, CLASSIC_UDP_SIZE), MAX_UDP_SIZE)
    return Edns(size, version), end


def _read_additional(msg: bytes, offset: int, count: int) -> tuple[Edns | None, int]:
    edns: Edns | None = None
    for _ in range(count):
        rr_start = offset
        offset = skip_name(msg, offset)
        if offset + 10 > len(msg):
            raise BadQuery(FORMERR, "truncated additional record")
        rtype, _rclass, _ttl, rdlen = struct.unpack_from(">HHIH", msg, offset)
        if rtype == TYPE_OPT:
            if edns is not None or msg[rr_start] != 0:
                raise BadQuery(FORMERR, "more than one OPT record, or OPT not owned by root")
            edns, offset = _read_opt(msg, rr_start)
            continue
        offset += 10 + rdlen
        if offset > len(msg):
            raise BadQuery(FORMERR, "additional record data runs past the end")
    return edns, offset


def parse_query(msg: bytes) -> Query:
    """Parse a query strictly; raise Drop or BadQuery (see module docstring)."""
    if len(msg) < HEADER_LEN:
        raise Drop("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(msg)
    if flags & QR:
        raise Drop("a response, not a query")
    if flags & OPCODE_MASK:
        raise BadQuery(NOTIMP, f"opcode {(flags & OPCODE_MASK) >> 11} not implemented")
    if qdcount != 1 or ancount or nscount:
        raise BadQuery(FORMERR, f"counts qd={qdcount} an={ancount} ns={nscount}")
    qname, offset = read_name(msg, HEADER_LEN)
    if offset + 4 > len(msg):
        raise BadQuery(FORMERR, "question runs past the end of the message")
    qtype, qclass = struct.unpack_from(">HH", msg, offset)
    edns, end = _read_additional(msg, offset + 4, arcount)
    if end != len(msg):
        raise BadQuery(FORMERR, f"{len(msg) - end} bytes after the last record")
    query = Query(qid, flags, qname, qtype, qclass, edns)
    if edns is not None and edns.version != 0:
        raise BadQueryWithQuery(BADVERS, "EDNS version not supported", query)
    return query


def error_reply(msg: bytes, rcode: int) -> bytes:
    """Bare header reply (no question) to a query that could not be parsed."""
    qid, flags = struct.unpack_from(">HH", msg)
    out_flags = QR | RA | (flags & (OPCODE_MASK | RD | CD)) | (rcode & RCODE_MASK)
    return HEADER.pack(qid, out_flags, 0, 0, 0, 0)


def badvers_reply(query: Query) -> bytes:
    """RFC 6891 7: an EDNS version we do not speak gets BADVERS (16) with our OPT."""
    flags = QR | RA | (query.flags & (RD | CD)) | (BADVERS & RCODE_MASK)
    opt = b"\x00" + struct.pack(">HHBBHH", TYPE_OPT, OUR_UDP_SIZE, BADVERS >> 4, 0, 0, 0)
    return HEADER.pack(query.id, flags, 1, 0, 0, 1) + query.question + opt


@dataclass(frozen=True, slots=True)
class RecordSpan:
    """Where one resource record of a packed message is."""

    rtype: int
    ttl_offset: int
    ttl: int


def walk_records(msg: bytes, offset: int, count: int) -> tuple[list[RecordSpan], int]:
    """The records of a section starting at offset, and the offset after them."""
    spans = []
    for _ in range(count):
        offset = skip_name(msg, offset)
        if offset + 10 > len(msg):
            raise BadQuery(FORMERR, "truncated resource record")
        rtype, _rclass, ttl, rdlen = struct.unpack_from(">HHIH", msg, offset)
        spans.append(RecordSpan(rtype, offset + 4, ttl))
        offset += 10 + rdlen
        if offset > len(msg):
            raise BadQuery(FORMERR, "record data runs past the end of the message")
    return spans, offset


def ttl_offsets(msg: bytes) -> list[RecordSpan]:
    """Every record (answer, authority, additional) of a packed one-question message."""
    _id, _flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(msg)
    offset = HEADER_LEN
    for _ in range(qdcount):
        offset = skip_name(msg, offset) + 4
    spans, _end = walk_records(msg, offset, ancount + nscount + arcount)
    return spans


_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*"


def name_to_text(wire: bytes) -> str:
    """Presentation form of an uncompressed wire name, no trailing dot ("" = root).

    Bytes outside letters, digits, '-', '_' and '*' are escaped as \\DDD, and
    '.' inside a label as '\\.', so distinct names never read the same.
    """
    labels = []
    offset = 0
    while offset < len(wire) and wire[offset]:
        length = wire[offset]
        label = wire[offset + 1 : offset + 1 + length]
        if label.translate(None, _PLAIN):  # something to escape
            labels.append("".join(_char(b) for b in label))
        else:
            labels.append(label.decode("ascii"))
        offset += 1 + length
    return ".".join(labels)


def plain_name_text(wire: bytes) -> str | None:
    """dnslib's text of an uncompressed name ("a.b." with the case kept) when
    every label is letters, digits, '-' and '_'; None otherwise."""
    labels = []
    offset = 0
    while wire[offset]:
        length = wire[offset]
        label = wire[offset + 1 : offset + 1 + length]
        if label.translate(None, _PLAIN[:-1]):
            return None
        labels.append(label.decode("ascii"))
        offset += 1 + length
    return ".".join(labels) + "."


def _char(b: int) -> str:
    c = chr(b)
    if c.isascii() and (c.isalnum() or c in "-_*"):
        return c
    if c in ".\\":
        return "\\" + c
    return f"\\{b:03d}"


def text_to_wire(name: str) -> bytes:
    """Wire form of a plain dotted name (no escapes; for names we make ourselves)."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > MAX_LABEL:
            raise ValueError(f"label {label!r} longer than 63 bytes")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > MAX_NAME:
        raise ValueError(f"name {name!r} longer than 255 bytes")
    return bytes(out)
