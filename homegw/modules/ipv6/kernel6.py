"""The kernel's side of IPv6 on the gateway's NICs: its sysctls, the WAN's
DHCPv6 addresses, what it holds (addresses, the default route, MTUs), and a
watcher of its netlink events.

The kernel does SLAAC on the WAN from the ISP's router advertisements
(accept_ra=2: it forwards, and still takes the ISP's RAs), and keeps the
default route they announce; homegw reads both from it rather than parsing
the ISP's RAs itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK

from homegw import supervise

log = logging.getLogger(__name__)

AF_INET6 = 10
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
CONF = Path("/proc/sys/net/ipv6/conf")
INFINITE = 0xFFFFFFFF


def _sysctl(ifname: str, key: str, value: int) -> None:
    path = CONF / ifname / key
    if path.read_text().strip() != str(value):
        path.write_text(str(value))
        log.info("ipv6 %s/%s = %d", ifname, key, value)


def configure_kernel(wan_if: str, lan_if: str, *, wan_auto: bool) -> None:
    """The gateway routes IPv6; its WAN takes the ISP's RAs (SLAAC, the
    default route) in auto mode; its LAN takes none (it sends them)."""
    for ifname in (wan_if, lan_if):
        _sysctl(ifname, "disable_ipv6", 0)
    _sysctl("all", "forwarding", 1)
    _sysctl(wan_if, "accept_ra", 2 if wan_auto else 0)
    _sysctl(wan_if, "autoconf", 1 if wan_auto else 0)
    _sysctl(lan_if, "accept_ra", 0)
    _sysctl(lan_if, "autoconf", 0)


@dataclass(frozen=True)
class KernelAddress:
    interface: ipaddress.IPv6Interface
    deprecated: bool  # preferred lifetime over (or a DAD failure): not a source to use

    @property
    def ip(self) -> ipaddress.IPv6Address:
        return self.interface.ip


@dataclass(frozen=True)
class KernelState:
    """What the kernel holds of IPv6 on the two NICs."""

    wan: tuple[KernelAddress, ...] = ()
    lan: tuple[KernelAddress, ...] = ()
    wan_gateway: ipaddress.IPv6Address | None = None  # next hop of the default route
    wan_mtu: int = 1500
    lan_mtu: int = 1500


def _addresses(ipr: IPRoute, index: int) -> tuple[KernelAddress, ...]:
    found = []
    for msg in ipr.get_addr(index=index, family=AF_INET6):
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if flags & IFA_F_TENTATIVE:
            continue
        interface = ipaddress.IPv6Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        found.append(KernelAddress(interface, bool(flags & (IFA_F_DEPRECATED | IFA_F_DADFAILED))))
    return tuple(found)


def _default_gateway(ipr: IPRoute, wan_index: int) -> ipaddress.IPv6Address | None:
    for route in ipr.get_routes(family=AF_INET6, table=254):
        if route["dst_len"] == 0 and route.get_attr("RTA_OIF") == wan_index:
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                return ipaddress.IPv6Address(gateway)
    return None


def _mtu(ipr: IPRoute, index: int) -> int:
    links = ipr.get_links(index)
    return int(links[0].get_attr("IFLA_MTU")) if links else 1500


def kernel_state(wan_if: str, lan_if: str) -> KernelState:
    with IPRoute() as ipr:
        wan, lan = ipr.link_lookup(ifname=wan_if), ipr.link_lookup(ifname=lan_if)
        if not wan or not lan:
            return KernelState()
        wan_mtu = _mtu(ipr, wan[0])
        ra_mtu = CONF / wan_if / "mtu"  # the MTU option of the ISP's RA lowers it here
        if ra_mtu.exists():
            wan_mtu = min(wan_mtu, int(ra_mtu.read_text()))
        return KernelState(
            wan=_addresses(ipr, wan[0]),
            lan=_addresses(ipr, lan[0]),
            wan_gateway=_default_gateway(ipr, wan[0]),
            wan_mtu=wan_mtu,
            lan_mtu=_mtu(ipr, lan[0]),
        )


def _lifetime(until: float, now: float) -> int:
    left = until - now
    return INFINITE if left >= INFINITE else max(0, int(left))


class WanAddresses:
    """The DHCPv6 (IA_NA) addresses on the WAN NIC, as /128s with the lease's
    lifetimes; the ones a newer lease no longer has are removed."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self._ours: set[ipaddress.IPv6Address] = set()

    def set(self, addresses: Iterable[tuple[ipaddress.IPv6Address, float, float]], now: float):
        """addresses: (address, preferred_until, valid_until), time.time() based."""
        wanted = {a: (p, v) for a, p, v in addresses if v > now}
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.ifname)
            if not found:
                return
            index = found[0]
            for address in self._ours - wanted.keys():
                with contextlib.suppress(NetlinkError):
                    ipr.addr("del", index=index, address=str(address), prefixlen=128)
                log.info("%s: removed DHCPv6 address %s", self.ifname, address)
            for address, (preferred, valid) in wanted.items():
                ipr.addr(
                    "replace",
                    index=index,
                    address=str(address),
                    prefixlen=128,
                    family=AF_INET6,
                    preferred_lft=_lifetime(preferred, now),
                    valid_lft=_lifetime(valid, now),
                )
            new = wanted.keys() - self._ours
        for address in new:
            log.info("%s: DHCPv6 address %s", self.ifname, address)
        self._ours = set(wanted)


def set_static(wan_if: str, address: ipaddress.IPv6Interface | None, gateway) -> None:
    """Static mode: the configured WAN address and default route."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=wan_if)
        if not found:
            return
        index = found[0]
        if address is not None:
            ipr.addr(
                "replace",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                family=AF_INET6,
            )
        if gateway is not None:
            ipr.route("replace", dst="::/0", gateway=str(gateway), oif=index, family=AF_INET6)
    log.info("%s: static IPv6 %s via %s", wan_if, address, gateway)


class KernelWatcher6(supervise.LoopThread):
    """Calls on_change() after IPv6 address, route or link events (a
    netlink subscription in a supervised asyncio thread: no polling)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__("ipv6-netlink")
        self._on_change = on_change

    async def serve(self) -> None:
        async with AsyncIPRoute() as events:
            await events.bind(groups=RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE | RTMGRP_LINK)
            self.ready()
            while True:
                async for _msg in events.get():
                    self._changed()

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("handling an IPv6 netlink event failed")
