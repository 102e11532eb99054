"""DNS answer cache: TTLs counted down on a fake clock, RFC 2308 negative
caching, LRU bound, and the bytes of rendered replies."""

from __future__ import annotations

import struct

from dnslib import AAAA, CNAME, QTYPE, RR, SOA, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from homegw.modules.dns import message, wire
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.message import Template, from_upstream, from_wire, parse_upstream, render

NAME = "www.example.test"
QNAME = wire.text_to_wire(NAME)
T0 = 1000.0


def upstream_reply(rcode: int = 0, answers=(), authority=(), qname: str = NAME, qtype: int = 1):
    record = DNSRecord(DNSHeader(id=7, qr=1, rd=1, ra=1, rcode=rcode), q=DNSQuestion(qname, qtype))
    record.rr, record.auth = list(answers), list(authority)
    return record.pack()


def template_of(data: bytes, qname: str = NAME, qtype: int = 1) -> Template:
    return from_upstream(parse_upstream(data), wire.text_to_wire(qname), qtype, 1)


def a_rr(address: str, ttl: int, name: str = NAME) -> RR:
    return RR(name, QTYPE.A, rdata=A(address), ttl=ttl)


def soa_rr(ttl: int, minimum: int) -> RR:
    soa = SOA("ns.example.test", "admin.example.test", (1, 3600, 600, 86400, minimum))
    return RR("example.test", QTYPE.SOA, rdata=soa, ttl=ttl)


def client_reply(t: Template, elapsed: int, question_name: str = NAME) -> DNSRecord:
    question = wire.text_to_wire(question_name) + struct.pack(">HH", 1, 1)
    data = render(t, 0x4242, wire.RD, question, elapsed, edns=False, limit=512)
    return DNSRecord.parse(bytes(data))


def ttls(record: DNSRecord) -> list[int]:
    return [rr.ttl for rr in record.rr + record.auth]


def test_hit_lowers_ttl_by_whole_seconds_cached() -> None:
    cache = DnsCache(10)
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    cache.put(b"k", t, T0)
    entry = cache.get(b"k", T0 + 100.7)
    assert entry is not None
    reply = client_reply(entry.template, entry.elapsed(T0 + 100.7))
    assert ttls(reply) == [200]
    assert [str(rr.rdata) for rr in reply.rr] == ["198.51.100.80"]
    assert entry.remaining(T0 + 100.7) == 200
    assert (cache.hits, cache.misses) == (1, 0)


def test_entry_expires_at_its_ttl() -> None:
    cache = DnsCache(10)
    cache.put(b"k", template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)])), T0)
    assert cache.get(b"k", T0 + 299.9) is not None
    assert cache.get(b"k", T0 + 300.0) is None
    assert (cache.expired, len(cache)) == (1, 0)


def test_rendered_reply_is_exact() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    got = render(t, 0x4242, wire.RD | wire.CD, QNAME + b"\x00\x01\x00\x01", 40, False, 512)
    expected = DNSRecord(DNSHeader(id=0x4242, qr=1, rd=1, ra=1, cd=1), q=DNSQuestion(NAME, QTYPE.A))
    expected.add_answer(a_rr("198.51.100.80", 260))
    assert bytes(got) == expected.pack()


def test_reply_keeps_the_clients_letter_case() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    reply = client_reply(t, 0, "WwW.ExAmple.TEST")
    assert str(reply.q.qname) == "WwW.ExAmple.TEST."
    assert str(reply.rr[0].rname) == "WwW.ExAmple.TEST."  # compressed onto the question


def test_each_record_counts_down_from_its_own_ttl() -> None:
    answers = [
        RR(NAME, QTYPE.CNAME, rdata=CNAME("edge.example.test"), ttl=3600),
        a_rr("198.51.100.81", 60, "edge.example.test"),
    ]
    t = template_of(upstream_reply(answers=answers))
    assert t.cache_ttl == 60
    assert t.rrset is None  # a CNAME chain never goes to the XDP fast path
    assert ttls(client_reply(t, 30)) == [3570, 30]


def test_nxdomain_cached_for_soa_minimum_rfc2308() -> None:
    cache = DnsCache(10)
    t = template_of(upstream_reply(rcode=3, authority=[soa_rr(3600, 60)]))
    assert t.cache_ttl == 60
    assert cache.put(b"nx", t, T0) is not None
    entry = cache.get(b"nx", T0 + 59)
    assert entry is not None
    reply = client_reply(entry.template, entry.elapsed(T0 + 59))
    assert reply.header.rcode == 3
    assert ttls(reply) == [1]  # the SOA's TTL is the negative TTL, counted down
    assert cache.get(b"nx", T0 + 60) is None


def test_negative_ttl_is_soa_ttl_when_smaller() -> None:
    t = template_of(upstream_reply(rcode=3, authority=[soa_rr(30, 600)]))
    assert t.cache_ttl == 30


def test_nodata_cached_like_nxdomain() -> None:
    t = template_of(upstream_reply(rcode=0, authority=[soa_rr(900, 120)]))
    assert (t.rcode, t.cache_ttl, t.addresses) == (0, 120, ())


def test_negative_answer_without_soa_is_not_cached() -> None:
    cache = DnsCache(10)
    t = template_of(upstream_reply(rcode=3))
    assert t.cache_ttl is None
    assert cache.put(b"nx", t, T0) is None
    assert len(cache) == 0


def test_servfail_and_zero_ttl_are_not_cached() -> None:
    assert template_of(upstream_reply(rcode=2)).cache_ttl is None
    assert template_of(upstream_reply(answers=[a_rr("198.51.100.80", 0)])).cache_ttl is None


def test_ttl_with_top_bit_set_means_zero_rfc2181() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 0x80000001)]))
    assert t.cache_ttl is None
    assert ttls(client_reply(t, 0)) == [0]


def test_cache_life_capped_at_a_day() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 7 * 86400)]))
    assert t.cache_ttl == message.MAX_CACHE_TTL == 86400


def test_lru_evicts_least_recently_used() -> None:
    cache = DnsCache(2)
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    cache.put(b"a", t, T0)
    cache.put(b"b", t, T0)
    assert cache.get(b"a", T0 + 1) is not None  # a is now the most recent
    cache.put(b"c", t, T0 + 2)
    assert cache.get(b"b", T0 + 3) is None
    assert cache.get(b"a", T0 + 3) is not None
    assert cache.get(b"c", T0 + 3) is not None
    assert (cache.evictions, len(cache)) == (1, 2)


def test_size_zero_caches_nothing() -> None:
    cache = DnsCache(0)
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    assert cache.put(b"a", t, T0) is None
    assert cache.get(b"a", T0) is None


def test_purge_drops_only_expired_entries() -> None:
    cache = DnsCache(10)
    cache.put(b"short", template_of(upstream_reply(answers=[a_rr("198.51.100.1", 10)])), T0)
    cache.put(b"long", template_of(upstream_reply(answers=[a_rr("198.51.100.2", 500)])), T0)
    assert cache.purge_expired(T0 + 10) == 1
    assert cache.get(b"long", T0 + 10) is not None


def test_edns_query_gets_our_opt_record() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.80", 300)]))
    data = render(t, 1, 0, QNAME + b"\x00\x01\x00\x01", 0, edns=True, limit=1232)
    assert bytes(data[-11:]) == wire.OPT_RECORD
    assert struct.unpack_from(">H", data, 10)[0] == 1
    assert DNSRecord.parse(bytes(data)).ar[0].rclass == 1232  # the UDP size we accept


def test_too_big_for_the_client_sets_tc_with_question_only() -> None:
    answers = [a_rr(f"198.51.100.{i}", 300) for i in range(1, 41)]
    t = template_of(upstream_reply(answers=answers))
    question = QNAME + b"\x00\x01\x00\x01"
    data = bytes(render(t, 9, wire.RD, question, 0, edns=False, limit=512))
    assert data == wire.HEADER.pack(9, wire.QR | wire.RA | wire.RD | wire.TC, 1, 0, 0, 0) + question


def test_answer_of_plain_a_records_is_fast_path_material() -> None:
    t = template_of(upstream_reply(answers=[a_rr("198.51.100.1", 300), a_rr("198.51.100.2", 300)]))
    assert t.rrset == ("198.51.100.1", "198.51.100.2")
    mixed = template_of(
        upstream_reply(answers=[a_rr("198.51.100.1", 300), a_rr("198.51.100.2", 200)])
    )
    assert mixed.rrset is None  # one TTL per RRset, or the slow path answers


def test_upstream_question_in_other_case_still_packs() -> None:
    data = upstream_reply(
        answers=[a_rr("198.51.100.80", 300, "WWW.EXAMPLE.TEST")], qname="WWW.EXAMPLE.TEST"
    )
    t = template_of(data)
    assert t.wire[12 : 12 + len(QNAME)] == QNAME  # kept lower-case; clients' case spliced in
    assert message.label_of(QNAME) == DNSLabel(NAME)


def test_answer_of_plain_aaaa_records_is_fast_path_material() -> None:
    aaaa = [RR(NAME, QTYPE.AAAA, rdata=AAAA(f"2001:db8::{i}"), ttl=60) for i in (1, 2)]
    data = upstream_reply(answers=aaaa, qtype=QTYPE.AAAA)
    for t in (template_of(data, qtype=QTYPE.AAAA), from_wire(data, QNAME, QTYPE.AAAA, 1)):
        assert t is not None and t.rrset == ("2001:db8::1", "2001:db8::2")
    # an A record in an AAAA answer, or AAAA records for an A question: the slow path's
    mixed = upstream_reply(answers=[*aaaa, a_rr("198.51.100.1", 60)], qtype=QTYPE.AAAA)
    assert template_of(mixed, qtype=QTYPE.AAAA).rrset is None
    assert from_wire(mixed, QNAME, QTYPE.AAAA, 1).rrset is None
    assert from_wire(upstream_reply(answers=aaaa), QNAME, QTYPE.A, 1).rrset is None
