"""Neighbour aging with the datapath's use marks (pure logic, fake clock):
used next hops are re-confirmed before they expire, never dropped while in
use; incomplete entries linger while punts for them keep coming."""

from __future__ import annotations

import ipaddress

from homegw.dataplane.abi import Nic
from homegw.modules.router.neigh import (
    CONFIRM_TIMEOUT,
    INCOMPLETE_LINGER,
    NeighbourTable,
)

A = ipaddress.IPv4Address
MAC = "02:00:00:00:00:0b"


def test_used_entry_is_confirmed_before_it_expires_and_stays() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.11")
    table.learn(ip, MAC, Nic.LAN, now=100.0)
    used = {ip: 103.0}
    assert table.age(104.0, used.get).confirm == []  # young still
    work = table.age(105.0, used.get)  # half its timeout: re-confirm, keep it
    assert (work.confirm, work.stale) == ([ip], [])
    # not asked twice, not removed at its timeout while the kernel works on it
    assert table.age(110.0, used.get).confirm == []
    assert table.age(110.0, used.get).stale == []
    table.learn(ip, MAC, Nic.LAN, now=111.0)  # the kernel confirmed it
    assert table.age(112.0, used.get).stale == []
    assert table.age(121.0, used.get).stale == [ip]  # not used since: out at its timeout


def test_unused_entry_expires_at_its_timeout() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.11")
    table.learn(ip, MAC, Nic.LAN, now=100.0)
    used = {ip: 98.0}  # a mark from before it was learned
    assert table.age(109.0, used.get).confirm == []
    assert table.age(110.0, used.get).stale == [ip]


def test_confirmation_the_kernel_never_gives_drops_the_entry() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.11")
    table.learn(ip, MAC, Nic.LAN, now=100.0)
    assert table.age(105.0, {ip: 104.0}.get).confirm == [ip]
    assert table.age(105.0 + CONFIRM_TIMEOUT - 0.1, {ip: 104.0}.get).stale == []
    assert table.age(105.0 + CONFIRM_TIMEOUT, {ip: 104.0}.get).stale == [ip]


def test_incomplete_entry_lingers_while_punts_arrive() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.99")
    table.hold(ip, b"f", 3, now=0.0)
    for t in range(1, 30):  # a punt a second (the datapath limits them)
        table.hold(ip, b"f", 3, now=float(t))
        assert table.age(float(t), lambda _ip: None).incomplete == []
    assert table.age(29.0 + INCOMPLETE_LINGER, lambda _ip: None).incomplete == [ip]


def test_resolved_next_hop_is_no_longer_incomplete() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.99")
    table.hold(ip, b"f", 3, now=0.0)
    table.learn(ip, MAC, Nic.LAN, now=0.5)
    assert table.age(INCOMPLETE_LINGER + 1, lambda _ip: None).incomplete == []


def test_truncated_punt_starts_resolution_but_is_not_held() -> None:
    table = NeighbourTable(timeout=10)
    ip = A("192.168.1.99")
    assert table.hold(ip, None, 3, now=0.0) is True
    _, frames = table.learn(ip, MAC, Nic.LAN, now=0.1)
    assert frames == [] and table.dropped == 1
