"""/api/v1: first-start setup, login and logout, the CSRF token, the admin's
password and bearer tokens."""

from __future__ import annotations

import logging
from dataclasses import asdict

from flask import Blueprint, Response, jsonify, request
from flask_wtf.csrf import generate_csrf

from homegw.auth import ADMIN, AuthError
from homegw.control import Conflict, NotFound
from webui.api.errors import body
from webui.api.models import LoginRequest, PasswordRequest, SetupRequest, TokenRequest
from webui.security import end_session, login_method, start_session, state

log = logging.getLogger(__name__)


def _client() -> str:
    return request.remote_addr or "?"


def _limited() -> tuple[Response, int] | None:
    """429 while this client (or everyone) has failed too often."""
    web = state()
    wait = web.limiter.retry_after(_client(), web.clock())
    if wait <= 0:
        return None
    response = jsonify(error=f"too many failed attempts; try again in {int(wait) + 1} s")
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response, 429


def _failed(status: int, message: str) -> tuple[Response, int]:
    web = state()
    web.limiter.failed(_client(), web.clock())
    log.warning("refused from %s: %s", _client(), message)
    response = jsonify(error=message)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="homegw"'
    return response, status


def add_routes(bp: Blueprint) -> None:
    _setup_and_login(bp)
    _password_and_tokens(bp)


def _setup_and_login(bp: Blueprint) -> None:
    @bp.post("/setup")
    def setup() -> tuple[Response, int]:
        request_ = body(SetupRequest)
        web = state()
        if web.auth.has_admin:
            raise Conflict("the admin exists already: log in (POST /api/v1/auth/login)")
        if (limited := _limited()) is not None:
            return limited
        try:
            web.auth.setup(request_.token, request_.password)
        except AuthError as exc:  # the password's rules were checked by SetupRequest
            return _failed(403, str(exc))
        start_session()
        return jsonify(username=ADMIN, csrf_token=generate_csrf()), 201

    @bp.post("/auth/login")
    def login() -> tuple[Response, int]:
        request_ = body(LoginRequest)
        web = state()
        if not web.auth.has_admin:
            raise Conflict("no admin yet: create one with POST /api/v1/setup or `homegw passwd`")
        if (limited := _limited()) is not None:
            return limited
        if not web.auth.check_login(request_.username, request_.password):
            return _failed(401, "wrong username or password")
        web.limiter.succeeded(_client())
        start_session()
        return jsonify(username=request_.username, csrf_token=generate_csrf()), 200

    @bp.post("/auth/logout")
    def logout() -> tuple[str, int]:
        end_session()
        return "", 204

    @bp.get("/auth/csrf")
    def csrf_token() -> Response:
        return jsonify(csrf_token=generate_csrf())


def _password_and_tokens(bp: Blueprint) -> None:
    @bp.put("/auth/password")
    def password() -> tuple[Response | str, int]:
        request_ = body(PasswordRequest)
        web = state()
        if login_method() == "session":
            current = request_.current_password or ""
            if (limited := _limited()) is not None:
                return limited
            if not web.auth.check_login(ADMIN, current):
                return _failed(403, "current_password is wrong or missing")
        web.auth.set_password(request_.password)
        web.sessions.close_all()  # every browser logs in again with the new one
        return "", 204

    @bp.get("/auth/tokens")
    def tokens() -> Response:
        return jsonify(tokens=[asdict(t) for t in state().auth.tokens()])

    @bp.post("/auth/tokens")
    def token_create() -> tuple[Response, int]:
        request_ = body(TokenRequest)
        info, secret = state().auth.create_token(request_.name)
        return jsonify(**asdict(info), token=secret), 201

    @bp.delete("/auth/tokens/<token_id>")
    def token_revoke(token_id: str) -> tuple[str, int]:
        if not state().auth.revoke(token_id):
            raise NotFound(f"no token {token_id!r}")
        return "", 204
