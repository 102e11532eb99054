"""Fragments that came before their first (RFC 4787 REQ-14), held in
userspace until the datapath has translated the first one (pure: the clock
comes in as `now_ns`).

The datapath punts such a fragment (rate-limited per CPU) and drops it; the
module holds it here, bounded in frames, bytes and time, and sends it again
through the chain when the first fragment's translation is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000
MAX_FRAMES = 64
MAX_BYTES = 64 * 1024
MAX_AGE_NS = 2 * NS

Train = tuple[int, int, int, int, int]  # (saddr, daddr, id, proto, inbound) as punted


@dataclass(frozen=True)
class Held:
    frame: bytes
    ifindex: int
    since_ns: int


@dataclass
class HolderStats:
    held: int = 0
    released: int = 0
    expired: int = 0
    over_limit: int = 0


@dataclass
class FragmentHolder:
    max_frames: int = MAX_FRAMES
    max_bytes: int = MAX_BYTES
    max_age_ns: int = MAX_AGE_NS
    stats: HolderStats = field(default_factory=HolderStats)
    _trains: dict[Train, list[Held]] = field(default_factory=dict)
    _frames: int = 0
    _bytes: int = 0

    def hold(self, train: Train, frame: bytes, ifindex: int, now_ns: int) -> bool:
        """Keep the frame; False (dropped, counted) when over a bound."""
        if self._frames + 1 > self.max_frames or self._bytes + len(frame) > self.max_bytes:
            self.stats.over_limit += 1
            return False
        self._trains.setdefault(train, []).append(Held(frame, ifindex, now_ns))
        self._frames += 1
        self._bytes += len(frame)
        self.stats.held += 1
        return True

    def release(self, train: Train) -> list[Held]:
        """The train's held frames, to be sent again (oldest first)."""
        frames = self._trains.pop(train, [])
        self._frames -= len(frames)
        self._bytes -= sum(len(h.frame) for h in frames)
        self.stats.released += len(frames)
        return frames

    def expire(self, now_ns: int) -> list[Train]:
        """Drop what was held longer than max_age_ns; the trains left empty."""
        emptied = []
        for train, frames in list(self._trains.items()):
            keep = [h for h in frames if now_ns - h.since_ns < self.max_age_ns]
            dropped = len(frames) - len(keep)
            if not dropped:
                continue
            self.stats.expired += dropped
            self._frames -= dropped
            self._bytes -= sum(len(h.frame) for h in frames) - sum(len(h.frame) for h in keep)
            if keep:
                self._trains[train] = keep
            else:
                del self._trains[train]
                emptied.append(train)
        return emptied

    def waiting(self) -> list[Train]:
        return list(self._trains)

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def bytes(self) -> int:
        return self._bytes
