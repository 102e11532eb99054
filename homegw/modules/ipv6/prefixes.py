"""The LAN's prefix plan (pure: every time is passed in, `time.time()` based).

From the prefixes the ISP delegated (DHCPv6 IA_PD, or the static one) and
`lan.ipv6.subnet`, the plan holds the /64s the LAN link gets:

- one /64 per delegated prefix: subnet `subnet` of it (a /64 delegation is
  used whole). A subnet beyond the delegation's room (subnet 5 of a /63) is
  logged as an error and subnet 0 is used instead; a delegation longer than
  /64 cannot number a LAN and is skipped, logged;
- the ULA /64 (subnet `subnet` of the ULA /48), with infinite lifetimes here
  (ra.py advertises it with finite ones, refreshed by every RA);
- every /64 that was current and is not any more (the ISP renumbered, or the
  lease went): kept, deprecated (preferred until = when it left), until its
  valid time ends, so hosts stop choosing it for new connections at once
  while the ones already open keep working (RFC 9096). Its valid time is
  what the ISP had left, at most ND_VALID_LIMIT: no RA ever told a host
  more, so after that no host holds it (a static prefix, with infinite
  lifetimes, thus leaves 90 min after it was replaced).

Lifetimes are the ISP's: a LAN /64 never outlives its delegation. Infinite
ones (`math.inf`: a static prefix, or DHCPv6's 0xffffffff) are kept as such.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

IPv6Network = ipaddress.IPv6Network
LAN_PREFIXLEN = 64
# RFC 9096: the most a PIO tells hosts (ra.py caps at these), so a /64 that
# left the plan is gone from every host this long after it left at most
ND_PREFERRED_LIMIT = 2700  # seconds
ND_VALID_LIMIT = 5400


class Delegation(Protocol):
    """What the plan needs of a delegated prefix (dhcp6.client.IaPrefix)."""

    @property
    def prefix(self) -> IPv6Network: ...
    @property
    def preferred_until(self) -> float: ...
    @property
    def valid_until(self) -> float: ...


@dataclass(frozen=True)
class LanPrefix:
    network: IPv6Network  # a /64 on the LAN link
    preferred_until: float | None  # None: infinite (the ULA)
    valid_until: float | None
    # the delegated prefix this /64 was cut from (None for the ULA)
    delegated: IPv6Network | None = None

    def deprecated(self, now: float) -> bool:
        return self.preferred_until is not None and self.preferred_until <= now

    def expired(self, now: float) -> bool:
        return self.valid_until is not None and self.valid_until <= now


class SubnetError(ValueError):
    """A delegation that cannot give the LAN its /64."""


def lan_subnet(delegated: IPv6Network, subnet: int) -> IPv6Network:
    """Subnet `subnet` (a /64) of `delegated`; raises SubnetError if impossible."""
    room = LAN_PREFIXLEN - delegated.prefixlen
    if room < 0:
        raise SubnetError(f"delegated prefix {delegated} is longer than /64")
    if subnet >= 1 << room:
        raise SubnetError(
            f"lan.ipv6.subnet {subnet} does not fit in delegated prefix {delegated} "
            f"(room for subnets 0-{(1 << room) - 1})"
        )
    return IPv6Network((int(delegated.network_address) | subnet << 64, LAN_PREFIXLEN))


class PrefixPlan:
    """See the module docstring."""

    def __init__(self, ula: IPv6Network, subnet: int) -> None:
        self.ula = ula
        self.subnet = subnet
        self.ula_lan = lan_subnet(ula, subnet)
        self._current: dict[IPv6Network, LanPrefix] = {}
        self._deprecated: dict[IPv6Network, LanPrefix] = {}

    def _lan_prefix(self, delegation: Delegation) -> LanPrefix | None:
        try:
            network = lan_subnet(delegation.prefix, self.subnet)
        except SubnetError as error:
            if delegation.prefix.prefixlen > LAN_PREFIXLEN:
                log.error("%s: skipped", error)
                return None
            log.error("%s: using subnet 0 instead", error)
            network = lan_subnet(delegation.prefix, 0)
        valid = delegation.valid_until
        return LanPrefix(network, min(delegation.preferred_until, valid), valid, delegation.prefix)

    def update(self, delegated: Sequence[Delegation], now: float) -> bool:
        """Take the delegations now in force; True if the LAN must hear of it
        (a prefix came, went, or its lifetimes moved)."""
        before = (dict(self._current), dict(self._deprecated))
        current: dict[IPv6Network, LanPrefix] = {}
        for delegation in delegated:
            lan = self._lan_prefix(delegation)
            if lan is not None and not lan.expired(now):
                current[lan.network] = lan
        for network, gone in self._current.items():
            if network not in current:
                log.info("LAN prefix %s left the plan: deprecated", network)
                preferred = min(now, gone.preferred_until or now)
                valid = min(gone.valid_until or now, now + ND_VALID_LIMIT)
                self._deprecated[network] = LanPrefix(network, preferred, valid, gone.delegated)
        for network in current:
            self._deprecated.pop(network, None)
        self._current = current
        self._prune(now)
        return (self._current, self._deprecated) != before

    def _prune(self, now: float) -> None:
        for network, old in list(self._deprecated.items()):
            if old.expired(now):
                log.info("deprecated LAN prefix %s: valid lifetime ended", network)
                del self._deprecated[network]

    def advertised(self, now: float) -> list[LanPrefix]:
        """The LAN's /64s: the current delegated ones, the ULA, then the
        deprecated ones still valid (preferred until <= now)."""
        current = [p for p in self._current.values() if not p.expired(now)]
        old = [p for p in self._deprecated.values() if not p.expired(now)]
        return [*current, LanPrefix(self.ula_lan, None, None), *old]

    def inside(self, now: float) -> list[IPv6Network]:
        """The home's own space: the delegated prefixes still valid and the ULA /48."""
        delegated = {p.delegated for p in self.advertised(now) if p.delegated is not None}
        return [*sorted(delegated), self.ula]
