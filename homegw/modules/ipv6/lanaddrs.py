"""The gateway's own addresses on the LAN link, and routes that keep the
rest of each delegated prefix at home.

`apply_lan_addresses(ifname, prefixes, now)` makes the NIC match the plan:

- `<prefix>::1/64` per advertised /64, `nodad` (the gateway owns ::1 of its
  prefixes; waiting for DAD would delay the first RA's DNS address), valid
  and preferred lifetimes what is left of the prefix's (a deprecated one
  keeps preferred 0, so the kernel stops choosing it as a source); the ULA's
  is permanent. Lifetimes are the plan's, not RFC 9096's shorter PIO caps:
  the gateway knows its lease, hosts are only told a part of it;
- addresses of prefixes that left the plan are removed;
- `unreachable <delegated>` for every delegated prefix longer than the LAN's
  /64 (RFC 7084 WPD-5): traffic to an unused part of it is refused here
  instead of following the default route back to the ISP, which routes it
  back to us (a loop until the hop limit runs out). A /64 delegation has no
  unused part.

Only what this module made is touched: addresses `::1/64` in a /64 of the
plan or of an earlier plan (kept in memory per interface), and addresses
and routes carrying its protocol number (IFA_PROTO / RTPROT), which also
finds what an earlier run of the appliance left. Idempotent: the same plan
twice changes nothing but refreshes the lifetimes.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Iterable, Sequence

from pyroute2 import IPRoute

from homegw.modules.ipv6.prefixes import LAN_PREFIXLEN, LanPrefix

log = logging.getLogger(__name__)

IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network

PROTO_HOMEGW = 104  # IFA_PROTO and RTPROT of what this module adds (unused by iproute2's list)
IFA_F_NODAD = 0x02
RTN_UNREACHABLE = 7
RT_TABLE_MAIN = 254
INFINITE_LIFETIME = 0xFFFFFFFF  # netlink's "forever"

_lock = threading.Lock()
_made: dict[str, set[IPv6Network]] = {}  # interface -> /64s whose ::1 this process added


def gateway_address(network: IPv6Network) -> IPv6Address:
    """The gateway's address in a LAN /64: <prefix>::1."""
    return network.network_address + 1


def _seconds_left(until: float | None, now: float) -> int:
    if until is None or math.isinf(until):
        return INFINITE_LIFETIME
    return max(0, min(int(until - now), INFINITE_LIFETIME - 1))


def address_lifetimes(prefix: LanPrefix, now: float) -> dict[str, int]:
    """valid_lft/preferred_lft of the gateway's address in `prefix`; none
    for a permanent address (the ULA, a static prefix)."""
    valid = max(1, _seconds_left(prefix.valid_until, now))
    preferred = min(_seconds_left(prefix.preferred_until, now), valid)
    if valid == preferred == INFINITE_LIFETIME:
        return {}
    return {"valid_lft": valid, "preferred_lft": preferred}


def _our_addresses(
    ipr: IPRoute, index: int, known: set[IPv6Network]
) -> dict[IPv6Network, IPv6Address]:
    """This module's addresses now on the NIC, by /64."""
    ours = {}
    for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
        if msg["prefixlen"] != LAN_PREFIXLEN:
            continue
        address = IPv6Address(msg.get_attr("IFA_ADDRESS"))
        network = IPv6Network((address, LAN_PREFIXLEN), strict=False)
        if address != gateway_address(network):
            continue
        if network in known or msg.get_attr("IFA_PROTO") == PROTO_HOMEGW:
            ours[network] = address
    return ours


def _our_unreachable_routes(ipr: IPRoute) -> set[IPv6Network]:
    routes = set()
    for msg in ipr.get_routes(family=socket.AF_INET6, table=RT_TABLE_MAIN):
        if msg["type"] == RTN_UNREACHABLE and msg["proto"] == PROTO_HOMEGW:
            routes.add(IPv6Network((msg.get_attr("RTA_DST") or "::", msg["dst_len"])))
    return routes


def _unused_parts(prefixes: Iterable[LanPrefix]) -> set[IPv6Network]:
    return {
        p.delegated
        for p in prefixes
        if p.delegated is not None and p.delegated.prefixlen < LAN_PREFIXLEN
    }


def _apply_routes(ipr: IPRoute, wanted: set[IPv6Network]) -> None:
    for gone in _our_unreachable_routes(ipr) - wanted:
        log.info("route unreachable %s removed", gone)
        ipr.route("del", **_route_spec(gone))
    for delegated in wanted:
        ipr.route("replace", **_route_spec(delegated))


def _route_spec(network: IPv6Network) -> dict[str, object]:
    return {
        "dst": str(network.network_address),
        "dst_len": network.prefixlen,
        "family": socket.AF_INET6,
        "type": RTN_UNREACHABLE,
        "proto": PROTO_HOMEGW,
        "table": RT_TABLE_MAIN,
    }


def apply_lan_addresses(ifname: str, prefixes: Sequence[LanPrefix], now: float) -> None:
    """Make `ifname`'s addresses and the unreachable routes match `prefixes`
    (the plan's advertised list at `now`, wall-clock); see the module docstring."""
    wanted = {p.network: p for p in prefixes if not p.expired(now)}
    with _lock, IPRoute() as ipr:
        links = ipr.link_lookup(ifname=ifname)
        if not links:
            raise RuntimeError(f"LAN addresses: no interface {ifname!r}")
        index = links[0]
        present = _our_addresses(ipr, index, _made.get(ifname, set()) | set(wanted))
        for network, address in present.items():
            if network not in wanted:
                log.info("%s: address %s/64 removed (its prefix left the plan)", ifname, address)
                ipr.addr("del", index=index, address=str(address), prefixlen=LAN_PREFIXLEN)
        for network, prefix in wanted.items():
            if network not in present:
                log.info("%s: address %s/64 added", ifname, gateway_address(network))
            ipr.addr(
                "replace",
                index=index,
                address=str(gateway_address(network)),
                prefixlen=LAN_PREFIXLEN,
                flags=IFA_F_NODAD,
                proto=PROTO_HOMEGW,
                **address_lifetimes(prefix, now),
            )
        _made[ifname] = set(wanted)
        _apply_routes(ipr, _unused_parts(wanted.values()))
