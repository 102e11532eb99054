"""`RouterAdvertiser`: sends the LAN's router advertisements (the I/O of ra.py).

One raw ICMPv6 socket bound to the LAN NIC (SO_BINDTODEVICE): hop limits
255 for multicast and unicast (RFC 4861 6.1.2: hosts drop RAs with any
other), ICMP6_FILTER passing router solicitations only, member of ff02::2
(all-routers) so solicitations reach it even while forwarding is off, and
IPV6_RECVHOPLIMIT so a solicitation that was routed is told apart. RAs go to
ff02::1 from the NIC's link-local address (IPV6_PKTINFO); while the NIC has
none usable (DAD still running) the RA is retried a second later, counted.

One supervised thread waits on the socket (and a wake-up socket pair for
`changed()` and `stop()`) with the scheduler's next due time as the timeout;
nothing polls. `stop()` sends a final RA with router lifetime 0 (6.2.5) so
hosts drop their default route through us at once (`stop(withdraw=False)`
does not, for a restart during which the datapath keeps forwarding).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from pyroute2 import IPRoute

from homegw import supervise
from homegw.modules.ipv6 import ra
from homegw.modules.ipv6.prefixes import LanPrefix

log = logging.getLogger(__name__)

IPv6Address = ipaddress.IPv6Address
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
RETRY_NO_SOURCE = 1.0  # seconds before another try while the link-local is not usable
BATCH = 32  # solicitations read per wake-up at most
RECV_SIZE = 1500
LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def icmp6_filter_pass_only(kind: int) -> bytes:
    """struct icmp6_filter blocking every ICMPv6 type but `kind` (a set bit blocks)."""
    words = [0xFFFFFFFF] * 8
    words[kind >> 5] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


def open_ra_socket(ifname: str, ifindex: int) -> socket.socket:
    """The raw ICMPv6 socket of the module docstring, non-blocking."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ra.ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ra.ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        group = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("=I", ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        sock.setsockopt(
            socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter_pass_only(ra.ND_ROUTER_SOLICIT)
        )
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def hop_limit_of(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The IPV6_HOPLIMIT control message's value; -1 when absent."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(data) >= 4:
            return struct.unpack("=i", data[:4])[0]
    return -1


class RouterAdvertiser:
    """See the module docstring. Callbacks are called from its thread."""

    def __init__(
        self,
        ifname: str,
        prefixes: Callable[[], list[LanPrefix]],
        *,
        rdnss: Callable[[], list[IPv6Address]],
        dnssl: Sequence[str],
        mtu: int,
        default_router: Callable[[], bool],
        managed: bool,
        other: bool,
        max_interval: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for domain in dnssl:
            ra.encode_domain(domain)  # a bad name fails here, not in the thread
        self.ifname = ifname
        self._prefixes = prefixes
        self._rdnss = rdnss
        self._dnssl = tuple(dnssl)
        self._mtu = mtu
        self._default_router = default_router
        self._managed = managed
        self._other = other
        self._max_interval = max_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counters: collections.Counter[str] = collections.Counter()
        self._malformed: collections.Counter[str] = collections.Counter()
        self._scheduler = ra.RaScheduler(max_interval, clock())
        self._thread: supervise.Thread | None = None
        self._sock: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._failing = False  # the last send failed

    # --- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Open the socket in the caller's network namespace and start sending."""
        self._ipr = IPRoute()
        links = self._ipr.link_lookup(ifname=self.ifname)
        if not links:
            self._ipr.close()
            raise RuntimeError(f"router advertisements: no interface {self.ifname!r}")
        self._ifindex = links[0]
        link = self._ipr.get_links(self._ifindex)[0]
        self._mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
        self._sock = open_ra_socket(self.ifname, self._ifindex)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping.clear()
        with self._lock:
            self._scheduler = ra.RaScheduler(self._max_interval, self._clock())
        self._thread = supervise.Thread(target=self._run, name=f"ra-{self.ifname}", restart=True)
        self._thread.start()
        log.info(
            "router advertisements on %s (every %d s at most)", self.ifname, self._max_interval
        )

    def stop(self, withdraw: bool = True) -> None:
        """Stop the thread, then send the final RA (router lifetime 0), unless
        `withdraw` is False: a restart that keeps forwarding, where hosts
        should keep their default route until the next process's first RA."""
        if self._sock is None:
            return
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if withdraw:
                self._send(final=True)
        finally:
            sock, wake_w, self._sock, self._wake_w = self._sock, self._wake_w, None, None
            for closable in (sock, self._wake_r, wake_w, self._ipr):
                closable.close()
        log.info("router advertisements on %s stopped", self.ifname)

    def changed(self) -> None:
        """Prefixes or the default-router state changed: an RA soon (rate-limited)."""
        with self._lock:
            self._scheduler.changed(self._clock())
        self._wake()

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {
            name: self._counters[name]
            for name in ("ra_sent", "rs_received", "send_errors", "no_link_local")
        }
        out["rs_malformed"] = dict(self._malformed)
        return out

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return  # not started, or stopped
        with contextlib.suppress(OSError):  # already awake (full), or just stopped
            wake.send(b"\0")

    # --- the thread ------------------------------------------------------------

    def _run(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ, self._receive)
            selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
            while not self._stopping.is_set():
                with self._lock:
                    timeout = max(0.0, self._scheduler.due - self._clock())
                for key, _ in selector.select(timeout):
                    key.data()
                if self._stopping.is_set():
                    return
                self._send_if_due()

    def _drain_wake(self) -> None:
        while True:
            try:
                if not self._wake_r.recv(64):
                    return
            except BlockingIOError:
                return

    def _receive(self) -> None:
        assert self._sock is not None
        for _ in range(BATCH):
            try:
                data, ancillary, _, address = self._sock.recvmsg(RECV_SIZE, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return
            self._counters["rs_received"] += 1
            try:
                source = IPv6Address(address[0].split("%")[0])
                ra.parse_rs(data, hop_limit_of(ancillary), source)
            except ra.Malformed as bad:
                self._malformed[bad.reason] += 1
                continue
            with self._lock:
                self._scheduler.solicited(self._clock())

    def _send_if_due(self) -> None:
        with self._lock:
            now = self._clock()
            if not self._scheduler.is_due(now):
                return
        sent = self._send(final=False)
        with self._lock:
            if sent:
                self._scheduler.sent(self._clock())
            else:
                self._scheduler.retry_at(self._clock() + RETRY_NO_SOURCE)

    def _link_local(self) -> IPv6Address | None:
        """The NIC's link-local address once DAD is done, else None."""
        for msg in self._ipr.get_addr(family=socket.AF_INET6, index=self._ifindex):
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            address = IPv6Address(msg.get_attr("IFA_ADDRESS"))
            if address in LINK_LOCAL and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                return address
        return None

    def advert(self, final: bool = False) -> ra.Advert:
        """The RA to send now (router lifetime 0 when final or without a default route)."""
        return ra.advert_for(
            self._prefixes(),
            self._wall_clock(),
            source_mac=self._mac,
            default_router=not final and self._default_router(),
            max_interval=self._max_interval,
            rdnss=self._rdnss(),
            dnssl=self._dnssl,
            mtu=self._mtu,
            managed=self._managed,
            other=self._other,
        )

    def _send(self, final: bool) -> bool:
        """One RA to ff02::1; False if it could not go (counted)."""
        assert self._sock is not None
        source = self._link_local()
        if source is None:
            self._counters["no_link_local"] += 1
            return False
        message = ra.build_ra(self.advert(final))
        pktinfo = source.packed + struct.pack("=I", self._ifindex)
        try:
            self._sock.sendmsg(
                [message],
                [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)],
                0,
                (ALL_NODES, 0, 0, self._ifindex),
            )
        except OSError as error:
            self._counters["send_errors"] += 1
            if not self._failing:  # once per run of failures, not every retry
                log.warning("router advertisement on %s not sent: %s", self.ifname, error)
            self._failing = True
            return False
        if self._failing:
            log.info("router advertisements on %s sent again", self.ifname)
        self._failing = False
        self._counters["ra_sent"] += 1
        return True
