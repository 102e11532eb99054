"""First run (set the admin password and the basics), login and logout.

Both forms check their CSRF token although they need no login (login CSRF),
and both count failures in the login limits of webui.security.LoginCaller
(a known browser only against its own cookie's limit).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, flash, redirect, request, url_for

from homegw.auth import ADMIN, AuthError
from homegw.control import ApplyResult, ConfigRejected, Conflict
from webui.security import (
    LoginCaller,
    csrf,
    end_session,
    login_method,
    remember_browser,
    start_session,
    state,
)
from webui.views import firstrun
from webui.views.common import control, rejected_errors, render
from webui.views.firstrun import WAN_MODES, SetupForm

log = logging.getLogger(__name__)

bp = Blueprint("auth_pages", __name__)
Answer = Response | str | tuple[str, int] | tuple[Response, int]


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host: never an open redirect)."""
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("overview.index")
    if "\\" in target:  # browsers read "/\host" as "//host"
        return url_for("overview.index")
    return target


def _locked(wait: float, template: str, **context: object) -> tuple[Response, int]:
    """The page after too many failures: how long to wait, how to recover."""
    seconds = int(wait) + 1
    until = time.strftime("%H:%M:%S", time.localtime(state().clock() + seconds))
    page = render(template, show_nav=False, locked_s=seconds, locked_until=until, **context)
    response = Response(page, status=429)
    response.headers["Retry-After"] = str(seconds)
    return response, 429


@bp.route("/login", methods=["GET", "POST"])
def login() -> Answer:
    web = state()
    if not web.auth.has_admin:
        return redirect(url_for("auth_pages.setup"))
    if request.method == "GET":
        if login_method() == "session":
            return redirect(_safe_next(request.args.get("next")))
        return render("login.html", show_nav=False, error=None)
    csrf.protect()
    caller = LoginCaller.of_request()
    if (wait := caller.retry_after()) > 0:
        return _locked(wait, "login.html", error=None)
    if not web.auth.check_login(ADMIN, request.form.get("password", "")):
        caller.failed()
        if (wait := caller.retry_after()) > 0:
            return _locked(wait, "login.html", error=None)
        return render("login.html", show_nav=False, error="Wrong password."), 401
    caller.succeeded()
    start_session()
    return remember_browser(redirect(_safe_next(request.args.get("next"))))


@bp.post("/logout")
def logout() -> Response:
    end_session()
    flash("You are logged out.", "info")
    return redirect(url_for("auth_pages.login"))


def _setup_context(form: SetupForm, ports: list[str], current: dict[str, Any]) -> dict[str, Any]:
    return {
        "form": form,
        "wan_modes": WAN_MODES,
        "ports": [(name, name) for name in ports],
        "ports_in_use": {k: current.get(k, {}).get("interface", "") for k in ("wan", "lan")},
        "token_path": state().auth.state_dir / "setup-token",
    }


def _setup_page(
    form: SetupForm, others: list[str], ports: list[str], current: dict[str, Any], status: int = 200
) -> tuple[str, int]:
    context = _setup_context(form, ports, current)
    return render("setup.html", show_nav=False, others=others, **context), status


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Answer:
    web = state()
    if web.auth.has_admin:
        return redirect(url_for("auth_pages.login"))
    current = control().config_get()
    ports = firstrun.port_options(current, firstrun.ethernet_ports())
    if request.method == "GET":
        return _setup_page(SetupForm.defaults(current), [], ports, current)
    csrf.protect()
    caller = LoginCaller.of_request()
    form = SetupForm.parse(request.form, ports)
    if (wait := caller.retry_after()) > 0:
        return _locked(wait, "setup.html", others=[], **_setup_context(form, ports, current))
    config = form.config(current)
    try:  # validate first: no admin is made for a config that is refused
        control().config_apply(config, dry_run=True)
        others: list[str] = []
    except ConfigRejected as rejected:
        others = form.add_config_errors(rejected_errors(rejected, "config"))
    if form.errors or others:
        return _setup_page(form, others, ports, current, 400)
    try:
        web.auth.setup(form.values["token"], form.password)
    except AuthError as exc:
        caller.failed()
        form.errors["token"] = "This is not the setup code." if "token" in str(exc) else str(exc)
        return _setup_page(form, [], ports, current, 403)
    caller.succeeded()
    start_session()
    return remember_browser(_finish(form, current, config))


def _finish(form: SetupForm, current: dict[str, Any], config: dict[str, Any]) -> Response:
    """Apply the network settings; a restart (wan or lan changed) moves the
    browser to where the gateway will answer."""
    try:
        result = control().config_apply(config)
    except (ConfigRejected, Conflict) as exc:
        log.warning("first run: the admin exists but the network settings failed: %s", exc)
        flash(
            "Your password is set, but the network settings were not applied: "
            "set them on the DHCP and System pages.",
            "error",
        )
        return redirect(url_for("overview.index"))
    old_ip = current.get("lan", {}).get("address", "").split("/")[0]
    new_ip = form.lan_address().split("/")[0]
    if not _restarts(result) and new_ip == old_ip:
        flash("Setup is done: homegw is yours.", "info")
        return redirect(url_for("overview.index"))
    old_ports = (current.get("wan", {}).get("interface"), current.get("lan", {}).get("interface"))
    new_ports = form.ports(current)
    ports = new_ports if new_ports != old_ports else None
    return Response(_moving_page(new_ip, moved=new_ip != old_ip, ports=ports))


def _restarts(result: ApplyResult) -> bool:
    return "restart" in result.applied.values()


def _moving_page(address: str, moved: bool, ports: tuple[str, str] | None = None) -> str:
    """The restart page; `ports`: the new (WAN, LAN) ports when they changed."""
    port = request.host.rpartition(":")[2] if request.host.count(":") == 1 else ""
    target = f"http://{address}{':' + port if port and port != '80' else ''}/"
    return render(
        "restarting.html",
        show_nav=False,
        target=target,
        moved=moved,
        address=address,
        new_ports=ports,
    )
