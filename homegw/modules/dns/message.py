"""Reply templates: a packed reply kept once, rendered per query in microseconds.

A :class:`Template` is a complete packed reply (ID 0, question at offset 12)
plus where each record's TTL sits. Rendering one for a client copies the bytes,
writes the client's ID and RD/CD bits, splices in the client's question (same
length, the client's letter case: 0x20-style clients check it) and lowers each
TTL by the seconds the template has been cached. Upstream answers, local names,
blocked names and errors all become templates, so every reply takes one path.

Upstream answers are parsed and re-packed with dnslib; negative answers get
their SOA TTL set to min(SOA TTL, SOA MINIMUM) (RFC 2308 section 3).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from dnslib import CLASS, QTYPE, RR, SOA, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

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
    a_rrset: tuple[str, ...] | None  # the answer is only A records of qname, one TTL


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
    simple = bool(answers) and all(
        rr.rtype == TYPE_A and rr.rname == owner and rr.ttl == answers[0].ttl for rr in answers
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
        a_rrset=addresses if simple else None,
    )


def error(qname: bytes, qtype: int, qclass: int, rcode: int) -> Template:
    """SERVFAIL, REFUSED, NOTIMP... with the question echoed; never cached."""
    return build(qname, qtype, qclass, rcode=rcode)


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


def answer_addresses(record: DNSRecord) -> list[str]:
    """A and AAAA addresses in a reply's answer section."""
    return [str(rr.rdata) for rr in record.rr if rr.rtype in (TYPE_A, TYPE_AAAA)]


@functools.lru_cache(maxsize=256)
def qtype_text(qtype: int) -> str:
    return str(QTYPE.get(qtype, f"TYPE{qtype}"))


def qclass_text(qclass: int) -> str:
    return str(CLASS.get(qclass, f"CLASS{qclass}"))
