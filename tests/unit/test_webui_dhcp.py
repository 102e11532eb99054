"""The DHCP page over a fake Control that validates with the real config
schema: range and lease time, reservations (add, edit, delete, reserve a
lease), errors next to their fields with the input kept, escaping, CSRF."""

from __future__ import annotations

from flask.testing import FlaskClient

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


def test_page_lists_reservations_and_leases_with_hostile_hostname_escaped(
    client: FlaskClient,
) -> None:
    response = client.get("/dhcp/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<code>02:00:00:00:00:01</code>" in html and "printer" in html
    assert 'id="res-0-mac"' not in html  # rows are text until "Edit"
    assert html.count(">MAC address</label>") == 1  # the add form's label is the only one
    assert "laptop" in html and "192.168.1.102" in html
    assert HOSTILE_HOST not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<label for="f-mac">MAC address</label>' in html
    assert '<label for="f-address">IP address</label>' in html
    assert '<label for="f-hostname">Hostname</label>' in html
    assert ">Add reservation</button>" in html
    # narrow screens: every table scrolls or collapses into cards
    assert html.count('<div class="table-wrap">') == html.count("<table")


def test_settings_saved_as_one_dhcp_section(client: FlaskClient, control: PagesControl) -> None:
    data = {"range_start": "192.168.1.150", "range_end": "192.168.1.200", "lease_time": "3600"}
    response = post(client, "/dhcp/settings", data)
    assert response.status_code == 302
    section, document, dry_run = control.last_applied()
    assert (section, dry_run) == ("dhcp", False)
    assert document["range_start"] == "192.168.1.150" and document["lease_time"] == 3600
    assert document["reservations"] == control.config["dhcp"]["reservations"]
    assert "saved" in client.get("/dhcp/").get_data(as_text=True)


def test_settings_refused_keeps_input_and_puts_error_next_to_field(
    client: FlaskClient, control: PagesControl
) -> None:
    before = control.config["dhcp"]
    data = {"range_start": "10.0.0.5", "range_end": "192.168.1.200", "lease_time": "2h"}
    response = post(client, "/dhcp/settings", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "outside the LAN subnet" in field_error(html, "f-range_start")
    assert field_error(html, "f-range_end") is None
    assert field_error(html, "f-lease_time") is None
    assert value_of(html, "f-range_start") == "10.0.0.5"
    assert value_of(html, "f-lease_time") == "2h"
    assert control.config["dhcp"] == before


def test_short_lease_time_refused_next_to_its_field(client: FlaskClient) -> None:
    data = {"range_start": "", "range_end": "", "lease_time": "30"}
    response = post(client, "/dhcp/settings", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "at least 1m" in field_error(html, "f-lease_time")
    assert value_of(html, "f-lease_time") == "30"


def test_empty_lease_time_is_a_field_error_without_apply(
    client: FlaskClient, control: PagesControl
) -> None:
    response = post(
        client, "/dhcp/settings", {"range_start": "", "range_end": "", "lease_time": ""}
    )
    assert response.status_code == 400
    assert "required" in field_error(response.get_data(as_text=True), "f-lease_time")
    assert control.applied == []


def test_add_reservation(client: FlaskClient, control: PagesControl) -> None:
    data = {"mac": "02:00:00:00:00:09", "address": "192.168.1.20", "hostname": "tv"}
    response = post(client, "/dhcp/reservations", data)
    assert response.status_code == 302
    section, document, _ = control.last_applied()
    assert section == "dhcp"
    assert document["reservations"][-1] == data
    assert len(document["reservations"]) == 3


def test_add_reservation_without_hostname_leaves_it_out(
    client: FlaskClient, control: PagesControl
) -> None:
    post(client, "/dhcp/reservations", {"mac": "02:00:00:00:00:09", "address": "192.168.1.20"})
    assert control.last_applied()[1]["reservations"][-1] == {
        "mac": "02:00:00:00:00:09",
        "address": "192.168.1.20",
    }


def test_add_reservation_refused_shows_error_at_add_form(
    client: FlaskClient, control: PagesControl
) -> None:
    data = {"mac": "02:00:00:00:00:09", "address": "192.168.1.10", "hostname": "tv"}
    response = post(client, "/dhcp/reservations", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "duplicate address" in field_error(html, "f-address")
    assert 'id="res-0-address"' not in html
    assert value_of(html, "f-mac") == "02:00:00:00:00:09"
    assert value_of(html, "f-hostname") == "tv"
    assert "dhcp.reservations.2.address" in html
    assert len(control.config["dhcp"]["reservations"]) == 2


def test_edit_reservation_error_lands_next_to_that_rows_address(
    client: FlaskClient, control: PagesControl
) -> None:
    data = {
        "original": "02:00:00:00:00:02",
        "mac": "02:00:00:00:00:02",
        "address": "10.1.1.1",
        "hostname": "printer",
    }
    response = post(client, "/dhcp/reservations/1", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "outside the LAN subnet" in field_error(html, "res-1-address")
    assert 'id="res-0-address"' not in html  # only the row being edited has inputs
    assert field_error(html, "f-address") is None
    assert value_of(html, "res-1-address") == "10.1.1.1"


def test_edit_shows_that_row_as_a_form(client: FlaskClient) -> None:
    html = client.get("/dhcp/?edit=1").get_data(as_text=True)
    assert value_of(html, "res-1-hostname") == "printer"
    assert (
        'form="res-1"' in html
        and '<form id="res-1" method="post" action="/dhcp/reservations/1">' in html
    )
    assert 'id="res-0-mac"' not in html
    assert ">Save</button>" in html and ">Cancel</a>" in html


def test_edit_reservation(client: FlaskClient, control: PagesControl) -> None:
    data = {
        "original": "02:00:00:00:00:02",
        "mac": "02:00:00:00:00:02",
        "address": "192.168.1.12",
        "hostname": "printer2",
    }
    assert post(client, "/dhcp/reservations/1", data).status_code == 302
    assert control.config["dhcp"]["reservations"][1] == {
        "mac": "02:00:00:00:00:02",
        "address": "192.168.1.12",
        "hostname": "printer2",
    }


def test_edit_of_a_row_that_changed_meanwhile_changes_nothing(
    client: FlaskClient, control: PagesControl
) -> None:
    data = {
        "original": "02:00:00:00:00:07",
        "mac": "02:00:00:00:00:02",
        "address": "192.168.1.12",
    }
    response = post(client, "/dhcp/reservations/1", data)
    assert response.status_code == 302
    assert control.applied == []
    assert "changed meanwhile" in client.get("/dhcp/").get_data(as_text=True)


def test_delete_reservation(client: FlaskClient, control: PagesControl) -> None:
    response = post(client, "/dhcp/reservations/0/delete", {"original": "02:00:00:00:00:01"})
    assert response.status_code == 302
    assert [r["mac"] for r in control.config["dhcp"]["reservations"]] == ["02:00:00:00:00:02"]


def test_reserve_button_per_unreserved_lease(client: FlaskClient) -> None:
    html = client.get("/dhcp/").get_data(as_text=True)
    # the nas lease is reserved already: three of four leases have a button
    assert html.count(">Reserve</button>") == 3
    assert '<input type="hidden" name="mac" value="02:00:00:00:01:00">' in html


def test_reserve_a_lease_with_a_hostile_hostname_is_refused_next_to_the_field(
    client: FlaskClient, control: PagesControl
) -> None:
    data = {"mac": "02:00:00:00:01:01", "address": "192.168.1.101", "hostname": HOSTILE_HOST}
    response = post(client, "/dhcp/reservations", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert field_error(html, "f-hostname")
    assert HOSTILE_HOST not in html
    assert value_of(html, "f-hostname") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_post_without_csrf_token_is_refused(client: FlaskClient, control: PagesControl) -> None:
    response = client.post(
        "/dhcp/reservations", data={"mac": "02:00:00:00:00:09", "address": "192.168.1.20"}
    )
    assert csrf_refused(response)
    assert control.applied == []


def test_leases_paginated(client: FlaskClient, control: PagesControl) -> None:
    control.leases = [
        {
            "address": f"192.168.1.{i % 250}",
            "mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
            "hostname": f"h{i}",
            "expires_in_s": 60,
        }
        for i in range(230)
    ]
    html = client.get("/dhcp/?offset=100").get_data(as_text=True)
    assert ("table", "dhcp_leases", 100, 100, {}) in control.calls
    assert "101–200 of 230" in html
    assert "230 leases; the range holds 150 addresses." in html
    assert "offset=0" in html and "offset=200" in html


def test_each_label_names_one_control(client: FlaskClient) -> None:
    """A browser test's get_by_label finds one control per label (strict mode)."""
    assert_one_control_per_label(
        client.get("/dhcp/").get_data(as_text=True),
        [
            "MAC address",
            "IP address",
            "Hostname",
            "Lease time",
            "First address",
            "Last address",
        ],
    )
