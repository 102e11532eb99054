"""The Overview page: the WAN's state and address, uptime, a live
throughput graph (webui/static/overview.js polls GET /api/v1/status and
computes the rates in the browser), devices online, the top devices by
today's traffic, the top apps of the last 24 hours (DPI's top_apps; no
card while DPI is off) and the alerts."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from homegw.control import Conflict, NotFound
from webui.views.common import control, render
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("overview", __name__, url_prefix="/")
PAGE = Page("Overview", "overview.index")
TOP_DEVICES = 5
TOP_APPS = 5


def today_bytes(device: dict[str, Any]) -> int:
    today = device.get("today") or {}
    return int(today.get("from_bytes") or 0) + int(today.get("to_bytes") or 0)


def top_devices(devices: list[dict[str, Any]], count: int = TOP_DEVICES) -> list[dict[str, Any]]:
    """The devices with the most traffic today, most first (none without)."""
    busy = [d for d in devices if today_bytes(d) > 0]
    return sorted(busy, key=today_bytes, reverse=True)[:count]


def top_apps(mac: str | None = None, limit: int = TOP_APPS) -> list[dict[str, Any]] | None:
    """The apps with the most bytes in the last 24 hours, most first; None
    while DPI is off. A device DPI never saw has none."""
    try:
        return control().top_apps(mac, 24, limit)
    except Conflict:
        return None
    except NotFound:
        return []


def category_labels() -> dict[str, str]:
    """Category id -> label, from the application database."""
    return {c["id"]: c["label"] for c in control().apps().get("categories") or []}


@bp.get("/")
def index() -> str:
    status = control().status()
    devices = control().devices()
    return render(
        "overview.html",
        status=status,
        wan=status.get("wan") or {},
        lan=status.get("lan") or {},
        online=sum(1 for d in devices if d.get("online")),
        device_count=len(devices),
        top=top_devices(devices),
        top_apps=top_apps(),
        category_labels=category_labels(),
        today_bytes=today_bytes,
        alerts=control().alerts(),
    )
