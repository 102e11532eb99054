"""The DHCP page: the dynamic range and lease time, the reservations (add,
edit, delete) and the active leases, each with a "Reserve" button.

Every change is one config_apply of the ``dhcp`` section, so the config's
own validation judges it; a refusal re-renders the page with the user's
input kept and each error next to its field (``dhcp.reservations.3.address``
next to row 3's address).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from flask import Blueprint, Response

from homegw.modules.dhcp.config import default_range
from webui.views.common import apply_section, control, offset_arg, render
from webui.views.formtools import (
    ROWS_PER_PAGE,
    STALE,
    Pager,
    action,
    done,
    editing_arg,
    failed,
    install,
    saved,
    still_there,
    text,
)
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("dhcp", __name__, url_prefix="/dhcp")
PAGE = Page("DHCP", "dhcp.index")
install(bp)

Errors = dict[str, str]
Reservation = dict[str, str]


@bp.get("/")
def index() -> str:
    return _page()


def _page(errors: Errors | None = None, **values: Any) -> str:
    """The page; after a refusal, ``values`` holds the user's input:
    ``settings`` (the range form), ``new`` (the add form), ``edited``
    ({row index: values})."""
    dhcp = control().config_get("dhcp")
    leases = control().table("dhcp_leases", offset_arg(), ROWS_PER_PAGE)
    reservations = list(dhcp.get("reservations", []))
    defaults = _default_range()
    return render(
        "dhcp.html",
        dhcp=dhcp,
        default_range=defaults,
        pool_size=_pool_size(dhcp, defaults),
        settings=values.get("settings") or _settings_of(dhcp),
        reservations=reservations,
        reserved={mac_of(r) for r in reservations},
        mac_of=mac_of,
        new=values.get("new", {}),
        edited=values.get("edited", {}),
        editing_row=editing_arg(),
        leases=leases,
        pager=Pager.of(leases),
        errors=errors or {},
    )


def _refused(errors: Errors, **values: Any) -> tuple[str, int]:
    log.info("DHCP change refused: %s", errors)
    return _page(errors, **values), 400


def _default_range() -> tuple[str, str]:
    address = control().config_get("lan").get("address", "192.168.1.1/24")
    start, end = default_range(ipaddress.IPv4Interface(address))
    return str(start), str(end)


def _pool_size(dhcp: dict[str, Any], defaults: tuple[str, str]) -> int:
    """How many addresses the dynamic range holds."""
    start = ipaddress.IPv4Address(dhcp.get("range_start", defaults[0]))
    end = ipaddress.IPv4Address(dhcp.get("range_end", defaults[1]))
    return max(0, int(end) - int(start) + 1)


def _settings_of(dhcp: dict[str, Any]) -> dict[str, str]:
    keys = ("range_start", "range_end", "lease_time")
    return {key: str(dhcp.get(key, "")) for key in keys}


@bp.post("/settings")
@action
def settings() -> Response | tuple[str, int]:
    form = {key: text(key) for key in ("range_start", "range_end", "lease_time")}
    errors: Errors = {}
    dhcp = control().config_get("dhcp")
    for key in ("range_start", "range_end"):  # both empty: the default range
        if form[key]:
            dhcp[key] = form[key]
        else:
            dhcp.pop(key, None)
    lease = form["lease_time"]
    if not lease:
        errors["dhcp.lease_time"] = "required: e.g. 12h, 30m or 3600 (seconds)"
    dhcp["lease_time"] = int(lease) if lease.isdigit() else lease
    if errors:
        return _refused(errors, settings=form)
    result = apply_section("dhcp", dhcp)
    if not result.ok:
        return _refused(result.errors, settings=form)
    return done(saved("DHCP range and lease time", result.applied), "dhcp.index")


def _reservation_form() -> Reservation:
    return {key: text(key) for key in ("mac", "address", "hostname")}


def _as_config(reservation: Reservation) -> dict[str, str]:
    """A reservation of the form as the config holds it (no empty hostname)."""
    return {key: value for key, value in reservation.items() if value or key != "hostname"}


def _apply_reservations(reservations: list[dict[str, Any]]) -> Any:
    dhcp = control().config_get("dhcp")
    dhcp["reservations"] = reservations
    return apply_section("dhcp", dhcp)


@bp.post("/reservations")
@action
def reservation_add() -> Response | tuple[str, int]:
    """Add a reservation: the add form, or a lease's "Reserve" button."""
    new = _reservation_form()
    reservations = list(control().config_get("dhcp").get("reservations", []))
    result = _apply_reservations([*reservations, _as_config(new)])
    if not result.ok:
        return _refused(result.errors, new=new)
    shown = new["hostname"] or new["mac"]
    return done(saved(f"Reservation of {new['address']} for {shown}", result.applied), "dhcp.index")


def mac_of(reservation: dict[str, Any]) -> str:
    return str(reservation.get("mac", "")).lower()


def _row(index: int) -> tuple[list[dict[str, Any]], Response | None]:
    """The reservations, or the answer when row ``index`` is no longer the
    row the form showed."""
    reservations = list(control().config_get("dhcp").get("reservations", []))
    if not still_there(reservations, index, mac_of):
        return reservations, failed(STALE, "dhcp.index")
    return reservations, None


@bp.post("/reservations/<int:index>")
@action
def reservation_save(index: int) -> Response | tuple[str, int]:
    reservations, stale = _row(index)
    if stale is not None:
        return stale
    edited = _reservation_form()
    reservations[index] = _as_config(edited)
    result = _apply_reservations(reservations)
    if not result.ok:
        return _refused(result.errors, edited={index: edited})
    return done(saved(f"Reservation of {edited['address']}", result.applied), "dhcp.index")


@bp.post("/reservations/<int:index>/delete")
@action
def reservation_delete(index: int) -> Response | tuple[str, int]:
    reservations, stale = _row(index)
    if stale is not None:
        return stale
    gone = reservations.pop(index)
    result = _apply_reservations(reservations)
    if not result.ok:
        return _refused(result.errors)
    return done(f"Reservation of {gone['address']} deleted.", "dhcp.index")
