"""Config section ``firewall:`` of the firewall IO module.

The firewall has no ``enabled`` switch: XDP forwarding bypasses netfilter, so
with the router in the chain the firewall is what keeps the WAN out.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import StrictBool

from homegw.configtypes import ChainRules, Section


class FirewallConfig(Section):
    """``firewall:`` -- what the WAN may reach (default deny)."""

    chain_rules: ClassVar[ChainRules] = ChainRules(
        lan_before=("router", "nat"),
        wan_before=("nat", "router", "dpi"),
        required_with=("router",),
        why="the firewall must see WAN packets before NAT admits them and LAN packets "
        "before the router forwards them",
    )

    #: ICMP echo requests to the WAN address are answered (OpenWrt's default).
    wan_ping: StrictBool = True
    #: Only with ``nat.enabled: false`` (a routed LAN behind another firewall):
    #: WAN packets to LAN addresses are forwarded. With NAT, only NAT sessions,
    #: port forwards and the DMZ host get in.
    forward_wan_to_lan: StrictBool = False

    @property
    def enabled(self) -> bool:
        return True
