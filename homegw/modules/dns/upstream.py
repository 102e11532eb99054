"""Asking upstream resolvers: UDP with staggered failover, TCP when truncated.

One question goes to the preferred upstream first (the last one that answered).
If it has not answered after ``timeout / len(upstreams)`` seconds, the next
one is asked too, and so on; an upstream that refuses (ICMP port unreachable,
SERVFAIL, REFUSED, garbage) hands over at once. The first good reply wins;
when ``timeout`` has passed with none, the question fails (the resolver
answers SERVFAIL). So a dead upstream costs at most the time until failover,
never the whole timeout, and a question never takes longer than the timeout.

Everything runs on the event loop with callbacks, no task per query: the
queries go out on a pool of :data:`POOL_SIZE` unconnected UDP sockets, each
bound to its own kernel-chosen random port and replaced by a fresh one (a new
random port) after :data:`SOCKET_USES` queries or :data:`SOCKET_LIFETIME`
seconds, so a port an attacker learnt is soon gone. Each query takes a random
socket and a random ID unused on that socket (both from ``os.urandom``). A
reply is accepted only if its ID is in flight on the socket it arrived on, it
comes from the address and port that query went to, and it carries our
question (name case-blind, type, class); anything else is ignored and counted
by reason. ICMP errors reach the sockets through ``IP_RECVERR`` and are
matched the same way (quoted ID and destination). The pool sockets sit in an
epoll set of their own, which the event loop watches as one file: one loop
wake-up serves every socket that has a reply. A reply with TC set is retried
over TCP to the same upstream within the same deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

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
POOL_SIZE = 64  # UDP sockets in use at a time (a power of two)
SOCKET_USES = 100  # queries a socket carries before a fresh port replaces it
SOCKET_LIFETIME = 10.0  # seconds a socket is handed new queries, however few
MAX_REPLY = 65535
SERVERS_MAX_AGE = 1.0  # seconds the upstream list is reused before asking again
IP_RECVERR = 11  # <linux/in.h>; not exported by Python's socket module
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")  # errno, origin, type, code, pad, info, data

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


def _done_already(_reply: UpstreamReply | None, _error: str | None) -> None:
    """What a finished question holds instead of its caller's callback."""


class RandomSource:
    """Unpredictable 16-bit numbers, os.urandom read 1 KiB at a time."""

    def __init__(self) -> None:
        self._numbers: list[int] = []

    def u16(self) -> int:
        if not self._numbers:
            raw = os.urandom(1024)
            self._numbers = list(struct.unpack(f">{len(raw) // 2}H", raw))
        return self._numbers.pop()


class _PoolSocket:
    """One pool socket: its queries in flight by ID."""

    __slots__ = ("sock", "pending", "uses", "opened", "retired")

    def __init__(self, sock: socket.socket, opened: float) -> None:
        self.sock = sock
        self.pending: dict[int, _Attempt] = {}
        self.uses = 0
        self.opened = opened
        self.retired = False


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
        self.slot: _PoolSocket | None = None
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
        self._random = RandomSource()
        self._pool: list[_PoolSocket | None] = [None] * POOL_SIZE
        self._retired: set[_PoolSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoll: select.epoll | None = None  # the pool sockets, by fd
        self._by_fd: dict[int, _PoolSocket] = {}
        self._buffer = bytearray(MAX_REPLY)
        # Failover and deadline steps of the questions in flight, earliest first
        # (finished ones are skipped when popped), and the one timer for them.
        self._steps: list[tuple[float, int, _Question]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._live = 0  # questions in flight
        self._servers_cache: tuple[float, str | None, list[str]] | None = None

    def servers(self) -> list[str]:
        """The upstreams in the order they are tried (preferred first)."""
        servers = list(dict.fromkeys(self._servers()))
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
            self._epoll = select.epoll()
            loop.add_reader(self._epoll.fileno(), self._poll)
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
            slot = self._socket(self._loop.time())
            qid = self._random.u16()
            while qid in slot.pending:
                qid = self._random.u16()
            attempt.slot, attempt.qid = slot, qid
            attempt.query = build_query(qid, question.qname, question.qtype, question.qclass)
            slot.pending[qid] = attempt
            slot.sock.sendto(attempt.query, (server, self.port))
        except OSError as exc:  # no route, buffer full, not an IPv4 address, no fds...
            self._failed(attempt, f"{server}: {exc.strerror or exc}")

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

    # -- the socket pool ---------------------------------------------------------------
    def _socket(self, now: float) -> _PoolSocket:
        """A random pool socket; a fresh one in its place once it is worn out."""
        index = self._random.u16() % POOL_SIZE
        slot = self._pool[index]
        if slot is None or slot.uses >= SOCKET_USES or now - slot.opened > SOCKET_LIFETIME:
            if slot is not None:
                self._pool[index] = None
                self._retire(slot)
            slot = self._pool[index] = self._open(now)
        slot.uses += 1
        return slot

    def _open(self, now: float) -> _PoolSocket:
        assert self._epoll is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
            sock.bind(("0.0.0.0", 0))  # the kernel picks a random free port
        except OSError:
            sock.close()
            raise
        slot = _PoolSocket(sock, now)
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._by_fd[sock.fileno()] = slot
        self.stats.sockets_opened += 1
        return slot

    def _retire(self, slot: _PoolSocket) -> None:
        """Out of the pool: still read until its queries in flight are done."""
        slot.retired = True
        if slot.pending:
            self._retired.add(slot)
        else:
            self._close(slot)

    def _release(self, attempt: _Attempt) -> None:
        slot = attempt.slot
        if slot is None or slot.pending.get(attempt.qid) is not attempt:
            return
        del slot.pending[attempt.qid]
        if slot.retired and not slot.pending:
            self._retired.discard(slot)
            self._close(slot)

    def _close(self, slot: _PoolSocket) -> None:
        fd = slot.sock.fileno()
        if self._by_fd.pop(fd, None) is not None and self._epoll is not None:
            self._epoll.unregister(fd)
        slot.sock.close()

    def close(self) -> None:
        """Close every socket (the service stops); questions in flight are dropped."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._steps.clear()
        for slot in [*self._pool, *self._retired]:
            if slot is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    self._close(slot)
        self._pool = [None] * POOL_SIZE
        self._retired.clear()
        if self._epoll is not None:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        self._loop = None

    # -- receiving -----------------------------------------------------------------
    def _poll(self) -> None:
        """(the loop: the epoll set is readable) Serve every socket with a reply."""
        assert self._epoll is not None
        by_fd = self._by_fd
        for fd, _events in self._epoll.poll(0):
            slot = by_fd.get(fd)
            if slot is not None:  # (closed by an earlier one of this round)
                self._readable(slot)

    def _readable(self, slot: _PoolSocket) -> None:
        """Read one datagram (the selector calls again while more wait: one read
        per call saves the read that would end in EAGAIN, as most calls have one)."""
        buffer = self._buffer
        try:
            size, source = slot.sock.recvfrom_into(buffer)
        except BlockingIOError:  # woken by the error queue alone
            self._read_errors(slot)
        except OSError:  # an ICMP error: the details wait in the error queue
            self._read_errors(slot)
        else:
            self._datagram(slot, bytes(buffer[:size]), source)

    def _datagram(self, slot: _PoolSocket, reply: bytes, source: tuple[str, int]) -> None:
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

    def _read_errors(self, slot: _PoolSocket) -> None:
        """ICMP errors about our queries: the attempt they quote has failed."""
        while True:
            try:
                quoted, ancillary, _flags, target = slot.sock.recvmsg(
                    HEADER_LEN, 512, socket.MSG_ERRQUEUE
                )
            except OSError:  # BlockingIOError: the queue is empty
                return
            errno = 0
            for level, kind, data in ancillary:
                if level == socket.SOL_IP and kind == IP_RECVERR:
                    errno = _SOCK_EXTENDED_ERR.unpack_from(data)[0]
            if len(quoted) < 2 or not target:
                continue
            attempt = slot.pending.get(quoted[0] << 8 | quoted[1])
            if attempt is None or target[0] != attempt.server or target[1] != self.port:
                continue
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
