"""The Overview page: the WAN's state and address, uptime, a live
throughput graph (webui/static/overview.js polls GET /api/v1/status and
computes the rates in the browser), devices online, the top devices by
today's traffic and the alerts. A "top apps" card comes with a DPI module
that reports applications; until then there is none (no placeholder)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from webui.views.common import control, render
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("overview", __name__, url_prefix="/")
PAGE = Page("Overview", "overview.index")
TOP_DEVICES = 5


def today_bytes(device: dict[str, Any]) -> int:
    today = device.get("today") or {}
    return int(today.get("from_bytes") or 0) + int(today.get("to_bytes") or 0)


def top_devices(devices: list[dict[str, Any]], count: int = TOP_DEVICES) -> list[dict[str, Any]]:
    """The devices with the most traffic today, most first (none without)."""
    busy = [d for d in devices if today_bytes(d) > 0]
    return sorted(busy, key=today_bytes, reverse=True)[:count]


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
        today_bytes=today_bytes,
        alerts=control().alerts(),
    )
