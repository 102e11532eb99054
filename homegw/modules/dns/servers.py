"""The sockets: one asyncio thread serves UDP and TCP and talks to the upstreams.

UDP: when the socket is readable the loop reads up to :data:`UDP_BATCH`
datagrams in a row, so under load one wake-up of the loop carries many
queries. Cache hits of the common shape are answered on the spot with byte
operations (:meth:`Resolver.answer_cached`); everything else goes through
:meth:`Resolver.answer` with callbacks, no task per query. (A separate thread
blocking in recvfrom was measured against this: with misses, every socket
call of either thread handed the GIL over, which cost more than it saved.)
TCP: RFC 7766 (2-byte length prefix, several queries per connection, idle
timeout). The listening sockets are bound in start(), in the caller's network
namespace; the loop's thread inherits that namespace, so the upstream sockets
are opened there too.

IPv6 (``ipv6_interface``, the LAN NIC): UDP and TCP on ``[::]:53`` with
IPV6_V6ONLY and SO_BINDTODEVICE, so every IPv6 address the LAN NIC has or
gets later (the ULA ``<prefix>::1``, the global one that changes with the
ISP's prefix, link-local) is served without a restart, and nothing that comes
in on another NIC (the WAN) ever is. UDP replies leave from the address the
query was sent to (IPV6_RECVPKTINFO in, IPV6_PKTINFO out), as a client
checks.
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
_PKTINFO_SPACE = socket.CMSG_SPACE(20)  # struct in6_pktinfo: address, ifindex


class DnsServerError(RuntimeError):
    pass


def _kernel_has_ipv6() -> bool:
    """False on a kernel booted with ipv6.disable=1 (no AF_INET6 sockets)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


class DnsServers:
    def __init__(
        self, resolver: Resolver, address: str, port: int = 53, ipv6_interface: str | None = None
    ) -> None:
        self.resolver = resolver
        self.address = address
        self.port = port
        self.ipv6_interface = ipv6_interface
        self.loop: asyncio.AbstractEventLoop | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._udp6: socket.socket | None = None
        self._tcp6: socket.socket | None = None
        self._tcp_servers: list[asyncio.Server] = []
        self._threads: list[threading.Thread] = []
        self._tcp_clients = 0
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        try:
            self._udp = self._bind(socket.SOCK_DGRAM)
            self._tcp = self._bind(socket.SOCK_STREAM)
            if self.ipv6_interface is not None and socket.has_ipv6 and _kernel_has_ipv6():
                self._udp6 = self._bind(socket.SOCK_DGRAM, socket.AF_INET6)
                self._tcp6 = self._bind(socket.SOCK_STREAM, socket.AF_INET6)
            elif self.ipv6_interface is not None:
                log.warning("no IPv6 in this kernel: DNS answers over IPv4 only")
                self.ipv6_interface = None
        except DnsServerError:
            self._close_sockets()
            raise
        for tcp in self._listeners(socket.SOCK_STREAM):
            tcp.listen(128)
        for udp in self._listeners(socket.SOCK_DGRAM):
            udp.setblocking(False)
        self.loop = asyncio.new_event_loop()
        supervise.watch_loop(self.loop, "dns-loop")
        loop_thread = supervise.Thread(self._run_loop, "dns-loop")
        self._threads = [loop_thread]
        loop_thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_sockets(), self.loop)
        future.result(START_TIMEOUT)
        log.info("DNS listening on %s:%d (UDP and TCP)", self.address, self.port)
        if self.ipv6_interface is not None:
            log.info("DNS listening on [::]:%d of %s only", self.port, self.ipv6_interface)

    def _listeners(self, kind: socket.SocketKind) -> list[socket.socket]:
        udp = kind == socket.SOCK_DGRAM
        sockets = [self._udp, self._udp6] if udp else [self._tcp, self._tcp6]
        return [sock for sock in sockets if sock is not None]

    def _close_sockets(self) -> None:
        for sock in (self._udp, self._tcp, self._udp6, self._tcp6):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._udp6 = self._tcp6 = None

    def _bind(
        self, kind: socket.SocketKind, family: socket.AddressFamily = socket.AF_INET
    ) -> socket.socket:
        sock = socket.socket(family, kind)
        where = f"{self.address}:{self.port}"
        try:
            if kind == socket.SOCK_STREAM:  # not UDP: there it would share the port silently
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                assert self.ipv6_interface is not None
                where = f"[::]:{self.port} on {self.ipv6_interface}"
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ipv6_interface.encode()
                )
                if kind == socket.SOCK_DGRAM:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.bind(("::", self.port))
            else:
                sock.bind((self.address, self.port))
        except OSError as exc:
            sock.close()
            proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
            raise DnsServerError(
                f"cannot listen on {where}/{proto}: {exc.strerror}; is another "
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
        if self._udp6 is not None:
            self.loop.add_reader(self._udp6.fileno(), self._udp6_readable)
        for tcp in self._listeners(socket.SOCK_STREAM):
            self._tcp_servers.append(await asyncio.start_server(self._tcp_client, sock=tcp))

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
        for udp in self._listeners(socket.SOCK_DGRAM):
            udp.close()
        log.info("DNS on %s:%d stopped", self.address, self.port)

    async def _shutdown(self) -> None:
        if self.loop is not None:
            for udp in self._listeners(socket.SOCK_DGRAM):
                self.loop.remove_reader(udp.fileno())
        for server in self._tcp_servers:
            server.close()
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
        sock = self._udp
        assert sock is not None
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:  # nothing more to read (or an error queued on the socket)
                return
            self._datagram(data, addr[0], self._sender(sock, addr))

    def _udp6_readable(self) -> None:
        sock = self._udp6
        assert sock is not None
        for _ in range(UDP_BATCH):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(MAX_DATAGRAM, _PKTINFO_SPACE)
            except OSError:
                return
            pktinfo = [
                (level, kind, info)
                for level, kind, info in ancillary
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
            ]
            self._datagram(data, addr[0], self._sender(sock, addr, pktinfo))

    def _datagram(self, data: bytes, client: str, send) -> None:
        resolver = self.resolver
        resolver.stats.udp_queries += 1
        try:
            reply = resolver.answer_cached(data, client)
        except Exception:  # a bug: the strict slow path gets the query
            resolver.stats.errors += 1
            log.exception("fast answer failed")
            reply = None
        if reply is not None:
            send(reply)
            return
        try:
            resolver.answer(data, client, False, send)
        except Exception:  # a bug: the client still gets an answer
            resolver.stats.errors += 1
            log.exception("query from %s failed", client)
            if len(data) >= wire.HEADER_LEN:
                send(wire.error_reply(data, wire.SERVFAIL))

    def _sender(self, sock: socket.socket, addr: tuple, pktinfo: list | None = None):
        """The reply's way back: to addr, over IPv6 from the address the query
        was sent to (its IPV6_PKTINFO handed back)."""

        def send(reply: bytes | None) -> None:
            if reply is None or self._stopping:
                return
            with contextlib.suppress(OSError):
                if pktinfo:
                    sock.sendmsg([reply], pktinfo, 0, addr)
                else:
                    sock.sendto(reply, addr)

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
