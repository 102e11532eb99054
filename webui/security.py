"""Login for every path of the web app but the open ones, and CSRF checks for
cookie sessions.

A request is logged in by ``Authorization: Bearer <token>`` (scripts, the
CLI) or by the session cookie (the web UI). A request that sends an
Authorization header is judged by it alone. A cookie session's unsafe
requests (POST, PUT, PATCH, DELETE) must carry the CSRF token
(``X-CSRFToken``, from login or ``GET /api/v1/auth/csrf``); bearer requests
need none (a browser never adds that header by itself).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, current_app, jsonify, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from homegw.atomicfile import write_atomic
from homegw.auth import AuthStore, LoginLimiter, SessionTable
from homegw.control import Control

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "webui-secret"
SESSION_COOKIE = "homegw_session"
#: endpoints that answer without a login (the login and setup endpoints
#: check their own credentials); /metrics is open unless webui.metrics_public
#: is false.
OPEN_ENDPOINTS = frozenset(
    {"healthz", "api.login", "api.setup", "static", "auth_pages.login", "auth_pages.setup"}
)
METRICS_ENDPOINT = "metrics"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: the pages' policy: scripts, styles, images and fetches from the
#: appliance itself only, never inline (no 'unsafe-inline'), never framed
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
LOGIN_KEY = "homegw.login"

csrf = CSRFProtect()


@dataclass
class WebState:
    """What the views share, in ``app.extensions["homegw"]``."""

    control: Control
    auth: AuthStore
    sessions: SessionTable = field(default_factory=SessionTable)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    clock: Callable[[], float] = time.time


def load_secret_key(state_dir: Path) -> bytes:
    """The key that signs session cookies: random, kept 0600 in state_dir
    so sessions survive a restart of the web app only as long as the file."""
    path = Path(state_dir) / SECRET_KEY_FILE
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) >= 32:
            return key
        log.warning("%s is too short; making a new key (every session ends)", path)
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, key.hex().encode() + b"\n", mode=0o600)
    return key


def state() -> WebState:
    return current_app.extensions["homegw"]


def login_method() -> str | None:
    """How the current request is logged in: "token", "session" or None
    (memoised in the request's environ: g lives as long as the app context,
    which may outlive one request)."""
    if LOGIN_KEY in request.environ:
        return request.environ[LOGIN_KEY]
    web = state()
    method: str | None = None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and web.auth.verify_token(token.strip()) is not None:
            method = "token"
    else:
        sid = session.get("sid")
        if isinstance(sid, str) and web.sessions.touch(sid, web.clock()):
            method = "session"
    request.environ[LOGIN_KEY] = method
    return method


def start_session() -> None:
    web = state()
    session.clear()
    session["sid"] = web.sessions.open(web.clock())
    request.environ[LOGIN_KEY] = "session"


def end_session() -> None:
    sid = session.get("sid")
    if isinstance(sid, str):
        state().sessions.close(sid)
    session.clear()
    request.environ[LOGIN_KEY] = None


def unauthorized() -> Response:
    response = jsonify(error="login required: a session (POST /api/v1/auth/login) or a token")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="homegw"'
    return response


def _metrics_public() -> bool:
    try:
        section = state().control.config_get("webui")
    except Exception:  # the config cannot say: keep the metrics private
        log.exception("reading webui.metrics_public failed")
        return False
    return bool(section.get("metrics_public", True))


def _require_login() -> Response | None:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if request.endpoint == METRICS_ENDPOINT and _metrics_public():
        return None
    method = login_method()
    if method is None:
        if _is_page():
            return _to_login()
        return unauthorized()
    if method == "session" and request.method in UNSAFE_METHODS:
        csrf.protect()
    return None


def _is_page() -> bool:
    """A request for an HTML page (not the API, /metrics or /healthz)."""
    return request.blueprint not in (None, "api")


def _to_login() -> Response:
    """A browser without a session goes to the first-run page until there is
    an admin, to the login page after (coming back to where it was going)."""
    if not state().auth.has_admin:
        return redirect(url_for("auth_pages.setup"))
    wanted = request.full_path if request.method == "GET" else None
    return redirect(url_for("auth_pages.login", next=wanted))


def _headers(response: Response) -> Response:
    """Nothing of the admin surface is cached, framed or sniffed."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    csp = PAGE_CSP if response.mimetype == "text/html" else API_CSP
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _csrf_refused(error: CSRFError) -> tuple[Response, int]:
    return jsonify(error=f"CSRF check failed: {error.description}"), 403


def install(app: Flask, web: WebState) -> None:
    app.extensions["homegw"] = web
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_CHECK_DEFAULT=False,  # _require_login decides
        WTF_CSRF_TIME_LIMIT=None,  # as long as the session lives
        WTF_CSRF_HEADERS=["X-CSRFToken", "X-CSRF-Token"],
    )
    csrf.init_app(app)
    app.before_request(_require_login)
    app.after_request(_headers)
    app.register_error_handler(CSRFError, _csrf_refused)
