"""Traffic history per LAN device: hourly rows in SQLite (WAL) in state_dir.

The chain's device table (homegw/dataplane/devices.py) holds counters since a
device was first seen. Every minute (and at stop) a supervised thread folds
them in: what grew since the last fold is added to the row of the current
hour (hour start, unix seconds, a multiple of 3600). The last counters folded
are kept in the database too, so a restart of the appliance (the datapath and
its counters keep running) neither loses nor counts anything twice, and two
folders (a router module being replaced by its successor) cannot either: each
fold is one transaction. Counters lower than the last ones (the device was
forgotten, the table made anew) are a new start: the new value is what grew,
never a negative. A device missing from the table loses its last counters.
Rows older than 7 days are pruned at each fold.

Everything takes ``now`` (unix seconds): the unit tests drive the clock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from homegw import supervise

log = logging.getLogger(__name__)

HOUR = 3600
KEEP_S = 7 * 24 * HOUR
FOLD_INTERVAL_S = 60.0
FILE_NAME = "traffic.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    mac TEXT NOT NULL, hour INTEGER NOT NULL,
    from_bytes INTEGER NOT NULL, to_bytes INTEGER NOT NULL,
    PRIMARY KEY (mac, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traffic_by_hour ON traffic (hour);
CREATE TABLE IF NOT EXISTS folded (
    mac TEXT PRIMARY KEY, from_bytes INTEGER NOT NULL, to_bytes INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Bytes:
    from_bytes: int = 0  # sent by the device
    to_bytes: int = 0  # sent to it


Counters = Mapping[str, Bytes]  # MAC -> the device table's counters now


def hour_of(now: float) -> int:
    return int(now // HOUR * HOUR)


def local_midnight(now: float) -> int:
    """Unix seconds of the last local midnight. Rows are UTC hours: with a
    time zone off by a fraction of an hour, today starts at the hour row that
    holds midnight."""
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return hour_of(day.timestamp())


def _grown(now: Bytes, last: Bytes | None) -> Bytes:
    """What a device's counters grew by since `last`; lower = a new start."""
    if last is None:
        return now
    return Bytes(
        now.from_bytes - last.from_bytes if now.from_bytes >= last.from_bytes else now.from_bytes,
        now.to_bytes - last.to_bytes if now.to_bytes >= last.to_bytes else now.to_bytes,
    )


class TrafficHistory:
    def __init__(self, state_dir: str | Path) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(state_dir) / FILE_NAME
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ---------------------------------------------------------
    def fold(self, counters: Counters, now: float) -> None:
        """Add what every device's counters grew by to the current hour."""
        hour = hour_of(now)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                last = self._folded()
                for mac, value in counters.items():
                    grown = _grown(value, last.get(mac))
                    if grown.from_bytes or grown.to_bytes:
                        db.execute(
                            "INSERT INTO traffic VALUES (?, ?, ?, ?) ON CONFLICT (mac, hour) DO "
                            "UPDATE SET from_bytes = from_bytes + excluded.from_bytes, "
                            "to_bytes = to_bytes + excluded.to_bytes",
                            (mac, hour, grown.from_bytes, grown.to_bytes),
                        )
                    if last.get(mac) != value:
                        db.execute(
                            "INSERT OR REPLACE INTO folded VALUES (?, ?, ?)",
                            (mac, value.from_bytes, value.to_bytes),
                        )
                gone = [(mac,) for mac in last if mac not in counters]
                db.executemany("DELETE FROM folded WHERE mac = ?", gone)
                db.execute("DELETE FROM traffic WHERE hour < ?", (hour - KEEP_S,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _folded(self) -> dict[str, Bytes]:
        rows = self._db.execute("SELECT mac, from_bytes, to_bytes FROM folded")
        return {mac: Bytes(f, t) for mac, f, t in rows}

    # -- reading ---------------------------------------------------------
    def _unfolded(self, counters: Counters) -> dict[str, Bytes]:
        """What grew since the last fold (not in any row yet), by MAC."""
        with self._lock:
            last = self._folded()
        return {mac: _grown(value, last.get(mac)) for mac, value in counters.items()}

    def today(self, counters: Counters, now: float) -> dict[str, Bytes]:
        """Every device's bytes since local midnight, the unfolded part included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT mac, SUM(from_bytes), SUM(to_bytes) FROM traffic WHERE hour >= ? "
                "GROUP BY mac",
                (local_midnight(now),),
            ).fetchall()
        out = {mac: Bytes(f, t) for mac, f, t in rows}
        for mac, grown in self._unfolded(counters).items():
            seen = out.get(mac, Bytes())
            out[mac] = Bytes(seen.from_bytes + grown.from_bytes, seen.to_bytes + grown.to_bytes)
        return out

    def hourly(
        self, counters: Counters, now: float, hours: int = 24, mac: str | None = None
    ) -> list[dict[str, int]]:
        """`hours` hourly buckets ending with the current one, oldest first:
        [{hour, from_bytes, to_bytes}] of one device, or of the whole LAN."""
        hours = max(1, min(int(hours), KEEP_S // HOUR))
        current = hour_of(now)
        first = current - (hours - 1) * HOUR
        where, args = ("hour >= ? AND mac = ?", (first, mac)) if mac else ("hour >= ?", (first,))
        with self._lock:
            rows = self._db.execute(
                f"SELECT hour, SUM(from_bytes), SUM(to_bytes) FROM traffic WHERE {where} "
                "GROUP BY hour",
                args,
            ).fetchall()
        by_hour = {hour: (f, t) for hour, f, t in rows}
        unfolded = self._unfolded({m: v for m, v in counters.items() if mac in (None, m)})
        f, t = by_hour.get(current, (0, 0))
        by_hour[current] = (
            f + sum(g.from_bytes for g in unfolded.values()),
            t + sum(g.to_bytes for g in unfolded.values()),
        )
        return [
            {
                "hour": h,
                "from_bytes": by_hour.get(h, (0, 0))[0],
                "to_bytes": by_hour.get(h, (0, 0))[1],
            }
            for h in range(first, current + HOUR, HOUR)
        ]


class HistoryFolder:
    """The supervised thread that folds the device table in every minute and
    once more at stop."""

    def __init__(
        self,
        history: TrafficHistory,
        read: Callable[[], Counters],
        interval: float = FOLD_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self._read = read
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread = supervise.Thread(self._loop, "traffic-history", restart=True)

    def start(self) -> None:
        self._thread.start()

    def fold_now(self) -> None:
        self.history.fold(self._read(), self._clock())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.fold_now()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self.fold_now()
        except Exception:
            log.exception("traffic history: the last fold failed")
