"""Error answers: HTML pages in the layout for page URLs, the API's JSON
kept for /api/v1, /metrics and /healthz."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from homegw.control import ApplyResult, Conflict
from tests.unit.fake_home import FakeHome, logged_in, make_app, post_form
from tests.unit.fake_home import text_of as text


class Broken(FakeHome):
    def devices(self) -> list[dict]:
        raise RuntimeError("the device table is gone")

    def status(self) -> dict:
        raise RuntimeError("no status")


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, Broken())


def test_an_unknown_page_is_an_html_404_in_the_layout(app: Flask) -> None:
    client = logged_in(app)
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    html = text(response)
    assert "<h1>Page not found</h1>" in html and ">Log out</button>" in html
    assert "Content-Security-Policy" in response.headers


def test_the_api_keeps_its_json_errors(app: Flask) -> None:
    client = logged_in(app)
    response = client.get("/api/v1/nosuch")
    assert response.status_code == 404 and response.json["error"]
    response = client.get("/api/v1/status")
    assert response.status_code == 500 and response.json == {"error": "internal error (logged)"}
    response = client.post("/api/v1/actions/wan/renew")
    assert response.status_code == 403 and "CSRF" in response.json["error"]


def test_a_failing_page_is_an_html_500_and_is_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = logged_in(app)
    response = client.get("/devices/")
    assert response.status_code == 500 and response.mimetype == "text/html"
    assert "the error is logged" in text(response)
    assert "the device table is gone" not in text(response)
    assert any("page /devices/ failed" in r.getMessage() for r in caplog.records)


def test_a_wrong_method_on_a_page_is_an_html_405(app: Flask) -> None:
    response = logged_in(app).get("/modules/nat/enabled")
    assert response.status_code == 405 and response.mimetype == "text/html"


class Refusing(FakeHome):
    def device_set(self, mac: str, changes: dict) -> ApplyResult:
        raise Conflict("applying failed, the running config is kept: no such link")


def test_an_uncaught_conflict_on_a_page_is_an_html_409(tmp_path: Path) -> None:
    client = logged_in(make_app(tmp_path, Refusing()))
    page = "/devices/02:00:00:00:00:02"
    response = post_form(client, page, f"{page}/pause", {"paused": "1"})
    assert response.status_code == 409 and response.mimetype == "text/html"
    assert "the running config is kept: no such link" in text(response)
