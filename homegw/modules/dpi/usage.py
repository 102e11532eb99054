"""Usage history per device and application: SQLite (WAL) in state_dir.

Rows are local hours (``hour``: unix seconds of the local hour's start;
``day``: of its local midnight) per (MAC, app, category) with bytes up and
down, packets and active minutes. :meth:`UsageDb.fold` adds what the DPI
flows' counters grew by since the last fold to the current hour, in one
transaction: ``kill -9`` loses at most the fold under way, which the next
fold then counts (the last counters folded, per flow key, are in the file
too). A flow seen first counts whole; one whose counters went down, or whose
start tick changed, was made anew and counts its new values. A flow missing
from a fold is forgotten.

Active minutes: a minute of the local day in which a fold saw a (MAC, app)
move traffic. Each is a row of ``active`` (today's and yesterday's are kept),
so a minute counts once however many folds fall in it, also across restarts,
and a budget counts the minutes of several devices and apps together once
(:meth:`UsageDb.minutes_today`). Fold at least once a minute.

Bounds: hourly rows are kept 30 days and at most ``max_rows`` (250,000:
about 20 MB; the oldest hours go first); ``active`` at most 500,000 rows
(yesterday's go first); ``folded`` has one row per flow of the datapath's
table. Everything takes ``now`` (unix seconds): tests drive the clock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

from homegw.modules.dpi.config import Rule
from homegw.modules.dpi.policy import UsedMinutes, day_start, local_zone

log = logging.getLogger(__name__)

FILE_NAME = "dpi-usage.sqlite3"
KEEP_S = 30 * 86400
MAX_ROWS = 250_000
MAX_ACTIVE = 500_000
NETWORK_SERVICES = "system"  # DHCP/NTP/mDNS/SSDP: not "use" of the internet for a budget

_SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS usage (
    hour INTEGER NOT NULL, day INTEGER NOT NULL,
    mac TEXT NOT NULL, app TEXT NOT NULL, category TEXT NOT NULL,
    up INTEGER NOT NULL, down INTEGER NOT NULL, packets INTEGER NOT NULL,
    active_minutes INTEGER NOT NULL,
    PRIMARY KEY (hour, mac, app, category)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_mac ON usage (mac, hour);
CREATE TABLE IF NOT EXISTS active (
    day INTEGER NOT NULL, mac TEXT NOT NULL, app TEXT NOT NULL, category TEXT NOT NULL,
    minute INTEGER NOT NULL,
    PRIMARY KEY (day, mac, app, category, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folded (
    key BLOB PRIMARY KEY, started INTEGER NOT NULL,
    up INTEGER NOT NULL, down INTEGER NOT NULL, packets INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class FlowCounters:
    """One flow of the datapath now: its key (bytes of struct dpi_flow_key),
    device, classification and counters since it started."""

    key: bytes
    mac: str
    app: str  # app id, or an unknown name's registrable domain
    category: str
    up_bytes: int
    down_bytes: int
    packets: int
    started: int = 0  # its first tick: a different one is a new flow under the same key


Counts = tuple[int, int, int]  # up, down, packets
Activity = tuple[str, str, str]  # mac, app, category


def _grown(flow: FlowCounters, last: tuple[int, int, int, int] | None) -> Counts:
    """What ``flow`` moved since it was last folded (``last``: started, up, down, packets)."""
    now = (flow.up_bytes, flow.down_bytes, flow.packets)
    if (
        last is None
        or last[0] != flow.started
        or any(n < o for n, o in zip(now, last[1:], strict=True))
    ):
        return now
    return now[0] - last[1], now[1] - last[2], now[2] - last[3]


class UsageDb:
    def __init__(
        self, state_dir: str | Path, zone: tzinfo | None = None, max_rows: int = MAX_ROWS
    ) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(state_dir) / FILE_NAME
        self.zone = zone or local_zone()
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=5.0, check_same_thread=False, isolation_level=None
        )
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clock(self, now: float) -> tuple[int, int, int]:
        """(local hour start, local midnight, minute of the local day) of ``now``."""
        local = datetime.fromtimestamp(now, self.zone)
        hour = int(local.replace(minute=0, second=0, microsecond=0).timestamp())
        day = int(day_start(local).timestamp())
        return hour, day, (int(now) - day) // 60

    # -- writing -----------------------------------------------------------------
    def fold(self, flows: Iterable[FlowCounters], now: float) -> None:
        """Add what every flow moved since the last fold to the current hour;
        ``flows`` is every flow of the datapath's table now."""
        when = self.clock(now)
        with self._transaction() as db:
            last = self._folded(db)
            grown: dict[Activity, list[int]] = {}
            current: set[bytes] = set()
            for flow in flows:
                current.add(flow.key)
                counts = _grown(flow, last.get(flow.key))
                if any(counts):
                    total = grown.setdefault((flow.mac, flow.app, flow.category), [0, 0, 0])
                    total[:] = [a + b for a, b in zip(total, counts, strict=True)]
                    self._remember(db, flow)
            db.executemany(
                "DELETE FROM folded WHERE key = ?", [(k,) for k in last if k not in current]
            )
            for activity, counts in grown.items():
                self._add(db, activity, counts, when)

    def baseline(self, flows: Iterable[FlowCounters]) -> None:
        """Take the counters of flows the history does not know yet as counted
        (flows that outlived a lost history file, pinned in the datapath):
        their next fold counts only what they move from now on."""
        with self._transaction() as db:
            known = self._folded(db)
            for flow in flows:
                if flow.key not in known:
                    self._remember(db, flow)

    @staticmethod
    def _folded(db: sqlite3.Connection) -> dict[bytes, tuple[int, int, int, int]]:
        rows = db.execute("SELECT key, started, up, down, packets FROM folded")
        return {key: (started, up, down, packets) for key, started, up, down, packets in rows}

    @staticmethod
    def _remember(db: sqlite3.Connection, flow: FlowCounters) -> None:
        db.execute(
            "INSERT OR REPLACE INTO folded VALUES (?, ?, ?, ?, ?)",
            (flow.key, flow.started, flow.up_bytes, flow.down_bytes, flow.packets),
        )

    @staticmethod
    def _add(
        db: sqlite3.Connection,
        activity: Activity,
        counts: list[int],
        when: tuple[int, int, int],
    ) -> None:
        hour, day, minute = when
        new_minute = db.execute(
            "INSERT OR IGNORE INTO active VALUES (?, ?, ?, ?, ?)", (day, *activity, minute)
        ).rowcount
        db.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hour, mac, app, category) DO UPDATE SET up = up + excluded.up, "
            "down = down + excluded.down, packets = packets + excluded.packets, "
            "active_minutes = active_minutes + excluded.active_minutes",
            (hour, day, *activity, *counts, new_minute),
        )

    def prune(self, now: float) -> None:
        """Drop hours older than 30 days, then the oldest beyond ``max_rows``;
        active minutes before yesterday, then yesterday's beyond MAX_ACTIVE."""
        hour, day, _ = self.clock(now)
        yesterday = int(day_start(datetime.fromtimestamp(day - 1, self.zone)).timestamp())
        with self._transaction() as db:
            db.execute("DELETE FROM usage WHERE hour < ?", (hour - KEEP_S,))
            db.execute(
                "DELETE FROM usage WHERE hour <= (SELECT hour FROM usage "
                "ORDER BY hour DESC LIMIT 1 OFFSET ?)",
                (self.max_rows,),
            )
            db.execute("DELETE FROM active WHERE day < ?", (yesterday,))
            (active,) = db.execute("SELECT COUNT(*) FROM active").fetchone()
            if active > MAX_ACTIVE:
                db.execute("DELETE FROM active WHERE day < ?", (day,))

    # -- reading -----------------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def usage(
        self,
        mac: str | None,
        since: float,
        until: float,
        bucket: Literal["hour", "day"] = "hour",
    ) -> list[dict[str, Any]]:
        """Per (bucket, MAC, app, category), oldest first: the hours (or local
        days) from the one holding ``since`` to before ``until``."""
        if bucket not in ("hour", "day"):
            raise ValueError(f"bucket must be 'hour' or 'day', not {bucket!r}")
        where, args = self._where(mac, since)
        rows = self._rows(
            f"SELECT {bucket}, mac, app, category, SUM(up), SUM(down), SUM(packets), "
            f"SUM(active_minutes) FROM usage WHERE {where} AND hour < ? "
            f"GROUP BY {bucket}, mac, app, category ORDER BY {bucket}, mac, app, category",
            (*args, until),
        )
        keys = ("start", "mac", "app", "category", "up_bytes", "down_bytes", "packets")
        return [dict(zip((*keys, "active_minutes"), row, strict=True)) for row in rows]

    def top(self, mac: str | None, since: float, limit: int = 10) -> list[dict[str, Any]]:
        """The apps with the most bytes from the hour holding ``since`` on, most first."""
        where, args = self._where(mac, since)
        rows = self._rows(
            "SELECT app, category, SUM(up), SUM(down), SUM(packets), SUM(active_minutes) "
            f"FROM usage WHERE {where} GROUP BY app, category "
            "ORDER BY SUM(up) + SUM(down) DESC, app LIMIT ?",
            (*args, max(0, limit)),
        )
        keys = ("app", "category", "up_bytes", "down_bytes", "packets", "active_minutes")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def _where(self, mac: str | None, since: float) -> tuple[str, tuple[Any, ...]]:
        first, _, _ = self.clock(since)
        if mac is None:
            return "hour >= ?", (first,)
        return "mac = ? AND hour >= ?", (mac, first)

    def minutes_today(
        self,
        macs: Sequence[str],
        now: float,
        apps: Sequence[str] = (),
        categories: Sequence[str] = (),
        all_apps: bool = False,
        except_apps: Sequence[str] = (),
        except_categories: Sequence[str] = (),
    ) -> int:
        """Minutes of the local day so far in which any of ``macs`` used any of
        ``apps``/``categories`` (``all_apps``: anything but network services),
        the ``except_*`` ones left out; several at once count once."""
        if not macs or not (apps or categories or all_apps):
            return 0
        _, day, _ = self.clock(now)
        clauses, args = [f"mac IN ({_marks(macs)})"], [day, *macs]
        if all_apps:
            clauses.append("category != ?")
            args.append(NETWORK_SERVICES)
        else:
            clauses.append(f"(app IN ({_marks(apps)}) OR category IN ({_marks(categories)}))")
            args += [*apps, *categories]
        clauses.append(f"app NOT IN ({_marks(except_apps)})")
        clauses.append(f"category NOT IN ({_marks(except_categories)})")
        args += [*except_apps, *except_categories]
        (minutes,) = self._rows(
            f"SELECT COUNT(DISTINCT minute) FROM active WHERE day = ? AND {' AND '.join(clauses)}",
            args,
        )[0]
        return minutes

    def used_minutes_at(self, now: float) -> UsedMinutes:
        """policy.evaluate's ``used_minutes`` at ``now``: a rule's devices'
        minutes today on what it blocks, its exceptions left out."""

        def used(macs: tuple[str, ...], rule: Rule) -> int:
            return self.minutes_today(
                macs,
                now,
                apps=rule.block_apps,
                categories=rule.block_categories,
                all_apps=rule.block_all,
                except_apps=rule.allow_apps,
                except_categories=rule.allow_categories,
            )

        return used


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))
