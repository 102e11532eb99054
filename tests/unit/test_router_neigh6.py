"""IPv6 next hops in the router's neighbour handling (pure parts, no BPF):
NDP events from netlink become neighbour events, IPv6 misses are held and
released like IPv4's, and the two families never mix."""

from __future__ import annotations

import ipaddress

from pyroute2.netlink.rtnl.ndmsg import ndmsg

from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.slowpath import Punt
from homegw.modules.router.module import REASON_NEIGH6_MISS, RouterModule
from homegw.modules.router.neigh import NUD_REACHABLE, NeighbourTable
from homegw.modules.router.watcher import RTM_DELNEIGH, RTM_NEWNEIGH, NeighEvent, _neigh_event

V6 = ipaddress.IPv6Address("2001:db8:100::11")
V4 = ipaddress.IPv4Address("192.168.1.11")
MAC = "02:48:47:00:00:01"


def neigh_message(family: int, dst: str, kind: int = RTM_NEWNEIGH) -> ndmsg:
    msg = ndmsg()
    msg["family"] = family
    msg["ifindex"] = 3
    msg["state"] = NUD_REACHABLE
    msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", MAC)]
    msg["header"] = {"type": kind}
    return msg


def test_ndp_entries_become_neighbour_events() -> None:
    assert _neigh_event(neigh_message(10, str(V6))) == NeighEvent(V6, 3, MAC, NUD_REACHABLE)
    assert _neigh_event(neigh_message(10, str(V6), RTM_DELNEIGH)) == NeighEvent(V6, 3, MAC, 0)
    assert _neigh_event(neigh_message(2, str(V4))) == NeighEvent(V4, 3, MAC, NUD_REACHABLE)


def test_other_families_and_groups_ignored() -> None:
    assert _neigh_event(neigh_message(7, str(V4))) is None  # AF_BRIDGE: the bridge's fdb
    assert _neigh_event(neigh_message(10, "ff02::16")) is None  # a group's NOARP entry


def test_families_kept_apart_in_the_table() -> None:
    table = NeighbourTable(timeout=10)
    table.learn(V4, MAC, Nic.LAN, now=0.0)
    assert table.hold(V6, b"frame6", 3, now=1.0)  # the IPv4 entry resolves nothing for it
    changed, frames = table.learn(V6, MAC, Nic.LAN, now=2.0)
    assert (changed, frames) == (True, [(b"frame6", 3)])
    assert set(table.entries) == {V4, V6}


def test_ipv6_miss_is_held_for_its_next_hop_and_nic() -> None:
    router = RouterModule(
        parse_config(
            {
                "wan": {"interface": "wan0", "mode": "dhcp"},
                "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
            }
        ),
        watch_kernel=False,
    )
    words = tuple(int.from_bytes(V6.packed[i : i + 4], "little") for i in range(0, 16, 4))
    frame = b"\x02" * 60
    punt = Punt(router.module_id, REASON_NEIGH6_MISS + Nic.LAN, 3, len(frame), words, frame)
    router.handlers()[punt.reason](punt)
    assert list(router.table.pending) == [V6]
    assert list(router.table.pending[V6].frames) == [(frame, 3)]
    assert router.handlers()[REASON_NEIGH6_MISS + Nic.WAN] == router.handlers()[punt.reason]
