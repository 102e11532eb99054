"""Facts about the home's IPv6 addressing that the datapath modules need.

The IPv6 service (homegw/modules/ipv6/service.py) builds an `Ipv6Facts`
from the kernel's addresses and routes on the two NICs whenever they change
(a delegated prefix came or changed, SLAAC gave the WAN an address, the
ISP's router appeared) and the appliance hands it to every loaded module's
`IOModule.on_ipv6`, as it hands the IPv4 WAN lease to `on_wan`. A module
never asks another module for these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network


@dataclass(frozen=True)
class Ipv6Facts:
    # /64s on the LAN link (ULA and global), the deprecated ones included
    # while still valid: destinations the router delivers on the LAN
    lan_prefixes: tuple[IPv6Network, ...] = ()
    # the home's own space: the delegated prefixes and the ULA /48. LAN
    # sources must be inside it, WAN sources never are
    inside: tuple[IPv6Network, ...] = ()
    # the gateway's address on the LAN that ICMPv6 errors to LAN hosts come
    # from (its global LAN address, else its ULA one)
    lan_address: IPv6Address | None = None
    # the gateway's global WAN address (SLAAC or IA_NA): the source of
    # ICMPv6 errors sent to the WAN; None while it has none
    wan_address: IPv6Address | None = None
    # every address of the gateway on both NICs, link-locals included
    own: tuple[IPv6Address, ...] = ()
    # the next hop of the default route (the ISP router, link-local), or None
    wan_gateway: IPv6Address | None = None
    # interface MTUs for IPv6 (the RA's MTU option may lower the WAN's)
    lan_mtu: int = 1500
    wan_mtu: int = 1500

    @property
    def enabled(self) -> bool:
        """Whether the LAN has IPv6 at all (at least its ULA prefix)."""
        return bool(self.lan_prefixes)
