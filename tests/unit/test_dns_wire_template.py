"""Templates straight from upstream bytes (message.from_wire) against dnslib's
parse and re-pack (message.from_upstream): the same TTLs, cache life,
addresses, query-log text and, rendered for a client, the same records. Shapes
from_wire does not take are left to dnslib (None), and hostile bytes never
raise."""

from __future__ import annotations

import struct

import pytest
from dnslib import AAAA, CNAME, EDNS0, MX, NS, QTYPE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homegw.modules.dns import message, wire
from homegw.modules.dns.message import Template

QNAME = "www.example.test"

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ttls = st.sampled_from([0, 1, 59, 300, 86400, 200000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: ".".join(str(b) for b in n.to_bytes(4, "big")))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: AAAA(tuple(b)))


@st.composite
def answers(draw: st.DrawFn, qname: str) -> RR:
    owner = draw(st.sampled_from([qname, qname.upper(), draw(names)]))
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME"]))
    if kind == "A":
        return RR(owner, QTYPE.A, rdata=A(draw(ipv4)), ttl=draw(ttls))
    if kind == "AAAA":
        return RR(owner, QTYPE.AAAA, rdata=draw(ipv6), ttl=draw(ttls))
    return RR(owner, QTYPE.CNAME, rdata=CNAME(draw(names)), ttl=draw(ttls))


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, str, int]:
    qname = draw(names)
    qtype = draw(st.sampled_from([QTYPE.A, QTYPE.AAAA]))
    rcode = draw(st.sampled_from([0, 3]))
    record = DNSRecord(DNSHeader(id=7, qr=1, rd=1, ra=1, rcode=rcode), q=DNSQuestion(qname, qtype))
    record.rr = draw(st.lists(answers(qname), max_size=5))
    if draw(st.booleans()):
        times = (1, 3600, 600, 86400, draw(ttls))
        soa = SOA("ns." + qname, "admin." + qname, times)
        record.add_auth(RR(draw(names), QTYPE.SOA, rdata=soa, ttl=draw(ttls)))
    if draw(st.booleans()):
        record.add_ar(EDNS0(udp_len=1232))
    return record.pack(), qname, qtype


def both(data: bytes, qname: str, qtype: int) -> tuple[Template | None, Template]:
    name = wire.text_to_wire(qname)
    return message.from_wire(data, name, qtype, 1), message.from_upstream(
        message.parse_upstream(data), name, qtype, 1
    )


def records(t: Template, elapsed: int) -> list[str]:
    question = wire.text_to_wire(t.name.upper()) + struct.pack(">HH", t.qtype, 1)
    rendered = message.render(t, 0x1234, wire.RD, question, elapsed, True, 65535)
    reply = DNSRecord.parse(bytes(rendered))
    return [f"{r.rname} {r.rtype} {r.rclass} {r.ttl} {r.rdata}" for r in reply.rr + reply.auth]


FIELDS = ("flags", "arcount", "ttls", "cache_ttl", "rcode", "addresses", "answer_text", "name")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies(), st.integers(0, 100000))
def test_same_template_as_dnslib(reply: tuple[bytes, str, int], elapsed: int) -> None:
    data, qname, qtype = reply
    fast, slow = both(data, qname, qtype)
    assert fast is not None  # the common shape takes the fast way
    assert {f: getattr(fast, f) for f in FIELDS} == {f: getattr(slow, f) for f in FIELDS}
    assert (fast.rrset, fast.qtype) == (slow.rrset, slow.qtype)
    assert records(fast, elapsed) == records(slow, elapsed)


def plain(answer: list[RR], authority: list[RR] = (), additional: list[RR] = ()) -> bytes:  # type: ignore[assignment]
    record = DNSRecord(DNSHeader(id=7, qr=1, rd=1, ra=1), q=DNSQuestion(QNAME))
    record.rr, record.auth, record.ar = list(answer), list(authority), list(additional)
    return record.pack()


A_RR = RR(QNAME, QTYPE.A, rdata=A("198.51.100.80"), ttl=300)


def test_plain_a_answer_is_fast_path_material_without_dnslib() -> None:
    fast, slow = both(plain([A_RR]), QNAME, 1)
    assert fast is not None and fast.wire == slow.wire  # dnslib packs it the same way
    assert fast.rrset == ("198.51.100.80",) and fast.cache_ttl == 300


@pytest.mark.parametrize(
    "data",
    [
        plain([RR(QNAME, QTYPE.MX, rdata=MX("mail.example.test"), ttl=60)]),
        plain([A_RR], authority=[RR("example.test", QTYPE.NS, rdata=NS("ns.test"), ttl=60)]),
        plain([A_RR], additional=[EDNS0(), RR("x.test", QTYPE.A, rdata=A("1.2.3.4"))]),
        plain([RR(QNAME, QTYPE.CNAME, rdata=CNAME("we\\ird.example.test"), ttl=60)]),
    ],
    ids=["MX answer", "NS authority", "record after OPT", "CNAME with odd bytes"],
)
def test_other_shapes_are_left_to_dnslib(data: bytes) -> None:
    fast, slow = both(data, QNAME, 1)
    assert fast is None
    assert message.template_of_reply(data, wire.text_to_wire(QNAME), 1, 1).wire == slow.wire


def test_bad_pointer_in_a_record_is_left_to_dnslib() -> None:
    data = bytearray(plain([A_RR]))
    answer = 12 + len(wire.text_to_wire(QNAME)) + 4
    data[answer : answer + 2] = b"\xc0\xff"  # points past the end
    assert message.from_wire(bytes(data), wire.text_to_wire(QNAME), 1, 1) is None
    with pytest.raises(message.UpstreamFormatError):
        message.template_of_reply(bytes(data), wire.text_to_wire(QNAME), 1, 1)


PREFIX = plain([])  # header (its counts replaced below) and question


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.binary(max_size=300))
def test_fuzz_records_never_raise(an: int, ns: int, ar: int, tail: bytes) -> None:
    data = struct.pack(">HHHHHH", 7, 0x8180, 1, an, ns, ar) + PREFIX[12:] + tail
    t = message.from_wire(data, wire.text_to_wire(QNAME), 1, 1)
    if t is not None:
        wire.ttl_offsets(t.wire)  # what it keeps walks cleanly
