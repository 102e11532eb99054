"""The Parental controls page: what is in force now for each device
(control().parental(): blocks, budgets, pauses and until when), pause
buttons per device and per profile (30 min / 1 h / until tomorrow / resume,
control().pause), the profiles (a person and their devices) and the rules
(blocked apps and categories picked from the application database, the
whole internet, always-allowed exceptions, schedule windows, a daily
budget).

Profiles and rules are the ``dpi`` config section: every change is one
config_apply of it, so the config's own validation judges it and a refusal
re-renders the page with the input kept and each error next to its field
(``dpi.rules.1.schedule.0.start`` next to window 1's "from" of rule 2).
With DPI off the page still edits the policies and says that nothing is
enforced until the dpi module is on.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from homegw.control import ConfigRejected, Conflict
from webui.views import parental_forms as forms
from webui.views.common import apply_section, control, render
from webui.views.formtools import (
    STALE,
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

bp = Blueprint("parental", __name__, url_prefix="/parental")
PAGE = Page("Parental controls", "parental.index")
install(bp)
INDEX = "parental.index"
Errors = dict[str, str]


@bp.get("/")
def index() -> str:
    return _page()


def _dpi() -> dict[str, Any]:
    dpi = control().config_get("dpi")
    for key in ("profiles", "rules", "pauses"):
        dpi[key] = list(dpi.get(key) or [])
    return dpi


def _state() -> dict[str, Any] | None:
    """parental(), or None while DPI is off."""
    try:
        return control().parental()
    except Conflict:
        return None


def _catalogue() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The categories with their apps (for the pickers; "unknown" is no
    choice), and the label of every app and category id."""
    database = control().apps()
    labels = {c["id"]: c["label"] for c in database.get("categories") or []}
    labels |= {a["id"]: a["label"] for a in database.get("apps") or []}
    groups = [
        {"id": c["id"], "label": c["label"], "apps": []}
        for c in database.get("categories") or []
        if c["id"] != "unknown"
    ]
    by_id = {group["id"]: group for group in groups}
    for app in sorted(database.get("apps") or [], key=lambda a: str(a["label"]).lower()):
        if app.get("category") in by_id:
            by_id[app["category"]]["apps"].append(app)
    return groups, labels


def _page(errors: Errors | None = None, **values: Any) -> str:
    """The page; after a refusal ``values`` holds the input: ``profile``
    ({index: values}, "new" for the add form) or ``rule`` (the same)."""
    dpi = _dpi()
    devices = control().devices()
    groups, labels = _catalogue()
    state = _state()
    now = float(state["now"]) if state else time.time()
    in_force = {d["mac"]: d for d in (state or {}).get("devices") or []}
    watched = _watched(dpi, in_force)
    return render(
        "parental.html",
        dpi=dpi,
        dpi_on=state is not None,
        now=now,
        devices=devices,
        watched=[d for d in devices if d["mac"] in watched],
        others=[d for d in devices if d["mac"] not in watched],
        device_names={d["mac"]: d.get("name") or d["mac"] for d in devices},
        in_force=in_force,
        next_change=(state or {}).get("next_change"),
        profile_paused=_profile_pauses(dpi, now),
        groups=groups,
        labels=labels,
        errors=errors or {},
        profile_input=values.get("profile", {}),
        rule_input=values.get("rule", {}),
        editing_profile=editing_arg("edit_profile"),
        editing_rule=editing_arg("edit_rule"),
        adding_rule="add_rule" in request.args or "new" in values.get("rule", {}),
        forms=forms,
    )


def _watched(dpi: dict[str, Any], in_force: dict[str, dict[str, Any]]) -> set[str]:
    """The devices the page lists under "Right now": those of a profile, a
    rule or a pause, and any with something in force (the others are in
    the "another device" pause form)."""
    macs = {mac for profile in dpi["profiles"] for mac in profile.get("devices") or []}
    macs |= {who for rule in dpi["rules"] for who in rule.get("who") or []}
    macs |= {str(pause.get("who")) for pause in dpi["pauses"]}
    for mac, state in in_force.items():
        keys = ("paused_until", "blocked_all", "blocked_apps", "blocked_categories", "budgets")
        if any(state.get(key) for key in keys):
            macs.add(mac)
    return macs


def _profile_pauses(dpi: dict[str, Any], now: float) -> dict[str, float]:
    """Profile name -> until when it is paused (pauses not yet over)."""
    out: dict[str, float] = {}
    for pause in dpi["pauses"]:
        try:
            until = datetime.fromisoformat(str(pause.get("until"))).timestamp()
        except ValueError:
            continue
        if until > now:
            out[str(pause.get("who"))] = until
    return out


def _refused(errors: Errors, **values: Any) -> tuple[str, int]:
    log.info("parental controls change refused: %s", errors)
    return _page(errors, **values), 400


# -- pause ----------------------------------------------------------------


@bp.post("/pause")
@action
def pause() -> Response:
    target, choice = text("target"), text("minutes")
    if choice not in forms.PAUSES or not target:
        return failed("Pick how long to pause for.", INDEX)
    result = apply_pause(target, forms.PAUSES[choice])
    if result is not None:
        return failed(f"Not paused: {result}", INDEX)
    shown = control_name(target)
    message = {
        "30": f"{shown} is paused for 30 minutes.",
        "60": f"{shown} is paused for 1 hour.",
        "tomorrow": f"{shown} is paused until tomorrow.",
        "0": f"{shown} can use the internet again.",
    }[choice]
    return done(message, INDEX)


def apply_pause(target: str, minutes: int | None) -> str | None:
    """Control.pause; the refusal's first problem, or None when done."""
    try:
        control().pause(target, minutes)
    except ConfigRejected as rejected:
        return next((p.msg for p in rejected.problems), "refused")
    return None


def control_name(target: str) -> str:
    """A pause target as the page names it: a device's name, else as given."""
    for device in control().devices():
        if device["mac"] == target:
            return str(device.get("name") or target)
    return target


# -- profiles ---------------------------------------------------------------


def _apply(dpi: dict[str, Any]) -> Any:
    return apply_section("dpi", dpi)


def _profile_name(profile: dict[str, Any]) -> str:
    return str(profile.get("name", ""))


@bp.post("/profiles")
@action
def profile_add() -> Response | tuple[str, int]:
    values = forms.profile_form()
    dpi = _dpi()
    dpi["profiles"].append(forms.profile_document(values))
    result = _apply(dpi)
    if not result.ok:
        return _refused(result.errors, profile={"new": values})
    return done(saved(f"Profile {values['name']}", result.applied), INDEX)


@bp.post("/profiles/<int:index>")
@action
def profile_save(index: int) -> Response | tuple[str, int]:
    dpi = _dpi()
    if not still_there(dpi["profiles"], index, _profile_name):
        return failed(STALE, INDEX)
    values = forms.profile_form()
    forms.renamed(dpi, _profile_name(dpi["profiles"][index]), values["name"])
    dpi["profiles"][index] = forms.profile_document(values)
    result = _apply(dpi)
    if not result.ok:
        return _refused(result.errors, profile={index: values})
    return done(saved(f"Profile {values['name']}", result.applied), INDEX)


@bp.post("/profiles/<int:index>/delete")
@action
def profile_delete(index: int) -> Response | tuple[str, int]:
    dpi = _dpi()
    if not still_there(dpi["profiles"], index, _profile_name):
        return failed(STALE, INDEX)
    name = _profile_name(dpi["profiles"][index])
    alone = forms.only_for(dpi, name)
    if alone:
        rules = ", ".join(alone)
        return failed(
            f"The rule(s) {rules} are only for {name}: change or delete them first.", INDEX
        )
    dpi["profiles"].pop(index)
    forms.forget(dpi, name)
    result = _apply(dpi)
    if not result.ok:
        return _refused(result.errors)
    return done(f"Profile {name} deleted.", INDEX)


# -- rules --------------------------------------------------------------------


def _rule_name(rule: dict[str, Any]) -> str:
    return str(rule.get("name", ""))


def _save_rule(dpi: dict[str, Any], index: int, key: Any) -> Response | tuple[str, int]:
    """Put the rule form's rule at `index` of the rules (appended when it is
    their length) and apply; `key` is the form's key for a refusal."""
    values = forms.rule_form()
    loc = f"dpi.rules.{index}"
    document, errors, slots = forms.rule_document(values, loc)
    if errors:
        return _refused(forms.window_errors(errors, loc, slots), rule={key: values})
    rules = dpi["rules"]
    rules[index : index + 1] = [document]
    result = _apply(dpi)
    if not result.ok:
        return _refused(forms.window_errors(result.errors, loc, slots), rule={key: values})
    return done(saved(f"Rule {values['name']}", result.applied), INDEX)


@bp.post("/rules")
@action
def rule_add() -> Response | tuple[str, int]:
    dpi = _dpi()
    return _save_rule(dpi, len(dpi["rules"]), "new")


@bp.post("/rules/<int:index>")
@action
def rule_save(index: int) -> Response | tuple[str, int]:
    dpi = _dpi()
    if not still_there(dpi["rules"], index, _rule_name):
        return failed(STALE, INDEX)
    return _save_rule(dpi, index, index)


@bp.post("/rules/<int:index>/delete")
@action
def rule_delete(index: int) -> Response | tuple[str, int]:
    dpi = _dpi()
    if not still_there(dpi["rules"], index, _rule_name):
        return failed(STALE, INDEX)
    gone = dpi["rules"].pop(index)
    result = _apply(dpi)
    if not result.ok:
        return _refused(result.errors)
    return done(f"Rule {gone.get('name', '')} deleted.", INDEX)
