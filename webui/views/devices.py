"""The Devices page: every device the gateway knows (control().devices()),
searchable and paginated server-side, and one page per device with its 24 h
graph (webui/static/device.js, from device()'s history), its top apps and
its app usage over 24 h or 7 days (webui/static/device_apps.js, from
app_usage: webui.views.app_usage), rename, "Reserve
address" (a dhcp.reservations entry through config_apply of the dhcp
section) and "Pause internet" / "Resume internet" (device_set)."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from werkzeug import Response

from homegw.control import ConfigRejected
from webui.views.app_usage import usage_of
from webui.views.common import (
    PAGE_SIZE,
    apply_section,
    control,
    offset_arg,
    rejected_errors,
    render,
)
from webui.views.nav import Page
from webui.views.overview import category_labels, today_bytes, top_apps

log = logging.getLogger(__name__)

bp = Blueprint("devices", __name__, url_prefix="/devices")
PAGE = Page("Devices", "devices.index")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
STATES = (("all", "All"), ("online", "Online"), ("offline", "Offline"))
MAX_QUERY = 100


def _matches(device: dict[str, Any], query: str) -> bool:
    texts = [device.get(k) or "" for k in ("name", "hostname", "mac", "vendor")]
    texts += device.get("addresses") or []
    texts += device.get("ipv6") or []
    return any(query in str(text).lower() for text in texts)


def _select(devices: list[dict[str, Any]], query: str, state: str) -> list[dict[str, Any]]:
    if state in ("online", "offline"):
        devices = [d for d in devices if bool(d.get("online")) == (state == "online")]
    if query:
        devices = [d for d in devices if _matches(d, query.lower())]
    return devices


@bp.get("/")
def index() -> str:
    query = request.args.get("q", "").strip()[:MAX_QUERY]
    state = request.args.get("state", "all")
    state = state if state in dict(STATES) else "all"
    offset = offset_arg()
    found = _select(control().devices(), query, state)
    return render(
        "devices.html",
        devices=found[offset : offset + PAGE_SIZE],
        total=len(found),
        offset=offset,
        limit=PAGE_SIZE,
        query=query,
        state=state,
        states=STATES,
        today_bytes=today_bytes,
    )


def _mac(mac: str) -> str:
    """The MAC of the URL in the form the appliance uses; anything else is a 404."""
    mac = mac.lower()
    if not MAC.match(mac):
        abort(404)
    return mac


def _device_page(device: dict[str, Any], status: int = 200, **form: Any) -> tuple[str, int]:
    context: dict[str, Any] = {"name_value": device.get("user_name") or "", "name_error": None}
    context["reserve_errors"] = []
    context.update(form)
    history = device.get("history") or []
    context["top_apps"] = top_apps(device["mac"], 10)
    context["usage"] = usage_of(device["mac"]) if context["top_apps"] is not None else None
    context["category_labels"] = category_labels()
    return render("device.html", device=device, history=history, **context), status


@bp.get("/<mac>")
def device(mac: str) -> tuple[str, int]:
    return _device_page(control().device(_mac(mac)))


@bp.post("/<mac>/name")
def rename(mac: str) -> Response | tuple[str, int]:
    mac = _mac(mac)
    name = request.form.get("name", "").strip()
    try:
        control().device_set(mac, {"name": name or None})
    except ConfigRejected as rejected:
        errors = rejected_errors(rejected, "name")
        return _device_page(control().device(mac), 400, name_value=name, name_error=_first(errors))
    flash("Name saved." if name else "Name removed: the device's own name is shown.", "info")
    return redirect(url_for("devices.device", mac=mac))


def _first(errors: dict[str, str]) -> str:
    return next(iter(errors.values()), "Refused.")


@bp.post("/<mac>/reserve")
def reserve(mac: str) -> Response | tuple[str, int]:
    mac = _mac(mac)
    device = control().device(mac)
    addresses = device.get("addresses") or []
    if not addresses:
        return _device_page(device, 409, reserve_errors=["The device has no address to reserve."])
    address = addresses[0]
    dhcp = control().config_get("dhcp")
    kept = [r for r in dhcp.get("reservations") or [] if r.get("mac") != mac]
    reservations = [*kept, {"mac": mac, "address": address}]
    result = apply_section("dhcp", {**dhcp, "reservations": reservations})
    if not result.ok:
        problems = [f"{loc}: {msg}" for loc, msg in result.errors.items()]
        return _device_page(device, 400, reserve_errors=problems)
    flash(f"{address} is now reserved for this device.", "info")
    return redirect(url_for("devices.device", mac=mac))


@bp.post("/<mac>/pause")
def pause(mac: str) -> Response:
    mac = _mac(mac)
    paused = request.form.get("paused") == "1"
    try:
        control().device_set(mac, {"paused": paused})
    except ConfigRejected as rejected:
        flash(f"Refused: {_first(rejected_errors(rejected, 'paused'))}", "error")
    else:
        flash("Internet paused for this device." if paused else "Internet resumed.", "info")
    return redirect(url_for("devices.device", mac=mac))
