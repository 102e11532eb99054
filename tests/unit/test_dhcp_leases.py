"""The lease store with a fake clock: allocation order, holds, reservations,
release / decline / expiry, and persistence in SQLite."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from homegw.modules.dhcp.leases import (
    OFFER_HOLD,
    QUARANTINE,
    Lease,
    LeaseDb,
    LeasePool,
    Offer,
    Reservation,
    State,
    client_key,
)

T0 = 1_700_000_000.0
NET = IPv4Network("192.168.1.0/24")
LEASE = 3600
MAC_A, MAC_B, MAC_C, MAC_R = (f"02:00:00:00:00:0{i}" for i in "abcf")
A, B, C, R = (client_key(None, m) for m in (MAC_A, MAC_B, MAC_C, MAC_R))


def ip(last: int) -> int:
    return int(IPv4Address(f"192.168.1.{last}"))


def make_pool(db: LeaseDb | None = None, now: float = T0, last: int = 103) -> LeasePool:
    reservation = Reservation(MAC_R, ip(50), "printer")
    return LeasePool(
        NET,
        IPv4Address("192.168.1.100"),
        IPv4Address(f"192.168.1.{last}"),
        [reservation],
        db,
        now=now,
    )


def bind(pool: LeasePool, client: str, mac: str, now: float = T0) -> Lease:
    offer = pool.offer(client, mac, None, now)
    assert offer is not None
    lease = pool.bind(client, mac, offer.address, None, LEASE, now)
    assert lease is not None
    return lease


def test_client_id_beats_the_mac() -> None:
    assert client_key(b"\x01\x02\x48", MAC_A) == "id:010248"
    assert client_key(None, MAC_A) == "hw:02:00:00:00:00:0a"
    assert client_key(b"", MAC_A) == "hw:02:00:00:00:00:0a"


def test_offers_come_lowest_first_and_are_held_per_client() -> None:
    pool = make_pool()
    assert pool.offer(A, MAC_A, None, T0) == Offer(ip(100), False)
    assert pool.offer(B, MAC_B, None, T0) == Offer(ip(101), False)
    # A retransmitted DISCOVER gets the same held address.
    assert pool.offer(A, MAC_A, None, T0 + 1) == Offer(ip(100), False)
    # Another client may not take A's held address, even when asking for it.
    assert pool.bind(C, MAC_C, ip(100), None, LEASE, T0 + 2) is None
    assert pool.offer(C, MAC_C, ip(100), T0 + 2) == Offer(ip(102), False)


def test_bind_renew_and_known_offer() -> None:
    pool = make_pool()
    lease = bind(pool, A, MAC_A)
    assert lease == Lease(ip(100), A, MAC_A, None, T0 + LEASE, State.BOUND)
    renewed = pool.bind(A, MAC_A, ip(100), "laptop", LEASE, T0 + 1800)
    assert renewed == Lease(ip(100), A, MAC_A, "laptop", T0 + 1800 + LEASE, State.BOUND)
    assert pool.offer(A, MAC_A, None, T0 + 1900) == Offer(ip(100), True)  # no probe needed
    assert pool.lease_of(A, T0 + 1900) == renewed
    assert pool.active(T0 + 1900) == [renewed]


def test_requested_address_is_granted_when_free() -> None:
    pool = make_pool()
    assert pool.offer(A, MAC_A, ip(102), T0) == Offer(ip(102), False)
    lease = pool.bind(B, MAC_B, ip(103), None, LEASE, T0)  # INIT-REBOOT of an unknown client
    assert lease is not None and lease.address == ip(103)
    assert pool.offer(C, MAC_C, None, T0) == Offer(ip(100), False)


def test_out_of_range_or_foreign_addresses_are_refused() -> None:
    pool = make_pool()
    assert pool.bind(A, MAC_A, ip(99), None, LEASE, T0) is None
    assert pool.bind(A, MAC_A, ip(50), None, LEASE, T0) is None  # the printer's
    assert pool.offer(A, MAC_A, ip(50), T0) == Offer(ip(100), False)


def test_reservation_is_honoured_and_never_given_away() -> None:
    pool = make_pool()
    assert pool.offer(R, MAC_R, ip(101), T0) == Offer(ip(50), True)
    assert pool.bind(R, MAC_R, ip(101), None, LEASE, T0) is None  # must take its own
    lease = pool.bind(R, MAC_R, ip(50), "ignored", LEASE, T0)
    assert lease == Lease(ip(50), R, MAC_R, "printer", T0 + LEASE, State.BOUND)
    # A client id does not hide the reserved MAC.
    other_key = client_key(b"\x01abc", MAC_R)
    assert pool.offer(other_key, MAC_R, None, T0) == Offer(ip(50), True)


def test_exhaustion_then_hold_expiry_frees_the_address() -> None:
    pool = make_pool(last=101)
    assert pool.offer(A, MAC_A, None, T0) == Offer(ip(100), False)
    assert pool.offer(B, MAC_B, None, T0) == Offer(ip(101), False)
    assert pool.offer(C, MAC_C, None, T0 + 1) is None
    # A never requested: its hold runs out and C gets the address.
    assert pool.offer(C, MAC_C, None, T0 + OFFER_HOLD) == Offer(ip(100), False)


def test_release_frees_the_address_but_the_client_gets_it_back_first() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    released = pool.release(A, ip(100), T0 + 10)
    assert released is not None and released.state is State.BOUND  # the lease as it was
    assert pool.record(ip(100)) == Lease(ip(100), A, MAC_A, None, T0 + 10, State.RELEASED)
    assert pool.active(T0 + 10) == []
    assert pool.release(A, ip(100), T0 + 11) is None  # nothing left to release
    assert pool.offer(A, MAC_A, None, T0 + 20) == Offer(ip(100), False)


def test_never_used_addresses_go_before_recycled_ones() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    pool.release(A, ip(100), T0 + 10)
    assert [pool.offer(c, m, None, T0 + 20).address for c, m in ((B, MAC_B), (C, MAC_C))] == [
        ip(101),
        ip(102),
    ]


def test_release_by_another_client_is_ignored() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    assert pool.release(B, ip(100), T0) is None
    assert pool.lease_of(A, T0) is not None


def test_expiry_is_reclaimed_with_exact_timing() -> None:
    pool = make_pool()
    lease = bind(pool, A, MAC_A)
    assert pool.next_expiry() == T0 + OFFER_HOLD  # the (already used) hold's heap entry
    assert pool.reclaim(T0 + LEASE - 1) == []
    assert pool.reclaim(T0 + LEASE) == [lease]
    assert pool.record(ip(100)).state is State.EXPIRED
    assert pool.lease_of(A, T0 + LEASE) is None
    assert pool.reclaim(T0 + LEASE + 1) == []  # only once


def test_renewed_lease_is_not_reclaimed_at_its_old_expiry() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    pool.bind(A, MAC_A, ip(100), None, LEASE, T0 + 100)
    assert pool.reclaim(T0 + LEASE) == []
    assert len(pool.reclaim(T0 + 100 + LEASE)) == 1


def test_decline_quarantines_for_the_quarantine_time() -> None:
    pool = make_pool(last=100)
    bind(pool, A, MAC_A)
    declined = pool.decline(A, MAC_A, ip(100), T0 + 5)
    assert declined == Lease(ip(100), "", MAC_A, None, T0 + 5 + QUARANTINE, State.DECLINED)
    assert pool.active(T0 + 5) == []
    assert pool.offer(B, MAC_B, None, T0 + 6) is None  # the only address is quarantined
    assert pool.offer(B, MAC_B, None, T0 + 5 + QUARANTINE) == Offer(ip(100), False)
    assert pool.record(ip(100)) is None  # the quarantine record is gone


def test_decline_from_a_stranger_is_ignored() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    assert pool.decline(B, MAC_B, ip(100), T0) is None
    assert pool.lease_of(A, T0) is not None


def test_probe_conflict_quarantines_the_offered_address() -> None:
    pool = make_pool()
    assert pool.offer(A, MAC_A, None, T0).address == ip(100)
    pool.quarantine(ip(100), "02:99:00:00:00:01", T0)
    assert pool.offer(A, MAC_A, None, T0) == Offer(ip(101), False)


def test_cancelled_offer_goes_back_to_the_pool() -> None:
    pool = make_pool(last=100)
    pool.offer(A, MAC_A, None, T0)
    pool.cancel_offer(A, T0 + 1)  # A chose another server
    assert pool.offer(B, MAC_B, None, T0 + 1) == Offer(ip(100), False)


def test_binding_another_address_releases_the_old_one() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    moved = pool.bind(A, MAC_A, ip(103), None, LEASE, T0 + 1)
    assert moved is not None
    assert pool.record(ip(100)).state is State.RELEASED
    assert [lease.address for lease in pool.active(T0 + 1)] == [ip(103)]


def test_expired_lease_of_another_client_can_be_taken() -> None:
    pool = make_pool()
    bind(pool, A, MAC_A)
    lease = pool.bind(B, MAC_B, ip(100), None, LEASE, T0 + LEASE + 1)  # not reclaimed yet
    assert lease is not None and lease.client == B


# --- persistence -------------------------------------------------------------------------


def test_database_is_wal_with_normal_sync(tmp_path: Path) -> None:
    db = LeaseDb(tmp_path / "leases.sqlite3")
    db.close()
    conn = sqlite3.connect(tmp_path / "leases.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_leases_survive_a_reopen_exactly(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    pool = make_pool(LeaseDb(path))
    a = bind(pool, A, MAC_A)
    b = pool.bind(B, MAC_B, ip(101), "phone", LEASE, T0)
    r = pool.bind(R, MAC_R, ip(50), None, LEASE, T0)
    pool.release(A, ip(100), T0 + 1)
    pool.decline(C, MAC_C, ip(102), T0)  # a stranger: ignored
    pool.offer(C, MAC_C, None, T0)
    pool.decline(C, MAC_C, ip(102), T0 + 2)  # its held offer: quarantined
    pool._db.close()

    again = make_pool(LeaseDb(path), now=T0 + 3)
    assert again.active(T0 + 3) == [r, b]
    assert again.record(ip(100)) == Lease(ip(100), A, MAC_A, None, T0 + 1, State.RELEASED)
    assert again.record(ip(102)).state is State.DECLINED
    # Affinity and allocation carry over: A gets its old address back, C a new one.
    assert again.offer(A, MAC_A, None, T0 + 3) == Offer(a.address, False)
    assert again.offer(C, MAC_C, None, T0 + 3) == Offer(ip(103), False)


def test_loading_drops_records_outside_the_subnet_or_on_a_new_reservation(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    db = LeaseDb(path)
    db.save(Lease(int(IPv4Address("10.9.9.9")), A, MAC_A, None, T0 + 99, State.BOUND))
    db.save(Lease(ip(50), B, MAC_B, None, T0 + 99, State.BOUND))  # now the printer's
    db.save(Lease(ip(101), C, MAC_C, None, T0 + 99, State.BOUND))
    pool = make_pool(db)
    assert [lease.address for lease in pool.active(T0)] == [ip(101)]
    db.close()
    assert len(LeaseDb(path).load()) == 1


def test_expired_while_stopped_are_reclaimed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    pool = make_pool(LeaseDb(path))
    lease = bind(pool, A, MAC_A)
    pool._db.close()
    later = T0 + LEASE + 60
    again = make_pool(LeaseDb(path), now=later)
    assert again.reclaim(later) == [lease]
    assert again.record(ip(100)).state is State.EXPIRED


@pytest.mark.parametrize("count", [2000])
def test_large_pool_allocates_without_scanning(count: int) -> None:
    pool = LeasePool(
        IPv4Network("10.0.0.0/16"), IPv4Address("10.0.0.10"), IPv4Address("10.0.255.250"), now=T0
    )
    got = set()
    for i in range(count):
        mac = f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"
        lease = bind(pool, client_key(None, mac), mac)
        got.add(lease.address)
    assert len(got) == count
    assert min(got) == int(IPv4Address("10.0.0.10"))
    assert max(got) == int(IPv4Address("10.0.0.10")) + count - 1
