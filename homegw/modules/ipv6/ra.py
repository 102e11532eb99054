"""Router advertisements (pure): builder, parsers and the sending schedule.

Messages are ICMPv6 bodies as a raw IPPROTO_ICMPV6 socket sends and
receives them (no IPv6 header); the checksum field is left 0 because the
kernel always fills and verifies the ICMPv6 checksum on such sockets.

RA (RFC 4861 4.2): cur hop limit 64, M and O flags, router lifetime (0: do
not use us as default router, sent while the WAN has no IPv6 default route,
RFC 7084 and on stop, 6.2.5), reachable time and retrans timer unspecified,
then the options: source link-layer address, MTU, one PIO per LAN /64 (L
and A), RDNSS and DNSSL (RFC 8106).

Lifetimes of a PIO: what is left of the prefix's, capped at RFC 9096's
ND_PREFERRED_LIMIT / ND_VALID_LIMIT (45 / 90 min, so a renumbering reaches
hosts that missed the deprecation within 90 min); a deprecated prefix goes
with preferred 0 and what is left of its valid time. The ULA (infinite in
the plan) goes with 1 h / 2 h, refreshed by every RA.

RS (RFC 4861 6.1.1): valid only with IP hop limit 255, code 0, at least 8
bytes, every option of non-zero length and no source link-layer option when
the source is unspecified. Anything else raises `Malformed(reason)`: the
caller counts it by reason and drops it.

`RaScheduler` (RFC 4861 6.2.4, 6.2.6) keeps the due time of the next
multicast RA on a monotonic clock passed in.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from homegw.modules.ipv6.prefixes import ND_PREFERRED_LIMIT, ND_VALID_LIMIT, LanPrefix

IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network

ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
OPT_SOURCE_LLADDR = 1
OPT_PREFIX_INFO = 3
OPT_MTU = 5
OPT_RDNSS = 25
OPT_DNSSL = 31
FLAG_MANAGED = 0x80
FLAG_OTHER = 0x40
PIO_ON_LINK = 0x80
PIO_AUTONOMOUS = 0x40
ND_HOP_LIMIT = 255  # RS and RA must arrive with it (nobody routed them)
CUR_HOP_LIMIT = 64
MAX_ROUTER_LIFETIME = 9000  # seconds, RFC 4861 6.2.1
ULA_PREFERRED = 3600
ULA_VALID = 7200
# RFC 4861 10
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5

_RA_HEADER = struct.Struct("!BBHBBHII")  # type code csum hoplimit flags lifetime reach retrans
_PIO_BODY = struct.Struct("!BBIII16s")  # length flags valid preferred reserved prefix


class Malformed(ValueError):
    """A message that must be dropped; `reason` names its counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Pio:
    network: IPv6Network
    valid: int  # seconds
    preferred: int


@dataclass(frozen=True)
class Advert:
    """The content of one RA."""

    source_mac: bytes
    router_lifetime: int
    prefixes: tuple[Pio, ...] = ()
    rdnss: tuple[IPv6Address, ...] = ()
    dnssl: tuple[str, ...] = ()
    dns_lifetime: int = 0
    mtu: int | None = None
    managed: bool = False
    other: bool = False
    cur_hop_limit: int = CUR_HOP_LIMIT


def _remaining(until: float, now: float) -> int:
    """Whole seconds left (an infinite `until` gives a large finite number)."""
    return max(0, int(min(until - now, 0xFFFFFFFF)))


def pio_for(prefix: LanPrefix, now: float) -> Pio:
    """The PIO lifetimes of a plan's prefix at `now` (module docstring)."""
    if prefix.valid_until is None or prefix.preferred_until is None:
        return Pio(prefix.network, ULA_VALID, ULA_PREFERRED)
    valid = min(_remaining(prefix.valid_until, now), ND_VALID_LIMIT)
    preferred = min(_remaining(prefix.preferred_until, now), ND_PREFERRED_LIMIT, valid)
    return Pio(prefix.network, valid, preferred)


def router_lifetime(max_interval: float) -> int:
    """AdvDefaultLifetime's default: 3 * MaxRtrAdvInterval, at most 9000 s."""
    return min(MAX_ROUTER_LIFETIME, int(3 * max_interval))


def dns_lifetime(max_interval: float) -> int:
    """RDNSS/DNSSL lifetime (RFC 8106 5.1): at least 3 * MaxRtrAdvInterval."""
    return int(3 * max_interval)


# --- building ---------------------------------------------------------------


def _option(kind: int, body: bytes) -> bytes:
    """Type, length in units of 8 octets, body zero-padded to fill them."""
    units = (len(body) + 2 + 7) // 8
    return struct.pack("!BB", kind, units) + body.ljust(units * 8 - 2, b"\0")


def encode_domain(name: str) -> bytes:
    """A domain name in DNS wire format (RFC 1035 3.1), uncompressed."""
    labels = name.rstrip(".").split(".")
    wire = b""
    for label in labels:
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"{name!r}: a label of 1-63 characters each")
        wire += bytes([len(raw)]) + raw
    if len(wire) + 1 > 255:
        raise ValueError(f"{name!r}: longer than 255 bytes")
    return wire + b"\0"


def build_ra(advert: Advert) -> bytes:
    flags = (FLAG_MANAGED if advert.managed else 0) | (FLAG_OTHER if advert.other else 0)
    out = _RA_HEADER.pack(
        ND_ROUTER_ADVERT, 0, 0, advert.cur_hop_limit, flags, advert.router_lifetime, 0, 0
    )
    out += _option(OPT_SOURCE_LLADDR, advert.source_mac)
    if advert.mtu is not None:
        out += _option(OPT_MTU, struct.pack("!HI", 0, advert.mtu))
    for pio in advert.prefixes:
        body = _PIO_BODY.pack(
            pio.network.prefixlen,
            PIO_ON_LINK | PIO_AUTONOMOUS,
            pio.valid,
            pio.preferred,
            0,
            pio.network.network_address.packed,
        )
        out += _option(OPT_PREFIX_INFO, body)
    if advert.rdnss:
        body = struct.pack("!HI", 0, advert.dns_lifetime)
        out += _option(OPT_RDNSS, body + b"".join(a.packed for a in advert.rdnss))
    if advert.dnssl:
        body = struct.pack("!HI", 0, advert.dns_lifetime)
        out += _option(OPT_DNSSL, body + b"".join(encode_domain(d) for d in advert.dnssl))
    return out


# --- parsing ----------------------------------------------------------------


def iter_options(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body after type and length) of each option; Malformed on a
    zero length or one running past the end."""
    options = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 2:
            raise Malformed("truncated_option")
        kind, units = data[offset], data[offset + 1]
        if units == 0:
            raise Malformed("zero_length_option")
        end = offset + units * 8
        if end > len(data):
            raise Malformed("truncated_option")
        options.append((kind, data[offset + 2 : end]))
        offset = end
    return options


@dataclass(frozen=True)
class Solicitation:
    source: IPv6Address
    source_mac: bytes | None


def parse_rs(data: bytes, hop_limit: int, source: IPv6Address) -> Solicitation:
    """A router solicitation as the kernel handed it over (see the docstring)."""
    if hop_limit != ND_HOP_LIMIT:
        raise Malformed("bad_hop_limit")
    if len(data) < 8:
        raise Malformed("short")
    if data[0] != ND_ROUTER_SOLICIT:
        raise Malformed("not_rs")
    if data[1] != 0:
        raise Malformed("bad_code")
    mac = None
    for kind, body in iter_options(data[8:]):
        if kind == OPT_SOURCE_LLADDR:
            mac = body[:6]
    if mac is not None and source.is_unspecified:
        raise Malformed("lladdr_from_unspecified")
    return Solicitation(source, mac)


def _decode_domains(data: bytes) -> tuple[str, ...]:
    names: list[str] = []
    labels: list[str] = []
    offset = 0
    while offset < len(data):
        length = data[offset]
        offset += 1
        if length == 0:
            if labels:
                names.append(".".join(labels))
            labels = []
            continue
        if length > 63 or offset + length > len(data):
            raise Malformed("bad_dnssl")
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return tuple(names)


def parse_ra(data: bytes) -> Advert:
    """An RA's content (for tests and for noticing other routers on the LAN)."""
    if len(data) < _RA_HEADER.size or data[0] != ND_ROUTER_ADVERT or data[1] != 0:
        raise Malformed("not_ra")
    _, _, _, hop_limit, flags, lifetime, _, _ = _RA_HEADER.unpack_from(data)
    fields: dict = {"prefixes": [], "rdnss": [], "dnssl": []}
    for kind, body in iter_options(data[_RA_HEADER.size :]):
        if kind == OPT_SOURCE_LLADDR:
            fields["source_mac"] = body[:6]
        elif kind == OPT_MTU and len(body) >= 6:
            fields["mtu"] = struct.unpack_from("!I", body, 2)[0]
        elif kind == OPT_PREFIX_INFO and len(body) >= _PIO_BODY.size:
            length, _, valid, preferred, _, prefix = _PIO_BODY.unpack_from(body)
            if length > 128:
                raise Malformed("bad_prefix_length")
            network = IPv6Network((prefix, length), strict=False)
            fields["prefixes"].append(Pio(network, valid, preferred))
        elif kind in (OPT_RDNSS, OPT_DNSSL) and len(body) >= 6:
            fields["dns_lifetime"] = struct.unpack_from("!I", body, 2)[0]
            rest = body[6:]
            if kind == OPT_RDNSS:
                fields["rdnss"] += [
                    IPv6Address(rest[i : i + 16]) for i in range(0, len(rest) - 15, 16)
                ]
            else:
                fields["dnssl"] += _decode_domains(rest)
    return Advert(
        source_mac=fields.pop("source_mac", b""),
        router_lifetime=lifetime,
        prefixes=tuple(fields.pop("prefixes")),
        rdnss=tuple(fields.pop("rdnss")),
        dnssl=tuple(fields.pop("dnssl")),
        managed=bool(flags & FLAG_MANAGED),
        other=bool(flags & FLAG_OTHER),
        cur_hop_limit=hop_limit,
        **fields,
    )


# --- scheduling -------------------------------------------------------------


def min_interval(max_interval: float) -> float:
    """MinRtrAdvInterval's default (RFC 4861 6.2.1): 0.33 * Max from 9 s up;
    below, 0.75 * Max (the highest the RFC allows)."""
    return 0.33 * max_interval if max_interval >= 9 else 0.75 * max_interval


class RaScheduler:
    """When the next multicast RA is due (times: a monotonic clock)."""

    def __init__(self, max_interval: float, now: float, rng: random.Random | None = None) -> None:
        self.max_interval = max_interval
        self.min_interval = min_interval(max_interval)
        self._rng = rng or random.SystemRandom()
        self._due = now  # the first RA goes at once (6.2.4)
        self._last_sent: float | None = None
        self._initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS

    @property
    def due(self) -> float:
        return self._due

    def is_due(self, now: float) -> bool:
        return now >= self._due

    def sent(self, now: float) -> None:
        """A multicast RA went out at `now`: schedule the next unsolicited one."""
        self._last_sent = now
        interval = self._rng.uniform(self.min_interval, self.max_interval)
        if self._initial_left > 0:
            self._initial_left -= 1
            interval = min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        self._due = now + interval

    def retry_at(self, at: float) -> None:
        """The RA due could not go: try again at `at`."""
        self._due = at

    def _not_before(self, at: float) -> float:
        """`at`, or later if a multicast RA went out less than 3 s before it."""
        if self._last_sent is not None and at < self._last_sent + MIN_DELAY_BETWEEN_RAS:
            return self._last_sent + MIN_DELAY_BETWEEN_RAS
        return at

    def solicited(self, now: float) -> None:
        """An RS came: answer (multicast) within 0.5 s, at most one per 3 s."""
        delay = self._rng.uniform(0, MAX_RA_DELAY_TIME)
        if self._last_sent is not None and now < self._last_sent + MIN_DELAY_BETWEEN_RAS:
            at = self._last_sent + MIN_DELAY_BETWEEN_RAS + delay
        else:
            at = now + delay
        self._due = min(self._due, at)

    def changed(self, now: float) -> None:
        """What we advertise changed: send soon (rate-limited), then again
        as at start-up (up to 3 RAs at most 16 s apart, 6.2.4)."""
        self._initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self._due = min(self._due, self._not_before(now))


def advert_for(
    prefixes: Sequence[LanPrefix],
    now: float,
    *,
    source_mac: bytes,
    default_router: bool,
    max_interval: float,
    rdnss: Sequence[IPv6Address] = (),
    dnssl: Sequence[str] = (),
    mtu: int | None = None,
    managed: bool = False,
    other: bool = False,
) -> Advert:
    """The RA for the plan's prefixes at `now` (wall-clock, as the plan's)."""
    return Advert(
        source_mac=source_mac,
        router_lifetime=router_lifetime(max_interval) if default_router else 0,
        prefixes=tuple(pio_for(p, now) for p in prefixes),
        rdnss=tuple(rdnss),
        dnssl=tuple(dnssl),
        dns_lifetime=dns_lifetime(max_interval),
        mtu=mtu,
        managed=managed,
        other=other,
    )
