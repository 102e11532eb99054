"""The device inventory: one row per LAN MAC, merged from what the gateway
knows of it -- DHCP leases and reservations, the chain's device table
(traffic, first and last seen), the router's neighbour mirror, the
``devices`` config section (name, paused) and the traffic history (today).

- name: the user-given name (``devices[].name``), else the name the device
  sent in its DHCP request as it sent it (``sent_name``: "Anna's iPhone"),
  else its DHCP hostname (the DNS label made of it, or the reservation's),
  else None.
- vendor: the IEEE OUI registry shipped in the ``netaddr`` package (never
  fetched at run time); a locally administered (randomised) or group MAC has
  no vendor and ``random_mac: true``.
- first_seen / last_seen: the device table's CLOCK_MONOTONIC ticks (1.07 s)
  as unix seconds; None when the table has no entry for it (nothing forwarded).
- ipv6: every non-link-local IPv6 address seen for the MAC in the kernel's
  IPv6 neighbour table of the LAN NIC (global, ULA and privacy addresses),
  newest first, at most ``homegw.lan6.MAX_PER_DEVICE`` (the appliance's
  Lan6Watcher keeps them after the kernel forgets an entry); a device seen
  only over IPv6 has a row too. ``addresses`` stays the IPv4 ones.
- online: traffic forwarded from or to it (its device table last tick) within
  the last 5 minutes, or one of its addresses is a resolved neighbour in the
  router's mirror (the kernel holds a usable ARP entry for it: it answered
  lately, or the router forwarded to it lately; unused entries age out).

Every string is kept as the device sent it (the UI escapes); bytes that are
not UTF-8 are decoded with replacement characters, never an error.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netaddr import EUI, AddrFormatError, NotRegisteredError

from homegw.control import ConfigRejected, NotFound, Problem
from homegw.dataplane.devices import DeviceTraffic
from homegw.traffichistory import Bytes, TrafficHistory

ONLINE_S = 300.0  # seen within the last 5 minutes


@dataclass(frozen=True)
class LeaseInfo:
    mac: str
    address: str
    hostname: str | bytes | None
    expires: float  # unix seconds
    sent_name: str | None = None  # the name as the client sent it


@dataclass(frozen=True)
class ReservationInfo:
    mac: str
    address: str
    hostname: str | None


@dataclass(frozen=True)
class Sources:
    leases: Sequence[LeaseInfo] = ()
    reservations: Sequence[ReservationInfo] = ()
    traffic: Mapping[str, DeviceTraffic] = field(default_factory=dict)
    neighbours: Mapping[str, str] = field(default_factory=dict)  # LAN address -> MAC
    names: Mapping[str, str | None] = field(default_factory=dict)  # config: MAC -> name
    paused: frozenset[str] = frozenset()
    today: Mapping[str, Bytes] = field(default_factory=dict)
    ipv6: Mapping[str, Sequence[str]] = field(default_factory=dict)  # MAC -> newest first


def text(value: str | bytes | None) -> str | None:
    """A device-sent string as it came, made a str whatever its bytes."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", errors="replace")


def normal_mac(mac: str) -> str | None:
    """aa:bb:cc:dd:ee:ff, or None for something that is not a MAC."""
    try:
        return str(EUI(mac)).replace("-", ":").lower()
    except (AddrFormatError, TypeError, ValueError):
        return None


def random_mac(mac: str) -> bool:
    """Locally administered (randomised by phones) or a group address."""
    return bool(int(mac[:2], 16) & 0x03)


@functools.lru_cache(maxsize=8192)
def _organisation(oui: str) -> str | None:
    try:
        return EUI(oui + ":00:00:00").oui.registration().org
    except (NotRegisteredError, AddrFormatError, IndexError):
        return None


def vendor(mac: str) -> str | None:
    """The IEEE registrant of the MAC's OUI; None for a random MAC or none."""
    return None if random_mac(mac) else _organisation(mac[:8])


def _unix(monotonic: float, clock_now: float, monotonic_now: float) -> float | None:
    return round(clock_now - (monotonic_now - monotonic), 1) if monotonic else None


def _macs(sources: Sources) -> Iterable[str]:
    yield from (lease.mac for lease in sources.leases)
    yield from (r.mac for r in sources.reservations)
    yield from sources.traffic
    yield from sources.neighbours.values()
    yield from sources.names
    yield from sources.paused
    yield from sources.ipv6


def device_rows(sources: Sources, now: float, monotonic_now: float) -> list[dict[str, Any]]:
    """Every device, one row per MAC, sorted by name (unnamed last), then MAC."""
    leases: dict[str, list[LeaseInfo]] = {}
    for lease in sources.leases:
        leases.setdefault(lease.mac, []).append(lease)
    reserved = {r.mac: r for r in sources.reservations}
    neighbours: dict[str, list[str]] = {}
    for address, mac in sources.neighbours.items():
        neighbours.setdefault(mac, []).append(address)
    rows = []
    for mac in dict.fromkeys(_macs(sources)):
        rows.append(
            _row(
                mac,
                sources,
                leases.get(mac, []),
                reserved.get(mac),
                neighbours.get(mac, []),
                now,
                monotonic_now,
            )
        )
    return sorted(rows, key=lambda r: (r["name"] is None, (r["name"] or "").casefold(), r["mac"]))


def _row(
    mac: str,
    sources: Sources,
    leases: list[LeaseInfo],
    reservation: ReservationInfo | None,
    neighbour_addresses: list[str],
    now: float,
    monotonic_now: float,
) -> dict[str, Any]:
    traffic = sources.traffic.get(mac)
    hostname = next((text(lease.hostname) for lease in leases if lease.hostname), None)
    if hostname is None and reservation is not None:
        hostname = reservation.hostname
    sent_name = next((text(lease.sent_name) for lease in leases if lease.sent_name), None)
    user_name = sources.names.get(mac)
    addresses = [lease.address for lease in leases] + neighbour_addresses
    if reservation is not None:
        addresses.append(reservation.address)
    addresses = sorted(dict.fromkeys(addresses), key=ipaddress.IPv4Address)
    last_seen = _unix(traffic.last_seen, now, monotonic_now) if traffic else None
    today = sources.today.get(mac, Bytes())
    recent = last_seen is not None and now - last_seen <= ONLINE_S
    return {
        "mac": mac,
        "name": user_name or sent_name or hostname,
        "user_name": user_name,
        "sent_name": sent_name,
        "hostname": hostname,
        "vendor": vendor(mac),
        "random_mac": random_mac(mac),
        "addresses": addresses,
        "ipv6": list(sources.ipv6.get(mac, ())),
        "online": bool(neighbour_addresses) or recent,
        "first_seen": _unix(traffic.first_seen, now, monotonic_now) if traffic else None,
        "last_seen": last_seen,
        "paused": mac in sources.paused,
        "reserved_address": reservation.address if reservation else None,
        "lease_expires": max((lease.expires for lease in leases), default=None),
        "today": {"from_bytes": today.from_bytes, "to_bytes": today.to_bytes},
        "total": _total(traffic),
    }


def _total(traffic: DeviceTraffic | None) -> dict[str, int]:
    keys = ("from_bytes", "to_bytes", "from_packets", "to_packets", "dropped")
    return {key: getattr(traffic, key) if traffic else 0 for key in keys}


def edited_devices(
    entries: Sequence[Mapping[str, Any]], mac: str, changes: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The ``devices`` section with `changes` made to `mac`'s entry: made when
    missing, dropped when left with neither a name nor paused. A name of None
    forgets the name. Anything else (other keys, wrong types) is kept for the
    config's validation to refuse with its key path."""
    out = [dict(entry) for entry in entries]
    wanted = normal_mac(mac) or mac
    index = next((i for i, e in enumerate(out) if normal_mac(str(e.get("mac"))) == wanted), None)
    if index is None:
        out.append({"mac": wanted})
        index = len(out) - 1
    entry = out[index]
    entry.update(changes)
    if entry.get("name", "") is None:
        del entry["name"]
    bare = set(entry) <= {"mac", "paused"} and entry.get("paused", False) is False
    if bare and normal_mac(str(entry["mac"])) is not None:
        del out[index]
    return out


class Inventory:
    """The Control side of the devices: reads the running appliance's
    sources and the traffic history (its own read connection)."""

    def __init__(self, appliance: Any) -> None:  # homegw.appliance.Appliance
        self.appliance = appliance
        self._history: TrafficHistory | None = None

    def history(self) -> TrafficHistory:
        state_dir = Path(self.appliance.config.state_dir)
        if self._history is None or self._history.path.parent != state_dir:
            self._history = TrafficHistory(state_dir)
        return self._history

    def _module(self, name: str) -> Any:
        dataplane = self.appliance.dataplane
        loaded = dataplane.modules.get(name) if dataplane else None
        return loaded.module if loaded else None

    def _traffic(self) -> tuple[Mapping[str, DeviceTraffic], Mapping[str, str]]:
        """The device table and the LAN neighbours (address -> MAC)."""
        router, dhcp = self._module("router"), self._module("dhcp")
        if router is not None and router.maps is not None:
            lan = self.appliance.config.lan.network
            neighbours = {str(ip): mac for ip, mac in router.maps.neighbours().items() if ip in lan}
            return router.maps.devices.read(), neighbours
        if dhcp is not None:
            return dhcp.device_traffic(), {}
        return {}, {}

    def sources(self, now: float) -> Sources:
        cfg, dhcp = self.appliance.config, self.appliance.dhcp
        traffic, neighbours = self._traffic()
        leases = [
            LeaseInfo(lease.mac, str(lease.ip), lease.hostname, lease.expires, lease.sent_name)
            for lease in (dhcp.leases() if dhcp else [])
        ]
        counters = {mac: Bytes(t.from_bytes, t.to_bytes) for mac, t in traffic.items()}
        return Sources(
            leases=leases,
            reservations=[
                ReservationInfo(r.mac, str(r.address), r.hostname) for r in cfg.dhcp.reservations
            ],
            traffic=traffic,
            neighbours=neighbours,
            names={d.mac: d.name for d in cfg.devices},
            paused=frozenset(d.mac for d in cfg.devices if d.paused),
            today=self.history().today(counters, now),
            ipv6=self._ipv6(),
        )

    def _ipv6(self) -> dict[str, list[str]]:
        """MAC -> its IPv6 addresses (the appliance's Lan6Watcher; none without IPv6)."""
        lan6 = getattr(self.appliance, "lan6", None)
        if lan6 is None:
            return {}
        devices = lan6.table.all_devices().items()
        return {mac: [str(a) for a in addresses] for mac, addresses in devices if addresses}

    def devices(self) -> list[dict[str, Any]]:
        now, monotonic_now = now_pair()
        return device_rows(self.sources(now), now, monotonic_now)

    def device(self, mac: str) -> dict[str, Any]:
        wanted = normal_mac(mac)
        row = next((r for r in self.devices() if r["mac"] == wanted), None)
        if row is None:
            raise NotFound(f"no device {mac!r} seen")
        traffic, _ = self._traffic()
        counters = {m: Bytes(t.from_bytes, t.to_bytes) for m, t in traffic.items() if m == wanted}
        return {**row, "history": self.history().hourly(counters, time.time(), 24, wanted)}

    def traffic_history(self, hours: int = 24) -> list[dict[str, int]]:
        traffic, _ = self._traffic()
        counters = {m: Bytes(t.from_bytes, t.to_bytes) for m, t in traffic.items()}
        return self.history().hourly(counters, time.time(), hours)

    def config_with(self, config: dict[str, Any], mac: str, changes: Mapping[str, Any]) -> dict:
        """The config document (config_to_dict) with the device's entry changed."""
        if not isinstance(changes, Mapping):
            raise ConfigRejected([Problem("devices", "changes must be a mapping")])
        if "mac" in changes:
            raise ConfigRejected([Problem("devices.mac", "a device's MAC cannot be changed")])
        return {**config, "devices": edited_devices(config.get("devices", []), mac, changes)}


def now_pair() -> tuple[float, float]:
    """(unix seconds, CLOCK_MONOTONIC seconds) read together."""
    return time.time(), time.monotonic()
