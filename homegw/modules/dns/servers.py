"""The sockets: one asyncio thread serves UDP and TCP and talks to the upstreams.

UDP: when the socket is readable the loop reads up to :data:`UDP_BATCH`
datagrams in a row, so under load one wake-up of the loop carries many
queries. Cache hits of the common shape are answered on the spot with byte
operations (:meth:`Resolver.answer_cached`); everything else goes through
:meth:`Resolver.answer` with callbacks, no task per query. (A separate thread
blocking in recvfrom was measured against this: with misses, every socket
call of either thread handed the GIL over, which cost more than it saved.)
TCP: RFC 7766 (2-byte length prefix, several queries per connection, idle
timeout). Both listening sockets are bound in start(), in the caller's network
namespace; the loop's thread inherits that namespace, so the upstream sockets
are opened there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading

from homegw import supervise
from homegw.modules.dns import wire
from homegw.modules.dns.resolver import Resolver

log = logging.getLogger(__name__)

MAX_DATAGRAM = 4096
UDP_BATCH = 64  # datagrams read per wake-up before other sockets get a turn
TCP_IDLE = 10.0  # seconds a TCP client may stay silent
MAX_TCP_CLIENTS = 64
PURGE_INTERVAL = 60.0
START_TIMEOUT = 10.0


class DnsServerError(RuntimeError):
    pass


class DnsServers:
    def __init__(self, resolver: Resolver, address: str, port: int = 53) -> None:
        self.resolver = resolver
        self.address = address
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._threads: list[threading.Thread] = []
        self._tcp_clients = 0
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self._udp = self._bind(socket.SOCK_DGRAM)
        try:
            self._tcp = self._bind(socket.SOCK_STREAM)
        except DnsServerError:
            self._udp.close()
            self._udp = None
            raise
        self._tcp.listen(128)
        self._udp.setblocking(False)
        self.loop = asyncio.new_event_loop()
        supervise.watch_loop(self.loop, "dns-loop")
        loop_thread = supervise.Thread(self._run_loop, "dns-loop")
        self._threads = [loop_thread]
        loop_thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_sockets(), self.loop)
        future.result(START_TIMEOUT)
        log.info("DNS listening on %s:%d (UDP and TCP)", self.address, self.port)

    def _bind(self, kind: socket.SocketKind) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:  # not UDP: there it would share the port silently
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address, self.port))
        except OSError as exc:
            sock.close()
            proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
            raise DnsServerError(
                f"cannot listen on {self.address}:{self.port}/{proto}: {exc.strerror}; is another "
                "DNS server (dnsmasq, systemd-resolved) using the port, or the address missing?"
            ) from exc
        return sock

    def _run_loop(self) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        self.loop.call_later(PURGE_INTERVAL, self._purge)
        self.loop.run_forever()

    async def _start_sockets(self) -> None:
        assert self._udp is not None and self.loop is not None
        self.loop.add_reader(self._udp.fileno(), self._udp_readable)
        self._tcp_server = await asyncio.start_server(self._tcp_client, sock=self._tcp)

    def stop(self) -> None:
        """Close the sockets and end the thread. Safe to call twice."""
        if self._stopping or self.loop is None:
            return
        self._stopping = True
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(START_TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in self._threads:
            thread.join(START_TIMEOUT)
        self.loop.close()
        if self._udp is not None:
            self._udp.close()
        log.info("DNS on %s:%d stopped", self.address, self.port)

    async def _shutdown(self) -> None:
        if self._udp is not None and self.loop is not None:
            self.loop.remove_reader(self._udp.fileno())
        if self._tcp_server is not None:
            self._tcp_server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _purge(self) -> None:
        assert self.loop is not None
        self.resolver.purge_expired()
        self.loop.call_later(PURGE_INTERVAL, self._purge)

    # -- UDP ----------------------------------------------------------------------
    def _udp_readable(self) -> None:
        sock, resolver = self._udp, self.resolver
        assert sock is not None
        answer_cached, answer, stats = resolver.answer_cached, resolver.answer, resolver.stats
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:  # nothing more to read (or an error queued on the socket)
                return
            stats.udp_queries += 1
            try:
                reply = answer_cached(data, addr[0])
            except Exception:  # a bug: the strict slow path gets the query
                stats.errors += 1
                log.exception("fast answer failed")
                reply = None
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, addr)
                continue
            send = self._sender(addr)
            try:
                answer(data, addr[0], False, send)
            except Exception:  # a bug: the client still gets an answer
                stats.errors += 1
                log.exception("query from %s failed", addr[0])
                if len(data) >= wire.HEADER_LEN:
                    send(wire.error_reply(data, wire.SERVFAIL))

    def _sender(self, addr: tuple[str, int]):  # the reply's way back
        def send(reply: bytes | None) -> None:
            if reply is not None and self._udp is not None:
                with contextlib.suppress(OSError):
                    self._udp.sendto(reply, addr)

        return send

    async def _resolve(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        try:
            return await self.resolver.resolve(data, client, tcp)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.resolver.stats.errors += 1
            log.exception("query from %s failed", client)
            return wire.error_reply(data, wire.SERVFAIL) if len(data) >= wire.HEADER_LEN else None

    # -- TCP ----------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "?"
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            await self._tcp_queries(reader, writer, client)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    async def _tcp_queries(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
            (length,) = struct.unpack(">H", head)
            data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
            self.resolver.stats.tcp_queries += 1
            reply = await self._resolve(data, client, tcp=True)
            if reply is None:
                return  # not a query: hang up
            writer.write(struct.pack(">H", len(reply)) + reply)
            await writer.drain()
