"""The upstream client's UDP sockets: a pool of random ports, renewed often.

:data:`POOL_SIZE` unconnected UDP sockets, each bound to its own kernel-chosen
random port. Each query takes a random socket and a random ID unused on that
socket (both from ``os.urandom``); a socket is replaced by a fresh one (a new
random port) after :data:`SOCKET_USES` queries or :data:`SOCKET_LIFETIME`
seconds, so a port an attacker learnt is soon gone. A replaced socket is still
read until its queries in flight are done, then closed.

The sockets sit in an epoll set of their own, which the event loop watches as
one file: one loop wake-up serves every socket that has a datagram, one
datagram per socket per round (the set stays readable while more wait, and no
read ends in EAGAIN). A pool is of one address family (the upstream client
keeps one for IPv4 upstreams and one for IPv6 ones). ICMP errors reach the
sockets through ``IP_RECVERR`` (``IPV6_RECVERR`` for ICMPv6):
the error queue gives the quoted query's ID and destination. What a datagram
or an error means is the owner's business (:class:`UpstreamClient`), through
two callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

POOL_SIZE = 64  # UDP sockets in use at a time (a power of two)
SOCKET_USES = 100  # queries a socket carries before a fresh port replaces it
SOCKET_LIFETIME = 10.0  # seconds a socket is handed new queries, however few
MAX_DATAGRAM = 65535
IP_RECVERR = 11  # <linux/in.h>; not exported by Python's socket module
IPV6_RECVERR = 25  # <linux/in6.h>; neither is this
_ERROR_CMSGS = {(socket.SOL_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)}
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")  # errno, origin, type, code, pad, info, data
_QUOTED = 12  # bytes of the quoted query read from the error queue (its header)


class RandomSource:
    """Unpredictable 16-bit numbers, os.urandom read 1 KiB at a time."""

    def __init__(self) -> None:
        self._numbers: list[int] = []

    def u16(self) -> int:
        if not self._numbers:
            raw = os.urandom(1024)
            self._numbers = list(struct.unpack(f">{len(raw) // 2}H", raw))
        return self._numbers.pop()


class PoolSocket:
    """One pool socket and its queries in flight, by ID."""

    __slots__ = ("sock", "pending", "uses", "opened", "retired")

    def __init__(self, sock: socket.socket, opened: float) -> None:
        self.sock = sock
        self.pending: dict[int, Any] = {}
        self.uses = 0
        self.opened = opened
        self.retired = False


#: on_datagram(socket, data, (address, port))
OnDatagram = Callable[[PoolSocket, bytes, tuple[str, int]], None]
#: on_error(socket, quoted query ID, (address, port) it went to, errno or 0)
OnError = Callable[[PoolSocket, int, tuple[str, int], int], None]


class SocketPool:
    def __init__(
        self,
        on_datagram: OnDatagram,
        on_error: OnError,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> None:
        self.family = family
        self._on_datagram = on_datagram
        self._on_error = on_error
        self.random = RandomSource()
        self.opened = 0  # sockets bound so far (each on a new random port)
        self._pool: list[PoolSocket | None] = [None] * POOL_SIZE
        self._retired: set[PoolSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoll: select.epoll | None = None
        self._by_fd: dict[int, PoolSocket] = {}
        self._buffer = bytearray(MAX_DATAGRAM)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the pool on loop (the thread running it opens the sockets)."""
        self.close()
        self._loop = loop
        self._epoll = select.epoll()
        loop.add_reader(self._epoll.fileno(), self._poll)

    def register(self, now: float, attempt: object) -> tuple[PoolSocket, int]:
        """A random socket (fresh if the drawn one is worn out) and a random ID
        unused on it, now reserved for attempt. OSError if no socket opens."""
        index = self.random.u16() % POOL_SIZE
        slot = self._pool[index]
        if slot is None or slot.uses >= SOCKET_USES or now - slot.opened > SOCKET_LIFETIME:
            if slot is not None:
                self._pool[index] = None
                self._retire(slot)
            slot = self._pool[index] = self._open(now)
        slot.uses += 1
        qid = self.random.u16()
        while qid in slot.pending:
            qid = self.random.u16()
        slot.pending[qid] = attempt
        return slot, qid

    def release(self, slot: PoolSocket, qid: int, attempt: object) -> None:
        """The ID is free again (if attempt still holds it)."""
        if slot.pending.get(qid) is not attempt:
            return
        del slot.pending[qid]
        if slot.retired and not slot.pending:
            self._retired.discard(slot)
            self._close(slot)

    def close(self) -> None:
        """Close every socket and the epoll set (after the loop stopped, too)."""
        for slot in [*self._pool, *self._retired]:
            if slot is not None:
                with contextlib.suppress(OSError):
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

    # -- sockets -------------------------------------------------------------------
    def _open(self, now: float) -> PoolSocket:
        assert self._epoll is not None, "start() the pool first"
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                sock.bind(("::", 0))  # the kernel picks a random free port
            else:
                sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
                sock.bind(("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        slot = PoolSocket(sock, now)
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._by_fd[sock.fileno()] = slot
        self.opened += 1
        return slot

    def _retire(self, slot: PoolSocket) -> None:
        """Out of the pool: still read until its queries in flight are done."""
        slot.retired = True
        if slot.pending:
            self._retired.add(slot)
        else:
            self._close(slot)

    def _close(self, slot: PoolSocket) -> None:
        fd = slot.sock.fileno()
        if self._by_fd.pop(fd, None) is not None and self._epoll is not None:
            self._epoll.unregister(fd)
        slot.sock.close()

    # -- receiving -----------------------------------------------------------------
    def _poll(self) -> None:
        """(the loop: the epoll set is readable) One datagram from each ready socket."""
        assert self._epoll is not None
        by_fd = self._by_fd
        for fd, _events in self._epoll.poll(0):
            slot = by_fd.get(fd)
            if slot is not None:  # (closed by an earlier one of this round)
                self._read(slot)

    def _read(self, slot: PoolSocket) -> None:
        buffer = self._buffer
        try:
            size, source = slot.sock.recvfrom_into(buffer)
        except OSError:  # an ICMP error (or the error queue alone woke us)
            self._read_errors(slot)
        else:
            self._on_datagram(slot, bytes(buffer[:size]), source)

    def _read_errors(self, slot: PoolSocket) -> None:
        while True:
            try:
                quoted, ancillary, _flags, target = slot.sock.recvmsg(
                    _QUOTED, 512, socket.MSG_ERRQUEUE
                )
            except OSError:  # BlockingIOError: the queue is empty
                return
            errno = 0
            for level, kind, data in ancillary:
                if (level, kind) in _ERROR_CMSGS:
                    errno = _SOCK_EXTENDED_ERR.unpack_from(data)[0]
            if len(quoted) >= 2 and target:
                self._on_error(slot, quoted[0] << 8 | quoted[1], target, errno)
