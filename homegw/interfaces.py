"""Configure the gateway's own interfaces from the config (pyroute2)."""

from __future__ import annotations

import errno
import ipaddress
import logging
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

EPHEMERAL_RANGE_SYSCTL = Path("/proc/sys/net/ipv4/ip_local_port_range")


class InterfaceError(RuntimeError):
    pass


def missing_interfaces(names: list[str]) -> list[str]:
    with IPRoute() as ipr:
        return [name for name in names if not ipr.link_lookup(ifname=name)]


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise InterfaceError(f"{ifname}: no such interface in this network namespace")
    return found[0]


def set_address(ifname: str, address: ipaddress.IPv4Interface, mtu: int | None = None) -> None:
    """Bring ifname up with exactly this IPv4 address (others removed)."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        if mtu:
            ipr.link("set", index=index, mtu=mtu)
        ipr.link("set", index=index, state="up")
        present = {
            ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(index=index, family=2)
        }
        for old in present - {address}:
            ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
            log.info("%s: removed address %s", ifname, old)
        if address not in present:
            ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
            log.info("%s: address %s", ifname, address)


def remove_address(ifname: str, address: ipaddress.IPv4Interface) -> None:
    """Take one IPv4 address off ifname; already gone (or no such interface): nothing."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return
        try:
            ipr.addr(
                "del", index=found[0], address=str(address.ip), prefixlen=address.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise InterfaceError(f"{ifname}: cannot remove address {address}: {exc}") from exc
            return
    log.info("%s: removed address %s", ifname, address)


def set_default_route(ifname: str, gateway: ipaddress.IPv4Address) -> None:
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        try:
            ipr.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=index)
        except NetlinkError as exc:
            raise InterfaceError(
                f"{ifname}: cannot set default route via {gateway}: {exc}"
            ) from exc
    log.info("default route via %s on %s", gateway, ifname)


def link_up(ifname: str) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=_index(ipr, ifname), state="up")


def set_ephemeral_ports(low: int, high: int) -> None:
    """Keep the kernel's own sockets out of the NAT pool."""
    wanted = f"{low}\t{high}"
    if EPHEMERAL_RANGE_SYSCTL.read_text().split() != [str(low), str(high)]:
        EPHEMERAL_RANGE_SYSCTL.write_text(wanted)
        log.info("kernel ephemeral ports set to %d-%d", low, high)
