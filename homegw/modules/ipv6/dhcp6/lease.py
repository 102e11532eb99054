"""What the WAN's DHCPv6 client holds: `Lease6` (addresses, delegated
prefixes, DNS), wall-clock times (`time.time()`), and its JSON form for
state_dir."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any


@dataclass(frozen=True)
class IaAddress:
    address: IPv6Address
    preferred_until: float
    valid_until: float


@dataclass(frozen=True)
class IaPrefix:
    prefix: IPv6Network
    preferred_until: float
    valid_until: float


@dataclass(frozen=True)
class Lease6:
    """What the WAN got: addresses (IA_NA), delegated prefixes (IA_PD), DNS."""

    addresses: tuple[IaAddress, ...]
    prefixes: tuple[IaPrefix, ...]
    dns: tuple[IPv6Address, ...]
    domains: tuple[str, ...]
    server_id: bytes
    obtained_at: float

    def valid(self, now: float) -> Lease6 | None:
        """This lease without the items whose valid lifetime is over (None: nothing left)."""
        addresses = tuple(a for a in self.addresses if a.valid_until > now)
        prefixes = tuple(p for p in self.prefixes if p.valid_until > now)
        if not addresses and not prefixes:
            return None
        return dataclasses.replace(self, addresses=addresses, prefixes=prefixes)

    def expires(self) -> float:
        """When the last item's valid lifetime ends."""
        return max(i.valid_until for i in (*self.addresses, *self.prefixes))

    def shifted(self, delta: float) -> Lease6:
        """This lease with every time moved by `delta` (a wall-clock jump)."""
        return dataclasses.replace(
            self,
            addresses=tuple(
                IaAddress(a.address, a.preferred_until + delta, a.valid_until + delta)
                for a in self.addresses
            ),
            prefixes=tuple(
                IaPrefix(p.prefix, p.preferred_until + delta, p.valid_until + delta)
                for p in self.prefixes
            ),
            obtained_at=self.obtained_at + delta,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "addresses": [
                    [str(a.address), a.preferred_until, a.valid_until] for a in self.addresses
                ],
                "prefixes": [
                    [str(p.prefix), p.preferred_until, p.valid_until] for p in self.prefixes
                ],
                "dns": [str(d) for d in self.dns],
                "domains": list(self.domains),
                "server_id": self.server_id.hex(),
                "obtained_at": self.obtained_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Lease6:
        """Parse to_json's output; ValueError/KeyError/TypeError for anything else."""
        data: dict[str, Any] = json.loads(text)
        return cls(
            addresses=tuple(
                IaAddress(IPv6Address(a), float(p), float(v)) for a, p, v in data["addresses"]
            ),
            prefixes=tuple(
                IaPrefix(IPv6Network(n), float(p), float(v)) for n, p, v in data["prefixes"]
            ),
            dns=tuple(IPv6Address(d) for d in data["dns"]),
            domains=tuple(str(d) for d in data["domains"]),
            server_id=bytes.fromhex(data["server_id"]),
            obtained_at=float(data["obtained_at"]),
        )
