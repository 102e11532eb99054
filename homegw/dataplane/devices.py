"""The chain's per-device table (homegw_devices in include/homegw.h), read
through any module's bcc object: the value layout is bcc's own (Leaf), only
the field names are written here."""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import asdict, dataclass

TICK_S = 2**30 / 1e9  # HOMEGW_NEIGH_TICK_SHIFT: first_tick / last_tick units, in seconds
FIELDS = ("from_packets", "from_bytes", "to_packets", "to_bytes", "dropped")


@dataclass(frozen=True)
class DeviceTraffic:
    from_packets: int  # forwarded from the device
    from_bytes: int
    to_packets: int  # forwarded to it
    to_bytes: int
    dropped: int  # its frames a module dropped
    first_seen: float  # CLOCK_MONOTONIC seconds (to a tick of 1.07 s)
    last_seen: float


def mac_key(mac: str) -> int:
    return int.from_bytes(bytes.fromhex(mac.replace(":", "")) + b"\0\0", "little")


def mac_of(key: int) -> str:
    return key.to_bytes(8, "little")[:6].hex(":")


class Devices:
    def __init__(self, table) -> None:  # bcc table homegw_devices of any module
        self._table = table

    def read(self) -> dict[str, DeviceTraffic]:
        """Every device's traffic, summed over CPUs, by MAC."""
        out = {}
        for key, per_cpu in self._table.items():
            sums = {f: sum(getattr(c, f) for c in per_cpu) for f in FIELDS}
            ticks = [(c.first_tick, c.last_tick) for c in per_cpu if c.last_tick]
            first = min(t[0] for t in ticks) if ticks else 0
            last = max(t[1] for t in ticks) if ticks else 0
            out[mac_of(key.value)] = DeviceTraffic(
                **sums, first_seen=first * TICK_S, last_seen=last * TICK_S
            )
        return out

    def forget(self, mac: str) -> None:
        """Drop a device's counters (it left the network)."""
        with contextlib.suppress(KeyError):
            del self._table[ctypes.c_uint64(mac_key(mac))]

    def rows(self) -> list[dict]:
        return [{"mac": mac, **asdict(traffic)} for mac, traffic in sorted(self.read().items())]
