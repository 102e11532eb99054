"""The first-run page's ports step: which NIC is WAN and which LAN (chosen at
first boot), swapped or picked among the gateway's Ethernet ports, applied
with the rest of the wizard; a change restarts the appliance and the page
says where the cables go."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.control import ApplyResult
from tests.unit.fake_home import FakeHome, assert_no_inline_code, text_of
from tests.unit.test_webui_setup import answers, app, applied, client, control, submit
from webui.views import firstrun

__all__ = ["app", "client", "control"]  # the fixtures, shared with the setup page's tests

PORTS = ["enp1s0", "enp2s0", "enp3s0"]


@pytest.fixture(autouse=True)
def ethernet_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firstrun, "ethernet_ports", lambda: list(PORTS))


@pytest.fixture(autouse=True)
def restarts_on_new_ports(control: FakeHome, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the appliance answers: a wan or lan interface change is a restart."""
    real_apply = control.config_apply

    def apply(document: dict[str, Any], section: str | None = None, dry_run: bool = False):
        before = {k: control.config[k]["interface"] for k in ("wan", "lan")}
        result = real_apply(document, section, dry_run)
        after = {k: document[k]["interface"] for k in ("wan", "lan")}
        if after == before:
            return result
        return ApplyResult(result.version, result.changed, {"wan": "restart"}, dry_run)

    monkeypatch.setattr(control, "config_apply", apply)


def select_block(html: str, name: str) -> str:
    start = html.index(f'<select id="f-{name}"')
    return html[start : html.index("</select>", start)]


def test_the_page_shows_the_ports_in_use_and_offers_every_port(client: FlaskClient) -> None:
    html = text_of(client.get("/setup"))
    assert "the modem goes into <strong>wan0</strong> (WAN)" in html
    assert "into <strong>lan0</strong> (LAN)" in html
    wan = select_block(html, "wan_interface")
    assert '<option value="wan0" selected>wan0</option>' in wan
    for name in [*PORTS, "lan0"]:
        assert f'<option value="{name}">{name}</option>' in wan
    assert '<option value="lan0" selected>lan0</option>' in select_block(html, "lan_interface")
    assert 'id="f-swap_ports" name="swap_ports" type="checkbox" value="on"' in html
    assert_no_inline_code(html)


def test_swap_exchanges_the_ports_restarts_and_says_where_the_cables_go(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    form = answers(app, wan_interface="wan0", lan_interface="lan0", swap_ports="on")
    response = submit(client, form)
    assert response.status_code == 200
    assert (control.config["wan"]["interface"], control.config["lan"]["interface"]) == (
        "lan0",
        "wan0",
    )
    assert control.config["wan"]["mode"] == "dhcp"  # the rest of the wizard applied too
    html = text_of(response)
    assert "homegw is restarting" in html
    assert "plug the modem into <strong>lan0</strong>" in html
    assert "into <strong>wan0</strong> now" in html


def test_a_port_picked_among_those_present(
    app: Flask, client: FlaskClient, control: FakeHome
) -> None:
    response = submit(client, answers(app, wan_interface="enp3s0", lan_interface="enp1s0"))
    assert response.status_code == 200
    assert control.config["wan"]["interface"] == "enp3s0"
    assert control.config["lan"]["interface"] == "enp1s0"
    assert "plug the modem into <strong>enp3s0</strong>" in text_of(response)


def test_unchanged_ports_do_not_restart(app: Flask, client: FlaskClient, control: FakeHome) -> None:
    response = submit(client, answers(app, wan_interface="wan0", lan_interface="lan0"))
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert control.config["wan"]["interface"] == "wan0"


@pytest.mark.parametrize(
    ("wan", "lan", "field", "message"),
    [
        ("eth9", "lan0", "wan_interface", "Choose one of the ports: enp1s0, enp2s0, enp3s0,"),
        ("wan0", "wan0", "lan_interface", "The WAN and the LAN need two different ports."),
    ],
)
def test_a_port_not_present_or_the_same_twice_is_refused_and_nothing_made(
    app: Flask, client: FlaskClient, control: FakeHome, wan: str, lan: str, field: str, message: str
) -> None:
    response = submit(client, answers(app, wan_interface=wan, lan_interface=lan))
    assert response.status_code == 400
    html = text_of(response)
    start = html.index(f'<select id="f-{field}"')
    assert message in html[start : html.index("</div>", start)]
    assert not app.extensions["homegw"].auth.has_admin
    assert applied(control) == [("apply", None, True)]
    assert control.config["wan"]["interface"] == "wan0"
