"""The answer cache: reply templates by question, bounded LRU, TTL from a `now`.

Every method that needs the time takes `now` (seconds on a monotonic clock), so
tests drive a fake clock. An entry lives for its template's ``cache_ttl``: the
smallest answer TTL for a positive answer, min(SOA TTL, SOA MINIMUM) for a
negative one (RFC 2308; computed in :mod:`homegw.modules.dns.message`). The
cache holds at most ``size`` entries; inserting beyond that evicts the least
recently used one (counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dnslib import QTYPE

from homegw.modules.dns.message import Template


@dataclass(slots=True, eq=False)
class CacheEntry:
    template: Template
    stored: float  # when it was cached
    expires: float  # stored + cache_ttl

    def elapsed(self, now: float) -> int:
        """Whole seconds since it was cached: what each TTL is lowered by."""
        return int(now - self.stored)

    def remaining(self, now: float) -> int:
        """Seconds of life left, as a TTL (rounded up, as TTLs count down)."""
        return self.template.cache_ttl - self.elapsed(now) if self.template.cache_ttl else 0


@dataclass(frozen=True)
class CacheStats:
    size: int
    capacity: int
    hits: int
    misses: int
    expired: int
    evictions: int
    inserts: int


class DnsCache:
    def __init__(self, size: int) -> None:
        self.capacity = size
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.hits = self.misses = self.expired = self.evictions = self.inserts = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float, count_miss: bool = True) -> CacheEntry | None:
        """The live entry for key (and mark it recently used), or None.

        ``count_miss=False`` for a look that another one will follow on a miss
        (the resolver's UDP fast answer), so each query counts once."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += count_miss
            return None
        if now >= entry.expires:
            del self._entries[key]
            self.expired += 1
            self.misses += count_miss
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: bytes, template: Template, now: float) -> CacheEntry | None:
        """Cache template under key if it is cacheable; return the new entry."""
        ttl = template.cache_ttl
        if not ttl or self.capacity <= 0:
            return None
        entry = CacheEntry(template, now, now + ttl)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self.inserts += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1
        return entry

    def purge_expired(self, now: float) -> int:
        """Drop every expired entry (a periodic sweep); return how many."""
        dead = [key for key, entry in self._entries.items() if now >= entry.expires]
        for key in dead:
            del self._entries[key]
        self.expired += len(dead)
        return len(dead)

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count

    def rows(self, now: float) -> list[dict]:
        """The live entries, most recently used last (for the management API)."""
        return [
            {
                "name": entry.template.name,
                "type": QTYPE.get(entry.template.qtype, str(entry.template.qtype)),
                "answer": list(entry.template.answer_text),
                "ttl_s": entry.remaining(now),
            }
            for entry in list(self._entries.values())
            if now < entry.expires
        ]

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries),
            self.capacity,
            self.hits,
            self.misses,
            self.expired,
            self.evictions,
            self.inserts,
        )
