"""Login for every path of the web app but the open ones, and CSRF checks for
cookie sessions.

A request is logged in by ``Authorization: Bearer <token>`` (scripts, the
CLI) or by the session cookie (the web UI). A request that sends an
Authorization header is judged by it alone. A cookie session's unsafe
requests (POST, PUT, PATCH, DELETE) must carry the CSRF token
(``X-CSRFToken``, from login or ``GET /api/v1/auth/csrf``); bearer requests
need none (a browser never adds that header by itself). The login and
first-run forms check their CSRF token too (login CSRF).

Failed logins are limited per address and overall (homegw.auth.LoginLimiter).
So that a flood of wrong passwords from elsewhere cannot lock the owner out,
a browser that has logged in once carries a signed "known browser" cookie
(OWASP's device cookie): its holder is judged only by that cookie's own
limit, never by the per-address or the overall one.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import (
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from itsdangerous import BadSignature, URLSafeTimedSerializer

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
KNOWN_BROWSER_COOKIE = "homegw_browser"
KNOWN_BROWSER_SALT = "homegw.known-browser"
KNOWN_BROWSER_MAX_AGE = 180 * 24 * 3600

csrf = CSRFProtect()


@dataclass
class WebState:
    """What the views share, in ``app.extensions["homegw"]``."""

    control: Control
    auth: AuthStore
    sessions: SessionTable = field(default_factory=SessionTable)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    #: failed logins per known-browser cookie: no overall limit (a cookie
    #: cannot be forged, so there are only as many as successful logins)
    browsers: LoginLimiter = field(
        default_factory=lambda: LoginLimiter(per_client=5, overall=1 << 30, max_clients=256)
    )
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class LoginCaller:
    """Who is trying a password, for the limits: a known browser (the id in
    its signed cookie) or else a client address."""

    browser: str | None
    address: str

    @classmethod
    def of_request(cls) -> LoginCaller:
        return cls(known_browser(), request.remote_addr or "?")

    def retry_after(self) -> float:
        """0 when this caller may try a password now, else the seconds to wait."""
        web = state()
        if self.browser is not None:
            return web.browsers.retry_after(self.browser, web.clock())
        return web.limiter.retry_after(self.address, web.clock())

    def failed(self) -> None:
        web = state()
        if self.browser is not None:
            web.browsers.failed(self.browser, web.clock())
        else:
            web.limiter.failed(self.address, web.clock())
        log.warning("failed login from %s (known browser: %s)", self.address, bool(self.browser))

    def succeeded(self) -> None:
        web = state()
        if self.browser is not None:
            web.browsers.succeeded(self.browser)
        web.limiter.succeeded(self.address)


def _browser_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=KNOWN_BROWSER_SALT)


def known_browser() -> str | None:
    """The id in this request's known-browser cookie when its signature
    holds and it is younger than KNOWN_BROWSER_MAX_AGE, else None."""
    cookie = request.cookies.get(KNOWN_BROWSER_COOKIE)
    if not cookie:
        return None
    try:
        value = _browser_serializer().loads(cookie, max_age=KNOWN_BROWSER_MAX_AGE)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def remember_browser(response: Response) -> Response:
    """Give the browser that just logged in its known-browser cookie (a new
    id, so each login renews its age)."""
    cookie = _browser_serializer().dumps(secrets.token_urlsafe(16))
    response.set_cookie(
        KNOWN_BROWSER_COOKIE,
        cookie,
        max_age=KNOWN_BROWSER_MAX_AGE,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    return response


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
        if is_page_request():
            return _to_login()
        return unauthorized()
    if method == "session" and request.method in UNSAFE_METHODS:
        csrf.protect()
    return None


def _to_login() -> Response:
    """A browser without a session goes to the first-run page until there is
    an admin, to the login page after (coming back to where it was going)."""
    if not state().auth.has_admin:
        return redirect(url_for("auth_pages.setup"))
    if session.get("sid"):  # a session that was, and has expired
        session.pop("sid")
        flash("Your session has ended. Log in again.", "info")
    wanted = request.full_path.rstrip("?") if request.method == "GET" else None
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


def is_page_request() -> bool:
    """A request of a page (HTML) rather than of the API or /metrics: any
    path but those, so that an unknown URL gets the HTML 404 too."""
    path = request.path
    return not (path.startswith("/api/") or path in ("/metrics", "/healthz"))


def _csrf_refused(error: CSRFError) -> tuple[Response | str, int]:
    log.warning("CSRF check failed for %s %s: %s", request.method, request.path, error.description)
    if not is_page_request():
        return jsonify(error=f"CSRF check failed: {error.description}"), 403
    page = render_template(
        "error.html",
        title="Form expired",
        message="This form has expired or was not sent by this site. "
        "Reload the page and try again.",
        show_nav=login_method() is not None,
    )
    return page, 400


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
