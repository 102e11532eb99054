"""The chain's per-device table (homegw_devices in include/homegw.h), read
through any module's bcc object: the value layout is bcc's own (Leaf), only
the field names are written here; and the device policy (which MACs are
paused: homegw_device_policy and its generation, homegw_device_policy_gen)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TICK_S = 2**30 / 1e9  # HOMEGW_NEIGH_TICK_SHIFT: first_tick / last_tick units, in seconds
PAUSED = 1  # HOMEGW_DEVICE_PAUSED: a policy flag
GENERATION_MAX = 2**32 - 1
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
            first = min((t[0] for t in ticks if t[0]), default=0)
            last = max(t[1] for t in ticks) if ticks else 0
            out[mac_of(key.value)] = DeviceTraffic(
                **sums, first_seen=first * TICK_S, last_seen=last * TICK_S
            )
        return out

    def forget(self, mac: str) -> None:
        """Drop a device's counters (it left the network)."""
        with contextlib.suppress(KeyError):
            del self._table[ctypes.c_uint64(mac_key(mac))]


class DevicePolicy:
    """The datapath's device policy. Written as the map the flags live in,
    then the generation bumped (never back to 0: a zeroed per-CPU entry holds
    generation 0), so every CPU re-reads its cached flags on its next frame.
    Nothing is written when the policy is already what is wanted."""

    def __init__(self, policy, generation) -> None:  # homegw_device_policy, _policy_gen
        self._policy = policy
        self._generation = generation

    def flags(self) -> dict[str, int]:
        return {mac_of(key.value): int(value.value) for key, value in self._policy.items()}

    def paused(self) -> set[str]:
        return {mac for mac, flags in self.flags().items() if flags & PAUSED}

    def generation(self) -> int:
        return int(self._generation[ctypes.c_int(0)].value)

    def set_paused(self, macs: Iterable[str]) -> bool:
        """Make exactly `macs` paused; whether anything changed."""
        wanted = {mac.lower(): PAUSED for mac in macs}
        current = self.flags()
        if current == wanted:
            return False
        for mac, flags in wanted.items():
            if current.get(mac) != flags:
                self._policy[ctypes.c_uint64(mac_key(mac))] = ctypes.c_uint32(flags)
        for mac in set(current) - set(wanted):
            with contextlib.suppress(KeyError):
                del self._policy[ctypes.c_uint64(mac_key(mac))]
        generation = self.generation() % GENERATION_MAX + 1
        self._generation[ctypes.c_int(0)] = ctypes.c_uint32(generation)
        log.info("device policy %d: paused %s", generation, ", ".join(sorted(wanted)) or "none")
        return True
