"""The neighbour table the datapath forwards with, mirrored from the kernel.

The kernel does ARP: it answers for the gateway's addresses, applies
gratuitous ARP, and resolves on request. This table mirrors its usable
entries into the router_neigh map, ages them out (so a moved device is
re-resolved), and holds the packets of an unresolved next hop until the
kernel has resolved it. Pure logic: time comes in as `now`.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

from homegw.dataplane.abi import Nic

PENDING_PACKETS = 3  # per next hop, as Linux's unres_qlen
PENDING_TOTAL = 256
RESOLVE_TIMEOUT = 3.0  # seconds an unresolved next hop may hold packets

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


@dataclass
class Pending:
    since: float
    frames: deque[tuple[bytes, int]] = field(default_factory=deque)  # (frame, ingress ifindex)


@dataclass
class NeighbourTable:
    timeout: float
    entries: dict[ipaddress.IPv4Address, Entry] = field(default_factory=dict)
    pending: dict[ipaddress.IPv4Address, Pending] = field(default_factory=dict)
    dropped: int = 0

    def learn(
        self, ip: ipaddress.IPv4Address, mac: str, nic: Nic, now: float
    ) -> tuple[bool, list[tuple[bytes, int]]]:
        """A usable kernel entry: (whether the map needs writing, frames to resend)."""
        old = self.entries.get(ip)
        self.entries[ip] = Entry(mac, nic, now)
        waiting = self.pending.pop(ip, None)
        changed = old is None or (old.mac, old.nic) != (mac, nic)
        return changed, list(waiting.frames) if waiting else []

    def forget(self, ip: ipaddress.IPv4Address) -> bool:
        """The kernel lost the entry (failed, deleted): whether the map had it."""
        return self.entries.pop(ip, None) is not None

    def hold(self, ip: ipaddress.IPv4Address, frame: bytes, ifindex: int, now: float) -> bool:
        """Queue a frame for an unresolved next hop; True if resolution must be
        started (the first frame for it)."""
        waiting = self.pending.get(ip)
        first = waiting is None
        if first:
            if len(self.pending) >= PENDING_TOTAL:
                self.dropped += 1
                return False
            waiting = self.pending[ip] = Pending(now)
        if len(waiting.frames) >= PENDING_PACKETS:
            waiting.frames.popleft()
            self.dropped += 1
        waiting.frames.append((frame, ifindex))
        return first

    def expire(self, now: float) -> list[ipaddress.IPv4Address]:
        """Drop entries older than the timeout (returned: remove them from the
        map; the next packet re-resolves) and give up on stale resolutions."""
        old = [ip for ip, e in self.entries.items() if now - e.installed_at >= self.timeout]
        for ip in old:
            del self.entries[ip]
        for ip in [ip for ip, p in self.pending.items() if now - p.since >= RESOLVE_TIMEOUT]:
            self.dropped += len(self.pending.pop(ip).frames)
        return old
