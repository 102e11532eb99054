"""The forwarder's logic: from query bytes to reply bytes.

Two entry points, both called on the event loop's thread:

- :meth:`Resolver.answer_cached` runs first for every UDP datagram. It takes
  the common shape of query (one question, no compression, no OPT or a plain
  one) apart with a few byte operations and answers cache hits on the spot,
  with no dnslib: this is what reaches tens of thousands of cached queries a
  second in Python. Anything else returns None and goes to the slow path.
- :meth:`Resolver.answer` (callbacks, no task per query)
  handles everything: strict parsing (FORMERR/NOTIMP/BADVERS or a drop for
  bad input), local names, block policies, the cache, then the upstreams,
  with concurrent identical misses coalesced into one upstream question.
  :meth:`Resolver.resolve` is the same as a coroutine (TCP uses it).

Queries waiting for an upstream are bounded: at most :data:`MAX_WAITING` in
all and :data:`MAX_WAITING_PER_CLIENT` per client address (a device's IPv6
addresses and its IPv4 one count together when the client alias knows them), so a LAN device
flooding random names can neither grow memory without limit nor crowd out
the others; queries over a limit are answered REFUSED at once and counted.

Every cacheable upstream answer that is a plain A or AAAA record set is also written
to the XDP fast path (:class:`~homegw.modules.dns.fastpath.FastPathCache`),
unless some group's policy blocks the name (XDP answers every client alike).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from dnslib import AAAA, RR, A

from homegw.modules.dns import message, wire
from homegw.modules.dns.blocklists import PolicySet
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.fastpath import FastPathCache
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.message import Template, UpstreamFormatError, render
from homegw.modules.dns.querylog import QueryLog, QueryLogEntry
from homegw.modules.dns.rebind import RebindGuard
from homegw.modules.dns.upstream import UpstreamClient, UpstreamReply
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

MAX_WAITING = 2048  # queries waiting for upstream answers, all clients together
MAX_WAITING_PER_CLIENT = 256  # ... and from one client address

AnswerHook = Callable[[str, str, list[str]], None]
# (client address, query name) -> whether DPI's parental controls block the
# name for that client now (an app or category blocked for the device)
QueryFilter = Callable[[str, str], bool]
Respond = Callable[[bytes | None], None]  # gets the reply (None: send nothing)


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
    udp_queries: int = 0  # datagrams received
    tcp_queries: int = 0
    udp_hits: int = 0  # cache hits answered by answer_cached (byte operations)
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
    refused_busy: int = 0  # REFUSED: MAX_WAITING queries were waiting already
    refused_client: int = 0  # REFUSED: this client had MAX_WAITING_PER_CLIENT waiting
    fast_path_writes: int = 0
    hook_errors: int = 0
    errors: int = 0  # bugs: exceptions caught at the top of a handler
    upstream_answers: int = 0  # answers that came from upstream, and their round trips:
    upstream_ms_total: float = 0.0  # mean latency = upstream_ms_total / upstream_answers

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Outcome:
    template: Template
    source: str  # cache | upstream | local | blocked | error
    elapsed: int = 0  # seconds the template has been cached
    upstream_ms: float | None = None


@dataclass(slots=True, eq=False)
class _Waiter:
    query: Query
    client: str
    tcp: bool
    respond: Respond
    device: str  # what its waiting counts against (Resolver._device)


@dataclass(slots=True, eq=False)
class _Flight:
    """One upstream question and the queries waiting for its answer."""

    query: Query  # the first one: its name is the one asked
    waiters: list[_Waiter] = field(default_factory=list)


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
        self.query_filter: QueryFilter | None = None
        # IPv6 client address -> the same device's IPv4 address, or None
        self.client_alias: Callable[[str], str | None] | None = None
        self.fast_path: FastPathCache | None = None
        self.stats = ResolverStats()
        self._lock = threading.Lock()  # the cache: also read by other threads (stats)
        self._inflight: dict[bytes, _Flight] = {}
        self.waiting = 0  # queries waiting for an upstream answer
        self._waiting_by_client: dict[str, int] = {}

    def purge_expired(self) -> int:
        """Drop expired cache entries (the event loop calls this now and then)."""
        with self._lock:
            return self.cache.purge_expired(self.clock())

    # -- the fast answer to UDP cache hits ------------------------------------
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
        device = self._device(client)
        policy = self.policies.for_client(device)
        if not policy.empty and policy.is_blocked(t.name):
            return None
        if self._filtered(device, t.name):
            return None  # the full path answers it as blocked
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
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

        def respond(reply: bytes | None) -> None:
            if not future.done():  # (a TCP client that went away cancelled it)
                future.set_result(reply)

        self.answer(data, client, tcp, respond)
        return await future

    def answer(self, data: bytes, client: str, tcp: bool, respond: Respond) -> None:
        """Answer any query: respond(reply) now, or once the upstream answered."""
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            self.stats.dropped += 1
            respond(None)
            return
        except wire.BadQueryWithQuery as exc:
            respond(wire.badvers_reply(exc.query))
            return
        except wire.BadQuery as exc:
            self._count_error(exc.rcode)
            log.debug("bad query from %s: %s", client, exc)
            respond(wire.error_reply(data, exc.rcode))
            return
        outcome = self._outcome(query, client)
        if outcome is not None:
            respond(self._reply(query, client, tcp, outcome))
            return
        device = self._device(client)  # a device's IPv6 and IPv4 addresses share its share
        if self._over_limit(device):
            outcome = Outcome(self._error(query, REFUSED), "error")
            respond(self._reply(query, client, tcp, outcome))
            return
        self._wait(_Waiter(query, client, tcp, respond, device))

    def _reply(self, query: Query, client: str, tcp: bool, outcome: Outcome) -> bytes:
        t = outcome.template
        limit = TCP_LIMIT if tcp else query.udp_limit
        edns = query.edns is not None
        reply = render(t, query.id, query.flags, query.question, outcome.elapsed, edns, limit)
        if reply[2] & 0x02:
            self.stats.truncated += 1
        self._record(client, t, outcome.source, outcome.upstream_ms, reply)
        return bytes(reply)

    def _outcome(self, query: Query, client: str) -> Outcome | None:
        """The answer if no upstream is needed, else None."""
        if query.qclass != CLASS_IN:
            return Outcome(self._error(query, REFUSED), "error")
        if query.qtype in (TYPE_AXFR, TYPE_IXFR):
            return Outcome(self._error(query, NOTIMP), "error")
        local = self.local.answer(query)
        if local is not None:
            self.stats.local += 1
            return Outcome(local, "local")
        device = self._device(client)
        if self.policies.for_client(device).is_blocked(query.name) or self._filtered(
            device, query.name
        ):
            self.stats.blocked += 1
            return Outcome(self._blocked(query), "blocked")
        now = self.clock()
        with self._lock:
            entry = self.cache.get(query.key, now)
        if entry is not None:
            self.stats.cache_hits += 1
            return Outcome(entry.template, "cache", entry.elapsed(now))
        return None

    def _device(self, client: str) -> str:
        """The address policies, the query filter and the answer hook know the
        client by: an IPv6 client's IPv4 address when client_alias knows it
        (groups and DPI are by IPv4 address), else the client's own."""
        alias = self.client_alias
        if alias is None or ":" not in client:
            return client
        try:
            return alias(client) or client
        except Exception:
            self.stats.hook_errors += 1
            log.exception("client alias failed for %s", client)
            return client

    def _filtered(self, client: str, name: str) -> bool:
        """Whether the query filter (DPI) blocks the name for this client; a
        failing filter blocks nothing (counted)."""
        check = self.query_filter
        if check is None:
            return False
        try:
            return check(client, name)
        except Exception:
            self.stats.hook_errors += 1
            log.exception("query filter failed for %s", name)
            return False

    # -- waiting for the upstreams ------------------------------------------------
    def _over_limit(self, client: str) -> bool:
        """Whether this client's query may not wait for an upstream (counted)."""
        if self.waiting >= MAX_WAITING:
            self.stats.refused_busy += 1
            return True
        if self._waiting_by_client.get(client, 0) >= MAX_WAITING_PER_CLIENT:
            self.stats.refused_client += 1
            return True
        return False

    def _wait(self, waiter: _Waiter) -> None:
        """Join the identical question in flight, or ask the upstreams."""
        self.waiting += 1
        by_client = self._waiting_by_client
        by_client[waiter.device] = by_client.get(waiter.device, 0) + 1
        key = waiter.query.key
        flight = self._inflight.get(key)
        if flight is not None:
            self.stats.coalesced += 1
            flight.waiters.append(waiter)
            return
        flight = self._inflight[key] = _Flight(waiter.query, [waiter])
        self.stats.forwarded += 1
        query = flight.query
        try:
            self.upstream.ask(
                query.qname.lower(),
                query.qtype,
                query.qclass,
                lambda reply, error: self._landed(key, flight, reply, error),
            )
        except Exception as exc:  # a bug: answer (SERVFAIL) and free the flight
            self.stats.errors += 1
            log.exception("asking the upstreams for %s failed", query.name)
            self._landed(key, flight, None, str(exc))

    def _landed(
        self, key: bytes, flight: _Flight, reply: UpstreamReply | None, error: str | None
    ) -> None:
        """The upstream answer (or failure) for a flight: reply to every waiter."""
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        waiters, flight.waiters = flight.waiters, []  # (answered once, whatever happens)
        if not waiters:
            return
        try:
            outcome = self._upstream_outcome(flight.query, reply, error)
        except Exception:  # a bug: the waiters still get an answer
            self.stats.errors += 1
            log.exception("upstream answer for %s failed", flight.query.name)
            outcome = Outcome(self._error(flight.query, SERVFAIL), "error")
        by_client = self._waiting_by_client
        for waiter in waiters:
            self.waiting -= 1
            left = by_client[waiter.device] - 1
            if left:
                by_client[waiter.device] = left
            else:
                del by_client[waiter.device]
            try:
                waiter.respond(self._reply(waiter.query, waiter.client, waiter.tcp, outcome))
            except Exception:
                self.stats.errors += 1
                log.exception("reply to %s failed", waiter.client)

    def _upstream_outcome(
        self, query: Query, reply: UpstreamReply | None, error: str | None
    ) -> Outcome:
        qname = query.qname.lower()
        try:
            if reply is None:
                raise UpstreamFormatError(error or "no upstream answer")
            template = message.template_of_reply(
                reply.data, qname, query.qtype, query.qclass, query.name
            )
        except UpstreamFormatError as exc:
            log.info("SERVFAIL for %s: %s", query.name, exc)
            self.stats.servfail += 1
            return Outcome(self._error(query, SERVFAIL), "error")
        if template.addresses and self.rebind.violates(query.name, template.addresses):
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
        if entry is None or self.fast_path is None or template.rrset is None:
            return
        if query.qtype not in (TYPE_A, TYPE_AAAA) or self.policies.blocked_anywhere(template.name):
            return
        expires_ns = time.monotonic_ns() + entry.remaining(now) * 1_000_000_000
        if self.fast_path.put(query.qname.lower(), template.rrset, expires_ns, query.qtype):
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
        if upstream_ms is not None:
            self.stats.upstream_answers += 1
            self.stats.upstream_ms_total += upstream_ms
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
                hook(self._device(client), t.name, list(t.addresses))
            except Exception:
                self.stats.hook_errors += 1
                log.exception("on_answer hook failed for %s", t.name)
