"""Reply templates: a packed reply kept once, rendered per query in microseconds.

A :class:`Template` is a complete packed reply (ID 0, question at offset 12)
plus where each record's TTL sits. Rendering one for a client copies the bytes,
writes the client's ID and RD/CD bits, splices in the client's question (same
length, the client's letter case: 0x20-style clients check it) and lowers each
TTL by the seconds the template has been cached. Upstream answers, local names,
blocked names and errors all become templates, so every reply takes one path.

An upstream answer of the common shape (A, AAAA and CNAME answers, an SOA in
the authority section, our OPT echoed last) becomes a template straight from
its bytes (:func:`from_wire`): names are checked and the records walked, the
bytes kept as the upstream packed them. Any other shape is parsed and
re-packed with dnslib (:func:`from_upstream`); both give the same records.
Negative answers get their SOA TTL set to min(SOA TTL, SOA MINIMUM) (RFC 2308
section 3).
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass, field

from dnslib import AAAA, CLASS, QTYPE, RR, SOA, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from homegw.modules.dns import wire
from homegw.modules.dns.wire import (
    AA,
    CD,
    HEADER_LEN,
    NOERROR,
    NXDOMAIN,
    OPT_RECORD,
    QR,
    RA,
    RD,
    TC,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_OPT,
    TYPE_SOA,
)

MAX_CACHE_TTL = 86400  # answers are kept at most a day, whatever their TTL
TTL_SIGN_BIT = 0x80000000  # RFC 2181 8: a TTL with the top bit set means 0


class UpstreamFormatError(ValueError):
    """An upstream reply that dnslib cannot parse or that does not fit our query."""


@dataclass(slots=True, eq=False)
class Template:
    wire: bytes  # packed reply: ID 0, flags 0, question (lower-case) at offset 12
    flags: int  # QR | AA | RA | rcode; RD and CD come from each query
    arcount: int
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    cache_ttl: int | None  # seconds it may be cached; None: never
    rcode: int
    addresses: tuple[str, ...]  # A and AAAA data of the answer section
    answer_text: tuple[str, ...]  # the answer section, for the query log
    name: str  # the question's name, presentation form, lower case
    qtype: int
    # the answer is only records of the question's type (A or AAAA) for its
    # name, with one TTL: what the XDP fast path can answer
    rrset: tuple[str, ...] | None


def render(
    t: Template, qid: int, qflags: int, question: bytes, elapsed: int, edns: bool, limit: int
) -> bytearray:
    """The reply to one query from template t cached `elapsed` seconds ago."""
    out = bytearray(t.wire)
    struct.pack_into(">HH", out, 0, qid, t.flags | (qflags & (RD | CD)))
    out[HEADER_LEN : HEADER_LEN + len(question)] = question
    if elapsed:
        for offset, ttl in zip(t.ttl_offsets, t.ttls, strict=True):
            struct.pack_into(">I", out, offset, ttl - elapsed if ttl > elapsed else 0)
    if edns:
        struct.pack_into(">H", out, 10, t.arcount + 1)
        out += OPT_RECORD
    if len(out) > limit:
        return truncated(qid, t.flags | (qflags & (RD | CD)), question, edns)
    return out


def truncated(qid: int, flags: int, question: bytes, edns: bool) -> bytearray:
    """TC reply (header and question only): the client retries over TCP."""
    out = bytearray(wire.HEADER.pack(qid, flags | TC, 1, 0, 0, 1 if edns else 0))
    out += question
    if edns:
        out += OPT_RECORD
    return out


# --- building templates ---------------------------------------------------------


def label_of(name_wire: bytes) -> DNSLabel:
    """dnslib's name for an uncompressed wire name, lower-cased, bytes kept as they are."""
    labels, offset = [], 0
    while name_wire[offset]:
        length = name_wire[offset]
        labels.append(name_wire[offset + 1 : offset + 1 + length].lower())
        offset += 1 + length
    return DNSLabel(tuple(labels))


def _question(qname: bytes, qtype: int, qclass: int) -> DNSQuestion:
    return DNSQuestion(label_of(qname), qtype, qclass)


def _ttl(value: int) -> int:
    return 0 if value & TTL_SIGN_BIT else value


def _rr_text(rr: RR) -> str:
    return f"{QTYPE.get(rr.rtype, rr.rtype)} {rr.rdata}"


def build(
    qname: bytes,
    qtype: int,
    qclass: int,
    *,
    rcode: int = NOERROR,
    answers: list[RR] | None = None,
    authority: list[RR] | None = None,
    additional: list[RR] | None = None,
    authoritative: bool = False,
    cache_ttl: int | None = None,
) -> Template:
    """Pack a reply and index its TTLs."""
    answers, authority, additional = answers or [], authority or [], additional or []
    record = DNSRecord(DNSHeader(id=0, qr=1), q=_question(qname, qtype, qclass))
    record.rr, record.auth, record.ar = list(answers), list(authority), list(additional)
    packed = bytearray(record.pack())
    struct.pack_into(">H", packed, 2, 0)
    if packed[HEADER_LEN : HEADER_LEN + len(qname)] != qname.lower():
        raise UpstreamFormatError("question did not pack back to the same name")
    spans = wire.ttl_offsets(bytes(packed))
    flags = QR | RA | (AA if authoritative else 0) | rcode
    addresses = tuple(str(rr.rdata) for rr in answers if rr.rtype in (TYPE_A, TYPE_AAAA))
    owner = label_of(qname)
    simple = (
        bool(answers)
        and qtype in (TYPE_A, TYPE_AAAA)
        and all(
            rr.rtype == qtype and rr.rname == owner and rr.ttl == answers[0].ttl for rr in answers
        )
    )
    return Template(
        wire=bytes(packed),
        flags=flags,
        arcount=len(additional),
        ttl_offsets=tuple(s.ttl_offset for s in spans),
        ttls=tuple(s.ttl for s in spans),
        cache_ttl=cache_ttl,
        rcode=rcode,
        addresses=addresses,
        answer_text=tuple(_rr_text(rr) for rr in answers),
        name=wire.name_to_text(qname.lower()),
        qtype=qtype,
        rrset=addresses if simple else None,
    )


def error(qname: bytes, qtype: int, qclass: int, rcode: int) -> Template:
    """SERVFAIL, REFUSED, NOTIMP... with the question echoed; never cached."""
    question = qname.lower() + struct.pack(">HH", qtype, qclass)
    return Template(
        wire=wire.HEADER.pack(0, 0, 1, 0, 0, 0) + question,
        flags=QR | RA | rcode,
        arcount=0,
        ttl_offsets=(),
        ttls=(),
        cache_ttl=None,
        rcode=rcode,
        addresses=(),
        answer_text=(),
        name=wire.name_to_text(qname.lower()),
        qtype=qtype,
        rrset=None,
    )


def _negative_ttl(authority: list[RR]) -> int | None:
    """RFC 2308 3: a negative answer lives min(SOA TTL, SOA MINIMUM); no SOA: not cached."""
    for rr in authority:
        if rr.rtype == TYPE_SOA and isinstance(rr.rdata, SOA):
            ttl = min(_ttl(rr.ttl), _ttl(rr.rdata.times[4]))
            rr.ttl = ttl  # clients cache the negative answer as long as we do
            return ttl
    return None


def _cache_ttl(rcode: int, answers: list[RR], authority: list[RR]) -> int | None:
    if rcode == NOERROR and answers:
        ttl: int | None = min(_ttl(rr.ttl) for rr in answers)
    elif rcode in (NOERROR, NXDOMAIN):
        ttl = _negative_ttl(authority)
    else:
        return None
    return min(ttl, MAX_CACHE_TTL) if ttl else None


def parse_upstream(data: bytes) -> DNSRecord:
    """dnslib's parse, with every failure turned into UpstreamFormatError."""
    try:
        return DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises many kinds on bad input
        raise UpstreamFormatError(f"unparsable upstream reply: {exc}") from exc


def from_upstream(record: DNSRecord, qname: bytes, qtype: int, qclass: int) -> Template:
    """Template of an upstream reply (already matched to our query)."""
    rcode = record.header.rcode
    for rr in record.rr + record.auth + record.ar:
        rr.ttl = _ttl(rr.ttl)
    answers, authority = list(record.rr), list(record.auth)
    additional = [rr for rr in record.ar if rr.rtype != TYPE_OPT]
    cache_ttl = _cache_ttl(rcode, answers, authority)
    try:
        return build(
            qname,
            qtype,
            qclass,
            rcode=rcode,
            answers=answers,
            authority=authority,
            additional=additional,
            cache_ttl=cache_ttl,
        )
    except UpstreamFormatError:
        raise
    except Exception as exc:  # dnslib pack of odd records
        raise UpstreamFormatError(f"cannot re-pack upstream reply: {exc}") from exc


def template_of_reply(
    data: bytes, qname: bytes, qtype: int, qclass: int, name: str | None = None
) -> Template:
    """Template of an upstream reply matched to our query (UpstreamFormatError if
    bad); `name` is the question's text if the caller has it already."""
    template = from_wire(data, qname, qtype, qclass, name)
    if template is None:
        template = from_upstream(parse_upstream(data), qname, qtype, qclass)
    return template


# --- templates straight from an upstream reply's bytes ----------------------------

_RR = struct.Struct(">HHIH")
_POINTER_TO_QNAME = b"\xc0\x0c"


class _Unusual(Exception):
    """A shape from_wire leaves to dnslib."""


def _name_at(msg: bytes, offset: int, limit: int) -> tuple[bytes | None, int]:
    """(name, end) of a checked name at offset that must end by limit; name is
    None for the pointer to the question (the commonest owner)."""
    if msg[offset : offset + 2] == _POINTER_TO_QNAME:
        return None, offset + 2
    try:
        name, end = wire.read_name(msg, offset)
    except wire.BadQuery:
        raise _Unusual from None
    if end > limit:
        raise _Unusual
    return name, end


@dataclass(slots=True)
class _Walk:
    """What from_wire collects while walking the records."""

    out: bytearray
    qname: bytes  # lower case
    reply_qname: bytes  # as the reply spells it (CNAME text keeps the case)
    negative: bool  # the SOA's TTL is the answer's life (RFC 2308)
    ttl_offsets: list[int] = field(default_factory=list)
    ttls: list[int] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    answer_ttls: list[int] = field(default_factory=list)
    simple: bool = True  # only address records of qname so far
    rtypes: set[int] = field(default_factory=set)  # the address records' types
    soa_seen: bool = False
    negative_ttl: int | None = None
    opt_at: int | None = None


def from_wire(
    data: bytes, qname: bytes, qtype: int, qclass: int, name: str | None = None
) -> Template | None:
    """Template of an upstream reply (already matched to our query), straight
    from its bytes; None when the reply holds anything but A/AAAA/CNAME answers,
    one SOA in the authority section and an OPT record last (dnslib's turn)."""
    _id, rflags, qdcount, ancount, nscount, arcount = wire.HEADER.unpack_from(data)
    if qdcount != 1:
        return None
    qend = HEADER_LEN + len(qname) + 4
    rcode = rflags & wire.RCODE_MASK
    negative = rcode == NXDOMAIN or (rcode == NOERROR and not ancount)
    walk = _Walk(bytearray(data), qname.lower(), data[HEADER_LEN : qend - 4], negative)
    offset = qend
    try:
        for index in range(ancount + nscount + arcount):
            section = 0 if index < ancount else 1 if index < ancount + nscount else 2
            offset = _record(walk, data, offset, section)
    except (_Unusual, struct.error, IndexError):
        return None
    end = offset if walk.opt_at is None else walk.opt_at
    out = walk.out
    wire.HEADER.pack_into(out, 0, 0, 0, 1, ancount, nscount, arcount - (walk.opt_at is not None))
    out[HEADER_LEN:qend] = walk.qname + data[qend - 4 : qend]
    if rcode == NOERROR and ancount:
        cache_ttl: int | None = min(walk.answer_ttls)
    elif rcode in (NOERROR, NXDOMAIN):
        cache_ttl = walk.negative_ttl
    else:
        cache_ttl = None
    cache_ttl = min(cache_ttl, MAX_CACHE_TTL) if cache_ttl else None
    simple = (
        walk.simple
        and ancount > 0
        and len(set(walk.answer_ttls)) == 1
        and walk.rtypes == {qtype}
        and qtype in (TYPE_A, TYPE_AAAA)
    )
    return Template(
        wire=bytes(out[:end]),
        flags=QR | RA | rcode,
        arcount=arcount - (walk.opt_at is not None),
        ttl_offsets=tuple(walk.ttl_offsets),
        ttls=tuple(walk.ttls),
        cache_ttl=cache_ttl,
        rcode=rcode,
        addresses=tuple(walk.addresses),
        answer_text=tuple(walk.texts),
        name=wire.name_to_text(walk.qname) if name is None else name,
        qtype=qtype,
        rrset=tuple(walk.addresses) if simple else None,
    )


def _record(walk: _Walk, data: bytes, offset: int, section: int) -> int:
    """Check one record, note what the template needs; the offset after it."""
    start = offset
    owner, offset = _name_at(data, offset, len(data))
    rtype, rclass, ttl, rdlength = _RR.unpack_from(data, offset)
    rdata, end = offset + 10, offset + 10 + rdlength
    if end > len(data) or walk.opt_at is not None:
        raise _Unusual  # past the end, or a record after the OPT record
    if rtype == TYPE_OPT:
        if section != 2 or data[start] != 0:
            raise _Unusual
        walk.opt_at = start
        return end
    ttl = _ttl(ttl)
    if section == 0:
        _answer(walk, data, owner, rtype, rclass, ttl, rdata, end)
    elif section == 1 and rtype == TYPE_SOA and not walk.soa_seen:
        walk.soa_seen = True
        minimum = _ttl(_soa_minimum(data, rdata, end))
        if walk.negative:  # clients cache the negative answer as long as we do
            ttl = walk.negative_ttl = min(ttl, minimum)
    else:
        raise _Unusual
    struct.pack_into(">I", walk.out, offset + 4, ttl)
    walk.ttl_offsets.append(offset + 4)
    walk.ttls.append(ttl)
    return end


def _answer(
    walk: _Walk,
    data: bytes,
    owner: bytes | None,
    rtype: int,
    rclass: int,
    ttl: int,
    rdata: int,
    end: int,
) -> None:
    if rclass != wire.CLASS_IN:
        raise _Unusual
    if rtype == TYPE_A and end - rdata == 4:
        text = socket.inet_ntoa(data[rdata:end])
    elif rtype == TYPE_AAAA and end - rdata == 16:
        text = repr(AAAA(tuple(data[rdata:end])))  # dnslib's spelling, as elsewhere
    elif rtype == TYPE_CNAME:
        target, _end = _name_at(data, rdata, end)
        if _end != end:
            raise _Unusual
        text = wire.plain_name_text(walk.reply_qname if target is None else target)
        if text is None:
            raise _Unusual
        walk.texts.append(f"CNAME {text}")
        walk.simple = False
        walk.answer_ttls.append(ttl)
        return
    else:
        raise _Unusual
    if owner is not None and owner.lower() != walk.qname:
        walk.simple = False
    walk.rtypes.add(rtype)
    walk.addresses.append(text)
    walk.texts.append(("A " if rtype == TYPE_A else "AAAA ") + text)
    walk.answer_ttls.append(ttl)


def _soa_minimum(data: bytes, rdata: int, end: int) -> int:
    """MINIMUM of a well-formed SOA record's data."""
    _mname, offset = _name_at(data, rdata, end)
    _rname, offset = _name_at(data, offset, end)
    if end - offset != 20:
        raise _Unusual
    return struct.unpack_from(">I", data, end - 4)[0]


def answer_addresses(record: DNSRecord) -> list[str]:
    """A and AAAA addresses in a reply's answer section."""
    return [str(rr.rdata) for rr in record.rr if rr.rtype in (TYPE_A, TYPE_AAAA)]


@functools.lru_cache(maxsize=256)
def qtype_text(qtype: int) -> str:
    return str(QTYPE.get(qtype, f"TYPE{qtype}"))


def qclass_text(qclass: int) -> str:
    return str(CLASS.get(qclass, f"CLASS{qclass}"))
