"""The management API's mechanics over a fake Control (Flask's test client):
login on every path, CSRF, rate limit, tokens, input validation, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.auth import read_local_token
from tests.unit.fake_control import FakeControl
from webui import create_app

PASSWORD = "correct horse battery"
SAMPLE_ARGS: dict[str, Any] = {"version": 1, "nic": "lan"}
OPEN_PATHS = {"/healthz", "/metrics", "/api/v1/setup", "/api/v1/auth/login"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def app(tmp_path: Path, control: FakeControl, clock: Clock) -> Flask:
    return create_app(control, tmp_path, clock=clock)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def bearer(app: Flask) -> dict[str, str]:
    state_dir = app.extensions["homegw"].auth.state_dir
    return {"Authorization": f"Bearer {read_local_token(state_dir)}"}


def set_up_admin(app: Flask, client: FlaskClient) -> dict[str, Any]:
    token = (app.extensions["homegw"].auth.state_dir / "setup-token").read_text().strip()
    response = client.post("/api/v1/setup", json={"token": token, "password": PASSWORD})
    assert response.status_code == 201, response.json
    return response.json


def login(client: FlaskClient, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"password": password})
    assert response.status_code == 200, response.json
    return {"X-CSRFToken": response.json["csrf_token"]}


def _is_page(endpoint: str) -> bool:
    """The web UI's pages answer a browser without a login with a redirect
    to the login page (tests/unit/test_webui_pages.py), not a 401."""
    return "." in endpoint and endpoint.split(".")[0] != "api"


def api_rules(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or _is_page(rule.endpoint):
            continue
        values = {arg: SAMPLE_ARGS.get(arg, "dns") for arg in rule.arguments}
        path = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def test_every_path_but_the_open_ones_needs_a_login(app: Flask, control: FakeControl) -> None:
    set_up_admin(app, app.test_client())
    rules = api_rules(app)
    assert len(rules) >= 28
    anonymous = app.test_client()
    forged = {"Authorization": "Bearer hgw_00000000_forged"}
    for method, path in rules:
        if path in OPEN_PATHS:
            continue
        for headers in ({}, forged, {"Authorization": "Basic YWRtaW46eA=="}):
            response = anonymous.open(path, method=method, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.json)
            assert response.json["error"].startswith("login required")
    assert control.calls == []
    assert anonymous.get("/api/v1/no/such/path").status_code == 401


def test_open_paths_answer_without_login(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/api/v1/auth/login", json={"password": "x"}).status_code == 409


def test_setup_creates_the_admin_once(app: Flask, client: FlaskClient) -> None:
    wrong = client.post("/api/v1/setup", json={"token": "nope", "password": PASSWORD})
    assert wrong.status_code == 403
    weak = client.post("/api/v1/setup", json={"token": "nope", "password": "short"})
    assert weak.status_code == 400 and weak.json["problems"][0]["loc"] == "password"
    set_up_admin(app, client)
    assert client.get("/api/v1/status").status_code == 200  # setup logged in
    again = client.post("/api/v1/setup", json={"token": "x", "password": PASSWORD})
    assert again.status_code == 409


def test_session_cookie_is_httponly_and_samesite_strict(app: Flask, client: FlaskClient) -> None:
    set_up_admin(app, client)
    response = client.post("/api/v1/auth/login", json={"password": PASSWORD})
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("homegw_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_cookie_session_needs_the_csrf_token_for_changes(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    set_up_admin(app, client)
    csrf = login(client)
    assert client.get("/api/v1/config").status_code == 200  # reads need none
    refused = client.put("/api/v1/config/dns", json={"enabled": False})
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    forged = client.put("/api/v1/config/dns", json={"enabled": False}, headers={"X-CSRFToken": "x"})
    assert forged.status_code == 403
    assert client.post("/api/v1/actions/wan/renew").status_code == 403
    assert control.calls == []
    done = client.put("/api/v1/config/dns", json={"enabled": False}, headers=csrf)
    assert done.status_code == 200 and done.json["changed"] == ["dns"]
    assert client.get("/api/v1/auth/csrf").json["csrf_token"]


def test_bearer_tokens_need_no_csrf_token(app: Flask, client: FlaskClient) -> None:
    response = client.put("/api/v1/config/dns", json={"enabled": False}, headers=bearer(app))
    assert response.status_code == 200


def test_logout_ends_the_session_for_good(app: Flask, client: FlaskClient) -> None:
    set_up_admin(app, client)
    csrf = login(client)
    cookie = client.get_cookie("homegw_session")
    assert cookie is not None
    assert client.post("/api/v1/auth/logout", headers=csrf).status_code == 204
    assert client.get("/api/v1/status").status_code == 401
    replay = app.test_client()
    replay.set_cookie("homegw_session", cookie.value)
    assert replay.get("/api/v1/status").status_code == 401


def test_failed_logins_are_rate_limited(app: Flask, client: FlaskClient, clock: Clock) -> None:
    set_up_admin(app, app.test_client())
    for _ in range(5):
        assert client.post("/api/v1/auth/login", json={"password": "wrong!"}).status_code == 401
    held = client.post("/api/v1/auth/login", json={"password": PASSWORD})
    assert held.status_code == 429 and int(held.headers["Retry-After"]) > 0
    clock.now += 61
    login(client)


def test_session_expires_when_idle(app: Flask, client: FlaskClient, clock: Clock) -> None:
    set_up_admin(app, client)
    login(client)
    clock.now += 3601
    assert client.get("/api/v1/status").status_code == 401


def test_password_change_needs_the_current_one_and_ends_sessions(
    app: Flask, client: FlaskClient
) -> None:
    set_up_admin(app, client)
    csrf = login(client)
    new = "a new long password"
    no_current = client.put("/api/v1/auth/password", json={"password": new}, headers=csrf)
    assert no_current.status_code == 403
    body = {"password": new, "current_password": PASSWORD}
    assert client.put("/api/v1/auth/password", json=body, headers=csrf).status_code == 204
    assert client.get("/api/v1/status").status_code == 401
    login(client, new)
    other = app.test_client()
    assert other.post("/api/v1/auth/login", json={"password": PASSWORD}).status_code == 401
    # a token (the CLI's) sets it without the current one
    assert (
        other.put("/api/v1/auth/password", json={"password": PASSWORD}, headers=bearer(app))
    ).status_code == 204
    login(other)


def test_tokens_created_listed_revoked(app: Flask, client: FlaskClient) -> None:
    admin = bearer(app)
    created = client.post("/api/v1/auth/tokens", json={"name": "backup"}, headers=admin)
    assert created.status_code == 201
    secret, token_id = created.json["token"], created.json["id"]
    mine = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/status", headers=mine).status_code == 200
    listed = client.get("/api/v1/auth/tokens", headers=admin).json["tokens"]
    assert {t["name"] for t in listed} == {"local", "backup"}
    assert all("token" not in t and secret not in str(t) for t in listed)
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=admin).status_code == 204
    assert client.get("/api/v1/status", headers=mine).status_code == 401
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=admin).status_code == 404


BAD_REQUESTS = [
    ("PUT", "/api/v1/config", {"data": "not json", "content_type": "application/json"}),
    ("PUT", "/api/v1/config", {"data": "{}", "content_type": "text/plain"}),
    ("PUT", "/api/v1/config", {"json": [1, 2]}),
    ("PUT", "/api/v1/config", {"json": None}),
    ("PUT", "/api/v1/config/dns", {"json": "text"}),
    ("PUT", "/api/v1/modules/order/lan", {"json": {"modules": "router"}}),
    ("PUT", "/api/v1/modules/order/lan", {"json": {"modules": ["Router!"]}}),
    ("PUT", "/api/v1/modules/order/lan", {"json": {"modules": [], "extra": 1}}),
    ("GET", "/api/v1/tables/dhcp_leases?limit=0", {}),
    ("GET", "/api/v1/tables/dhcp_leases?limit=1001", {}),
    ("GET", "/api/v1/tables/dhcp_leases?offset=-1", {}),
    ("GET", "/api/v1/tables/dhcp_leases?offset=abc", {}),
    ("GET", "/api/v1/tables/dhcp_leases?limit=1&limit=2", {}),
    ("GET", "/api/v1/tables/dhcp_leases?Bad-Column=1", {}),
    ("GET", "/api/v1/tables/dhcp_leases?hostname=" + "x" * 300, {}),
    ("POST", "/api/v1/auth/tokens", {"json": {"name": ""}}),
    ("POST", "/api/v1/auth/tokens", {"json": {"name": 5}}),
    ("PUT", "/api/v1/auth/password", {"json": {"password": "short"}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), BAD_REQUESTS)
def test_bad_input_is_a_clear_400(
    app: Flask, client: FlaskClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = client.open(path, method=method, headers=bearer(app), **kwargs)
    assert response.status_code == 400, response.json
    assert response.is_json and response.json["error"]


def test_control_errors_map_to_status_codes(app: Flask, client: FlaskClient) -> None:
    h = bearer(app)
    rejected = client.put("/api/v1/config/dhcp", json={"lease_time": 5}, headers=h)
    assert rejected.status_code == 400
    assert rejected.json["problems"] == [{"loc": "dhcp.lease_time", "msg": "at least 60s"}]
    whole = client.put("/api/v1/config", json={"dns": {}}, headers=h).json["problems"]
    assert [p["loc"] for p in whole] == ["wan", "lan"]
    dry = client.post("/api/v1/config/validate/dns", json={"enabled": False}, headers=h)
    assert dry.json["dry_run"] is True
    assert client.get("/api/v1/config/dns", headers=h).json == {"enabled": True}
    assert client.get("/api/v1/config/nosuch", headers=h).status_code == 404
    assert client.get("/api/v1/config/Bad!", headers=h).status_code == 404
    assert client.post("/api/v1/modules/nosuch/enable", headers=h).status_code == 404
    assert client.post("/api/v1/modules/router/disable", headers=h).status_code == 409
    assert (
        client.put("/api/v1/modules/order/dmz", json={"modules": []}, headers=h).status_code == 404
    )
    order = client.put("/api/v1/modules/order/lan", json={"modules": ["x"]}, headers=h)
    assert order.status_code == 400 and order.json["problems"][0]["loc"] == "dataplane.order.lan"
    assert client.post("/api/v1/config/rollback/99", headers=h).status_code == 404
    assert client.get("/api/v1/nosuch", headers=h).status_code == 404
    assert client.delete("/api/v1/status", headers=h).status_code == 405
    assert client.get("/api/v1/nosuch", headers=h).json["error"]


def test_tables_page_and_filter(app: Flask, client: FlaskClient) -> None:
    h = bearer(app)
    assert client.get("/api/v1/tables", headers=h).json == {"tables": ["dhcp_leases"]}
    page = client.get("/api/v1/tables/dhcp_leases?offset=1&limit=1", headers=h).json
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    assert [r["hostname"] for r in page["items"]] == ["phone"]
    only = client.get("/api/v1/tables/dhcp_leases?hostname=print", headers=h).json
    assert [r["hostname"] for r in only["items"]] == ["printer"]


def test_actions_reach_the_appliance(app: Flask, client: FlaskClient, control: FakeControl) -> None:
    h = bearer(app)
    assert client.post("/api/v1/actions/wan/renew", headers=h).json["done"] is True
    flushed = client.post("/api/v1/actions/tables/dhcp_leases/flush", headers=h).json
    assert flushed == {"table": "dhcp_leases", "removed": 3}
    assert client.post("/api/v1/actions/modules/nat/restart", headers=h).status_code == 200
    assert ("renew",) in control.calls and ("restart", "nat") in control.calls


def test_a_failing_appliance_is_a_json_500_not_a_crash(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    control.status = broken  # type: ignore[method-assign]
    response = client.get("/api/v1/status", headers=bearer(app))
    assert response.status_code == 500 and response.json == {"error": "internal error (logged)"}
