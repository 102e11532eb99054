"""Usage history (SQLite, WAL): folding flow counters into hourly rows,
active minutes, budgets' minutes today, restarts, pruning, crashes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from homegw.modules.dpi.config import DpiConfig
from homegw.modules.dpi.policy import evaluate
from homegw.modules.dpi.usage import FILE_NAME, FlowCounters, UsageDb

BERLIN = ZoneInfo("Europe/Berlin")
PHONE, TABLET = "02:48:47:00:00:01", "02:48:47:00:00:02"
ROOT = Path(__file__).resolve().parents[2]


def t(day: str, clock: str) -> float:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=BERLIN).timestamp()


NOON = t("2026-12-01", "12:00")


def flow(key: int, up: int, down: int = 0, packets: int = 1, **fields: object) -> FlowCounters:
    named = {"mac": PHONE, "app": "youtube", "category": "video", "started": 1, **fields}
    return FlowCounters(
        bytes([key]) * 16,
        up_bytes=up,
        down_bytes=down,
        packets=packets,
        **named,  # type: ignore[arg-type]
    )


@pytest.fixture
def db(tmp_path):
    usage = UsageDb(tmp_path, zone=BERLIN)
    yield usage
    usage.close()


def totals(db: UsageDb, mac: str | None = None) -> dict[str, tuple[int, int, int, int]]:
    return {
        row["app"]: (row["up_bytes"], row["down_bytes"], row["packets"], row["active_minutes"])
        for row in db.top(mac, NOON - 86400 * 30, limit=100)
    }


def test_deltas_between_folds(db):
    db.fold([flow(1, 1000, 5000, 10), flow(2, 10, 20, 2)], NOON)
    assert totals(db) == {"youtube": (1010, 5020, 12, 1)}
    db.fold([flow(1, 1500, 9000, 15), flow(2, 10, 20, 2)], NOON + 10)
    assert totals(db) == {"youtube": (1510, 9020, 17, 1)}


def test_a_recreated_flow_counts_its_new_values(db):
    db.fold([flow(1, 1000, 1000, 10)], NOON)
    db.fold([flow(1, 300, 400, 3)], NOON + 10)  # counters went down: made anew
    assert totals(db) == {"youtube": (1300, 1400, 13, 1)}
    db.fold([flow(1, 500, 500, 5, started=99)], NOON + 20)  # higher, but a new start tick
    assert totals(db) == {"youtube": (1800, 1900, 18, 1)}


def test_a_flow_missing_from_a_fold_is_forgotten(db):
    db.fold([flow(1, 1000)], NOON)
    db.fold([], NOON + 10)
    db.fold([flow(1, 1000)], NOON + 20)  # the same key again: a new flow, counted whole
    assert totals(db)["youtube"][0] == 2000


def test_rows_are_per_hour_device_and_app(db):
    db.fold([flow(1, 100), flow(2, 50, mac=TABLET, app="fortnite", category="games")], NOON)
    db.fold([flow(1, 300), flow(2, 50, mac=TABLET, app="fortnite", category="games")], NOON + 3600)
    rows = db.usage(None, NOON, NOON + 7200, "hour")
    assert [(r["start"], r["mac"], r["app"], r["up_bytes"]) for r in rows] == [
        (NOON, PHONE, "youtube", 100),
        (NOON, TABLET, "fortnite", 50),
        (NOON + 3600, PHONE, "youtube", 200),
    ]
    assert [r["app"] for r in db.usage(TABLET, NOON, NOON + 7200)] == ["fortnite"]
    assert db.usage(None, NOON, NOON + 3600) == rows[:2]  # until is exclusive
    assert rows[0]["category"] == "video" and rows[0]["active_minutes"] == 1


def test_day_buckets_are_local_days(db):
    db.fold([flow(1, 100)], t("2026-12-01", "23:30"))  # 22:30 UTC
    db.fold([flow(1, 150)], t("2026-12-02", "00:30"))
    db.fold([flow(1, 175)], t("2026-12-02", "23:59"))
    rows = db.usage(PHONE, t("2026-12-01", "00:00"), t("2026-12-03", "00:00"), "day")
    assert [(r["start"], r["up_bytes"], r["active_minutes"]) for r in rows] == [
        (t("2026-12-01", "00:00"), 100, 1),
        (t("2026-12-02", "00:00"), 75, 2),
    ]
    with pytest.raises(ValueError, match="bucket"):
        db.usage(PHONE, 0, NOON, "week")  # type: ignore[arg-type]


def test_the_25_hour_day_is_one_day_of_25_hour_rows(db):
    start = t("2026-10-25", "00:00")
    for hour in range(25):
        db.fold([flow(1, 10 * (hour + 1))], start + hour * 3600 + 60)
    hours = db.usage(PHONE, start, start + 25 * 3600, "hour")
    assert len(hours) == 25 and len({r["start"] for r in hours}) == 25
    (day,) = db.usage(PHONE, start, start + 25 * 3600, "day")
    assert day["start"] == start and day["up_bytes"] == 250 and day["active_minutes"] == 25


def test_top_is_most_bytes_first(db):
    db.fold(
        [
            flow(1, 100, 900),
            flow(2, 5000, mac=TABLET, app="fortnite", category="games"),
            flow(3, 10, app="khan_academy", category="education"),
        ],
        NOON,
    )
    assert [r["app"] for r in db.top(None, NOON, limit=10)] == [
        "fortnite",
        "youtube",
        "khan_academy",
    ]
    assert [r["app"] for r in db.top(None, NOON, limit=2)] == ["fortnite", "youtube"]
    assert [r["app"] for r in db.top(PHONE, NOON)] == ["youtube", "khan_academy"]
    assert db.top(PHONE, NOON + 3600) == []


# --- active minutes and budgets ------------------------------------------------------


def test_a_minute_counts_once_however_many_folds_fall_in_it(db):
    for second in (0, 15, 30, 59):
        db.fold([flow(1, 100 + second)], NOON + second)
    assert totals(db)["youtube"][3] == 1
    db.fold([flow(1, 200)], NOON + 60)
    db.fold([flow(1, 200)], NOON + 120)  # no traffic: not an active minute
    assert totals(db)["youtube"][3] == 2
    assert db.minutes_today([PHONE], NOON + 120, apps=["youtube"]) == 2


def test_minutes_today_counts_devices_and_apps_together_once(db):
    for minute in range(15):
        flows = []
        if minute < 10:
            flows.append(flow(1, 100 * (minute + 1), app="fortnite", category="games"))
        if minute >= 5:
            flows.append(flow(2, 100 * minute, mac=TABLET, app="minecraft", category="games"))
        flows.append(flow(3, 10 * (minute + 1), app="ntp", category="system"))
        db.fold(flows, NOON + 60 * minute)
    now = NOON + 900
    assert db.minutes_today([PHONE, TABLET], now, categories=["games"]) == 15
    assert db.minutes_today([PHONE], now, categories=["games"]) == 10
    assert db.minutes_today([PHONE, TABLET], now, apps=["minecraft"]) == 10
    assert db.minutes_today([PHONE, TABLET], now, all_apps=True) == 15  # ntp is not use
    assert db.minutes_today([PHONE, TABLET], now, all_apps=True, except_apps=["fortnite"]) == 10
    assert db.minutes_today([PHONE], now, categories=["games"], except_categories=["games"]) == 0
    assert db.minutes_today([], now, all_apps=True) == 0
    assert db.minutes_today([PHONE], now) == 0  # nothing asked for
    assert db.minutes_today([PHONE, TABLET], t("2026-12-02", "00:00"), categories=["games"]) == 0


def test_a_budget_runs_out_and_resets_at_midnight(tmp_path):
    cfg = DpiConfig.model_validate(
        {
            "profiles": [{"name": "Kid", "devices": [PHONE, TABLET]}],
            "rules": [
                {
                    "name": "games",
                    "who": ["Kid"],
                    "block_categories": ["games"],
                    "budget_minutes": 30,
                }
            ],
        }
    )
    usage = UsageDb(tmp_path, zone=BERLIN)
    start = t("2026-12-01", "23:10")

    def decide(now: float):
        when = datetime.fromtimestamp(now, BERLIN)
        return evaluate(cfg, None, usage.used_minutes_at(now), None, when)

    for minute in range(30):  # 20 minutes on the phone, 10 more on the tablet
        mac = PHONE if minute < 20 else TABLET
        now = start + 60 * minute
        assert (PHONE, "category", "games") not in decide(now).entries, minute
        usage.fold([flow(minute, 100, mac=mac, app="fortnite", category="games")], now + 30)
    spent = decide(start + 1800)
    assert spent.entries[(TABLET, "category", "games")] == "block"
    assert spent.devices[PHONE].budgets[0].used_minutes == 30
    assert spent.next_change.timestamp() == t("2026-12-02", "00:00")
    assert decide(t("2026-12-02", "00:00")).entries == {}  # a new day, a new budget
    usage.close()


# --- restarts, pruning, crashes ------------------------------------------------------


def test_history_and_folded_counters_survive_reopen(tmp_path):
    first = UsageDb(tmp_path, zone=BERLIN)
    first.fold([flow(1, 1000)], NOON)
    first.close()
    again = UsageDb(tmp_path, zone=BERLIN)
    again.fold([flow(1, 1500)], NOON + 30)  # same minute: not a second active minute
    assert totals(again) == {"youtube": (1500, 0, 1, 1)}
    again.close()


def test_baseline_takes_unknown_pinned_flows_as_counted(tmp_path):
    (tmp_path / "old").mkdir()
    known = UsageDb(tmp_path / "old", zone=BERLIN)
    known.fold([flow(1, 1000)], NOON)
    known.baseline([flow(1, 1700), flow(2, 5000)])  # a restart: 1 is known, 2 is not
    known.fold([flow(1, 1800), flow(2, 5100)], NOON + 60)
    assert totals(known)["youtube"][0] == 1000 + 800 + 100
    known.close()
    lost = UsageDb(tmp_path / "new", zone=BERLIN)  # the history file was lost, flows pinned
    lost.baseline([flow(1, 1800)])
    lost.fold([flow(1, 1850)], NOON + 120)
    assert totals(lost)["youtube"][0] == 50
    lost.close()


def test_prune_keeps_30_days_and_a_row_bound(tmp_path):
    usage = UsageDb(tmp_path, zone=BERLIN, max_rows=5)
    old = NOON - 31 * 86400
    usage.fold([flow(1, 1)], old)
    for hour in range(6):
        usage.fold([flow(1, 10 + hour)], NOON + hour * 3600)
    usage.prune(NOON + 5 * 3600)
    hours = [r["start"] for r in usage.usage(None, old, NOON + 86400)]
    assert hours == [NOON + h * 3600 for h in range(1, 6)]  # the old one, then the oldest
    usage.close()


def test_prune_drops_active_minutes_before_yesterday(db):
    db.fold([flow(1, 1)], t("2026-11-29", "12:00"))
    db.fold([flow(1, 2)], t("2026-11-30", "12:00"))
    db.fold([flow(1, 3)], t("2026-12-01", "12:00"))
    db.prune(t("2026-12-01", "12:00"))
    with sqlite3.connect(db.path) as raw:
        days = [d for (d,) in raw.execute("SELECT DISTINCT day FROM active ORDER BY day")]
    assert days == [t("2026-11-30", "00:00"), t("2026-12-01", "00:00")]
    assert db.usage(PHONE, t("2026-11-29", "00:00"), NOON + 3600, "day")[0]["active_minutes"] == 1


def test_an_open_transaction_is_invisible_to_a_second_connection(tmp_path):
    writer = UsageDb(tmp_path, zone=BERLIN)
    writer.fold([flow(1, 100)], NOON)
    writer._db.execute("BEGIN IMMEDIATE")  # a fold under way when the process dies
    writer._db.execute("UPDATE usage SET up = up + 999999")
    reader = UsageDb(tmp_path, zone=BERLIN)
    assert totals(reader)["youtube"][0] == 100
    writer._db.close()  # the crash: never committed
    reader.fold([flow(1, 250)], NOON + 60)
    assert totals(reader)["youtube"][:2] == (250, 0)
    reader.close()


CHILD = """
import sys
from homegw.modules.dpi.usage import FlowCounters, UsageDb
from zoneinfo import ZoneInfo
usage = UsageDb(sys.argv[1], zone=ZoneInfo("Europe/Berlin"))
for i in range(1, 100000):
    flows = [FlowCounters(bytes([k]) * 16, "02:48:47:00:00:01", "app%d" % k, "video", i * 100, i, i)
             for k in range(50)]
    usage.fold(flows, 1764590400 + i)
    print(i, flush=True)
"""


def test_kill_9_during_folds_loses_nothing_and_counts_nothing_twice(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        while int(child.stdout.readline() or 0) < 20:
            assert child.poll() is None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with sqlite3.connect(tmp_path / FILE_NAME) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (folds,) = raw.execute("SELECT up FROM folded LIMIT 1").fetchone()
    usage = UsageDb(tmp_path, zone=BERLIN)
    committed = folds // 100
    assert committed >= 20
    assert all(row["up_bytes"] == committed * 100 for row in usage.top(None, 0, limit=100))
    i = committed + 7  # the datapath's counters went on; the next fold counts exactly them
    usage.fold(
        [
            FlowCounters(bytes([k]) * 16, PHONE, f"app{k}", "video", i * 100, i, i)
            for k in range(50)
        ],
        1764590400 + i,
    )
    rows = usage.top(None, 0, limit=100)
    assert len(rows) == 50 and {row["up_bytes"] for row in rows} == {i * 100}
    usage.close()
