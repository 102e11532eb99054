"""The LAN lease store: address allocation (pure logic, `now` passed in) and
its persistence in SQLite.

One record per address (`Lease`), in one of four states: BOUND (leased until
`expires`), RELEASED / EXPIRED (free, but remembered so the same client gets
the same address back while nobody else took it), DECLINED (quarantined
until `expires` after a DHCPDECLINE or an ARP probe conflict).

Allocation for a client, in order: its reservation; its current or previous
address if still free; the address it asks for if free; a never-used
address of the range (lowest first, a heap); the address freed longest ago
(an ordered dict). No scan of the table: DISCOVER is O(log n).

An OFFER puts a short *hold* on the address (`OFFER_HOLD` s, in memory
only) so two clients in DISCOVER at once never get the same offer.

Persistence: SQLite in WAL mode with synchronous=NORMAL. Every change is
its own committed transaction, appended to the WAL by write(2): once the
call returns the data is in the kernel's page cache, so `kill -9` of the
process loses nothing and leaves no torn file (the WAL is replayed on next
open). Only an OS crash or power loss can drop the transactions since the
last checkpoint; a DHCP client then renewing an address we forgot gets it
re-adopted if it is still free (authoritative server), so such a loss
heals itself. FULL would fsync on every ACK, NORMAL fsyncs at checkpoints.
"""

from __future__ import annotations

import enum
import heapq
import logging
import sqlite3
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from homegw.modules.dhcp.packet import ip_str

log = logging.getLogger(__name__)

OFFER_HOLD = 30.0  # seconds an offered address stays reserved for its client
QUARANTINE = 600.0  # seconds a declined / conflicting address is not offered


class State(enum.StrEnum):
    BOUND = "bound"
    RELEASED = "released"
    EXPIRED = "expired"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class Lease:
    """One address record. `client` is the client key (see `client_key`)."""

    address: int
    client: str
    mac: str
    hostname: str | None  # the DNS label (sanitised) the LAN knows it by
    expires: float
    state: State
    sent_name: str | None = None  # the name as the client sent it (for display)

    @property
    def ip(self) -> IPv4Address:
        return IPv4Address(self.address)

    def active(self, now: float) -> bool:
        return self.state is State.BOUND and self.expires > now


@dataclass(frozen=True, slots=True)
class Reservation:
    """A static lease: `mac` always gets `address` (and `hostname`)."""

    mac: str
    address: int
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    address: int
    known: bool  # already this client's (bound or reserved): no ARP probe needed


@dataclass(slots=True)
class _Hold:
    client: str
    until: float


def client_key(client_id: bytes | None, mac: str) -> str:
    """Identity of a client: option 61 when present (it beats chaddr), else its MAC."""
    return "id:" + client_id.hex() if client_id else "hw:" + mac


class LeaseDb:
    """SQLite persistence of lease records (WAL, synchronous=NORMAL; see module doc)."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS leases (address INTEGER PRIMARY KEY, client TEXT NOT NULL,"
        " mac TEXT NOT NULL, hostname TEXT, expires REAL NOT NULL, state TEXT NOT NULL,"
        " sent_name TEXT)"
    )

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(self.SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(leases)")}
        if "sent_name" not in columns:  # a lease file from before names as sent
            self._db.execute("ALTER TABLE leases ADD COLUMN sent_name TEXT")

    def load(self) -> list[Lease]:
        rows = self._db.execute(
            "SELECT address, client, mac, hostname, expires, state, sent_name FROM leases"
        )
        return [Lease(a, c, m, h, e, State(s), n) for a, c, m, h, e, s, n in rows]

    def save(self, lease: Lease) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO leases"
            " (address, client, mac, hostname, expires, state, sent_name)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                lease.address,
                lease.client,
                lease.mac,
                lease.hostname,
                lease.expires,
                lease.state,
                lease.sent_name,
            ),
        )

    def delete(self, address: int) -> None:
        self._db.execute("DELETE FROM leases WHERE address = ?", (address,))

    def close(self) -> None:
        self._db.close()


class LeasePool:
    """Allocation state of one subnet. All times are epoch seconds passed in."""

    def __init__(
        self,
        network: IPv4Network,
        range_start: IPv4Address,
        range_end: IPv4Address,
        reservations: list[Reservation] | tuple[Reservation, ...] = (),
        db: LeaseDb | None = None,
        *,
        now: float,
    ) -> None:
        self.network = network
        self.first, self.last = int(range_start), int(range_end)
        self.reserved_by_mac = {r.mac: r for r in reservations}
        self.reserved_addr = {r.address: r for r in reservations}
        self._db = db
        self._records: dict[int, Lease] = {}
        self._by_client: dict[str, int] = {}
        self._holds: dict[int, _Hold] = {}
        self._hold_of: dict[str, int] = {}
        self._expiry: list[tuple[float, int]] = []  # (expires, address), lazily pruned
        self._hold_expiry: list[tuple[float, int]] = []
        self._fresh: list[int] = []  # never-used range addresses (heap)
        self._recycled: dict[int, None] = {}  # freed addresses, oldest first
        self._unreported: list[Lease] = []  # expired, not yet returned by reclaim()
        self._load(db.load() if db else [], now)

    # -- loading -----------------------------------------------------------------

    def _load(self, records: list[Lease], now: float) -> None:
        for lease in sorted(records, key=lambda r: r.expires):
            if not self._keep_on_load(lease):
                log.info(
                    "dropping stored lease %s: outside the pool or reserved", ip_str(lease.address)
                )
                self._delete(lease.address)
                continue
            self._records[lease.address] = lease
            if lease.state is not State.DECLINED:
                self._by_client[lease.client] = lease.address
            if lease.state in (State.BOUND, State.DECLINED):
                self._expiry.append((lease.expires, lease.address))
            elif self._in_range(lease.address):
                self._recycled[lease.address] = None
        heapq.heapify(self._expiry)
        self._fresh = [
            a
            for a in range(self.first, self.last + 1)
            if a not in self._records and a not in self.reserved_addr
        ]  # already sorted: a valid heap

    def _keep_on_load(self, lease: Lease) -> bool:
        if IPv4Address(lease.address) not in self.network:
            return False
        owner = self.reserved_addr.get(lease.address)
        return owner is None or owner.mac == lease.mac

    # -- queries -----------------------------------------------------------------

    def _in_range(self, address: int) -> bool:
        return self.first <= address <= self.last

    def record(self, address: int) -> Lease | None:
        return self._records.get(address)

    def lease_of(self, client: str, now: float) -> Lease | None:
        """The client's active lease, if any."""
        address = self._by_client.get(client)
        lease = self._records.get(address) if address is not None else None
        return lease if lease and lease.client == client and lease.active(now) else None

    def active(self, now: float) -> list[Lease]:
        """Every BOUND, unexpired lease, by address."""
        return sorted((r for r in self._records.values() if r.active(now)), key=lambda r: r.address)

    def available(self, address: int, client: str, mac: str, now: float) -> bool:
        """May `client` (with `mac`) have `address` now?"""
        owner = self.reserved_addr.get(address)
        if owner is not None:
            return owner.mac == mac
        if not self._in_range(address) or mac in self.reserved_by_mac:
            return False
        hold = self._holds.get(address)
        if hold is not None and hold.client != client and hold.until > now:
            return False
        lease = self._records.get(address)
        if lease is None or lease.client == client and lease.state is not State.DECLINED:
            return True
        return lease.state in (State.RELEASED, State.EXPIRED) or lease.expires <= now

    # -- DISCOVER ------------------------------------------------------------------

    def offer(self, client: str, mac: str, requested: int | None, now: float) -> Offer | None:
        """An address to offer, held for OFFER_HOLD seconds; None when exhausted."""
        reservation = self.reserved_by_mac.get(mac)
        if reservation is not None:
            return Offer(reservation.address, True)
        current = self.lease_of(client, now)
        if current is not None:
            return Offer(current.address, True)
        address = self._choose(client, mac, requested, now)
        if address is None:
            return None
        self._hold(address, client, now)
        return Offer(address, False)

    def _choose(self, client: str, mac: str, requested: int | None, now: float) -> int | None:
        for candidate in (self._hold_of.get(client), self._by_client.get(client), requested):
            if candidate is not None and self.available(candidate, client, mac, now):
                return candidate
        address = self._take_free(client, mac, now)
        if address is None:
            self._reclaim(now)  # expired leases are reported by the next reclaim()
            address = self._take_free(client, mac, now)
        return address

    def _take_free(self, client: str, mac: str, now: float) -> int | None:
        while self._fresh:
            address = heapq.heappop(self._fresh)
            if self.available(address, client, mac, now):
                return address
        while self._recycled:
            address = next(iter(self._recycled))
            del self._recycled[address]
            if self.available(address, client, mac, now):
                return address
        return None

    def _hold(self, address: int, client: str, now: float) -> None:
        self._recycled.pop(address, None)
        previous = self._hold_of.pop(client, None)
        if previous is not None and previous != address:
            self._drop_hold(previous, now)
        until = now + OFFER_HOLD
        self._holds[address] = _Hold(client, until)
        self._hold_of[client] = address
        heapq.heappush(self._hold_expiry, (until, address))

    def cancel_offer(self, client: str, now: float) -> None:
        """The client chose another server (or the probe failed): free its offer."""
        address = self._hold_of.pop(client, None)
        if address is not None:
            self._drop_hold(address, now)

    def _drop_hold(self, address: int, now: float) -> None:
        hold = self._holds.pop(address, None)
        if hold is not None and self._hold_of.get(hold.client) == address:
            del self._hold_of[hold.client]
        self._make_free(address, now)

    # -- REQUEST / RELEASE / DECLINE -------------------------------------------------

    def bind(
        self,
        client: str,
        mac: str,
        address: int,
        hostname: str | None,
        lease_time: int,
        now: float,
        sent_name: str | None = None,
    ) -> Lease | None:
        """Lease `address` to the client; None if it may not have it (NAK)."""
        reservation = self.reserved_by_mac.get(mac)
        if reservation is not None and reservation.address != address:
            return None
        if not self.available(address, client, mac, now):
            return None
        if reservation is not None and reservation.hostname:
            hostname = reservation.hostname
        old = self._by_client.get(client)
        if old is not None and old != address:
            self._end(old, client, State.RELEASED, now)
        held = self._hold_of.pop(client, None)
        if held is not None and held != address:
            self._drop_hold(held, now)
        self._holds.pop(address, None)
        self._recycled.pop(address, None)
        lease = Lease(address, client, mac, hostname, now + lease_time, State.BOUND, sent_name)
        self._store(lease)
        heapq.heappush(self._expiry, (lease.expires, address))
        return lease

    def release(self, client: str, address: int, now: float) -> Lease | None:
        """DHCPRELEASE: the ended lease, or None if it was not the client's."""
        return self._end(address, client, State.RELEASED, now)

    def decline(self, client: str, mac: str, address: int, now: float) -> Lease | None:
        """DHCPDECLINE from the client that holds `address`: quarantine it."""
        lease = self._records.get(address)
        held = self._holds.get(address)
        if not (lease and lease.client == client) and not (held and held.client == client):
            return None
        self._by_client.pop(client, None)
        return self.quarantine(address, mac, now)

    def quarantine(self, address: int, mac: str, now: float) -> Lease:
        """Keep `address` out of the pool for QUARANTINE seconds (decline or conflict)."""
        hold = self._holds.pop(address, None)
        if hold is not None and self._hold_of.get(hold.client) == address:
            del self._hold_of[hold.client]
        self._recycled.pop(address, None)
        lease = Lease(address, "", mac, None, now + QUARANTINE, State.DECLINED)
        self._store(lease)
        heapq.heappush(self._expiry, (lease.expires, address))
        return lease

    def _end(self, address: int, client: str, state: State, now: float) -> Lease | None:
        lease = self._records.get(address)
        if lease is None or lease.client != client or lease.state is not State.BOUND:
            return None
        ended = replace(lease, state=state, expires=min(lease.expires, now))
        self._store(ended)
        self._make_free(address, now)
        return lease

    # -- time ------------------------------------------------------------------------

    def reclaim(self, now: float) -> list[Lease]:
        """Expire leases and quarantines that ran out, drop stale holds.
        Returns the leases that expired since the last call (their bindings must go)."""
        self._reclaim(now)
        expired, self._unreported = self._unreported, []
        return expired

    def _reclaim(self, now: float) -> None:
        expired = self._unreported
        while self._hold_expiry and self._hold_expiry[0][0] <= now:
            until, address = heapq.heappop(self._hold_expiry)
            hold = self._holds.get(address)
            if hold is not None and hold.until == until:
                self._drop_hold(address, now)
        while self._expiry and self._expiry[0][0] <= now:
            expires, address = heapq.heappop(self._expiry)
            lease = self._records.get(address)
            if lease is None or lease.expires != expires:
                continue  # renewed or replaced since
            if lease.state is State.BOUND:
                self._store(replace(lease, state=State.EXPIRED))
                expired.append(lease)
            elif lease.state is State.DECLINED:
                self._records.pop(address)
                self._delete(address)
            self._make_free(address, now)

    def next_expiry(self) -> float | None:
        """When reclaim() next has something to do (None: nothing pending)."""
        times = [h[0][0] for h in (self._expiry, self._hold_expiry) if h]
        return min(times) if times else None

    # -- internals ---------------------------------------------------------------------

    def _make_free(self, address: int, now: float) -> None:
        if not self._in_range(address) or address in self.reserved_addr:
            return
        if address in self._holds and self._holds[address].until > now:
            return
        lease = self._records.get(address)
        if lease is not None and lease.active(now):
            return
        if lease is None:
            heapq.heappush(self._fresh, address)
        else:
            self._recycled[address] = None

    def _store(self, lease: Lease) -> None:
        self._records[lease.address] = lease
        if lease.state is not State.DECLINED:
            self._by_client[lease.client] = lease.address
        if self._db is not None:
            self._db.save(lease)

    def _delete(self, address: int) -> None:
        if self._db is not None:
            self._db.delete(address)
