"""The Devices page and a device's page: listing, search and paging, the
24 h history, rename, reserve its address, pause and resume."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.fake_control import HOSTILE_LABEL
from tests.unit.fake_home import (
    HOSTILE,
    FakeHome,
    assert_no_inline_code,
    field_block,
    logged_in,
    make_app,
    post_form,
)
from tests.unit.fake_home import text_of as text
from webui.views.app_usage import chart

PHONE = "02:00:00:00:00:02"
PAGE = f"/devices/{PHONE}"


@pytest.fixture
def control() -> FakeHome:
    return FakeHome()


@pytest.fixture
def app(tmp_path: Path, control: FakeHome) -> Flask:
    return make_app(tmp_path, control)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return logged_in(app)


def rows(html: str) -> list[str]:
    body = html[html.index('<tbody id="device-rows">') :]
    return re.findall(r'<td data-label="Name"><a href="/devices/[^"]+">([^<]*)</a>', body)


def test_every_device_is_listed_with_its_name_address_mac_and_vendor(client: FlaskClient) -> None:
    html = text(client.get("/devices/"))
    assert rows(html) == [
        "Anna&#39;s laptop",
        "phone",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "Unknown device",
    ]
    assert HOSTILE not in html
    assert "192.168.1.102" in html and "<code>02:00:00:00:00:03</code>" in html
    assert "Acme &#34;Networks&#34; &amp; Co" in html and "Unknown vendor" in html
    assert html.count(">Online</td>") == 2 and html.count(">Offline</td>") == 2
    assert_no_inline_code(html)


def test_the_table_collapses_to_cards_on_a_phone(client: FlaskClient) -> None:
    html = text(client.get("/devices/"))
    assert '<div class="table-wrap">\n<table class="devices cards-on-phone">' in html
    css = client.get("/static/app.css").get_data(as_text=True)
    assert "table.cards-on-phone td::before { content: attr(data-label)" in css


def test_search_and_state_filter_on_the_server(client: FlaskClient) -> None:
    assert rows(text(client.get("/devices/?q=PHONE"))) == ["phone"]
    assert rows(text(client.get("/devices/?q=acme"))) == [
        "Anna&#39;s laptop",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ]
    assert rows(text(client.get("/devices/?state=offline"))) == [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "Unknown device",
    ]
    html = text(client.get("/devices/?q=%3Cscript%3E"))
    assert 'value="&lt;script&gt;"' in html and "matching “&lt;script&gt;”" in html


def test_many_devices_are_paged_by_100(tmp_path: Path) -> None:
    client = logged_in(make_app(tmp_path, FakeHome(device_count=250)))
    html = text(client.get("/devices/"))
    assert len(rows(html)) == 100 and "1–100 of 250" in html
    assert '<a href="/devices/?state=all&amp;offset=100" rel="next">Next</a>' in html
    last = text(client.get("/devices/?offset=200"))
    assert len(rows(last)) == 50 and 'rel="next"' not in last


def test_a_device_page_has_its_facts_and_its_24_hour_history(client: FlaskClient) -> None:
    html = text(client.get("/devices/02:00:00:00:00:03"))
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in html and HOSTILE not in html
    found = re.search(r"data-history='([^']*)'", html)
    assert found
    history = json.loads(unescape(found.group(1)))
    assert len(history) == 24 and history[23]["to_bytes"] == 23_000
    assert 'src="/static/device.js"' in html
    assert_no_inline_code(html)


@pytest.mark.parametrize("mac", ["zz", "02:00:00:00:00", "02-00-00-00-00-02", "..%2F..%2Fetc"])
def test_a_bad_mac_is_a_404_page(client: FlaskClient, mac: str) -> None:
    response = client.get(f"/devices/{mac}")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Page not found" in text(response)


def test_an_unknown_device_is_a_404_page(client: FlaskClient) -> None:
    response = client.get("/devices/02:00:00:00:00:99")
    assert response.status_code == 404 and "Page not found" in text(response)


def test_rename_sets_the_name_through_device_set(client: FlaskClient, control: FakeHome) -> None:
    response = post_form(client, PAGE, f"{PAGE}/name", {"name": "Kitchen tablet"})
    assert response.status_code == 302 and response.headers["Location"] == PAGE
    assert ("device_set", PHONE, {"name": "Kitchen tablet"}) in control.calls
    html = text(client.get(PAGE))
    assert "<h1>Kitchen tablet</h1>" in html and "Name saved." in html
    assert '<label for="f-name">Name</label>' in html and ">Save name</button>" in html


def test_an_empty_name_forgets_it(client: FlaskClient, control: FakeHome) -> None:
    post_form(client, PAGE, f"{PAGE}/name", {"name": "  "})
    assert ("device_set", PHONE, {"name": None}) in control.calls


def test_a_refused_name_is_said_next_to_the_field_and_kept(client: FlaskClient) -> None:
    response = post_form(client, PAGE, f"{PAGE}/name", {"name": "x" * 65})
    assert response.status_code == 400
    block = field_block(text(response), "name")
    assert "at most 64 characters" in block and 'value="' + "x" * 65 + '"' in block


def test_a_hostile_name_is_shown_as_text(client: FlaskClient) -> None:
    post_form(client, PAGE, f"{PAGE}/name", {"name": "<img src=x onerror=alert(1)>"})
    html = text(client.get(PAGE))
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html


def test_reserve_address_adds_a_dhcp_reservation(client: FlaskClient, control: FakeHome) -> None:
    response = post_form(client, PAGE, f"{PAGE}/reserve", {})
    assert response.status_code == 302
    assert control.config["dhcp"]["reservations"] == [{"mac": PHONE, "address": "192.168.1.102"}]
    assert ("apply", "dhcp", False) in control.calls
    assert "192.168.1.102 is now reserved" in text(client.get(PAGE))


def test_a_refused_reservation_shows_the_config_error(
    client: FlaskClient, control: FakeHome
) -> None:
    taken = {"mac": "02:00:00:00:00:aa", "address": "192.168.1.102"}
    control.config["dhcp"]["reservations"] = [taken]
    response = post_form(client, PAGE, f"{PAGE}/reserve", {})
    assert response.status_code == 400
    html = text(response)
    assert (
        'id="reserve-errors"' in html and "dhcp.reservations.1.address: duplicate address" in html
    )
    assert control.config["dhcp"]["reservations"] == [taken]


def test_pause_and_resume_internet(client: FlaskClient, control: FakeHome) -> None:
    assert ">Pause internet</button>" in text(client.get(PAGE))
    post_form(client, PAGE, f"{PAGE}/pause", {"paused": "1"})
    assert ("device_set", PHONE, {"paused": True}) in control.calls
    html = text(client.get(PAGE))
    assert ">Resume internet</button>" in html and "internet paused" in html
    post_form(client, PAGE, f"{PAGE}/pause", {"paused": "0"})
    assert ("device_set", PHONE, {"paused": False}) in control.calls
    assert ">Pause internet</button>" in text(client.get(PAGE))


def test_device_forms_without_the_csrf_token_are_refused(
    client: FlaskClient, control: FakeHome
) -> None:
    for action, data in (("name", {"name": "x"}), ("pause", {"paused": "1"}), ("reserve", {})):
        response = client.post(f"{PAGE}/{action}", data=data)
        assert response.status_code == 400 and "Reload the page" in text(response)
    assert not [c for c in control.calls if c[0] == "device_set"]


# -- its apps (DPI) ---------------------------------------------------------------


def test_a_device_page_has_its_top_apps_and_app_usage_over_24_hours_and_7_days(
    client: FlaskClient, control: FakeHome
) -> None:
    html = text(client.get(PAGE))
    assert ("top_apps", PHONE, 24, 10) in control.calls
    assert ("app_usage", PHONE, 24, "hour") in control.calls
    assert ("app_usage", PHONE, 168, "day") in control.calls
    card = re.search(r'aria-labelledby="h-device-apps">(.*?)</section>', html, re.S)
    assert card and '<li><span class="app">YouTube <span class="tag">Video streaming' in card[1]
    assert HOSTILE_LABEL not in html and "&lt;script&gt;alert(&#39;app&#39;)" in card[1]
    chart = re.search(
        r"id=\"app-usage\" class=\"chart\" data-day='([^']*)' data-week='([^']*)'", html
    )
    assert chart
    day, week = json.loads(unescape(chart[1])), json.loads(unescape(chart[2]))
    assert len(day["times"]) == 24 and len(week["times"]) == 7
    assert [s["label"] for s in day["series"]] == ["YouTube", HOSTILE_LABEL, "example.co.uk"]
    assert day["series"][0]["values"][:2] == [51_000, 102_000]  # up + down of hours 1 and 2
    assert 'aria-pressed="true">24 hours</button>' in html and ">7 days</button>" in html
    assert 'src="/static/device_apps.js"' in html
    assert_no_inline_code(html)


def test_without_dpi_a_device_page_has_no_app_cards(client: FlaskClient, control: FakeHome) -> None:
    control.dpi_on = False
    response = client.get(PAGE)
    html = text(response)
    assert response.status_code == 200
    assert 'id="app-usage"' not in html and "Top apps" not in html
    assert not [call for call in control.calls if call[0] == "app_usage"]


def test_the_app_chart_keeps_the_busiest_apps_and_puts_the_rest_in_other() -> None:
    rows = [
        {"start": 3600.0 * h, "app": f"app{n}", "up_bytes": n, "down_bytes": 1000 * n,
         "active_minutes": 5}
        for h in (0, 2) for n in range(1, 8)
    ]  # fmt: skip
    out = chart(rows, {"app7": "Seven"}, 3600)
    assert out["times"] == [0.0, 3600.0, 7200.0]  # the hour without traffic is there
    assert [s["label"] for s in out["series"]] == ["Seven", "app6", "app5", "app4", "app3", "Other"]
    assert out["series"][0]["values"] == [7007, 0, 7007]
    other = out["series"][-1]
    assert other["values"] == [3003, 0, 3003] and other["bytes"] == 6006 and other["minutes"] == 20
    assert chart([], {}, 3600) == {"times": [], "series": []}


def test_ipv6_addresses_are_shown_and_searched(client: FlaskClient, control: FakeHome) -> None:
    addresses = ["2001:db8:100:1:aaaa::2", "fd12:3456:789a:1::2"]
    next(d for d in control.device_list if d["mac"] == PHONE)["ipv6"] = addresses
    html = text(client.get("/devices/"))
    assert '<span class="muted ipv6">2001:db8:100:1:aaaa::2, fd12:3456:789a:1::2</span>' in html
    found = text(client.get("/devices/?q=aaaa::2"))
    assert rows(found) == ["phone"]
    page = text(client.get(PAGE))
    assert '<dd class="ipv6">2001:db8:100:1:aaaa::2, fd12:3456:789a:1::2</dd>' in page
