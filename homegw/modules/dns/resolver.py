"""The forwarder's logic: from query bytes to reply bytes.

Two entry points, one per thread:

- :meth:`Resolver.answer_cached` runs on the UDP receive thread for every
  datagram. It takes the common shape of query (one question, no compression,
  no OPT or a plain one) apart with a few byte operations and answers cache
  hits on the spot, with no dnslib and no event loop: this is what reaches
  tens of thousands of cached queries a second in Python. Anything else
  returns None and goes to the slow path.
- :meth:`Resolver.resolve` (asyncio, event-loop thread) handles everything:
  strict parsing (FORMERR/NOTIMP/BADVERS or a drop for bad input), local
  names, block policies, the cache, then the upstreams, with concurrent
  identical misses coalesced into one upstream query.

Every cacheable upstream answer that is a plain A record set is also written
to the XDP fast path (:class:`~homegw.modules.dns.fastpath.FastPathCache`),
unless some group's policy blocks the name (XDP answers every client alike).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from dnslib import AAAA, RR, A

from homegw.modules.dns import message, wire
from homegw.modules.dns.blocklists import PolicySet
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.fastpath import FastPathCache
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.message import Template, UpstreamFormatError, render
from homegw.modules.dns.querylog import QueryLog, QueryLogEntry
from homegw.modules.dns.rebind import RebindGuard
from homegw.modules.dns.upstream import UpstreamClient, UpstreamError
from homegw.modules.dns.wire import (
    CLASS_IN,
    CLASSIC_UDP_SIZE,
    MAX_UDP_SIZE,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_AXFR,
    TYPE_IXFR,
    Query,
)

log = logging.getLogger(__name__)

BLOCKED_TTL = 2  # short, so that an unblocked name works again at once (as Pi-hole)
TCP_LIMIT = 65535
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0
_RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    16: "BADVERS",
}

AnswerHook = Callable[[str, str, list[str]], None]


def quick_shape(data: bytes) -> tuple[int, int, bool] | None:
    """(end of question, client's UDP limit, has OPT) of a query of the common
    shape: one uncompressed question, then nothing or one EDNS0 OPT record.
    None for anything else, which the strict parser then handles."""
    end = len(data)
    if end < 17 or data[2] & 0xFA or data[4:10] != _ONE_QUESTION or data[10]:
        return None  # a response, an opcode, TC, or unusual counts
    i = 12
    while (length := data[i]) != 0:
        if length > 63:
            return None  # compression pointer or bad label
        i += length + 1
        if i >= end:
            return None
    qend = i + 5
    if qend - 12 > wire.MAX_NAME + 4:
        return None
    if data[11] == 0:
        return (qend, CLASSIC_UDP_SIZE, False) if qend == end else None
    if data[11] != 1 or qend + 11 > end or data[qend : qend + 3] != b"\x00\x00\x29":
        return None
    if data[qend + 6] or qend + 11 + (data[qend + 9] << 8 | data[qend + 10]) != end:
        return None  # EDNS version > 0, or bytes after the OPT record
    limit = min(max(data[qend + 3] << 8 | data[qend + 4], CLASSIC_UDP_SIZE), MAX_UDP_SIZE)
    return qend, limit, True


@dataclass
class ResolverStats:
    udp_queries: int = 0  # datagrams received (UDP thread)
    tcp_queries: int = 0
    udp_hits: int = 0  # cache hits answered on the UDP thread
    cache_hits: int = 0  # cache hits answered by the slow path
    forwarded: int = 0  # misses that needed an upstream answer
    coalesced: int = 0  # misses that joined an identical one in flight
    local: int = 0
    blocked: int = 0
    servfail: int = 0
    formerr: int = 0
    notimp: int = 0
    dropped: int = 0
    truncated: int = 0  # UDP replies sent with TC (too big for the client)
    rebind_refused: int = 0
    fast_path_writes: int = 0
    hook_errors: int = 0
    errors: int = 0  # bugs: exceptions caught at the top of a handler

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Outcome:
    template: Template
    source: str  # cache | upstream | local | blocked | error
    elapsed: int = 0  # seconds the template has been cached
    upstream_ms: float | None = None


class Resolver:
    def __init__(
        self,
        *,
        cache: DnsCache,
        local: LocalNames,
        policies: PolicySet,
        upstream: UpstreamClient,
        rebind: RebindGuard,
        querylog: QueryLog,
        block_nxdomain: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.local = local
        self.policies = policies
        self.upstream = upstream
        self.rebind = rebind
        self.querylog = querylog
        self.block_nxdomain = block_nxdomain
        self.clock = clock
        self.on_answer: AnswerHook | None = None
        self.fast_path: FastPathCache | None = None
        self.stats = ResolverStats()
        self._lock = threading.Lock()  # the cache is shared by both threads
        self._inflight: dict[bytes, asyncio.Task[Outcome]] = {}

    def purge_expired(self) -> int:
        """Drop expired cache entries (the event loop calls this now and then)."""
        with self._lock:
            return self.cache.purge_expired(self.clock())

    # -- the UDP thread's fast answer ----------------------------------------
    def answer_cached(self, data: bytes, client: str) -> bytearray | None:
        """The reply to a cache hit of the common shape, or None (slow path)."""
        shape = quick_shape(data)
        if shape is None:
            return None
        qend, limit, edns = shape
        question = bytes(data[12:qend])  # (bytes even when data is a bytearray)
        now = self.clock()
        with self._lock:
            entry = self.cache.get(question.lower(), now, count_miss=False)
        if entry is None:
            return None
        t = entry.template
        policy = self.policies.for_client(client)
        if not policy.empty and policy.is_blocked(t.name):
            return None
        qid = data[0] << 8 | data[1]
        qflags = data[2] << 8 | data[3]
        reply = render(t, qid, qflags, question, entry.elapsed(now), edns, limit)
        self.stats.udp_hits += 1
        if reply[2] & 0x02:
            self.stats.truncated += 1
        self._record(client, t, "cache", None, reply)
        return reply

    # -- the event loop's full path --------------------------------------------
    async def resolve(self, data: bytes, client: str, tcp: bool = False) -> bytes | None:
        """The reply to any query (None: drop it)."""
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            self.stats.dropped += 1
            return None
        except wire.BadQueryWithQuery as exc:
            return wire.badvers_reply(exc.query)
        except wire.BadQuery as exc:
            self._count_error(exc.rcode)
            log.debug("bad query from %s: %s", client, exc)
            return wire.error_reply(data, exc.rcode)
        outcome = await self._outcome(query, client)
        t = outcome.template
        limit = TCP_LIMIT if tcp else query.udp_limit
        edns = query.edns is not None
        reply = render(t, query.id, query.flags, query.question, outcome.elapsed, edns, limit)
        if reply[2] & 0x02:
            self.stats.truncated += 1
        self._record(client, t, outcome.source, outcome.upstream_ms, reply)
        return bytes(reply)

    async def _outcome(self, query: Query, client: str) -> Outcome:
        if query.qclass != CLASS_IN:
            return Outcome(self._error(query, REFUSED), "error")
        if query.qtype in (TYPE_AXFR, TYPE_IXFR):
            return Outcome(self._error(query, NOTIMP), "error")
        local = self.local.answer(query)
        if local is not None:
            self.stats.local += 1
            return Outcome(local, "local")
        if self.policies.for_client(client).is_blocked(query.name):
            self.stats.blocked += 1
            return Outcome(self._blocked(query), "blocked")
        now = self.clock()
        with self._lock:
            entry = self.cache.get(query.key, now)
        if entry is not None:
            self.stats.cache_hits += 1
            return Outcome(entry.template, "cache", entry.elapsed(now))
        return await self._coalesced(query)

    async def _coalesced(self, query: Query) -> Outcome:
        """One upstream question per distinct miss in flight. The question runs
        as its own task, so a client that goes away cancels only its wait."""
        key = query.key
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._forward(query))
            self._inflight[key] = task
            task.add_done_callback(lambda _done: self._inflight.pop(key, None))
        else:
            self.stats.coalesced += 1
        return await asyncio.shield(task)

    async def _forward(self, query: Query) -> Outcome:
        self.stats.forwarded += 1
        qname = query.qname.lower()
        try:
            reply = await self.upstream.query(qname, query.qtype, query.qclass)
            record = message.parse_upstream(reply.data)
            template = message.from_upstream(record, qname, query.qtype, query.qclass)
        except (UpstreamError, UpstreamFormatError) as exc:
            log.info("SERVFAIL for %s: %s", query.name, exc)
            self.stats.servfail += 1
            return Outcome(self._error(query, SERVFAIL), "error")
        if self.rebind.violates(query.name, template.addresses):
            addresses = ", ".join(template.addresses)
            log.warning("DNS rebinding refused: %s -> %s", query.name, addresses)
            self.stats.rebind_refused += 1
            return Outcome(self._error(query, REFUSED), "error")
        self._store(query, template)
        return Outcome(template, "upstream", 0, round(reply.latency * 1000, 3))

    def _store(self, query: Query, template: Template) -> None:
        now = self.clock()
        with self._lock:
            entry = self.cache.put(query.key, template, now)
        if entry is None or self.fast_path is None or template.a_rrset is None:
            return
        if query.qtype != TYPE_A or self.policies.blocked_anywhere(template.name):
            return
        expires_ns = time.monotonic_ns() + entry.remaining(now) * 1_000_000_000
        if self.fast_path.put(query.qname.lower(), template.a_rrset, expires_ns):
            self.stats.fast_path_writes += 1

    # -- replies the resolver makes itself -------------------------------------
    def _error(self, query: Query, rcode: int) -> Template:
        return message.error(query.qname, query.qtype, query.qclass, rcode)

    def _blocked(self, query: Query) -> Template:
        if self.block_nxdomain:
            return message.build(query.qname, query.qtype, query.qclass, rcode=NXDOMAIN)
        owner = message.label_of(query.qname)
        answers: list[RR] = []
        if query.qtype == TYPE_A:
            answers = [RR(owner, TYPE_A, rdata=A("0.0.0.0"), ttl=BLOCKED_TTL)]
        elif query.qtype == TYPE_AAAA:
            answers = [RR(owner, TYPE_AAAA, rdata=AAAA("::"), ttl=BLOCKED_TTL)]
        return message.build(query.qname, query.qtype, query.qclass, rcode=NOERROR, answers=answers)

    def _count_error(self, rcode: int) -> None:
        if rcode == NOTIMP:
            self.stats.notimp += 1
        else:
            self.stats.formerr += 1

    # -- query log and DPI hook --------------------------------------------------
    def _record(
        self, client: str, t: Template, source: str, upstream_ms: float | None, reply: bytearray
    ) -> None:
        rcode = reply[3] & 0x0F
        blocked = source == "blocked"
        self.querylog.add(
            QueryLogEntry(
                time=time.time(),
                client=client,
                name=t.name,
                qtype=message.qtype_text(t.qtype),
                rcode=_RCODE_NAMES.get(rcode, str(rcode)),
                answer=t.answer_text,
                source=source,
                blocked=blocked,
                upstream_ms=upstream_ms,
            )
        )
        hook = self.on_answer
        if hook is not None and t.addresses and not blocked and source != "local":
            try:
                hook(client, t.name, list(t.addresses))
            except Exception:
                self.stats.hook_errors += 1
                log.exception("on_answer hook failed for %s", t.name)
