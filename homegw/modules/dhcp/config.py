"""Config section ``dhcp:`` of the DHCP module (the LAN's DHCP server).

The dynamic range defaults depend on ``lan.address``; the root config fills them
in with :func:`default_range` and checks them against the LAN subnet.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import StrictBool, model_validator

from homegw.configtypes import (
    ChainRules,
    Duration,
    Hostname,
    IPv4Address,
    MacAddress,
    Problem,
    Section,
    duplicates,
    duration_range,
    raise_problems,
)


class Reservation(Section):
    """A static lease: the device with ``mac`` always gets ``address``."""

    mac: MacAddress
    address: IPv4Address
    hostname: Hostname | None = None


class DhcpConfig(Section):
    """``dhcp:`` -- the DHCP server on the LAN.

    After :class:`homegw.config.Config` validation ``range_start`` and
    ``range_end`` are never None: when not configured they are derived from
    ``lan.address`` (see :func:`default_range`).
    """

    chain_rules: ClassVar[ChainRules] = ChainRules(
        lan_before=("router",),
        why="the DHCP guard drops spoofed LAN sources before anything forwards them",
    )

    enabled: StrictBool = True
    range_start: IPv4Address | None = None
    range_end: IPv4Address | None = None
    lease_time: Annotated[Duration, duration_range(60)] = 12 * 3600
    reservations: tuple[Reservation, ...] = ()
    #: Drop LAN IPv4/ARP whose source address is not leased or reserved for the sender's MAC.
    source_guard: StrictBool = False

    @model_validator(mode="after")
    def _check(self) -> DhcpConfig:
        problems: list[Problem] = []
        for missing, given in (("range_start", "range_end"), ("range_end", "range_start")):
            if getattr(self, missing) is None and getattr(self, given) is not None:
                problems.append(((missing,), f"required when dhcp.{given} is set"))
        for key in ("mac", "address", "hostname"):
            values = [getattr(r, key) for r in self.reservations]
            problems += [
                (("reservations", i, key), f"duplicate {key} {values[i]}")
                for i in duplicates(values)
            ]
        raise_problems("DhcpConfig", problems)
        return self


def default_range(
    lan: ipaddress.IPv4Interface,
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The default dynamic range for the LAN subnet of ``lan``.

    .100-.249 of the network for a /24 or larger subnet, the upper half of the
    host addresses for a smaller one; if the gateway's own address falls inside,
    the larger part of the range beside it is used.
    """
    net = lan.network
    base, size = int(net.network_address), net.num_addresses
    low, high = (base + 100, base + 249) if size >= 256 else (base + size // 2, base + size - 2)
    low, high = _avoid(int(lan.ip), low, high)
    if low > high:  # tiny subnet: the gateway sat on the only candidate
        low, high = _avoid(int(lan.ip), base + 1, base + size - 2)
    return ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)


def _avoid(gateway: int, low: int, high: int) -> tuple[int, int]:
    if not low <= gateway <= high:
        return low, high
    below, above = (low, gateway - 1), (gateway + 1, high)
    return max(above, below, key=lambda r: r[1] - r[0])
