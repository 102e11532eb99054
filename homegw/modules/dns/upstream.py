"""Asking upstream resolvers: UDP with staggered failover, TCP when truncated.

One question goes to the preferred upstream first (the last one that answered).
If it has not answered after ``timeout / len(upstreams)`` seconds, the next
one is asked too, and so on; an upstream that refuses (ICMP port unreachable,
SERVFAIL, REFUSED, garbage) hands over at once. The first good reply wins;
when ``timeout`` has passed with none, the question fails (the resolver
answers SERVFAIL). So a dead upstream costs at most the time until failover,
never the whole timeout, and a question never takes longer than the timeout.

Everything runs on the event loop with callbacks, no task per query. The
queries go out on the random-port socket pool of
:mod:`homegw.modules.dns.upstream_pool` with random IDs. A reply is accepted
only if its ID is in flight on the socket it arrived on, it comes from the
address and port that query went to, and it carries our question (name
case-blind, type, class); anything else is ignored and counted by reason. An
ICMP error counts only if it quotes a query in flight to that destination. A
reply with TC set is retried over TCP to the same upstream within the same
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import itertools
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from homegw.modules.dns.upstream_pool import PoolSocket, SocketPool
from homegw.modules.dns.wire import (
    FORMERR,
    HEADER,
    HEADER_LEN,
    NOTIMP,
    OPT_RECORD,
    QR,
    RCODE_MASK,
    RD,
    REFUSED,
    SERVFAIL,
    TC,
)

log = logging.getLogger(__name__)

DNS_PORT = 53
FAILING_RCODES = (SERVFAIL, NOTIMP, REFUSED, FORMERR)  # ask another upstream
SERVERS_MAX_AGE = 1.0  # seconds the upstream list is reused before asking again

#: done(reply, None) or done(None, reason), called once per question.
Done = Callable[["UpstreamReply | None", "str | None"], None]


class UpstreamError(Exception):
    pass


@dataclass(slots=True)
class UpstreamReply:
    data: bytes
    server: str
    latency: float  # seconds from first send to this reply
    tcp: bool


@dataclass
class UpstreamStats:
    queries: int = 0  # questions sent upstream (one per coalesced miss)
    attempts: int = 0  # datagrams/connections to single upstreams
    tcp_retries: int = 0  # truncated UDP replies retried over TCP
    failovers: int = 0  # attempts started because an earlier one failed or was slow
    failures: int = 0  # questions that got no usable reply in time
    refused: int = 0  # attempts refused (ICMP unreachable, error rcodes, bad replies)
    sockets_opened: int = 0  # pool sockets bound (each on a new random port)
    # datagrams ignored, by reason (late replies after failover land in unknown_id)
    unknown_id: int = 0  # no query with this ID in flight on this socket
    wrong_source: int = 0  # not from the address/port the query went to
    wrong_question: int = 0  # right ID and source, but not our question (or not a reply)
    short_reply: int = 0  # shorter than a DNS header


def build_query(qid: int, qname: bytes, qtype: int, qclass: int) -> bytes:
    """RD=1, one question, our OPT record (1232-byte UDP replies)."""
    question = qname + struct.pack(">HH", qtype, qclass)
    return HEADER.pack(qid, RD, 1, 0, 0, 1) + question + OPT_RECORD


def matches(reply: bytes, qid: int, question: bytes) -> bool:
    """Is this the reply to our query (ID, QR, question case-blind)?"""
    if len(reply) < HEADER_LEN + len(question):
        return False
    rid, flags, qdcount = struct.unpack_from(">HHH", reply)
    if rid != qid or not flags & QR:
        return False
    if qdcount == 0:  # some servers send errors without the question
        return flags & RCODE_MASK in FAILING_RCODES
    got = reply[HEADER_LEN : HEADER_LEN + len(question)]
    return qdcount == 1 and got.lower() == question.lower()


def rcode_of(reply: bytes) -> int:
    return reply[3] & RCODE_MASK


def _canonical(server: str) -> str:
    """An address as the kernel spells it (RFC 5952 for IPv6); else as given."""
    try:
        return str(ipaddress.ip_address(server))
    except ValueError:
        return server


def _done_already(_reply: UpstreamReply | None, _error: str | None) -> None:
    """What a finished question holds instead of its caller's callback."""


class _Question:
    """One question to the upstreams: its attempts, timer and deadline."""

    __slots__ = (
        "qname",
        "qtype",
        "qclass",
        "wire",
        "servers",
        "next",
        "start",
        "deadline",
        "stagger",
        "done",
        "step_at",
        "attempts",
        "errors",
        "finished",
    )

    def __init__(self, question: tuple[bytes, int, int], servers: list[str], done: Done) -> None:
        self.qname, self.qtype, self.qclass = question
        self.wire = self.qname + struct.pack(">HH", self.qtype, self.qclass)
        self.servers = servers
        self.next = 0
        self.start = self.deadline = self.stagger = 0.0
        self.done = done
        self.step_at = 0.0  # when its next failover or its deadline is due
        self.attempts: list[_Attempt] = []
        self.errors: list[str] = []
        self.finished = False


class _Attempt:
    """The question sent to one upstream."""

    __slots__ = ("question", "server", "slot", "qid", "query", "tcp")

    def __init__(self, question: _Question, server: str) -> None:
        self.question = question
        self.server = server
        self.slot: PoolSocket | None = None
        self.qid = 0
        self.query = b""
        self.tcp: asyncio.Task[None] | None = None


class UpstreamClient:
    def __init__(
        self,
        servers: Callable[[], list[str]],
        timeout: float,
        port: int = DNS_PORT,
    ) -> None:
        self._servers = servers
        self.timeout = timeout
        self.port = port
        self.preferred: str | None = None
        self.stats = UpstreamStats()
        self._pool = SocketPool(self._datagram, self._icmp_error)
        self._pool6 = SocketPool(self._datagram, self._icmp_error, socket.AF_INET6)
        self._pool6_started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Failover and deadline steps of the questions in flight, earliest first
        # (finished ones are skipped when popped), and the one timer for them.
        self._steps: list[tuple[float, int, _Question]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._live = 0  # questions in flight
        self._servers_cache: tuple[float, str | None, list[str]] | None = None

    def servers(self) -> list[str]:
        """The upstreams in the order they are tried (preferred first), IPv6
        ones spelt as the kernel reports a reply's source."""
        servers = list(dict.fromkeys(map(_canonical, self._servers())))
        if self.preferred in servers:
            servers.remove(self.preferred)
            servers.insert(0, self.preferred)
        return servers

    def _current_servers(self, now: float) -> list[str]:
        """servers(), asked again at most every SERVERS_MAX_AGE seconds."""
        cached = self._servers_cache
        if cached is None or now - cached[0] > SERVERS_MAX_AGE or cached[1] != self.preferred:
            cached = self._servers_cache = (now, self.preferred, self.servers())
        return cached[2]

    # -- asking ------------------------------------------------------------------
    def ask(self, qname: bytes, qtype: int, qclass: int, done: Done) -> None:
        """Ask the upstreams (on the running event loop); done() gets the answer.
        It may be called before ask() returns (no upstream known)."""
        loop = self._loop
        if loop is None or loop.is_closed():  # asked once: it costs a getpid()
            self.close()
            loop = self._loop = asyncio.get_running_loop()
            self._pool.start(loop)
        now = loop.time()
        servers = self._current_servers(now)
        self.stats.queries += 1
        if not servers:
            self.stats.failures += 1
            done(None, "no upstream resolvers known")
            return
        question = _Question((qname, qtype, qclass), servers, done)
        self._live += 1
        question.start = now
        question.deadline = question.start + self.timeout
        question.stagger = self.timeout / len(servers)
        self._launch(question)
        if not question.finished:
            self._arm(question)

    def _launch(self, question: _Question) -> None:
        """Send the question to its next upstream."""
        server = question.servers[question.next]
        if question.next:
            self.stats.failovers += 1
        question.next += 1
        self.stats.attempts += 1
        attempt = _Attempt(question, server)
        question.attempts.append(attempt)
        try:
            assert self._loop is not None
            pool = self._pool_for(server)
            slot, qid = pool.register(self._loop.time(), attempt)
            attempt.slot, attempt.qid = slot, qid
            self.stats.sockets_opened = self._pool.opened + self._pool6.opened
            attempt.query = build_query(qid, question.qname, question.qtype, question.qclass)
            slot.sock.sendto(attempt.query, (server, self.port))
        except OSError as exc:  # no route, buffer full, not an IPv4 address, no fds...
            self._failed(attempt, f"{server}: {exc.strerror or exc}")

    def _pool_for(self, server: str) -> SocketPool:
        """The IPv6 pool for an IPv6 upstream (started on first use), else the IPv4 one."""
        if ":" not in server:
            return self._pool
        if not self._pool6_started:
            assert self._loop is not None
            self._pool6.start(self._loop)
            self._pool6_started = True
        return self._pool6

    def _arm(self, question: _Question) -> None:
        """Schedule the question's next step: failover or its deadline."""
        loop = self._loop
        assert loop is not None
        when = question.deadline
        if question.next < len(question.servers):
            when = min(when, loop.time() + question.stagger)
        question.step_at = when
        steps = self._steps
        if len(steps) > 2 * self._live + 1024:  # mostly finished questions: drop them
            steps[:] = [step for step in steps if step[2].step_at == step[0]]
            heapq.heapify(steps)
        heapq.heappush(steps, (when, next(self._sequence), question))
        timer = self._timer
        if timer is None or when < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(when, self._run_steps)

    def _run_steps(self) -> None:
        """Take every step that is due, then sleep until the next one."""
        loop = self._loop
        assert loop is not None
        self._timer = None
        steps = self._steps
        now = loop.time()
        while steps and steps[0][0] <= now:
            when, _sequence, question = heapq.heappop(steps)
            if not question.finished and question.step_at == when:
                self._step(question)
        if steps and self._timer is None:
            self._timer = loop.call_at(steps[0][0], self._run_steps)

    def _step(self, question: _Question) -> None:
        assert self._loop is not None
        if self._loop.time() >= question.deadline - 0.001:
            self._finish(question, None, "; ".join(question.errors) or "upstream timeout")
            return
        if question.next < len(question.servers):
            self._launch(question)
        if not question.finished:
            self._arm(question)

    # -- outcomes of attempts --------------------------------------------------------
    def _failed(self, attempt: _Attempt, reason: str) -> None:
        """An attempt that will not give a reply: try the next upstream at once."""
        question = attempt.question
        self._release(attempt)
        if question.finished or attempt not in question.attempts:
            return
        question.attempts.remove(attempt)
        self.stats.refused += 1
        question.errors.append(reason)
        if question.next < len(question.servers):
            self._launch(question)
            if not question.finished:
                self._arm(question)
        elif not question.attempts:
            self._finish(question, None, "; ".join(question.errors))

    def _replied(self, attempt: _Attempt, reply: bytes, tcp: bool) -> None:
        question = attempt.question
        if question.finished:
            return
        if not tcp and reply[2] & (TC >> 8):
            self.stats.tcp_retries += 1
            attempt.tcp = asyncio.get_running_loop().create_task(self._tcp(attempt))
            return
        rcode = rcode_of(reply)
        if rcode in FAILING_RCODES:
            self._failed(attempt, f"{attempt.server}: rcode {rcode}")
            return
        assert self._loop is not None
        latency = self._loop.time() - question.start
        self.preferred = attempt.server
        self._finish(question, UpstreamReply(reply, attempt.server, latency, tcp), None)

    def _finish(self, question: _Question, reply: UpstreamReply | None, error: str | None) -> None:
        question.finished = True  # its steps still queued are skipped
        question.step_at = -1.0
        self._live -= 1
        for attempt in question.attempts:
            self._release(attempt)
            if attempt.tcp is not None and attempt.tcp is not asyncio.current_task():
                attempt.tcp.cancel()
        question.attempts.clear()
        if reply is None:
            self.stats.failures += 1
        done, question.done = question.done, _done_already
        try:
            done(reply, error)
        except Exception:  # the caller's bug must not stop the pool's reading
            log.exception("upstream answer callback failed")

    # -- the socket pool ------------------------------------------------------------------
    def _release(self, attempt: _Attempt) -> None:
        if attempt.slot is not None:
            self._pool_for(attempt.server).release(attempt.slot, attempt.qid, attempt)

    def close(self) -> None:
        """Close every socket (the service stops); questions in flight are dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._steps.clear()
        self._pool.close()
        self._pool6.close()
        self._pool6_started = False
        self._loop = None

    # -- what arrives on the pool --------------------------------------------------------
    def _datagram(self, slot: PoolSocket, reply: bytes, source: tuple[str, int]) -> None:
        stats = self.stats
        if len(reply) < HEADER_LEN:
            stats.short_reply += 1
            return
        attempt = slot.pending.get(reply[0] << 8 | reply[1])
        if attempt is None:
            stats.unknown_id += 1
            return
        if source[0] != attempt.server or source[1] != self.port:
            stats.wrong_source += 1
            return
        if not matches(reply, attempt.qid, attempt.question.wire):
            stats.wrong_question += 1
            return
        self._release(attempt)
        self._replied(attempt, reply, tcp=False)

    def _icmp_error(self, slot: PoolSocket, qid: int, target: tuple[str, int], errno: int) -> None:
        """An ICMP error quoting a query of ours: that attempt has failed."""
        attempt = slot.pending.get(qid)
        if attempt is None or target[0] != attempt.server or target[1] != self.port:
            return
        self._failed(attempt, f"{attempt.server}: {os.strerror(errno) if errno else 'ICMP'}")

    # -- TCP, after a truncated UDP reply -----------------------------------------------
    async def _tcp(self, attempt: _Attempt) -> None:
        question = attempt.question
        loop = asyncio.get_running_loop()
        left = question.deadline - loop.time()
        try:
            if left <= 0:
                raise UpstreamError(f"{attempt.server}: no time left for TCP")
            reply = await asyncio.wait_for(self._tcp_exchange(attempt), left)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._failed(attempt, f"{attempt.server}: no reply over TCP")
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._failed(attempt, f"{attempt.server}: TCP: {exc}")
        except UpstreamError as exc:
            self._failed(attempt, str(exc))
        else:
            self._replied(attempt, reply, tcp=True)

    async def _tcp_exchange(self, attempt: _Attempt) -> bytes:
        reader, writer = await asyncio.open_connection(attempt.server, self.port)
        query = attempt.query
        try:
            writer.write(struct.pack(">H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack(">H", await reader.readexactly(2))
            reply = await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not matches(reply, attempt.qid, attempt.question.wire):
            raise UpstreamError(f"{attempt.server}: TCP reply does not match the query")
        return reply
