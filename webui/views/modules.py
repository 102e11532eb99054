"""The IO modules page: each NIC's chain drawn as a pipeline (boxes in
chain order), each module's state and counters (webui/static/modules.js
refreshes them every second from GET /api/v1/modules, text only), Enable /
Disable (module_set_enabled), Move up / Move down and drag and drop
(module_set_order), and a paginated, filterable view of each table.

User IO modules (webui/views/user_modules.py) join their chains, marked as
user modules with their state (trial / confirmed / disabled); the page
lists them (trial countdown, Confirm, Revert now, Enable / Disable, Move,
Delete) and carries the upload form ("Load example" fills it)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from werkzeug import Response

from homegw.control import ConfigRejected, Conflict, NotFound
from webui.views import user_modules
from webui.views.common import PAGE_SIZE, control, offset_arg, render
from webui.views.nav import Page
from webui.views.user_modules import UploadForm

log = logging.getLogger(__name__)

bp = Blueprint("modules", __name__, url_prefix="/modules")
bp.register_blueprint(user_modules.bp)
PAGE = Page("IO modules", "modules.index")
NICS = (("lan", "LAN (home)"), ("wan", "WAN (internet)"))
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_FILTERS, MAX_FILTER_VALUE = 16, 256
#: columns of unix seconds, shown as local times
TIME_COLUMNS = frozenset({"time", "first_seen", "last_seen", "updated_at", "applied_at", "expires"})


@dataclass(frozen=True)
class Stage:
    """One box of a NIC's pipeline."""

    name: str
    position: int | None  # in the running XDP chain; None: not in it now
    module: dict[str, Any]
    user: bool = False  # a user IO module (module is user_modules()'s)
    builtin_first: bool = False  # the first built-in of the chain (no Move up)
    builtin_last: bool = False


def _order(nic: str, modules: list[dict[str, Any]]) -> list[str]:
    """The configured order of nic's chain (disabled modules included), or
    the running chain's when the config does not say."""
    order = (control().config_get("dataplane").get("order") or {}).get(nic)
    if order:
        return list(order)
    running = [(_position(m, nic), m["name"]) for m in modules if _position(m, nic) is not None]
    return [name for _, name in sorted(running)]


def _position(module: dict[str, Any], nic: str) -> int | None:
    for chain in module.get("chains") or []:
        if chain.get("nic") == nic and chain.get("hook") == "xdp":
            return int(chain["position"])
    return None


def _pipeline(
    nic: str, modules: list[dict[str, Any]], users: list[dict[str, Any]], hook: str = "xdp"
) -> list[Stage]:
    """nic's chain: the built-ins in their order (XDP only), the user
    modules of that hook in their places."""
    by_name = {m["name"]: m for m in modules}
    builtins = [n for n in _order(nic, modules) if n in by_name] if hook == "xdp" else []
    user_by_name = {m["name"]: m for m in users}
    stages = []
    for name in user_modules.chain_with_users(builtins, users, nic, hook):
        if name in user_by_name:
            module = user_by_name[name]
            stages.append(Stage(name, _user_position(module, nic, hook), module, user=True))
        else:
            first, last = name == builtins[0], name == builtins[-1]
            stages.append(
                Stage(name, _position(by_name[name], nic), by_name[name], False, first, last)
            )
    return stages


def _user_position(module: dict[str, Any], nic: str, hook: str) -> int | None:
    for chain in module.get("chains") or []:
        if chain.get("nic") == nic and chain.get("hook") == hook:
            return int(chain["position"])
    return None


def _tables_of(tables: list[str], module: str) -> list[str]:
    return [t for t in tables if t == module or t.startswith(module + "_")]


def _page(
    status: int = 200, error: str | None = None, form: UploadForm | None = None
) -> tuple[str, int]:
    modules = control().modules()
    users = control().user_modules()
    tables = control().tables()
    pipelines = [(nic, label, _pipeline(nic, modules, users)) for nic, label in NICS]
    egress = [(nic, label, _pipeline(nic, modules, users, "tc")) for nic, label in NICS]
    chains = {(nic, "xdp"): [s.name for s in stages] for nic, _, stages in pipelines}
    chains |= {(nic, "tc"): [s.name for s in stages] for nic, _, stages in egress}
    return render(
        "modules.html",
        modules=modules,
        users=users,
        pipelines=pipelines,
        egress=[(nic, label, stages) for nic, label, stages in egress if stages],
        move_choices=lambda m: user_modules.move_choices(chains[(m["nic"], m["hook"])], m["name"]),
        tables=tables,
        tables_of=lambda name: _tables_of(tables, name),
        error=error,
        form=form or UploadForm(),
        examples=user_modules.examples(),
    ), status


@bp.get("/")
def index() -> tuple[str, int]:
    example = request.args.get("example")
    if example:
        form = user_modules.example_form(example)
        if form is None:
            abort(404)
        return _page(form=form)
    return _page()


@bp.post("/user/")
def upload() -> Response | tuple[str, int]:
    """A new user module (it starts on trial), or the page again with the
    form as typed and what was refused."""
    form, module = user_modules.submit_upload(None, request.remote_addr)
    if module is None:
        return _page(400, form=form)
    trial = module.get("trial") or {}
    flash(
        f"{module['name']} is loaded and on trial for {int(trial.get('remaining_s') or 0)} s: "
        "confirm it below, or it is taken out again.",
        "info",
    )
    return redirect(url_for("modules.index"))


def _refusal(exc: Exception) -> str:
    if isinstance(exc, ConfigRejected):
        return "; ".join(f"{p.loc}: {p.msg}" if p.loc else p.msg for p in exc.problems)
    return str(exc.args[0]) if exc.args else str(exc)


@bp.post("/<name>/enabled")
def set_enabled(name: str) -> Response | tuple[str, int]:
    if not NAME.match(name):
        abort(404)
    enabled = request.form.get("enabled") == "1"
    try:
        control().module_set_enabled(name, enabled)
    except (ConfigRejected, Conflict) as exc:
        verb = "enabled" if enabled else "disabled"
        return _page(409, f"{name} cannot be {verb}: {_refusal(exc)}")
    flash(f"{name} {'enabled' if enabled else 'disabled'}.", "info")
    return redirect(url_for("modules.index"))


def _moved(order: list[str], name: str, direction: str) -> list[str]:
    if name not in order:
        abort(404)
    i = order.index(name)
    j = i - 1 if direction == "up" else i + 1
    if not 0 <= j < len(order):
        return order
    order = list(order)
    order[i], order[j] = order[j], order[i]
    return order


@bp.post("/order/<any(lan, wan):nic>")
def set_order(nic: str) -> Response | tuple[str, int]:
    """Move one module (module, direction "up" | "down"), or a whole new
    order (order: names separated by commas, as drag and drop sends it)."""
    current = _order(nic, control().modules())
    if request.form.get("order"):
        order = [n.strip() for n in request.form["order"].split(",") if n.strip()]
    else:
        order = _moved(current, request.form.get("module", ""), request.form.get("direction", ""))
    if order == current:
        return redirect(url_for("modules.index"))
    try:
        control().module_set_order(nic, order)
    except (ConfigRejected, Conflict) as exc:
        return _page(409, f"That order is not allowed: {_refusal(exc)}")
    flash(f"New {nic.upper()} chain: {' → '.join(order)}.", "info")
    return redirect(url_for("modules.index"))


def _filters() -> dict[str, str]:
    filters = {}
    for key, value in request.args.items():
        if key == "offset" or not value:
            continue
        if not NAME.match(key) or len(filters) >= MAX_FILTERS:
            abort(400)
        filters[key] = value[:MAX_FILTER_VALUE]
    return filters


@bp.get("/tables/<name>")
def table(name: str) -> str:
    if not NAME.match(name):
        abort(404)
    filters, offset = _filters(), offset_arg()
    try:
        page = control().table(name, offset, PAGE_SIZE, filters)
        sample = page.items or control().table(name, 0, 1).items
    except NotFound:
        abort(404)
    columns = list(sample[0]) if sample else sorted(filters)
    return render(
        "table.html",
        name=name,
        page=page,
        columns=columns,
        filters=filters,
        time_columns=TIME_COLUMNS,
    )
