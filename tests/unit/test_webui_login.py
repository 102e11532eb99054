"""Login (/login) and logout: login CSRF, the limits, the known-browser
cookie that keeps the owner's browser out of a flood's lockout, session
expiry back to the login page and back."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.auth import SessionTable
from tests.unit.fake_home import (
    PASSWORD,
    Clock,
    FakeHome,
    assert_no_inline_code,
    create_admin,
    form_token,
    log_in,
    logged_in,
    make_app,
    post_form,
    set_cookie,
    text_of,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Flask:
    app = make_app(tmp_path, FakeHome(), clock)
    create_admin(app)
    return app


def browser(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_the_login_page_has_its_labelled_controls(app: Flask) -> None:
    html = text_of(app.test_client().get("/login"))
    assert '<label for="f-password">Password</label>' in html
    assert ">Log in</button>" in html
    assert "Log out" not in html  # no navigation before the login
    assert_no_inline_code(html)


def test_the_right_password_logs_in_and_goes_where_the_browser_was_going(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/devices/?q=x").headers["Location"] == "/login?next=/devices/?q%3Dx"
    token = form_token(client, "/login?next=/devices/?q%3Dx")
    response = client.post(
        "/login?next=/devices/?q%3Dx", data={"csrf_token": token, "password": PASSWORD}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/devices/?q=x"
    cookie = set_cookie(response, "homegw_browser")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/devices/").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_next_never_leaves_the_site(app: Flask, target: str) -> None:
    client = app.test_client()
    token = form_token(client, "/login")
    response = client.post(
        "/login", query_string={"next": target}, data={"csrf_token": token, "password": PASSWORD}
    )
    assert response.headers["Location"] == "/"


def test_a_login_without_its_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"password": PASSWORD})
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Reload the page" in text_of(response)
    assert client.get("/devices/").status_code == 302  # not logged in


def test_a_wrong_password_is_said_and_five_lock_this_address_out(app: Flask) -> None:
    client = browser(app, "192.168.1.50")
    response = log_in(client, "wrong password")
    assert response.status_code == 401 and "Wrong password." in text_of(response)
    for _ in range(4):
        response = log_in(client, "wrong password")
    assert response.status_code == 429
    html = text_of(response)
    assert "Wait 61 seconds" in html and "homegw passwd" in html
    assert response.headers["Retry-After"] == "61"
    assert log_in(client).status_code == 429  # the right one waits too


def test_the_wait_ends(app: Flask, clock: Clock) -> None:
    client = browser(app, "192.168.1.50")
    for _ in range(5):
        log_in(client, "wrong password")
    clock.now += 61
    assert log_in(client).status_code == 302


def flood(app: Flask, attempts: int = 30) -> None:
    """Wrong passwords from many addresses: the overall limit is reached."""
    for i in range(attempts):
        log_in(browser(app, f"198.51.100.{i}"), "wrong password")


def test_a_flood_locks_out_new_browsers_but_never_the_owners(app: Flask) -> None:
    owner = browser(app, "192.168.1.20")
    assert log_in(owner).status_code == 302  # gets its known-browser cookie
    post_form(owner, "/", "/logout", {})
    flood(app)
    assert log_in(browser(app, "192.168.1.21")).status_code == 429  # no cookie: locked
    assert log_in(owner).status_code == 302  # the owner's browser: in


def test_a_known_browser_has_a_limit_of_its_own(app: Flask) -> None:
    owner = browser(app, "192.168.1.20")
    assert log_in(owner).status_code == 302
    post_form(owner, "/", "/logout", {})
    for _ in range(5):
        log_in(owner, "wrong password")
    assert log_in(owner).status_code == 429
    assert log_in(browser(app, "192.168.1.20")).status_code == 302  # the address is not locked


def test_a_forged_known_browser_cookie_counts_for_nothing(app: Flask) -> None:
    client = browser(app, "192.168.1.20")
    client.set_cookie("homegw_browser", "forged.cookie.value")
    flood(app)
    assert log_in(client).status_code == 429


def test_an_expired_session_goes_to_the_login_and_back(app: Flask, clock: Clock) -> None:
    client = logged_in(app)
    clock.now += SessionTable().idle_s + 1
    response = client.get("/modules/")
    assert response.headers["Location"] == "/login?next=/modules/"
    assert "Your session has ended" in text_of(client.get("/login?next=/modules/"))


def test_log_out_is_a_button_of_the_top_bar(app: Flask) -> None:
    client = logged_in(app)
    html = text_of(client.get("/"))
    assert 'action="/logout"' in html and ">Log out</button>" in html
    response = post_form(client, "/", "/logout", {})
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_log_out_without_the_csrf_token_is_refused(app: Flask) -> None:
    client = logged_in(app)
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
