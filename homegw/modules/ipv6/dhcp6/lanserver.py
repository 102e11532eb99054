"""The LAN's DHCPv6 server: `ServerLogic` (server.py) on port 547 of the LAN NIC.

One UDP socket bound to [::]:547 on the LAN NIC (SO_BINDTODEVICE), member of
ff02::1:2 there; replies go to the client's source address and port. One
supervised thread waits on the socket and a wake-up socketpair, with the
next binding expiry as the timeout (then ended bindings are forgotten).
`options()` is called for every message, so prefix changes apply at once.

Leases: the same SQLite file as the IPv4 leases (`state_dir/dhcp-leases.sqlite3`,
homegw/modules/dhcp/service.DB_NAME), in the same style (WAL,
synchronous=NORMAL, one committed transaction per change, see
homegw/modules/dhcp/leases.py), in a table of its own, `leases6`: the IPv4
table's key is an IPv4 address as an integer and its pool logic is IPv4's.
They survive restarts. The server's DUID is a DUID-LL of the LAN MAC, kept
in `state_dir/dhcp6-server-duid`.

`stats()`: the logic's counters (rx_/tx_ by message, drop_ by reason, ...),
malformed datagrams by reason (`malformed_<reason>`) and I/O errors.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path

from homegw import supervise
from homegw.dataplane.slowpath import hardware_address
from homegw.modules.dhcp.service import DB_NAME
from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.server import (
    Binding,
    BindingTable,
    ServerLogic,
    ServerOptions,
    State,
)
from homegw.modules.ipv6.dhcp6.wanclient import (
    ALL_SERVERS,
    BIND_RETRY_FIRST,
    BIND_RETRY_MAX,
    IDLE_WAIT,
    SERVER_PORT,
    load_duid,
)

log = logging.getLogger(__name__)

READS_PER_WAKE = 64  # datagrams handled before the timers get a turn


class LeaseStore6:
    """The `leases6` table of the lease database."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS leases6 (address TEXT PRIMARY KEY, client TEXT NOT NULL,"
        " iaid INTEGER NOT NULL, mac TEXT, hostname TEXT, source TEXT NOT NULL,"
        " expires REAL NOT NULL, state TEXT NOT NULL)"
    )

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=2000")  # the IPv4 server writes the same file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(self.SCHEMA)
        self._lock = threading.Lock()

    def load(self) -> list[Binding]:
        rows = self._db.execute(
            "SELECT address, client, iaid, mac, hostname, source, expires, state FROM leases6"
        )
        return [
            Binding(IPv6Address(a), c, i, m, h, s, e, State(st)) for a, c, i, m, h, s, e, st in rows
        ]

    def save(self, b: Binding) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO leases6"
                " (address, client, iaid, mac, hostname, source, expires, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(b.address), b.client, b.iaid, b.mac, b.hostname, b.source, b.expires, b.state),
            )

    def delete(self, address: IPv6Address) -> None:
        with self._lock:
            self._db.execute("DELETE FROM leases6 WHERE address = ?", (str(address),))

    def close(self) -> None:
        self._db.close()


class LanDhcp6Server:
    """DHCPv6 on the LAN NIC: stateless always, stateful when options() has pools."""

    def __init__(
        self,
        ifname: str,
        options: Callable[[], ServerOptions],
        state_dir: Path,
        *,
        netns: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ifname = ifname
        self.state_dir = Path(state_dir)
        self.netns = netns  # tests: only the server thread enters this namespace
        self._options = options
        self._clock = clock
        self._lock = threading.Lock()  # the table: the thread writes, leases() reads
        self._store: LeaseStore6 | None = None
        self._table = BindingTable()  # replaced by the persisted one at start()
        self._logic: ServerLogic | None = None
        self._thread: supervise.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._sock: socket.socket | None = None
        self._io_counts: Counter[str] = Counter()  # malformed_<reason>, I/O errors

    # ----------------------------------------------------------- public

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LAN DHCPv6 server already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._store = LeaseStore6(self.state_dir / DB_NAME)
        table = BindingTable(on_change=self._store.save, on_delete=self._store.delete)
        table.load(self._store.load())
        self._table = table
        self._stopping.clear()
        self._thread = supervise.Thread(self._run, f"lan-dhcp6-{self.ifname}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread.join(timeout)
        if thread.is_alive():
            log.error("LAN DHCPv6 server thread did not stop within %.1f s", timeout)
            return
        self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def wait_ready(self, timeout: float) -> bool:
        """Block until the socket is bound and in ff02::1:2 (tests, the service)."""
        return self._ready.wait(timeout)

    def leases(self) -> list[dict]:
        """The bound addresses: mac, address, expires, hostname, client (DUID hex)."""
        with self._lock:
            active = self._table.active(self._clock())
        return [
            {
                "mac": b.mac,
                "address": str(b.address),
                "expires": b.expires,
                "hostname": b.hostname,
                "client": b.client,
            }
            for b in sorted(active, key=lambda b: b.address)
        ]

    def stats(self) -> dict[str, int]:
        with self._lock:  # the thread counts under it too
            counters = dict(self._logic.counters) if self._logic is not None else {}
            counters.update(self._io_counts)
        return counters

    def _count(self, key: str) -> None:
        with self._lock:
            self._io_counts[key] += 1

    # ----------------------------------------------------------- thread

    def _run(self) -> None:
        if self.netns:
            from pyroute2 import netns as pyroute2_netns

            pyroute2_netns.setns(self.netns, flags=0)  # this thread only
        try:
            self._open_with_retry()
            while self._sock is not None and not self._stopping.is_set():
                self._wait()
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _open_with_retry(self) -> None:
        backoff = BIND_RETRY_FIRST
        while not self._stopping.is_set():
            try:
                mac = hardware_address(self.ifname)
                duid = load_duid(self.state_dir, mac, "dhcp6-server-duid")
                self._logic = ServerLogic(duid, self._table)
                self._sock = _open_socket(self.ifname)
                self._ready.set()
                log.info("DHCPv6 server on %s port %d", self.ifname, SERVER_PORT)
                return
            except OSError as err:
                self._count("listen_errors")
                log.warning("DHCPv6 server cannot listen on %s: %s", self.ifname, err)
            self._stopping.wait(backoff)  # a back-off: the NIC may come up later
            backoff = min(backoff * 2, BIND_RETRY_MAX)

    def _wait(self) -> None:
        assert self._sock is not None
        due = self._table.next_expiry()
        now = self._clock()
        timeout = IDLE_WAIT if due is None else min(max(due - now, 0.0), IDLE_WAIT)
        ready, _, _ = select.select([self._sock, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            self._wake_r.recv(64)
        if self._sock in ready:
            self._receive()
        if due is not None and due <= self._clock():
            with self._lock:
                self._table.reclaim(self._clock())

    def _receive(self) -> None:
        assert self._sock is not None and self._logic is not None
        for _ in range(READS_PER_WAKE):
            try:
                data, source = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as err:
                self._count("receive_error")
                log.warning("DHCPv6 server receive on %s failed: %s", self.ifname, err)
                return
            try:
                msg = wire.decode(data)
            except wire.Dhcp6Error as err:
                self._count(f"malformed_{err.reason}")
                continue
            address = IPv6Address(source[0].split("%")[0])
            try:
                options = self._options()
            except Exception:  # the service's state: never the server's end
                self._count("options_error")
                log.exception("DHCPv6 server options failed")
                continue
            with self._lock:
                reply = self._logic.handle(msg, address, options, self._clock())
            if reply is not None:
                self._send(reply, source)

    def _send(self, reply: wire.Message, source: tuple) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(wire.encode(reply), source)
        except OSError as err:
            self._count("send_error")
            log.warning("DHCPv6 reply to %s failed: %s", source[0], err)


def _open_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        index = socket.if_nametoindex(ifname)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        group = socket.inet_pton(socket.AF_INET6, ALL_SERVERS) + struct.pack("@I", index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.bind(("::", SERVER_PORT))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
