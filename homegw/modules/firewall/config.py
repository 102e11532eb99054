"""Config section ``firewall:`` of the firewall IO module.

The firewall has no ``enabled`` switch: XDP forwarding bypasses netfilter, so
with the router in the chain the firewall is what keeps the WAN out.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from homegw.configtypes import ChainRules, IPv6Address, PortRange, Problem, Section, raise_problems

#: Pinhole rules the datapath holds (firewall6.h FW6_MAX_PINHOLES): "both"
#: takes two.
MAX_PINHOLE_RULES = 64


class Ipv6Pinhole(Section):
    """Inbound IPv6 to one LAN host: ``port`` (one or a range) of ``protocol``.

    ``host`` is an interface id (``::1234``: the host's address in every LAN
    /64, so a renumbered prefix keeps the rule) or a full address.
    """

    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    protocol: Literal["tcp", "udp", "both"] = "both"
    port: PortRange
    host: IPv6Address

    @field_validator("host")
    @classmethod
    def _unicast_host(cls, host: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
        if host.is_multicast or host.is_link_local or host.is_loopback or host.is_unspecified:
            raise ValueError(f"{host} is not a LAN host's address or interface id (::1234)")
        if not is_interface_id(host) and host.ipv4_mapped is not None:
            raise ValueError(f"{host} is an IPv4-mapped address")
        return host

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("tcp", "udp") if self.protocol == "both" else (self.protocol,)

    @property
    def by_interface_id(self) -> bool:
        return is_interface_id(self.host)


def is_interface_id(address: ipaddress.IPv6Address) -> bool:
    """An address whose first 64 bits are 0 stands for an interface id."""
    return int(address) >> 64 == 0


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
    #: ICMPv6 echo requests from the WAN reach LAN hosts (OpenWrt's default,
    #: RFC 4890 4.3.1), rate-limited.
    ipv6_ping_lan: StrictBool = True
    #: Inbound IPv6 connections allowed to a LAN host (RFC 6092 simple
    #: security lets nothing else in).
    ipv6_pinholes: tuple[Ipv6Pinhole, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> FirewallConfig:
        raise_problems("FirewallConfig", self._pinhole_problems())
        return self

    def _pinhole_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        rules = sum(len(p.protocols) for p in self.ipv6_pinholes)
        if rules > MAX_PINHOLE_RULES:
            reason = f"{rules} rules (protocol both counts twice), at most {MAX_PINHOLE_RULES}"
            problems.append((("ipv6_pinholes",), reason))
        for i, pinhole in enumerate(self.ipv6_pinholes):
            for j, earlier in enumerate(self.ipv6_pinholes[:i]):
                shared = set(pinhole.protocols) & set(earlier.protocols)
                if shared and pinhole.host == earlier.host and pinhole.port.overlaps(earlier.port):
                    protocol = "/".join(sorted(shared))
                    reason = f"{protocol} {pinhole.port} overlaps firewall.ipv6_pinholes.{j}"
                    problems.append((("ipv6_pinholes", i, "port"), reason))
                    break
        return problems

    @property
    def enabled(self) -> bool:
        return True
