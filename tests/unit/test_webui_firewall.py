"""The Firewall & NAT page over a fake Control that validates with the real
config schema: port forwards (add, edit, delete, target online), filtering
mode, DMZ host, WAN ping, drop counters most first; errors next to their
fields with the input kept, escaping, CSRF."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from homegw.control import Conflict
from tests.unit import webui_pages_fake as fake
from tests.unit.webui_pages_fake import (
    HOSTILE_HOST,
    PagesControl,
    assert_one_control_per_label,
    csrf_refused,
    field_error,
    post,
    value_of,
)

app, client, control = fake.app, fake.client, fake.control

NEW_FORWARD = {
    "name": "ssh",
    "protocol": "tcp",
    "external_port": "2222",
    "internal_address": "192.168.1.100",
    "internal_port": "22",
}


def refused(response: object) -> str:
    assert response.status_code == 400  # type: ignore[attr-defined]
    return response.get_data(as_text=True)  # type: ignore[attr-defined]


def test_page_shows_forwards_with_their_targets_state(
    client: FlaskClient, control: PagesControl
) -> None:
    control.devices_list[0]["name"] = HOSTILE_HOST  # the nas, 192.168.1.10, online
    html = client.get("/firewall/").get_data(as_text=True)
    rows = re.findall(r"<tr[ >].*?</tr>", html, re.S)
    web = next(row for row in rows if '<td data-label="Name">web</td>' in row)
    game = next(row for row in rows if '<td data-label="Name">game</td>' in row)
    assert "Online" in web and "&lt;script&gt;" in web
    assert "Offline" in game and "console" in game
    assert HOSTILE_HOST not in html
    assert '<td data-label="External port">3074-3075</td>' in web + game
    assert '<td data-label="Internal port">80</td>' in web
    assert html.count(">External port</label>") == 1  # rows are text until "Edit"
    for label in ("Name", "Protocol", "External port", "Internal address", "Internal port"):
        assert re.search(rf'<label for="f-[a-z_]+">{label}</label>', html), label
    assert ">Add port forward</button>" in html
    assert html.count('<div class="table-wrap">') == html.count("<table")


def test_unknown_target_says_so(client: FlaskClient, control: PagesControl) -> None:
    control.devices_list = []
    html = client.get("/firewall/").get_data(as_text=True)
    assert html.count("Unknown device") == 2


def test_add_port_forward(client: FlaskClient, control: PagesControl) -> None:
    response = post(client, "/firewall/forwards", NEW_FORWARD)
    assert response.status_code == 302
    section, document, _ = control.last_applied()
    assert section == "nat"
    assert document["port_forwards"][-1] == {
        "protocol": "tcp",
        "external_port": 2222,
        "internal_address": "192.168.1.100",
        "name": "ssh",
        "internal_port": 22,
    }
    assert len(control.config["nat"]["port_forwards"]) == 3
    assert "saved" in client.get("/firewall/").get_data(as_text=True)


def test_add_forward_with_a_port_range(client: FlaskClient, control: PagesControl) -> None:
    data = NEW_FORWARD | {"external_port": "8000-8010", "internal_port": ""}
    assert post(client, "/firewall/forwards", data).status_code == 302
    assert control.config["nat"]["port_forwards"][-1]["external_port"] == "8000-8010"
    assert "internal_port" not in control.last_applied()[1]["port_forwards"][-1]


def test_forward_onto_the_gateways_dns_refused_next_to_external_port(
    client: FlaskClient, control: PagesControl
) -> None:
    html = refused(post(client, "/firewall/forwards", NEW_FORWARD | {"external_port": "53"}))
    assert "DNS" in field_error(html, "f-external_port")
    assert field_error(html, "f-internal_address") is None
    assert "nat.port_forwards.2.external_port" in html
    assert value_of(html, "f-name") == "ssh"
    assert value_of(html, "f-internal_port") == "22"
    assert len(control.config["nat"]["port_forwards"]) == 2


def test_internal_port_not_a_number_is_a_field_error_without_apply(
    client: FlaskClient, control: PagesControl
) -> None:
    html = refused(post(client, "/firewall/forwards", NEW_FORWARD | {"internal_port": "ssh"}))
    assert "must be a port number" in field_error(html, "f-internal_port")
    assert value_of(html, "f-internal_port") == "ssh"
    assert control.applied == []


def test_edit_error_lands_next_to_that_rows_field(
    client: FlaskClient, control: PagesControl
) -> None:
    data = NEW_FORWARD | {"original": "udp 3074-3075", "internal_address": "10.9.9.9"}
    html = refused(post(client, "/firewall/forwards/1", data))
    assert "outside the LAN subnet" in field_error(html, "fwd-1-internal_address")
    assert 'id="fwd-0-internal_address"' not in html
    assert field_error(html, "f-internal_address") is None
    assert value_of(html, "fwd-1-internal_address") == "10.9.9.9"


def test_edit_shows_that_row_as_a_form(client: FlaskClient) -> None:
    html = client.get("/firewall/?edit=0").get_data(as_text=True)
    assert value_of(html, "fwd-0-external_port") == "8080"
    assert value_of(html, "fwd-0-internal_port") == "80"
    assert '<option value="tcp" selected>' in html
    assert 'id="fwd-1-external_port"' not in html


def test_edit_port_forward(client: FlaskClient, control: PagesControl) -> None:
    data = NEW_FORWARD | {"original": "tcp 8080", "external_port": "8443", "internal_port": "443"}
    assert post(client, "/firewall/forwards/0", data).status_code == 302
    first = control.config["nat"]["port_forwards"][0]
    assert (first["external_port"], first["internal_port"], first["name"]) == (8443, 443, "ssh")


def test_edit_of_a_changed_list_changes_nothing(client: FlaskClient, control: PagesControl) -> None:
    response = post(client, "/firewall/forwards/0", NEW_FORWARD | {"original": "tcp 9999"})
    assert response.status_code == 302
    assert control.applied == []
    assert "changed meanwhile" in client.get("/firewall/").get_data(as_text=True)


def test_delete_port_forward(client: FlaskClient, control: PagesControl) -> None:
    assert post(client, "/firewall/forwards/0/delete", {"original": "tcp 8080"}).status_code == 302
    assert [f["name"] for f in control.config["nat"]["port_forwards"]] == ["game"]


def test_filtering_and_dmz(client: FlaskClient, control: PagesControl) -> None:
    data = {"filtering": "endpoint-independent", "dmz_host": "192.168.1.50"}
    assert post(client, "/firewall/nat", data).status_code == 302
    assert control.config["nat"]["filtering"] == "endpoint-independent"
    assert control.config["nat"]["dmz_host"] == "192.168.1.50"
    assert post(client, "/firewall/nat", data | {"dmz_host": ""}).status_code == 302
    assert "dmz_host" not in control.config["nat"]


def test_dmz_outside_the_lan_refused_next_to_its_field(client: FlaskClient) -> None:
    data = {"filtering": "address-port-dependent", "dmz_host": "8.8.8.8"}
    html = refused(post(client, "/firewall/nat", data))
    assert "outside the LAN subnet" in field_error(html, "f-dmz_host")
    assert value_of(html, "f-dmz_host") == "8.8.8.8"
    assert "as exposed as a computer without a firewall" in html


def test_wan_ping_off_and_on(client: FlaskClient, control: PagesControl) -> None:
    assert post(client, "/firewall/wan-ping", {}).status_code == 302
    assert control.last_applied()[0] == "firewall"
    assert control.config["firewall"]["wan_ping"] is False
    assert post(client, "/firewall/wan-ping", {"wan_ping": "on"}).status_code == 302
    assert control.config["firewall"]["wan_ping"] is True


def test_drop_counters_most_first_without_passes(client: FlaskClient) -> None:
    html = client.get("/firewall/").get_data(as_text=True)
    section = html[html.index('id="h-drops"') :]
    reasons = re.findall(r'<code class="hint">([a-z_]+)</code>', section)
    assert reasons[:5] == [
        "unsolicited_dropped",
        "wan_to_lan",
        "martian",
        "wan_ping_dropped",
        "ports_exhausted",
    ]
    assert "wan_passed" not in reasons and "forwarded" not in reasons
    assert "300" in section


def test_post_without_csrf_token_is_refused(client: FlaskClient, control: PagesControl) -> None:
    assert csrf_refused(client.post("/firewall/forwards", data=NEW_FORWARD))
    assert csrf_refused(client.post("/firewall/wan-ping", data={}))
    assert control.applied == []


def test_a_conflict_comes_back_to_the_page_as_a_message(
    client: FlaskClient, control: PagesControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def conflict(*args: object, **kwargs: object) -> None:
        raise Conflict("applying failed, the running config is kept: <b>boom</b>")

    monkeypatch.setattr(control, "config_apply", conflict)
    response = post(client, "/firewall/wan-ping", {"wan_ping": "on"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/firewall/")
    html = client.get("/firewall/").get_data(as_text=True)
    assert "the running config is kept: &lt;b&gt;boom&lt;/b&gt;" in html


def test_each_label_names_one_control(client: FlaskClient) -> None:
    """A browser test's get_by_label finds one control per label (strict mode)."""
    assert_one_control_per_label(
        client.get("/firewall/").get_data(as_text=True),
        [
            "Name",
            "Protocol",
            "External port",
            "Internal address",
            "Internal port",
            "DMZ host",
            "WAN ping",
        ],
    )


# the router's IPv6 counters that are not drops of the page: passes, punts,
# its own failures, and paused devices (the Devices page counts those)
ROUTER6_NOT_DROPS = {
    "v6_forwarded",
    "v6_to_kernel",
    "v6_icmp_failed",
    "v6_neigh_miss",
    "v6_device_paused",
}


def test_every_firewall_drop_and_every_ipv6_router_drop_has_words() -> None:
    """The page names each drop by its counter; a drop counter added in C
    without words here would be missing from it (IPv6's were)."""
    from homegw.modules.firewall.maps import DROPS
    from homegw.modules.router.maps import COUNTERS as ROUTER_COUNTERS
    from webui.views.drop_reasons import DROP_REASONS

    assert [name for name in DROPS if name not in DROP_REASONS["firewall"]] == []
    router6_drops = [
        name for name in ROUTER_COUNTERS if name.startswith("v6_") and name not in ROUTER6_NOT_DROPS
    ]
    assert len(router6_drops) == 15
    assert [name for name in router6_drops if name not in DROP_REASONS["router"]] == []
