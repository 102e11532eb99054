"""The first-run page (/setup): the setup code, the admin password and the
network basics in one form, validated before the admin is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.control import ApplyResult
from tests.unit.fake_home import (
    PASSWORD,
    FakeHome,
    assert_no_inline_code,
    field_block,
    form_token,
    make_app,
    set_cookie,
    text_of,
)


@pytest.fixture
def control() -> FakeHome:
    return FakeHome()


@pytest.fixture
def app(tmp_path: Path, control: FakeHome) -> Flask:
    return make_app(tmp_path, control)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def setup_code(app: Flask) -> str:
    return (app.extensions["homegw"].auth.state_dir / "setup-token").read_text().strip()


def answers(app: Flask, **changes: str) -> dict[str, str]:
    form = {
        "token": setup_code(app),
        "password": PASSWORD,
        "password_again": PASSWORD,
        "wan_mode": "dhcp",
        "lan_address": "192.168.1.1",
        "lan_prefix": "24",
        "dhcp_start": "192.168.1.100",
        "dhcp_end": "192.168.1.249",
    }
    return {**form, **changes}


def submit(client: FlaskClient, form: dict[str, str]) -> Any:
    return client.post("/setup", data={"csrf_token": form_token(client, "/setup"), **form})


def applied(control: FakeHome) -> list[tuple[Any, ...]]:
    return [call for call in control.calls if call[0] == "apply"]


def test_without_an_admin_every_page_leads_to_the_setup_form(client: FlaskClient) -> None:
    assert client.get("/devices/").headers["Location"] == "/setup"
    html = text_of(client.get("/setup"))
    for label in ("Setup code", "Password", "Password again", "Internet connection"):
        assert f">{label}</label>" in html
    for label in ("LAN address", "First address", "Last address"):
        assert f">{label}</label>" in html
    assert '<option value="dhcp" selected>Automatic (DHCP)</option>' in html
    assert '<option value="static">Static</option>' in html
    assert ">Finish setup</button>" in html
    assert "setup-token</code>" in html  # where to find the code, in plain words
    assert 'value="192.168.1.100"' in html and 'value="192.168.1.249"' in html
    assert_no_inline_code(html)


def test_finish_setup_makes_the_admin_applies_the_network_and_logs_in(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    response = submit(client, answers(app, dhcp_start="192.168.1.50", dhcp_end="192.168.1.99"))
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert app.extensions["homegw"].auth.has_admin
    assert applied(control) == [("apply", None, True), ("apply", None, False)]
    assert control.config["dhcp"]["range_start"] == "192.168.1.50"
    assert control.config["dhcp"]["range_end"] == "192.168.1.99"
    assert control.config["lan"] == {"interface": "lan0", "address": "192.168.1.1/24"}
    assert control.config["wan"]["mode"] == "dhcp" and "address" not in control.config["wan"]
    assert client.get("/devices/").status_code == 200  # logged in
    assert "HttpOnly" in set_cookie(response, "homegw_browser")
    assert client.get("/setup").headers["Location"] == "/login"  # only once


def test_an_untouched_default_range_follows_a_new_lan(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    response = submit(client, answers(app, lan_address="10.0.5.1", lan_prefix="24"))
    assert response.status_code == 200
    assert "range_start" not in control.config["dhcp"]  # derived from 10.0.5.1/24
    assert control.config["lan"]["address"] == "10.0.5.1/24"


def test_a_static_wan_takes_its_fields(app: Flask, client: FlaskClient, control: FakeHome) -> None:
    form = answers(
        app,
        wan_mode="static",
        wan_address="203.0.113.10",
        wan_prefix="24",
        wan_gateway="203.0.113.1",
        wan_dns="198.51.100.53, 198.51.100.54",
    )
    assert submit(client, form).status_code == 302
    assert control.config["wan"] == {
        "interface": "wan0",
        "mode": "static",
        "address": "203.0.113.10/24",
        "gateway": "203.0.113.1",
        "dns": ["198.51.100.53", "198.51.100.54"],
    }


def test_automatic_drops_a_static_address_and_keeps_the_dns_servers(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    static = {"mode": "static", "address": "203.0.113.10/24", "gateway": "203.0.113.1"}
    control.config["wan"].update(static, dns=["9.9.9.9"])
    assert 'value="203.0.113.10"' in field_block(text_of(client.get("/setup")), "wan_address")
    assert submit(client, answers(app, wan_mode="dhcp")).status_code == 302
    assert control.config["wan"] == {"interface": "wan0", "mode": "dhcp", "dns": ["9.9.9.9"]}


def test_a_weak_password_is_refused_next_to_its_field_and_nothing_is_made(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    form = answers(app, password="weakpw7", password_again="weakpw7", lan_address="192.168.7.1")
    response = submit(client, form)
    assert response.status_code == 400
    html = text_of(response)
    assert "Too weak" in field_block(html, "password")
    assert 'value="192.168.7.1"' in field_block(html, "lan_address")  # input kept
    assert "weakpw7" not in html  # a password is never echoed
    assert not app.extensions["homegw"].auth.has_admin
    assert ("apply", None, False) not in control.calls


def test_passwords_that_differ_are_refused(app: Flask, client: FlaskClient) -> None:
    response = submit(client, answers(app, password_again=PASSWORD + "x"))
    assert response.status_code == 400
    assert "The two passwords differ" in field_block(text_of(response), "password_again")


def test_a_refused_config_makes_no_admin_and_shows_the_error_at_its_field(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    response = submit(client, answers(app, dhcp_start="10.0.0.5"))
    assert response.status_code == 400
    html = text_of(response)
    assert "outside the LAN subnet" in field_block(html, "dhcp_start")
    assert 'value="10.0.0.5"' in field_block(html, "dhcp_start")
    assert not app.extensions["homegw"].auth.has_admin
    assert (Path(app.extensions["homegw"].auth.state_dir) / "setup-token").exists()
    assert applied(control) == [("apply", None, True)]  # validated only


def test_a_prefix_that_is_no_number_is_said_at_its_field(app: Flask, client: FlaskClient) -> None:
    form = answers(app, wan_mode="static", wan_address="203.0.113.10", wan_prefix="abc")
    response = submit(client, form)
    assert response.status_code == 400
    assert "whole number" in field_block(text_of(response), "wan_prefix")


def test_a_wrong_setup_code_is_refused_and_counted(app: Flask, client: FlaskClient) -> None:
    for _ in range(5):
        response = submit(client, answers(app, token="guess"))
        assert response.status_code == 403
        assert "not the setup code" in field_block(text_of(response), "token")
    assert not app.extensions["homegw"].auth.has_admin
    response = submit(client, answers(app))  # even the right one must wait now
    assert response.status_code == 429 and "Wait" in text_of(response)


def test_a_new_lan_address_sends_the_browser_there(app: Flask, client: FlaskClient) -> None:
    response = submit(client, answers(app, lan_address="192.168.2.1", dhcp_start="", dhcp_end=""))
    assert response.status_code == 200
    html = text_of(response)
    assert '<meta http-equiv="refresh" content="20;url=http://192.168.2.1/">' in html
    assert '<a href="http://192.168.2.1/">' in html
    assert_no_inline_code(html)


def test_a_restart_on_the_same_address_says_so(
    app: Flask, client: FlaskClient, control: FakeHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = control.config_apply

    def restarting(document: dict[str, Any], section: str | None = None, dry_run: bool = False):
        result = real_apply(document, section, dry_run)
        return ApplyResult(result.version, result.changed, {"wan": "restart"}, dry_run)

    monkeypatch.setattr(control, "config_apply", restarting)
    response = submit(
        client,
        answers(
            app,
            wan_mode="static",
            wan_address="203.0.113.10",
            wan_prefix="24",
            wan_gateway="203.0.113.1",
        ),
    )
    assert response.status_code == 200
    assert "homegw is restarting" in text_of(response)
    assert 'content="20;url=http://192.168.1.1/"' in text_of(response)


def test_the_setup_form_without_its_csrf_token_is_refused(app: Flask, client: FlaskClient) -> None:
    client.get("/setup")
    response = client.post("/setup", data=answers(app))
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Reload the page" in text_of(response)
    assert not app.extensions["homegw"].auth.has_admin
