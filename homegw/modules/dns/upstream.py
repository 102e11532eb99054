"""Asking upstream resolvers: UDP with staggered failover, TCP when truncated.

One query goes to the preferred upstream first (the last one that answered).
If it has not answered after ``timeout / len(upstreams)`` seconds, the next
one is asked too, and so on; an upstream that refuses (ICMP port unreachable,
SERVFAIL, REFUSED, garbage) hands over at once. The first good reply wins;
when ``timeout`` has passed with none, the query fails (the resolver answers
SERVFAIL). So a dead upstream costs at most the time until failover, never the
whole timeout, and a query never takes longer than the configured timeout.

Each attempt uses a fresh socket (random source port) and a random ID; replies
whose ID or question do not match are ignored (anti-spoofing). A reply with TC
set is retried over TCP to the same upstream within the same deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
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


class UpstreamError(Exception):
    pass


@dataclass(frozen=True)
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

    def servers(self) -> list[str]:
        """The upstreams in the order they are tried (preferred first)."""
        servers = list(dict.fromkeys(self._servers()))
        if self.preferred in servers:
            servers.remove(self.preferred)
            servers.insert(0, self.preferred)
        return servers

    async def query(self, qname: bytes, qtype: int, qclass: int) -> UpstreamReply:
        """The first good reply from any upstream; UpstreamError when none in time."""
        servers = self.servers()
        self.stats.queries += 1
        if not servers:
            self.stats.failures += 1
            raise UpstreamError("no upstream resolvers known")
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout
        stagger = self.timeout / len(servers)
        try:
            return await self._race(servers, (qname, qtype, qclass), start, deadline, stagger)
        except UpstreamError:
            self.stats.failures += 1
            raise

    async def _race(
        self,
        servers: list[str],
        question: tuple[bytes, int, int],
        start: float,
        deadline: float,
        stagger: float,
    ) -> UpstreamReply:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[UpstreamReply]] = set()
        errors: list[str] = []
        next_server, next_start = 0, start
        try:
            while True:
                now = loop.time()
                if next_server < len(servers) and (now >= next_start or not pending):
                    if next_server:
                        self.stats.failovers += 1
                    task = asyncio.create_task(
                        self._attempt(servers[next_server], question, start, deadline)
                    )
                    pending.add(task)
                    next_server, next_start = next_server + 1, now + stagger
                    continue
                if not pending or now >= deadline:
                    raise UpstreamError("; ".join(errors) or "upstream timeout")
                until = deadline if next_server >= len(servers) else min(deadline, next_start)
                done, pending = await asyncio.wait(
                    pending, timeout=until - now, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is None:
                        reply = task.result()
                        self.preferred = reply.server
                        return reply
                    errors.append(str(task.exception()))
                    self.stats.refused += 1
        finally:
            for task in pending:
                task.cancel()

    async def _attempt(
        self, server: str, question: tuple[bytes, int, int], start: float, deadline: float
    ) -> UpstreamReply:
        self.stats.attempts += 1
        qid = secrets.randbits(16)
        query = build_query(qid, *question)
        qbytes = query[HEADER_LEN : HEADER_LEN + len(question[0]) + 4]
        loop = asyncio.get_running_loop()
        reply = await self._udp(server, query, qid, qbytes, deadline)
        tcp = False
        if reply[2] & (TC >> 8):
            self.stats.tcp_retries += 1
            reply = await self._tcp(server, query, qid, qbytes, deadline)
            tcp = True
        if rcode_of(reply) in FAILING_RCODES:
            raise UpstreamError(f"{server}: rcode {rcode_of(reply)}")
        return UpstreamReply(reply, server, loop.time() - start, tcp)

    async def _udp(self, server: str, query: bytes, qid: int, qbytes: bytes, deadline: float):  # noqa: ANN202
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                sock.connect((server, self.port))
                await loop.sock_sendall(sock, query)
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise UpstreamError(f"{server}: no reply")
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                    if matches(reply, qid, qbytes):
                        return reply
                    log.debug("ignoring a reply from %s that does not match", server)
            except TimeoutError as exc:
                raise UpstreamError(f"{server}: no reply") from exc
            except OSError as exc:
                raise UpstreamError(f"{server}: {exc.strerror or exc}") from exc

    async def _tcp(self, server: str, query: bytes, qid: int, qbytes: bytes, deadline: float):  # noqa: ANN202
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        if left <= 0:
            raise UpstreamError(f"{server}: no time left for TCP")
        try:
            return await asyncio.wait_for(self._tcp_exchange(server, query, qid, qbytes), left)
        except TimeoutError as exc:
            raise UpstreamError(f"{server}: no reply over TCP") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(f"{server}: TCP: {exc}") from exc

    async def _tcp_exchange(self, server: str, query: bytes, qid: int, qbytes: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(server, self.port)
        try:
            writer.write(struct.pack(">H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack(">H", await reader.readexactly(2))
            reply = await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not matches(reply, qid, qbytes):
            raise UpstreamError(f"{server}: TCP reply does not match the query")
        return reply
