"""The Firewall & NAT page: port forwards (add, edit, delete; each shows
whether its target device is online), the NAT's filtering mode and DMZ
host, WAN ping, and the drop counters of the firewall, NAT and router
modules by reason, most first.

Each change is one config_apply of its section (``nat`` or ``firewall``);
the config's validation judges it and its errors land next to their fields
(``nat.port_forwards.0.external_port`` next to row 0's external port).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request

from webui.views.common import apply_section, control, render
from webui.views.drop_reasons import drop_counts
from webui.views.formtools import (
    STALE,
    action,
    done,
    editing_arg,
    failed,
    install,
    port_or_range,
    saved,
    still_there,
    text,
    whole_number,
)
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("firewall", __name__, url_prefix="/firewall")
PAGE = Page("Firewall & NAT", "firewall.index")
install(bp)

Errors = dict[str, str]
PROTOCOLS = [("both", "TCP and UDP"), ("tcp", "TCP"), ("udp", "UDP")]
FILTERING = {
    "address-port-dependent": (
        "Strict (recommended)",
        "An answer from the internet gets in only from the address and port your device contacted.",
    ),
    "endpoint-independent": (
        "Open",
        "Once a device has sent from a port, anyone on the internet may send to it there. "
        "Some games and calls connect more easily; the device is easier to reach.",
    ),
}


@bp.get("/")
def index() -> str:
    return _page()


def _page(errors: Errors | None = None, **values: Any) -> str:
    """The page; after a refusal, ``values`` holds the user's input: ``new``
    (the add form), ``edited`` ({row index: values}), ``nat_form``."""
    nat = control().config_get("nat")
    firewall = control().config_get("firewall")
    return render(
        "firewall.html",
        forwards=list(nat.get("port_forwards", [])),
        targets=_targets(),
        nat_form=values.get("nat_form") or _nat_values(nat),
        wan_ping=bool(firewall.get("wan_ping", True)),
        new=values.get("new", {}),
        edited=values.get("edited", {}),
        editing_row=editing_arg(),
        drops=drop_counts(control().modules()),
        protocols=PROTOCOLS,
        protocol_names=dict(PROTOCOLS),
        filtering=FILTERING,
        identity=identity,
        errors=errors or {},
    )


def _refused(errors: Errors, **values: Any) -> tuple[str, int]:
    log.info("firewall/NAT change refused: %s", errors)
    return _page(errors, **values), 400


def _targets() -> dict[str, dict[str, Any]]:
    """Address -> {name, online} of the devices the gateway knows."""
    targets: dict[str, dict[str, Any]] = {}
    for device in control().devices():
        for address in device.get("addresses", []):
            known = targets.get(address)
            if known is None or (device.get("online") and not known["online"]):
                targets[address] = {
                    "name": device.get("name"),
                    "online": bool(device.get("online")),
                }
    return targets


def _nat_values(nat: dict[str, Any]) -> dict[str, str]:
    return {
        "filtering": str(nat.get("filtering", "address-port-dependent")),
        "dmz_host": str(nat.get("dmz_host") or ""),
    }


def identity(forward: dict[str, Any]) -> str:
    """What a row form checks is still the row it showed."""
    return f"{forward.get('protocol', 'both')} {forward.get('external_port')}"


# -- port forwards -------------------------------------------------------------


def _forward_form(index: int, errors: Errors) -> tuple[dict[str, str], dict[str, Any]]:
    """The form's values as typed, and the port forward as the config holds
    it (with the form's own shape errors at ``nat.port_forwards.<index>``)."""
    keys = ("name", "protocol", "external_port", "internal_address", "internal_port")
    typed = {key: text(key) for key in keys}
    loc = f"nat.port_forwards.{index}"
    forward: dict[str, Any] = {
        "protocol": typed["protocol"] or "both",
        "external_port": port_or_range(typed["external_port"]),
        "internal_address": typed["internal_address"],
    }
    if typed["name"]:
        forward["name"] = typed["name"]
    if not typed["external_port"]:
        errors[f"{loc}.external_port"] = "required: a port (e.g. 8080) or a range (8000-8010)"
    if typed["internal_port"]:
        forward["internal_port"] = whole_number(
            typed["internal_port"], f"{loc}.internal_port", errors, "a port number"
        )
    return typed, forward


def _apply_forwards(forwards: list[dict[str, Any]]) -> Any:
    nat = control().config_get("nat")
    nat["port_forwards"] = forwards
    return apply_section("nat", nat)


def _forwards() -> list[dict[str, Any]]:
    return list(control().config_get("nat").get("port_forwards", []))


@bp.post("/forwards")
@action
def forward_add() -> Response | tuple[str, int]:
    forwards = _forwards()
    errors: Errors = {}
    typed, forward = _forward_form(len(forwards), errors)
    if errors:
        return _refused(errors, new=typed)
    result = _apply_forwards([*forwards, forward])
    if not result.ok:
        return _refused(result.errors, new=typed)
    return done(saved(f"Port forward {typed['external_port']}", result.applied), "firewall.index")


@bp.post("/forwards/<int:index>")
@action
def forward_save(index: int) -> Response | tuple[str, int]:
    forwards = _forwards()
    if not still_there(forwards, index, identity):
        return failed(STALE, "firewall.index")
    errors: Errors = {}
    typed, forwards[index] = _forward_form(index, errors)
    if errors:
        return _refused(errors, edited={index: typed})
    result = _apply_forwards(forwards)
    if not result.ok:
        return _refused(result.errors, edited={index: typed})
    return done(saved(f"Port forward {typed['external_port']}", result.applied), "firewall.index")


@bp.post("/forwards/<int:index>/delete")
@action
def forward_delete(index: int) -> Response | tuple[str, int]:
    forwards = _forwards()
    if not still_there(forwards, index, identity):
        return failed(STALE, "firewall.index")
    gone = forwards.pop(index)
    result = _apply_forwards(forwards)
    if not result.ok:
        return _refused(result.errors)
    return done(f"Port forward {gone.get('external_port')} deleted.", "firewall.index")


# -- NAT settings and WAN ping ---------------------------------------------------


@bp.post("/nat")
@action
def nat_settings() -> Response | tuple[str, int]:
    typed = {"filtering": text("filtering"), "dmz_host": text("dmz_host")}
    nat = control().config_get("nat")
    nat["filtering"] = typed["filtering"]
    if typed["dmz_host"]:
        nat["dmz_host"] = typed["dmz_host"]
    else:  # empty: no DMZ host
        nat.pop("dmz_host", None)
    result = apply_section("nat", nat)
    if not result.ok:
        return _refused(result.errors, nat_form=typed)
    return done(saved("Filtering and DMZ host", result.applied), "firewall.index")


@bp.post("/wan-ping")
@action
def wan_ping() -> Response | tuple[str, int]:
    firewall = control().config_get("firewall")
    firewall["wan_ping"] = request.form.get("wan_ping") == "on"
    result = apply_section("firewall", firewall)
    if not result.ok:
        return _refused(result.errors)
    return done(saved("WAN ping", result.applied), "firewall.index")
