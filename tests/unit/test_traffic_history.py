"""Traffic history: folding the device table's counters into hourly rows,
counters that went backwards, pruning, today since local midnight, and the
read of 250 devices x 24 h. The clock is the test's."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from homegw.traffichistory import HOUR, Bytes, HistoryFolder, TrafficHistory, local_midnight

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T0 = 1_780_000_000 // HOUR * HOUR  # an hour start


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def history(tmp_path: Path) -> TrafficHistory:
    store = TrafficHistory(tmp_path)
    yield store
    store.close()


def test_folds_growth_into_the_hour_it_was_folded_in(history: TrafficHistory) -> None:
    history.fold({A: Bytes(100, 1000)}, T0 + 60)
    history.fold({A: Bytes(150, 1500)}, T0 + 120)
    history.fold({A: Bytes(160, 1700), B: Bytes(5, 7)}, T0 + HOUR + 60)
    rows = history.hourly({A: Bytes(160, 1700), B: Bytes(5, 7)}, T0 + HOUR + 90, hours=3)
    assert rows == [
        {"hour": T0 - HOUR, "from_bytes": 0, "to_bytes": 0},
        {"hour": T0, "from_bytes": 150, "to_bytes": 1500},
        {"hour": T0 + HOUR, "from_bytes": 15, "to_bytes": 207},
    ]
    assert history.hourly({}, T0 + HOUR + 90, hours=2, mac=A)[1] == {
        "hour": T0 + HOUR,
        "from_bytes": 10,
        "to_bytes": 200,
    }


def test_counters_that_went_backwards_are_a_new_start(history: TrafficHistory) -> None:
    history.fold({A: Bytes(1000, 1000)}, T0 + 60)
    history.fold({A: Bytes(30, 2000)}, T0 + 120)  # from_bytes reset (table made anew)
    rows = history.hourly({}, T0 + 130, hours=1, mac=A)
    assert rows == [{"hour": T0, "from_bytes": 1030, "to_bytes": 2000}]


def test_a_forgotten_device_counts_from_zero_when_it_comes_back(history: TrafficHistory) -> None:
    history.fold({A: Bytes(1000, 1000)}, T0 + 60)
    history.fold({}, T0 + 120)  # forgotten: gone from the table
    history.fold({A: Bytes(1500, 1500)}, T0 + 180)  # back, counted anew (> the old value)
    assert history.hourly({}, T0 + 200, hours=1, mac=A)[0]["from_bytes"] == 2500


def test_a_fold_survives_a_restart_and_is_not_counted_twice(tmp_path: Path) -> None:
    first = TrafficHistory(tmp_path)
    first.fold({A: Bytes(100, 100)}, T0 + 60)
    first.close()
    second = TrafficHistory(tmp_path)  # the appliance again; the counters kept running
    second.fold({A: Bytes(120, 100)}, T0 + 120)
    assert second.hourly({}, T0 + 130, hours=1)[0] == {
        "hour": T0,
        "from_bytes": 120,
        "to_bytes": 100,
    }
    second.close()


def test_rows_older_than_7_days_are_pruned(history: TrafficHistory) -> None:
    history.fold({A: Bytes(100, 100)}, T0)
    history.fold({A: Bytes(200, 200)}, T0 + 7 * 24 * HOUR)  # exactly 7 days: kept

    def rows_of_t0() -> tuple[int]:
        return history._db.execute("SELECT COUNT(*) FROM traffic WHERE hour = ?", (T0,)).fetchone()

    assert rows_of_t0() == (1,)
    history.fold({A: Bytes(300, 300)}, T0 + 7 * 24 * HOUR + HOUR)
    assert rows_of_t0() == (0,)


def test_today_is_since_local_midnight_with_what_is_not_folded_yet(
    history: TrafficHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Etc/GMT-3")  # UTC+3
    time.tzset()
    now = T0 + 30 * 60
    midnight = local_midnight(now)
    assert midnight % (24 * HOUR) == 21 * HOUR  # 00:00 at UTC+3 is 21:00 UTC
    history.fold({A: Bytes(100, 100)}, midnight - 60)  # yesterday
    history.fold({A: Bytes(150, 300)}, midnight + 60)
    today = history.today({A: Bytes(170, 310), B: Bytes(9, 9)}, max(now, midnight + 120))
    assert today == {A: Bytes(70, 210), B: Bytes(9, 9)}


def test_negative_counter_never_appears(history: TrafficHistory) -> None:
    history.fold({A: Bytes(500, 500)}, T0 + 60)
    today = history.today({A: Bytes(10, 600)}, T0 + 70)  # reset since the fold
    assert today == {A: Bytes(510, 600)}


def test_250_devices_24_hours_read_fast(history: TrafficHistory) -> None:
    macs = [f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(250)]
    for h in range(24):
        history.fold(
            {m: Bytes(h * 1000 + i, h * 2000 + i) for i, m in enumerate(macs)}, T0 + h * HOUR
        )
    now = T0 + 23 * HOUR + 60
    counters = {m: Bytes(23 * 1000 + i, 23 * 2000 + i) for i, m in enumerate(macs)}
    start = time.perf_counter()
    today = history.today(counters, now)
    whole = history.hourly(counters, now)
    one = history.hourly(counters, now, mac=macs[7])
    elapsed = time.perf_counter() - start
    assert len(today) == 250 and len(whole) == 24 and len(one) == 24
    assert one[-1] == {"hour": T0 + 23 * HOUR, "from_bytes": 1000, "to_bytes": 2000}
    plan = history._db.execute(
        "EXPLAIN QUERY PLAN SELECT hour, SUM(from_bytes) FROM traffic WHERE hour >= ? AND mac = ?",
        (T0 + 20 * HOUR, macs[7]),
    ).fetchall()
    assert "USING PRIMARY KEY" in str(plan), plan  # one device: a range of the key
    assert elapsed < 0.1, f"{elapsed * 1000:.1f} ms for the devices page's reads"


def test_folder_folds_at_stop(tmp_path: Path) -> None:
    history = TrafficHistory(tmp_path)
    counters = {A: Bytes(10, 20)}
    folder = HistoryFolder(history, lambda: counters, interval=3600, clock=lambda: T0 + 5)
    folder.start()
    folder.stop()
    assert history.hourly({}, T0 + 6, hours=1)[0] == {"hour": T0, "from_bytes": 10, "to_bytes": 20}
    assert os.path.exists(tmp_path / "traffic.sqlite-wal") or history.path.exists()
    history.close()
