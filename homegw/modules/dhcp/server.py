"""The LAN DHCP server: sockets, event loop, ARP probes, counters.

One thread runs a `selectors` loop over three file descriptors: the UDP
socket on port 67 (bound to the LAN interface with SO_BINDTODEVICE, with
SO_BROADCAST), an AF_PACKET socket that sends ARP probes and reads ARP
answers, and a wake-up socket pair for stop(). Timers (probe deadlines,
lease expiry) set the select timeout; nothing ever sleeps.

Before an address that is not already the client's is offered, it is
probed: an ARP request with sender 0.0.0.0 (RFC 5227), then the OFFER waits
in a pending-probe table for up to `probe_timeout` while other clients are
served. Any ARP from that address in the meantime is a conflict: the
address is quarantined and the DISCOVER is handled again.

Replies go where RFC 2131 §4.1 says (see protocol.Destination). A client
with no address and no broadcast flag gets its reply as a raw frame to its
MAC (AF_PACKET), so the gateway's ARP table is not filled with entries for
addresses nobody may take.

Every malformed packet is dropped and counted by reason (rate-limited log
line); a failing handler is counted and logged, never fatal.

`python -m homegw.standalone dhcp --config FILE` runs the server alone
(no datapath bindings) in the caller's network namespace.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from homegw import supervise
from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.l2 import ArpSocket, FrameSender
from homegw.modules.dhcp.leases import Lease
from homegw.modules.dhcp.protocol import (
    SERVER_PORT,
    DhcpProtocol,
    Outcome,
)

log = logging.getLogger(__name__)

RECV_BUFFER = 4 * 1024 * 1024  # bytes of socket buffer: absorbs bursts of DISCOVERs
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
BATCH = 64  # datagrams read per wake-up before timers get a turn
RECLAIM_EVERY = 5.0  # seconds between expiry checks at most
LOG_INTERVAL = 10.0  # seconds between repeated warnings of one kind
COUNTERS = (
    "received",
    "offers",
    "acks",
    "naks",
    "releases",
    "declines",
    "informs",
    "exhausted",
    "probes",
    "conflicts",
    "expired",
    "ignored",
    "other_server",
    "bad_request",
    "foreign_relay",
    "unexpected_type",
    "errors",
)

LeaseCallback = Callable[[Lease], None]
UnboundCallback = Callable[[Lease, bool], None]  # (lease, it expired)


class RateLimitedLog:
    """Logs a kind of message at most once per `interval` seconds."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, key: str, level: int, text: str, now: float) -> None:
        if now - self._last.get(key, -self.interval) >= self.interval:
            self._last[key] = now
            log.log(level, text)


@dataclass(slots=True)
class PendingProbe:
    address: int
    deadline: float
    msg: p.DhcpMessage
    outcome: Outcome


@dataclass
class Counters:
    values: collections.Counter[str] = field(default_factory=collections.Counter)
    malformed: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: self.values[name] for name in COUNTERS}
        out["malformed"] = dict(self.malformed)
        out["malformed_total"] = sum(self.malformed.values())
        return out


class DhcpServer:
    """Serves `protocol` on its settings' interface; see the module docstring."""

    def __init__(
        self,
        protocol: DhcpProtocol,
        on_bound: LeaseCallback,
        on_unbound: UnboundCallback,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.protocol = protocol
        self.settings = protocol.settings
        self.on_bound, self.on_unbound = on_bound, on_unbound
        self.clock = clock
        self.counters = Counters()
        self.lock = threading.Lock()  # guards the pool against readers in other threads
        self._probes: dict[int, PendingProbe] = {}
        self._answers: collections.deque[tuple[int, bytes]] = collections.deque()
        self._limited = RateLimitedLog()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._arp: ArpSocket | None = None
        self._frames: FrameSender | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._next_reclaim = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Open the sockets (in the caller's network namespace), start the thread."""
        self._open_sockets()
        self._stopping.clear()
        self._thread = supervise.Thread(self._run, "dhcp-server")
        self._thread.start()
        log.info(
            "DHCP server on %s (%s): pool %s-%s, lease %d s, ARP probe %s",
            self.settings.interface,
            self.settings.server_ip,
            self.settings.range_start,
            self.settings.range_end,
            self.settings.lease_time,
            f"{self.settings.probe_timeout:g} s" if self.settings.probe_timeout > 0 else "off",
        )

    def _open_sockets(self) -> None:
        ifname = self.settings.interface
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            _grow_buffer(udp)
            udp.bind(("0.0.0.0", SERVER_PORT))
            udp.setblocking(False)
            self._frames = FrameSender(ifname)
            if self.settings.probe_timeout > 0:
                self._arp = ArpSocket(ifname)
        except OSError as exc:
            udp.close()
            self._close_sockets()
            raise OSError(
                exc.errno, f"DHCP server cannot open its sockets on {ifname}: {exc}"
            ) from exc
        self._udp = udp
        self._wake = socket.socketpair()
        self._wake[0].setblocking(False)

    def stop(self) -> None:
        """Stop the thread and close the sockets; safe to call twice."""
        self._stopping.set()
        if self._wake:
            self._wake[1].send(b"x")
        if self._thread:
            self._thread.join(10)
            self._thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for thing in (self._udp, self._arp, self._frames, *(self._wake or ())):
            if thing is not None:
                thing.close()
        self._udp = self._arp = self._frames = self._wake = None

    # -- loop --------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._udp and self._wake
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, self._on_udp)
            sel.register(self._wake[0], selectors.EVENT_READ, None)
            if self._arp:
                sel.register(self._arp.sock, selectors.EVENT_READ, self._on_arp)
            while not self._stopping.is_set():
                timeout = max(0.0, self._next_deadline() - self.clock())
                try:
                    for key, _ in sel.select(timeout):
                        if key.data is not None:
                            key.data()
                        else:
                            self._drain_wake()
                    self._run_timers(self.clock())
                except Exception:  # never let one bad event end the server
                    self.counters.values["errors"] += 1
                    log.exception("DHCP server loop error")

    def _next_deadline(self) -> float:
        deadlines = [self._next_reclaim, *(pr.deadline for pr in self._probes.values())]
        return min(deadlines)

    def _run_timers(self, now: float) -> None:
        for probe in [pr for pr in self._probes.values() if pr.deadline <= now]:
            del self._probes[probe.address]
            self._send(probe.outcome, probe.msg)
        if now >= self._next_reclaim:
            with self.lock:
                expired = self.protocol.pool.reclaim(now)
                upcoming = self.protocol.pool.next_expiry()
            for lease in expired:
                self.on_unbound(lease, True)
                self.counters.values["expired"] += 1
                log.info("DHCP lease expired: %s of %s", lease.ip, lease.mac)
            self._next_reclaim = min(now + RECLAIM_EVERY, upcoming or now + RECLAIM_EVERY)

    def _on_udp(self) -> None:
        assert self._udp is not None
        for _ in range(BATCH):
            try:
                data, addr = self._udp.recvfrom(65535)
            except BlockingIOError:
                return
            self.handle_datagram(data, addr)

    def handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Parse and answer one datagram; nothing in it can raise out of here."""
        now = self.clock()
        self.counters.values["received"] += 1
        try:
            msg = p.parse(data)
        except p.MalformedPacket as exc:
            self.counters.malformed[exc.reason] += 1
            text = f"dropped malformed DHCP packet from {addr[0]}:{addr[1]}: {exc}"
            self._limited("malformed", logging.INFO, text, now)
            return
        try:
            with self.lock:
                outcome = self.protocol.handle(msg, now)
            self._apply(outcome, msg, now)
        except Exception:
            self.counters.values["errors"] += 1
            log.exception(
                "DHCP handler failed on a %s from %s", p.TYPE_NAMES[msg.msg_type], msg.mac
            )

    def _apply(self, outcome: Outcome, msg: p.DhcpMessage, now: float) -> None:
        # Bindings and names first: once the counter, the log line or the
        # reply shows the event, the datapath and DNS already follow it.
        if outcome.unbound is not None:
            self.on_unbound(outcome.unbound, False)
        if outcome.bound is not None:
            self.on_bound(outcome.bound)
        self.counters.values[outcome.counter] += 1
        if outcome.event:
            if outcome.warning:
                self._limited(outcome.counter, logging.WARNING, outcome.event, now)
            else:
                log.info("%s", outcome.event)
        if outcome.reply is None:
            return
        if outcome.probe is not None and self._arp is not None:
            self._start_probe(outcome, msg, now)
        else:
            self._send(outcome, msg)

    # -- ARP probes ---------------------------------------------------------------------

    def _start_probe(self, outcome: Outcome, msg: p.DhcpMessage, now: float) -> None:
        address = outcome.probe
        assert address is not None and self._arp is not None
        pending = self._probes.get(address)
        if pending is not None:  # a retransmitted DISCOVER: answer it when the probe ends
            pending.msg, pending.outcome = msg, outcome
            return
        self._probes[address] = PendingProbe(
            address, now + self.settings.probe_timeout, msg, outcome
        )
        self.counters.values["probes"] += 1
        try:
            self._arp.probe(address)
        except OSError as exc:
            self._limited("probe", logging.WARNING, f"ARP probe failed: {exc}", now)

    def _on_arp(self) -> None:
        assert self._arp is not None
        for arp in self._arp.receive():
            self._arp_from(arp.sender_ip, arp.sender_mac)

    def _arp_from(self, address: int, mac: bytes) -> None:
        pending = self._probes.pop(address, None)
        if pending is not None:
            self.probe_conflict(pending, mac.hex(":"))

    def probe_answer(self, address: int, mac: bytes) -> None:
        """An ARP answer seen elsewhere (the source guard punts the ones it
        drops); thread-safe, handled by the server thread."""
        self._answers.append((address, mac))
        wake = self._wake
        if wake:
            with contextlib.suppress(OSError):  # stopping: the socket may be closed
                wake[1].send(b"a")

    def _drain_wake(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError):
            self._wake[0].recv(4096)
        while self._answers:
            self._arp_from(*self._answers.popleft())

    def probe_conflict(self, pending: PendingProbe, mac: str) -> None:
        """Someone answers for the address we were about to offer."""
        now = self.clock()
        self.counters.values["conflicts"] += 1
        log.warning(
            "DHCP address %s is in use by %s (answered the ARP probe): quarantined, "
            "not offered to %s",
            p.ip_str(pending.address),
            mac,
            pending.msg.mac,
        )
        with self.lock:
            self.protocol.pool.quarantine(pending.address, mac, now)
            outcome = self.protocol.handle(pending.msg, now)
        self._apply(outcome, pending.msg, now)

    # -- sending ------------------------------------------------------------------------

    def _send(self, outcome: Outcome, msg: p.DhcpMessage) -> None:
        dest = outcome.dest
        assert dest is not None and outcome.reply is not None and self._udp is not None
        try:
            if dest.mac is not None and self._frames is not None:
                src = int(self.settings.server_ip)
                self._frames.send(dest.mac, src, dest.ip, SERVER_PORT, dest.port, outcome.reply)
            else:
                self._udp.sendto(outcome.reply, (p.ip_str(dest.ip), dest.port))
        except OSError as exc:
            text = f"cannot send DHCP reply to {p.ip_str(dest.ip)}: {exc}"
            self._limited("send", logging.WARNING, text, self.clock())


def _grow_buffer(sock: socket.socket) -> None:
    try:  # SO_RCVBUFFORCE passes rmem_max (needs CAP_NET_ADMIN); fall back if refused
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
