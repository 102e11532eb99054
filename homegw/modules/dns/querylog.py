"""The query log: the last N queries, oldest dropped first (a bounded ring)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueryLogEntry:
    time: float  # wall clock (time.time())
    client: str
    name: str
    qtype: str
    rcode: str
    answer: tuple[str, ...]  # answer records, e.g. ("A 198.51.100.80",)
    source: str  # cache | upstream | local | blocked | error
    blocked: bool
    upstream_ms: float | None  # upstream round trip, when the answer came from upstream


class QueryLog:
    def __init__(self, size: int) -> None:
        self.size = size
        self._ring: deque[QueryLogEntry] = deque(maxlen=max(size, 0))
        self.total = 0

    def add(self, entry: QueryLogEntry) -> None:
        self.total += 1
        if self.size > 0:
            self._ring.append(entry)

    def __len__(self) -> int:
        return len(self._ring)

    def clear(self) -> int:
        count = len(self._ring)
        self._ring.clear()
        return count

    def entries(self, limit: int | None = None) -> list[QueryLogEntry]:
        """The logged queries, oldest first; the newest `limit` if given."""
        items = list(self._ring)
        return items[-limit:] if limit else items
