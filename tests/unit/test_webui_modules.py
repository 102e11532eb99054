"""The IO modules page: each NIC's chain as a pipeline, Enable / Disable,
Move up / Move down and the drag-and-drop order form, refusals said
clearly, and the paginated, filterable table views."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.unit.fake_home import (
    HOSTILE,
    FakeHome,
    assert_no_inline_code,
    logged_in,
    make_app,
    post_form,
)
from tests.unit.fake_home import text_of as text


@pytest.fixture
def control() -> FakeHome:
    return FakeHome()


@pytest.fixture
def client(tmp_path: Path, control: FakeHome) -> FlaskClient:
    return logged_in(make_app(tmp_path, control))


def chain(html: str, nic: str) -> list[str]:
    start = html.index(f'<ol class="pipeline" data-nic="{nic}"')
    block = html[start : html.index("</ol>", start)]
    return re.findall(r'data-module="([a-z_]+)"', block)


def module_card(html: str, name: str) -> str:
    start = html.index(f'<section class="card module" data-module="{name}"')
    return html[start : html.index("</section>", start)]


def test_each_nic_chain_is_a_pipeline_in_chain_order(client: FlaskClient) -> None:
    html = text(client.get("/modules/"))
    assert chain(html, "lan") == ["dhcp", "router", "nat"]
    assert chain(html, "wan") == ["nat", "router"]
    assert '<li class="stage running" data-module="router">' in html
    assert_no_inline_code(html)


def test_each_module_shows_its_state_counters_and_button(client: FlaskClient) -> None:
    html = text(client.get("/modules/"))
    nat = module_card(html, "nat")
    assert "Enabled" in nat and "loaded" in nat and ">Disable</button>" in nat
    assert '<td data-counter="forwarded">1234</td>' in nat
    assert '<tr class="drop"><th scope="row">drop bad checksum</th>' in nat
    dpi = module_card(html, "dpi")
    assert "Disabled" in dpi and "not loaded" in dpi and ">Enable</button>" in dpi
    assert 'data-url="/api/v1/modules"' in html and 'src="/static/modules.js"' in html


def test_disable_and_enable_call_module_set_enabled(client: FlaskClient, control: FakeHome) -> None:
    response = post_form(client, "/modules/", "/modules/nat/enabled", {"enabled": "0"})
    assert response.status_code == 302
    assert ("enabled", "nat", False) in control.calls
    assert ">Enable</button>" in module_card(text(client.get("/modules/")), "nat")
    post_form(client, "/modules/", "/modules/nat/enabled", {"enabled": "1"})
    assert ("enabled", "nat", True) in control.calls


def test_a_refused_disable_is_said_clearly(client: FlaskClient) -> None:
    response = post_form(client, "/modules/", "/modules/router/enabled", {"enabled": "0"})
    assert response.status_code == 409
    message = "router cannot be disabled: nat needs the router"
    assert f'<p class="flash error" role="alert" id="module-error">{message}</p>' in text(response)


def test_move_up_and_down_reorder_the_chain(client: FlaskClient, control: FakeHome) -> None:
    html = text(client.get("/modules/"))
    lan = html[html.index('data-nic="lan" aria-label') : html.index('data-nic="wan"')]
    first = lan[lan.index('data-module="dhcp"') : lan.index('data-module="router"')]
    assert "Move up" not in first and ">Move down</button>" in first
    response = post_form(
        client, "/modules/", "/modules/order/lan", {"module": "router", "direction": "up"}
    )
    assert response.status_code == 302
    assert ("order", "lan", ["router", "dhcp", "nat"]) in control.calls
    assert chain(text(client.get("/modules/")), "lan") == ["router", "dhcp", "nat"]


def test_an_order_against_a_chain_rule_is_refused_with_its_reason(
    client: FlaskClient, control: FakeHome
) -> None:
    response = post_form(
        client, "/modules/", "/modules/order/lan", {"module": "nat", "direction": "up"}
    )
    assert response.status_code == 409
    assert "dataplane.order.lan: nat must come after router" in text(response)
    assert control.config["dataplane"]["order"]["lan"] == ["dhcp", "router", "nat"]


def test_drag_and_drop_posts_a_whole_order(client: FlaskClient, control: FakeHome) -> None:
    response = post_form(client, "/modules/", "/modules/order/wan", {"order": "router,nat"})
    assert response.status_code == 302
    assert ("order", "wan", ["router", "nat"]) in control.calls


def test_module_forms_without_the_csrf_token_are_refused(
    client: FlaskClient, control: FakeHome
) -> None:
    assert client.post("/modules/nat/enabled", data={"enabled": "0"}).status_code == 400
    assert client.post("/modules/order/lan", data={"order": "nat,router"}).status_code == 400
    assert not [c for c in control.calls if c[0] in ("enabled", "order")]


def test_each_table_has_a_link(client: FlaskClient) -> None:
    html = text(client.get("/modules/"))
    for table in ("dhcp_leases", "dns_queries", "nat_sessions"):
        assert f'<a href="/modules/tables/{table}">{table}</a>' in html
    assert '<a href="/modules/tables/nat_sessions">' in module_card(html, "nat")


def test_a_table_is_paged_by_100_with_a_filter_per_column(
    client: FlaskClient, control: FakeHome
) -> None:
    html = text(client.get("/modules/tables/dns_queries"))
    assert html.count("<tr><td>") == 100 and "1–100 of 251" in html
    for column in ("time", "client", "name", "answer"):
        assert f'<input id="f-{column}" name="{column}"' in html
    assert '<a href="/modules/tables/dns_queries?offset=100" rel="next">' in html
    assert "&lt;script&gt;" not in html  # the hostile row is on the last page
    last = text(client.get("/modules/tables/dns_queries?offset=200"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in last and HOSTILE not in last


def test_a_filter_is_passed_to_the_table_and_kept_in_the_links(
    client: FlaskClient, control: FakeHome
) -> None:
    html = text(client.get("/modules/tables/dns_queries?name=q1&offset=0"))
    assert ("table", "dns_queries", 0, 100, {"name": "q1"}) in control.calls
    assert 'value="q1"' in html and "111 rows match" in html
    assert '<a href="/modules/tables/dns_queries?name=q1&amp;offset=100" rel="next">' in html


def test_bad_tables_and_columns(client: FlaskClient) -> None:
    assert client.get("/modules/tables/nosuch").status_code == 404
    assert client.get("/modules/tables/dns_queries?Bad-Column=x").status_code == 400
    assert client.get("/modules/tables/dns_queries?offset=-5").status_code == 200


def test_time_columns_are_local_times_and_tables_scroll_on_a_phone(client: FlaskClient) -> None:
    html = text(client.get("/modules/tables/dns_queries"))
    assert '<time title="1764590000.0">' in html
    assert '<div class="table-wrap">\n<table class="data">' in html
