"""The router's route table, computed from config and WAN state (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from homegw.dataplane.abi import Nic

IPv4Net = ipaddress.IPv4Network
IPv4Addr = ipaddress.IPv4Address
DEFAULT = ipaddress.IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class Route:
    destination: IPv4Net
    nic: Nic
    gateway: IPv4Addr | None = None  # None: the destination is on the link


@dataclass(frozen=True)
class WanState:
    """What the router knows of the WAN side right now."""

    address: ipaddress.IPv4Interface | None
    gateway: IPv4Addr | None


def _nic_of(via: IPv4Addr, connected: dict[Nic, IPv4Net]) -> Nic | None:
    return next((nic for nic, net in connected.items() if via in net), None)


def compute_routes(
    lan: ipaddress.IPv4Interface,
    wan: WanState,
    static: tuple[tuple[IPv4Net, IPv4Addr], ...] = (),
) -> list[Route]:
    """Connected LAN/WAN routes, the default route via the WAN gateway, and
    static routes whose next hop is on a connected network (others are left
    out until it is)."""
    connected: dict[Nic, IPv4Net] = {Nic.LAN: lan.network}
    if wan.address is not None:
        connected[Nic.WAN] = wan.address.network
    routes = [Route(net, nic) for nic, net in connected.items()]
    if wan.gateway is not None and wan.address is not None:
        routes.append(Route(DEFAULT, Nic.WAN, wan.gateway))
    for destination, via in static:
        nic = _nic_of(via, connected)
        if nic is not None:
            routes.append(Route(destination, nic, via))
    return routes


def lookup(routes: list[Route], address: IPv4Addr) -> Route | None:
    """Longest-prefix match, as the datapath's LPM trie does (for tests and UI)."""
    matches = [r for r in routes if address in r.destination]
    return max(matches, key=lambda r: r.destination.prefixlen, default=None)
