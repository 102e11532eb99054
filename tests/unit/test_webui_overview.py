"""The Overview page: WAN, uptime, devices online, top devices, alerts, the
live graph's element and scripts, and its transfer budget (300 KB)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.unit.fake_control import HOSTILE_LABEL
from tests.unit.fake_home import HOSTILE, FakeHome, assert_no_inline_code, logged_in, make_app
from tests.unit.fake_home import text_of as text
from webui import views

OVERVIEW_BUDGET = 300 * 1000


@pytest.fixture
def control() -> FakeHome:
    return FakeHome()


@pytest.fixture
def client(tmp_path: Path, control: FakeHome) -> FlaskClient:
    return logged_in(make_app(tmp_path, control))


def test_it_shows_the_wan_the_uptime_and_the_devices(client: FlaskClient) -> None:
    html = text(client.get("/"))
    assert '<dd id="wan-address">203.0.113.10</dd>' in html
    assert "Connected" in html
    assert '<dd id="uptime">1 day 2 h</dd>' in html
    assert '<span id="online">2</span> online' in html
    assert "4 known in all" in html
    assert_no_inline_code(html)


def test_top_devices_are_the_busiest_today_first(client: FlaskClient) -> None:
    html = text(client.get("/"))
    top = html[html.index("Top devices today") :]
    names = re.findall(r'<li><a href="/devices/[^"]+">([^<]*)</a>', top)
    assert names == [
        "Unknown device",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "phone",
        "Anna&#39;s laptop",
    ]
    assert HOSTILE not in html


def test_alerts_are_shown_escaped(client: FlaskClient, control: FakeHome) -> None:
    control.alert_list.append(
        {"code": "wan_down", "severity": "critical", "message": f"WAN {HOSTILE}", "since": None}
    )
    html = text(client.get("/"))
    assert "The DHCP pool is 95% used" in html
    assert 'class="alert critical"' in html and "WAN &lt;script&gt;" in html
    assert HOSTILE not in html


def test_no_top_apps_card_without_dpi(client: FlaskClient, control: FakeHome) -> None:
    control.dpi_on = False
    assert "apps" not in text(client.get("/")).lower()


def test_top_apps_of_the_last_24_hours_most_first(client: FlaskClient, control: FakeHome) -> None:
    html = text(client.get("/"))
    assert ("top_apps", None, 24, 5) in control.calls
    card = re.search(
        r'<section class="card" aria-labelledby="h-top-apps">(.*?)</section>', html, re.S
    )
    assert card and "Top apps, last 24 hours" in card[1]
    apps = re.findall(r'<li><span class="app">(.*?) <span class="tag">(.*?)</span>', card[1])
    assert apps == [
        ("YouTube", "Video streaming"),
        ("&lt;script&gt;alert(&#39;app&#39;)&lt;/script&gt;", "Other"),
        ("example.co.uk", "Unknown"),
    ]
    assert "902.0 MB · 95 min" in card[1]
    assert HOSTILE_LABEL not in html


def test_the_live_graph_polls_the_status_api(client: FlaskClient) -> None:
    html = text(client.get("/"))
    assert 'id="throughput"' in html and 'data-status-url="/api/v1/status"' in html
    assert 'src="/static/vendor/uPlot.iife.min.js"' in html
    assert 'src="/static/overview.js"' in html
    nics = client.get("/api/v1/status").json["nics"]
    assert {"rx_bytes", "tx_bytes"} <= set(nics["wan"]) and "rx_bytes" in nics["lan"]


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def test_the_overview_transfers_at_most_300_kb(client: FlaskClient) -> None:
    response = client.get("/")
    total = len(response.data)
    assets = _assets(text(response))
    assert "/static/vendor/uPlot.min.css" in assets  # scripts/vendor.sh must have run
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, f"{asset} is missing (scripts/vendor.sh?)"
        total += len(answer.data)
        answer.close()
    assert total <= OVERVIEW_BUDGET, total


def test_a_phone_gets_the_viewport_and_the_nav(client: FlaskClient) -> None:
    html = text(client.get("/"))
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert 'aria-current="page">Overview</a>' in html


def test_the_page_has_the_security_headers(client: FlaskClient) -> None:
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_missing_charts_are_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    views.check_vendored(tmp_path)
    assert "run scripts/vendor.sh" in caplog.text
    caplog.clear()
    views.check_vendored(Path(views.__file__).parent.parent / "static")
    assert caplog.text == ""
