"""A device's app usage for its page: Control.app_usage's rows (one per
bucket and app) as the chart draws them (webui/static/device_apps.js): the
bucket starts and one series of bytes per app, the busiest apps by name and
the rest as "Other", with each series' totals for the table under it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from homegw.control import Conflict, NotFound
from webui.views.common import control

CHART_APPS = 5
HOUR = 3600


def usage_of(mac: str) -> dict[str, Any] | None:
    """{"day": 24 hourly buckets, "week": 7 daily ones} of one device as
    charts; None while DPI is off (a device DPI never saw has no usage)."""
    labels = {a["id"]: a["label"] for a in control().apps().get("apps") or []}
    try:
        day = control().app_usage(mac, 24, "hour")
        week = control().app_usage(mac, 7 * 24, "day")
    except Conflict:
        return None
    except NotFound:
        day, week = [], []
    return {"day": chart(day, labels, HOUR), "week": chart(week, labels, None)}


def _bytes(row: dict[str, Any]) -> int:
    return int(row.get("up_bytes") or 0) + int(row.get("down_bytes") or 0)


def _times(rows: list[dict[str, Any]], step: int | None) -> list[float]:
    """The buckets' starts, oldest first; hours without traffic filled in."""
    starts = sorted({float(row["start"]) for row in rows})
    if step is None or not starts:
        return starts
    count = int((starts[-1] - starts[0]) // step) + 1
    return [starts[0] + step * i for i in range(count)]


def chart(rows: list[dict[str, Any]], labels: dict[str, str], step: int | None) -> dict[str, Any]:
    """{times, series: [{app, label, values (bytes per bucket), bytes,
    minutes}]}, the busiest app first, "Other" last."""
    times = _times(rows, step)
    index = {start: i for i, start in enumerate(times)}
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[str(row["app"])] += _bytes(row)
    busiest = sorted(totals, key=lambda app: (-totals[app], app))
    shown = busiest[: CHART_APPS + 1] if len(busiest) == CHART_APPS + 1 else busiest[:CHART_APPS]
    series = {app: _series(app, labels.get(app, app), len(times)) for app in shown}
    other = _series("", "Other", len(times))
    for row in rows:
        entry = series.get(str(row["app"]), other)
        slot = index.get(float(row["start"]))
        if slot is not None:
            entry["values"][slot] += _bytes(row)
        entry["bytes"] += _bytes(row)
        entry["minutes"] += int(row.get("active_minutes") or 0)
    out = [series[app] for app in shown] + ([other] if other["bytes"] else [])
    return {"times": times, "series": out}


def _series(app: str, label: str, length: int) -> dict[str, Any]:
    return {"app": app, "label": label, "values": [0] * length, "bytes": 0, "minutes": 0}
