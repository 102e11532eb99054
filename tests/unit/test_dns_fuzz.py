"""The query path against malformed input: exact answers for the classic
attacks, then hypothesis throwing bytes at every entry point. Nothing may
raise; every reply must parse and carry the query's ID."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homegw.modules.dns import message, wire
from homegw.modules.dns.blocklists import ListLoader, build_policies
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.querylog import QueryLog
from homegw.modules.dns.rebind import RebindGuard
from homegw.modules.dns.resolver import Resolver
from homegw.modules.dns.upstream import UpstreamClient

HEAD = struct.Struct(">HHHHHH")
QNAME = wire.text_to_wire("www.example.test")
QUESTION = QNAME + b"\x00\x01\x00\x01"


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = wire.RD) -> bytes:
    return HEAD.pack(0xBEEF, flags, qd, an, ns, ar)


def opt(version: int = 0, rdata: bytes = b"") -> bytes:
    return b"\x00" + struct.pack(">HHBBHH", 41, 1232, 0, version, 0, len(rdata)) + rdata


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    r = Resolver(
        cache=DnsCache(100),
        local=LocalNames("lan", "homegw", ipaddress.IPv4Interface("192.168.1.1/24")),
        policies=build_policies(ListLoader(tmp_path_factory.mktemp("lists")), (), (), (), []),
        upstream=UpstreamClient(lambda: [], 1.0),
        rebind=RebindGuard(True),
        querylog=QueryLog(50),
    )
    t = message.build(QNAME, 1, 1, answers=[_a_record()], cache_ttl=300)
    r.cache.put(QUESTION, t, r.clock())  # one cached name, so fuzzed hits happen
    return r


def _a_record() -> RR:
    return RR("www.example.test", QTYPE.A, rdata=A("198.51.100.80"), ttl=300)


def resolve(resolver: Resolver, loop: asyncio.AbstractEventLoop, data: bytes) -> bytes | None:
    return loop.run_until_complete(resolver.resolve(data, "192.168.1.9"))


MALFORMED = {
    "compression loop": header() + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    "forward pointer": header() + b"\xc0\x20" + b"\x00\x01\x00\x01" + bytes(20),
    "label over 63": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "reserved label type": header() + b"\x80abc\x00\x00\x01\x00\x01",
    "name over 255": header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
    "truncated name": header() + b"\x03www\x07exam",
    "truncated question": header() + QNAME + b"\x00",
    "no question": header(qd=0),
    "two questions": header(qd=2) + QUESTION * 2,
    "answer count": header(an=1) + QUESTION,
    "authority count": header(ns=1) + QUESTION,
    "additional count without data": header(ar=2) + QUESTION,
    "truncated OPT": header(ar=1) + QUESTION + opt()[:7],
    "two OPT records": header(ar=2) + QUESTION + opt() + opt(),
    "OPT data past the end": header(ar=1) + QUESTION + opt(rdata=b"\x00\x0a\x00\x08")[:-2],
    "trailing garbage": header() + QUESTION + b"junk",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_query_gets_formerr(resolver: Resolver, loop, name: str) -> None:
    data = MALFORMED[name]
    assert resolver.answer_cached(data, "192.168.1.9") is None
    reply = resolve(resolver, loop, data)
    assert reply == HEAD.pack(0xBEEF, wire.QR | wire.RA | wire.RD | wire.FORMERR, 0, 0, 0, 0)


def test_short_datagram_and_responses_are_dropped(resolver: Resolver, loop) -> None:
    dropped = resolver.stats.dropped
    assert resolve(resolver, loop, b"") is None
    assert resolve(resolver, loop, b"\xbe\xef\x01") is None
    assert resolve(resolver, loop, header(flags=wire.QR) + QUESTION) is None  # no reflection
    assert resolver.stats.dropped == dropped + 3


def test_other_opcode_gets_notimp(resolver: Resolver, loop) -> None:
    reply = resolve(resolver, loop, header(flags=2 << 11) + QUESTION)
    assert reply == HEAD.pack(0xBEEF, wire.QR | wire.RA | (2 << 11) | wire.NOTIMP, 0, 0, 0, 0)


def test_edns_version_1_gets_badvers(resolver: Resolver, loop) -> None:
    reply = resolve(resolver, loop, header(ar=1) + QUESTION + opt(version=1))
    assert reply is not None
    assert reply[:12] == HEAD.pack(0xBEEF, wire.QR | wire.RA | wire.RD, 1, 0, 0, 1)
    record = DNSRecord.parse(reply)
    assert (record.ar[0].rtype, (record.ar[0].ttl >> 24) << 4) == (41, wire.BADVERS)


def test_uppercase_query_hits_the_lower_case_cache_entry(resolver: Resolver) -> None:
    question = wire.text_to_wire("WWW.Example.TEST") + b"\x00\x01\x00\x01"
    reply = resolver.answer_cached(header() + question, "192.168.1.9")
    assert reply is not None
    assert bytes(reply[12 : 12 + len(question)]) == question


def test_cached_name_is_answered_on_the_fast_and_slow_path(resolver: Resolver, loop) -> None:
    data = header() + QUESTION
    fast = resolver.answer_cached(data, "192.168.1.9")
    slow = resolve(resolver, loop, data)
    assert fast is not None and slow is not None
    assert bytes(fast)[:12] == slow[:12] and len(fast) == len(slow)
    assert [str(rr.rdata) for rr in DNSRecord.parse(slow).rr] == ["198.51.100.80"]


def check_reply(data: bytes, reply: bytes | bytearray | None) -> None:
    if reply is None:
        return
    assert len(data) >= 12
    assert reply[:2] == data[:2]
    assert reply[2] & 0x80  # QR
    well_formed(bytes(reply))


def well_formed(reply: bytes) -> None:
    """Every count matches the records there, and nothing follows them. (Our own
    walker: dnslib refuses labels that are not UTF-8, which DNS allows.)"""
    _id, _flags, qd, an, ns, ar = HEAD.unpack_from(reply)
    offset = 12
    for _ in range(qd):
        _name, offset = wire.read_name(reply, offset)
        offset += 4
    _spans, end = wire.walk_records(reply, offset, an + ns + ar)
    assert end == len(reply)


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(resolver: Resolver, loop, data: bytes) -> None:
    check_reply(data, resolver.answer_cached(data, "192.168.1.9"))
    check_reply(data, resolve(resolver, loop, data))
    with contextlib.suppress(wire.Drop, wire.BadQuery):
        wire.parse_query(data)


labels = st.lists(st.binary(min_size=0, max_size=70), min_size=0, max_size=6)


@st.composite
def near_queries(draw: st.DrawFn) -> bytes:
    """Queries that are almost right: odd labels, counts, pointers, OPTs, cut short."""
    exact = draw(st.booleans())
    name = b"".join(
        bytes([len(x) if exact else draw(st.integers(0, 255))]) + x for x in draw(labels)
    )
    name += draw(st.sampled_from([b"\x00", b"\x00", b"\xc0\x0c", b"\xc0\x00", b"", b"\x01"]))
    counts = draw(
        st.one_of(
            st.just((1, 0, 0, 0)),
            st.just((1, 0, 0, 1)),
            st.tuples(*(st.integers(0, 3) for _ in range(4))),
        )
    )
    flags = draw(
        st.one_of(st.sampled_from([0, wire.RD, wire.RD | wire.CD]), st.integers(0, 0xFFFF))
    )
    qtype = draw(st.sampled_from([1, 28, 12, 255, 252, 41, 65535]))
    extra = draw(st.sampled_from([b"", opt(), opt(1), opt(rdata=b"\x00\x0a\x00\x02ab"), b"\x00"]))
    data = HEAD.pack(draw(st.integers(0, 0xFFFF)), flags, *counts) + name
    data += struct.pack(">HH", qtype, draw(st.sampled_from([1, 3, 255]))) + extra
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


@FUZZ
@given(near_queries())
def test_fuzz_near_queries(resolver: Resolver, loop, data: bytes) -> None:
    check_reply(data, resolver.answer_cached(data, "192.168.1.9"))
    check_reply(data, resolve(resolver, loop, data))


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_upstream_replies(data: bytes) -> None:
    try:
        record = message.parse_upstream(data)
        message.from_upstream(record, QNAME, 1, 1)
    except message.UpstreamFormatError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 300))
def test_fuzz_ttl_walker(data: bytes, offset: int) -> None:
    with contextlib.suppress(wire.BadQuery):
        wire.walk_records(data, offset, 3)
