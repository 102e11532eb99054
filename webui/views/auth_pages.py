"""First run (set the admin password and the basics), login and logout."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, request, url_for

from homegw.auth import ADMIN
from webui.security import end_session, start_session, state
from webui.views.common import render

bp = Blueprint("auth_pages", __name__)


def _client() -> str:
    return request.remote_addr or "?"


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host: never an open redirect)."""
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("overview.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    web = state()
    if not web.auth.has_admin:
        return redirect(url_for("auth_pages.setup"))
    if request.method == "GET":
        return render("login.html", show_nav=False, error=None)
    wait = web.limiter.retry_after(_client(), web.clock())
    if wait > 0:
        error = f"Too many failed attempts. Try again in {int(wait) + 1} seconds."
        return render("login.html", show_nav=False, error=error), 429
    if not web.auth.check_login(ADMIN, request.form.get("password", "")):
        web.limiter.failed(_client(), web.clock())
        return render("login.html", show_nav=False, error="Wrong password."), 401
    web.limiter.succeeded(_client())
    start_session()
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    end_session()
    return redirect(url_for("auth_pages.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Response | str:
    if state().auth.has_admin:
        return redirect(url_for("auth_pages.login"))
    return render("setup.html", show_nav=False)
