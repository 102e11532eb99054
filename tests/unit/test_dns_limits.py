"""Queries waiting for an upstream are bounded, in all and per client: over a
limit a query is answered REFUSED at once and counted, other clients still get
through, and nothing is left behind once the upstream has answered."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from homegw.modules.dns import resolver as resolver_module
from homegw.modules.dns.blocklists import ListLoader, build_policies
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.querylog import QueryLog
from homegw.modules.dns.rebind import RebindGuard
from homegw.modules.dns.resolver import Resolver
from homegw.modules.dns.upstream import Done, UpstreamClient, UpstreamReply


class HeldUpstream(UpstreamClient):
    """Takes every question and answers only when the test says so."""

    def __init__(self) -> None:
        super().__init__(lambda: ["198.51.100.53"], 2.0)
        self.held: list[tuple[bytes, int, Done]] = []

    def ask(self, qname: bytes, qtype: int, qclass: int, done: Done) -> None:
        self.stats.queries += 1
        self.held.append((qname, qtype, done))

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for qname, qtype, done in held:
            name = ".".join(label.decode() for label in _labels(qname))
            reply = DNSRecord.question(name, QTYPE[qtype]).reply()
            reply.add_answer(RR(name, QTYPE.A, rdata=A("198.51.100.7"), ttl=60))
            done(UpstreamReply(reply.pack(), "198.51.100.53", 0.01, False), None)


def _labels(wire: bytes) -> list[bytes]:
    labels, offset = [], 0
    while wire[offset]:
        labels.append(wire[offset + 1 : offset + 1 + wire[offset]])
        offset += 1 + wire[offset]
    return labels


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    return Resolver(
        cache=DnsCache(10000),
        local=LocalNames("lan", "homegw", ipaddress.IPv4Interface("192.168.1.1/24")),
        policies=build_policies(ListLoader(tmp_path), (), (), (), []),
        upstream=HeldUpstream(),
        rebind=RebindGuard(True),
        querylog=QueryLog(10),
    )


class Replies:
    def __init__(self) -> None:
        self.got: list[DNSRecord] = []

    def __call__(self, reply: bytes | None) -> None:
        assert reply is not None
        self.got.append(DNSRecord.parse(reply))

    def rcodes(self) -> list[str]:
        return [RCODE[r.header.rcode] for r in self.got]


def ask(resolver: Resolver, client: str, name: str, replies: Replies) -> None:
    resolver.answer(DNSRecord.question(name).pack(), client, False, replies)


def held(resolver: Resolver) -> HeldUpstream:
    assert isinstance(resolver.upstream, HeldUpstream)
    return resolver.upstream


def test_one_client_flooding_random_names_is_refused_beyond_its_share(
    resolver: Resolver,
) -> None:
    upstream = held(resolver)
    flood, other = Replies(), Replies()
    limit = resolver_module.MAX_WAITING_PER_CLIENT
    for i in range(limit + 40):
        ask(resolver, "192.168.1.66", f"r{i}.example.test", flood)
    assert flood.rcodes() == ["REFUSED"] * 40  # at once, the first `limit` wait
    assert resolver.stats.refused_client == 40 and resolver.stats.refused_busy == 0
    assert len(upstream.held) == limit and resolver.waiting == limit
    ask(resolver, "192.168.1.12", "www.example.test", other)  # another device: asked
    assert len(upstream.held) == limit + 1 and other.got == []
    upstream.answer_all()
    assert other.rcodes() == ["NOERROR"] and str(other.got[0].a.rdata) == "198.51.100.7"
    assert flood.rcodes().count("NOERROR") == limit
    assert resolver.waiting == 0 and resolver._waiting_by_client == {}
    ask(resolver, "192.168.1.66", "again.example.test", flood)  # its share is back
    assert len(upstream.held) == 1


def test_all_waiting_queries_together_are_bounded(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolver_module, "MAX_WAITING", 50)
    upstream, replies = held(resolver), Replies()
    for i in range(60):
        ask(resolver, f"192.168.1.{100 + i % 6}", f"n{i}.example.test", replies)
    assert replies.rcodes() == ["REFUSED"] * 10
    assert resolver.stats.refused_busy == 10 and resolver.stats.refused_client == 0
    assert len(upstream.held) == 50
    upstream.answer_all()
    assert replies.rcodes().count("NOERROR") == 50 and resolver.waiting == 0


def test_coalesced_queries_each_count_against_the_client(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolver_module, "MAX_WAITING_PER_CLIENT", 3)
    upstream, replies = held(resolver), Replies()
    for _ in range(5):
        ask(resolver, "192.168.1.66", "same.example.test", replies)
    assert replies.rcodes() == ["REFUSED"] * 2
    assert len(upstream.held) == 1 and resolver.stats.coalesced == 2
    upstream.answer_all()
    assert replies.rcodes() == ["REFUSED"] * 2 + ["NOERROR"] * 3


def test_a_device_asking_from_many_ipv6_addresses_has_one_share(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Privacy addresses do not multiply a device's share: the alias (its
    IPv4 address, by MAC) is what its waiting counts against."""
    monkeypatch.setattr(resolver_module, "MAX_WAITING_PER_CLIENT", 4)
    resolver.client_alias = lambda client: "192.168.1.66" if client.startswith("fd00:66:") else None
    upstream, replies, stranger = held(resolver), Replies(), Replies()
    for i in range(6):
        ask(resolver, f"fd00:66::{i + 1:x}", f"p{i}.example.test", replies)
    assert replies.rcodes() == ["REFUSED"] * 2 and resolver.stats.refused_client == 2
    ask(resolver, "192.168.1.66", "v4.example.test", replies)  # its IPv4 shares it too
    assert resolver.stats.refused_client == 3
    ask(resolver, "fd00:99::1", "other.example.test", stranger)  # unknown: its own
    assert len(upstream.held) == 5
    upstream.answer_all()
    assert resolver.waiting == 0 and resolver._waiting_by_client == {}
