"""The neighbour table the datapath forwards with, mirrored from the kernel.

Both families: IPv4 next hops (ARP) and IPv6 ones (NDP), keyed by address.
The kernel does ARP and NDP: it answers for the gateway's addresses, applies
gratuitous ARP, and resolves on request. This table mirrors its usable
entries into the neighbour map (homegw.h), holds the packets of an
unresolved next hop until the kernel has resolved it, and ages entries:

- an entry the datapath used since it was learned (the map's coarse
  `used_tick`) is re-confirmed with the kernel from half its timeout on, and
  stays in the map meanwhile: active next hops never miss;
- an unused one is removed at its timeout (a moved device is re-resolved);
- the datapath makes an incomplete entry on a miss, which rate-limits the
  punts for that next hop; it is removed INCOMPLETE_LINGER after the last
  punt for it, or replaced when the kernel resolves the next hop.

Pure logic: time comes in as `now`, the datapath's marks as `last_used`.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from homegw.dataplane.abi import Nic

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USE_TICK_S = 2**30 / 1e9  # HOMEGW_NEIGH_TICK_SHIFT: the datapath's use marks, rounded down

PENDING_PACKETS = 3  # per next hop, as Linux's unres_qlen
PENDING_TOTAL = 256
RESOLVE_TIMEOUT = 3.0  # seconds an unresolved next hop may hold packets
REFRESH_AT = 0.5  # of the timeout: a used entry is re-confirmed from then on
CONFIRM_TIMEOUT = 10.0  # the kernel's DELAY (5 s) and probes (3 x 1 s), with margin
INCOMPLETE_LINGER = 10.0  # seconds an incomplete entry outlives the last punt for it

# Kernel neighbour states (linux/neighbour.h) whose MAC may be used.
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x02, 0x04, 0x08, 0x10
NUD_PERMANENT, NUD_NOARP = 0x80, 0x40
USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP
CONFIRMED = NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP


@dataclass
class Entry:
    mac: str
    nic: Nic
    installed_at: float
    confirming_since: float | None = None  # asked the kernel to re-confirm it


@dataclass
class Aging:
    """One aging round's work for the caller."""

    stale: list[IPAddress] = field(default_factory=list)  # remove from the map
    confirm: list[IPAddress] = field(default_factory=list)  # ask the kernel
    incomplete: list[IPAddress] = field(default_factory=list)  # remove if still so


LastUsed = Callable[[IPAddress], float | None]


@dataclass
class Pending:
    since: float
    frames: deque[tuple[bytes, int]] = field(default_factory=deque)  # (frame, ingress ifindex)


@dataclass
class NeighbourTable:
    timeout: float
    entries: dict[IPAddress, Entry] = field(default_factory=dict)
    pending: dict[IPAddress, Pending] = field(default_factory=dict)
    incomplete: dict[IPAddress, float] = field(default_factory=dict)  # last punt
    dropped: int = 0

    def learn(
        self, ip: IPAddress, mac: str, nic: Nic, now: float
    ) -> tuple[bool, list[tuple[bytes, int]]]:
        """A usable kernel entry: (whether the map needs writing, frames to resend)."""
        old = self.entries.get(ip)
        self.entries[ip] = Entry(mac, nic, now)
        self.incomplete.pop(ip, None)
        waiting = self.pending.pop(ip, None)
        changed = old is None or (old.mac, old.nic) != (mac, nic)
        return changed, list(waiting.frames) if waiting else []

    def forget(self, ip: IPAddress) -> bool:
        """The kernel lost the entry (failed, deleted): whether the map had it."""
        return self.entries.pop(ip, None) is not None

    def hold(self, ip: IPAddress, frame: bytes | None, ifindex: int, now: float) -> bool:
        """A punted miss: queue its frame (None: it came truncated, it cannot be
        sent again) for the unresolved next hop; True if resolution must be
        started (the first frame for it)."""
        if ip not in self.entries:
            self.incomplete[ip] = now
        waiting = self.pending.get(ip)
        first = waiting is None
        if first:
            if len(self.pending) >= PENDING_TOTAL:
                self.dropped += 1
                return False
            waiting = self.pending[ip] = Pending(now)
        if frame is None:
            self.dropped += 1
            return first
        if len(waiting.frames) >= PENDING_PACKETS:
            waiting.frames.popleft()
            self.dropped += 1
        waiting.frames.append((frame, ifindex))
        return first

    def age(self, now: float, last_used: LastUsed) -> Aging:
        """One aging round (see the module docstring); give up on stale
        resolutions too."""
        work = Aging()
        for ip, entry in list(self.entries.items()):
            if entry.confirming_since is not None:
                if now - entry.confirming_since >= CONFIRM_TIMEOUT:
                    work.stale.append(ip)  # the kernel never answered
            elif now - entry.installed_at >= self.timeout * REFRESH_AT and self._used(
                entry, last_used(ip)
            ):
                entry.confirming_since = now
                work.confirm.append(ip)
            elif now - entry.installed_at >= self.timeout:
                work.stale.append(ip)
        for ip in work.stale:
            del self.entries[ip]
        for ip in [ip for ip, p in self.pending.items() if now - p.since >= RESOLVE_TIMEOUT]:
            self.dropped += len(self.pending.pop(ip).frames)
        work.incomplete = [
            ip for ip, last in self.incomplete.items() if now - last >= INCOMPLETE_LINGER
        ]
        for ip in work.incomplete:
            del self.incomplete[ip]
        return work

    @staticmethod
    def _used(entry: Entry, used_at: float | None) -> bool:
        """Used since it was learned (the datapath marks ticks of 2^30 ns)."""
        return used_at is not None and used_at + USE_TICK_S > entry.installed_at

    def expire(self, now: float) -> list[IPAddress]:
        """An aging round that knows of no use: entries go at their timeout."""
        return self.age(now, lambda _ip: None).stale
