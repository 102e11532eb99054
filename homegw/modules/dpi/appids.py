"""Stable u16 numbers for app ids and unknown names (the datapath's app field).

The datapath keeps an app as a number (struct dpi_flow.app, policy keys), and
a pinned flow outlives the process: a number must mean the same name after a
restart. Numbers live in ``state_dir/dpi-apps.sqlite3`` (WAL), one committed
transaction per new name, so they survive restarts and ``kill -9``. Numbers
are never reused or renumbered; 0 is DPI_APP_UNKNOWN.

Bound: names given to :meth:`AppIds.number` (registrable domains of unknown
names: any web page can make a device look up new ones) get numbers until
``limit`` of them are numbered; beyond it they are 0 (shown as "unknown").
The database's app ids are given numbers first, by :meth:`AppIds.reserve`
(call it with every app id of each loaded database): they do not count
against the limit, so a flood of domains never leaves a real app without a
number. All numbers together stop at 65535.

Thread-safe: lookups of known names read a dict; a new name is numbered under
a lock, in one IMMEDIATE transaction that re-reads the file (another handle
on the same file, even another process, cannot make two numbers for a name).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from homegw.modules.dpi.categories import category_id, category_number

log = logging.getLogger(__name__)

FILE_NAME = "dpi-apps.sqlite3"
MAX_NUMBER = 65535
DEFAULT_LIMIT = 16384
_NAME = re.compile(r"[\x21-\x7e]{1,253}")  # printable ASCII, no spaces

_SCHEMA = """
CREATE TABLE IF NOT EXISTS app_numbers (
    number INTEGER PRIMARY KEY CHECK (number BETWEEN 1 AND 65535),
    name TEXT NOT NULL UNIQUE,
    reserved INTEGER NOT NULL DEFAULT 0
);
"""

__all__ = ["AppIds", "category_id", "category_number"]


class AppIds:
    def __init__(self, state_dir: str | Path, limit: int = DEFAULT_LIMIT) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(state_dir) / FILE_NAME
        self.limit = max(0, min(int(limit), MAX_NUMBER))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives kill -9
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._by_name: dict[str, int] = {}
        self._by_number: dict[int, str] = {}
        for number, name in self._db.execute("SELECT number, name FROM app_numbers"):
            self._remember(name, number)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _remember(self, name: str, number: int) -> None:
        self._by_name[name] = number
        self._by_number[number] = name

    def number(self, app_or_domain: str) -> int:
        """The name's number (1..65535), given it now if new; 0 for a name
        that is not printable ASCII of 1..253 characters, or when the limit
        (or 65535) is reached."""
        if not isinstance(app_or_domain, str):
            return 0
        found = self._by_name.get(app_or_domain)
        if found is not None:
            return found
        if not _NAME.fullmatch(app_or_domain):
            return 0
        with self._lock:
            return self._assign([app_or_domain], reserved=False)[0]

    def reserve(self, app_ids: Iterable[str]) -> None:
        """Number these app ids (a database's) now, outside the limit."""
        names = [n for n in dict.fromkeys(app_ids) if isinstance(n, str) and _NAME.fullmatch(n)]
        with self._lock:
            self._assign(names, reserved=True)

    def name(self, number: int) -> str | None:
        """The name a number was given, None for 0 or a number never given
        (read from the file when another handle gave it)."""
        found = self._by_number.get(number)
        if found is not None or not isinstance(number, int) or not 0 < number <= MAX_NUMBER:
            return found
        with self._lock:
            row = self._db.execute(
                "SELECT name FROM app_numbers WHERE number = ?", (number,)
            ).fetchone()
            if row is not None:
                self._remember(row[0], number)
            return row[0] if row is not None else None

    def __len__(self) -> int:
        return len(self._by_name)

    def _assign(self, names: list[str], reserved: bool) -> list[int]:
        """Numbers for `names` in one transaction (caller holds the lock)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            numbers = [self._assign_one(name, reserved) for name in names]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for name, number in zip(names, numbers, strict=True):
            if number:
                self._remember(name, number)
        return numbers

    def _assign_one(self, name: str, reserved: bool) -> int:
        db = self._db
        row = db.execute("SELECT number FROM app_numbers WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if reserved:
                db.execute("UPDATE app_numbers SET reserved = 1 WHERE number = ?", (row[0],))
            return row[0]
        highest, unreserved = db.execute(
            "SELECT coalesce(max(number), 0), count(*) - total(reserved) FROM app_numbers"
        ).fetchone()
        if highest >= MAX_NUMBER or (not reserved and unreserved >= self.limit):
            log.debug("no app number for %r: %d numbered, limit %d", name, highest, self.limit)
            return 0
        db.execute("INSERT INTO app_numbers VALUES (?, ?, ?)", (highest + 1, name, int(reserved)))
        return highest + 1
