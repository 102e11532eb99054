"""Router control plane, pure parts: route computation and the neighbour table."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv4Interface as I
from ipaddress import IPv4Network as N

from homegw.dataplane.abi import Nic
from homegw.modules.router.neigh import PENDING_PACKETS, RESOLVE_TIMEOUT, NeighbourTable
from homegw.modules.router.routes import Route, WanState, compute_routes, lookup

LAN = I("192.168.1.1/24")


def test_routes_static_wan() -> None:
    wan = WanState(I("203.0.113.2/24"), A("203.0.113.1"))
    routes = compute_routes(
        LAN,
        wan,
        (
            (N("10.0.0.0/8"), A("203.0.113.9")),
            (N("172.16.0.0/12"), A("192.168.1.2")),
            (N("100.64.0.0/10"), A("8.8.8.8")),
        ),
    )
    assert routes == [
        Route(N("192.168.1.0/24"), Nic.LAN),
        Route(N("203.0.113.0/24"), Nic.WAN),
        Route(N("0.0.0.0/0"), Nic.WAN, A("203.0.113.1")),
        Route(N("10.0.0.0/8"), Nic.WAN, A("203.0.113.9")),
        Route(N("172.16.0.0/12"), Nic.LAN, A("192.168.1.2")),
    ]  # 100.64/10 left out: its next hop is on no connected network


def test_routes_without_wan_lease_have_no_default() -> None:
    assert compute_routes(LAN, WanState(None, None)) == [Route(N("192.168.1.0/24"), Nic.LAN)]


def test_lookup_longest_prefix() -> None:
    routes = [
        Route(N("0.0.0.0/0"), Nic.WAN, A("203.0.113.1")),
        Route(N("10.0.0.0/8"), Nic.WAN, A("203.0.113.9")),
        Route(N("10.1.0.0/16"), Nic.WAN, A("203.0.113.10")),
    ]
    assert lookup(routes, A("10.1.2.3")).gateway == A("203.0.113.10")
    assert lookup(routes, A("10.2.0.1")).gateway == A("203.0.113.9")
    assert lookup(routes, A("9.9.9.9")).gateway == A("203.0.113.1")
    assert lookup(routes[1:], A("9.9.9.9")) is None


def test_neighbour_learn_hold_and_release() -> None:
    table = NeighbourTable(timeout=300)
    ip = A("192.168.1.11")
    assert table.hold(ip, b"frame1", 3, now=0.0) is True  # first: start resolving
    assert table.hold(ip, b"frame2", 3, now=0.1) is False
    changed, frames = table.learn(ip, "02:00:00:00:00:0b", Nic.LAN, now=0.2)
    assert changed and frames == [(b"frame1", 3), (b"frame2", 3)]
    changed, frames = table.learn(ip, "02:00:00:00:00:0b", Nic.LAN, now=0.3)
    assert (changed, frames) == (False, [])
    changed, _ = table.learn(ip, "02:00:00:00:00:0c", Nic.LAN, now=0.4)  # moved device
    assert changed


def test_neighbour_queue_is_bounded() -> None:
    table = NeighbourTable(timeout=300)
    ip = A("192.168.1.11")
    for i in range(PENDING_PACKETS + 2):
        table.hold(ip, bytes([i]), 3, now=0.0)
    _, frames = table.learn(ip, "02:00:00:00:00:0b", Nic.LAN, now=1.0)
    assert [f for f, _ in frames] == [bytes([i]) for i in range(2, PENDING_PACKETS + 2)]
    assert table.dropped == 2


def test_neighbour_aging_with_a_fake_clock() -> None:
    table = NeighbourTable(timeout=300)
    a, b = A("192.168.1.11"), A("192.168.1.12")
    table.learn(a, "02:00:00:00:00:0b", Nic.LAN, now=0.0)
    table.learn(b, "02:00:00:00:00:0c", Nic.LAN, now=200.0)
    assert table.expire(now=299.0) == []
    assert table.expire(now=300.0) == [a]
    table.learn(b, "02:00:00:00:00:0c", Nic.LAN, now=450.0)  # refreshed by the kernel
    assert table.expire(now=600.0) == []
    assert table.expire(now=750.0) == [b]


def test_unresolved_next_hop_gives_up() -> None:
    table = NeighbourTable(timeout=300)
    table.hold(A("192.168.1.99"), b"f", 3, now=0.0)
    table.expire(now=RESOLVE_TIMEOUT)
    assert table.pending == {} and table.dropped == 1
    assert table.hold(A("192.168.1.99"), b"g", 3, now=RESOLVE_TIMEOUT + 1) is True
