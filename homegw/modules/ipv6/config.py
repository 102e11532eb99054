"""Config sections ``wan.ipv6`` and ``lan.ipv6``.

The defaults just work on a typical ISP: the gateway takes its WAN address by
SLAAC (the kernel, from the ISP's router advertisements) and DHCPv6 IA_NA,
asks DHCPv6 for a delegated prefix (IA_PD) and advertises a /64 of it on the
LAN, next to a ULA /64 generated once and kept, so local names work when the
ISP has no IPv6.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

from homegw.configtypes import (
    Hostname,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    Problem,
    Section,
    raise_problems,
)

ULA_SPACE = ipaddress.IPv6Network("fc00::/7")


class Wan6Config(Section):
    """``wan.ipv6:`` -- IPv6 from the ISP.

    ``auto``: SLAAC and DHCPv6 for the gateway's own address, DHCPv6 prefix
    delegation for the LAN. ``static``: ``address``, ``gateway`` and the
    routed ``prefix`` as the ISP gave them. ``off``: no IPv6 on the WAN (the
    LAN still gets its ULA prefix)."""

    mode: Literal["auto", "static", "off"] = "auto"
    request_address: StrictBool = True  # DHCPv6 IA_NA (auto)
    request_prefix: StrictBool = True  # DHCPv6 IA_PD (auto)
    prefix_hint: Annotated[int, Field(strict=True, ge=48, le=64)] = 56
    address: IPv6Interface | None = None  # static
    gateway: IPv6Address | None = None  # static
    prefix: IPv6Network | None = None  # static: the prefix the ISP routes to us
    dns: tuple[IPv6Address, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Wan6Config:
        raise_problems("Wan6Config", self._problems())
        return self

    def _problems(self) -> list[Problem]:
        keys = ("address", "gateway", "prefix")
        if self.mode != "static":
            reason = "only allowed when wan.ipv6.mode is static"
            return [((key,), reason) for key in keys if getattr(self, key) is not None]
        problems: list[Problem] = []
        if self.prefix is None:
            problems.append((("prefix",), "required when wan.ipv6.mode is static"))
        elif self.prefix.prefixlen > 64:
            problems.append((("prefix",), f"{self.prefix}: the LAN needs a /64 or shorter"))
        return problems


class Lan6Config(Section):
    """``lan.ipv6:`` -- IPv6 on the home side.

    ``ula``: the ULA /48 (RFC 4193); ``auto`` generates one at the first
    start and keeps it in ``state_dir``. ``subnet``: which /64 of the
    delegated prefix (and of the ULA /48) the LAN gets. ``dhcpv6``:
    ``stateless`` answers DNS options only (addresses by SLAAC),
    ``stateful`` also leases addresses (IA_NA) from ``pool``."""

    mode: Literal["auto", "off"] = "auto"
    ula: Literal["auto"] | IPv6Network = "auto"
    subnet: Annotated[int, Field(strict=True, ge=0, le=255)] = 0
    dhcpv6: Literal["stateless", "stateful"] = "stateless"
    # interface ids of the stateful pool, inside each LAN /64
    pool_start: IPv6Address = ipaddress.IPv6Address("::1000")
    pool_end: IPv6Address = ipaddress.IPv6Address("::1fff")
    ra_interval: Annotated[int, Field(strict=True, ge=4, le=1800)] = 200  # MaxRtrAdvInterval
    dns_domain: Hostname | None = None  # DNSSL; defaults to lan.domain

    @model_validator(mode="after")
    def _check(self) -> Lan6Config:
        raise_problems("Lan6Config", self._problems())
        return self

    def _problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.ula != "auto" and (self.ula.prefixlen != 48 or not self.ula.subnet_of(ULA_SPACE)):
            problems.append((("ula",), f"{self.ula}: a ULA prefix is a /48 in fc00::/7"))
        for key in ("pool_start", "pool_end"):
            if int(getattr(self, key)) >> 64:
                problems.append(((key,), "an interface id: the last 64 bits only, e.g. ::1000"))
        if int(self.pool_start) > int(self.pool_end):
            problems.append((("pool_end",), "must not be below pool_start"))
        return problems
