"""The API routes of the web UI's pages over a fake Control: devices (MACs in
any common form), traffic, DNS stats and block list uploads, logs, alerts,
restart; every parameter validated."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.fake_control import FakeControl
from tests.unit.test_api import app, bearer, client, clock, control, login, set_up_admin
from webui.api.ui_routes import UPLOAD_BODY

API = "/api/v1"
MAC = "02:00:00:00:00:02"
FIXTURES = (app, client, clock, control)  # test_api's, used here by name


def test_devices_listed_by_name(app: Flask, client: FlaskClient) -> None:
    devices = client.get(f"{API}/devices", headers=bearer(app)).json["devices"]
    assert [d["name"] for d in devices] == ["laptop", "phone", "printer"]
    assert devices[0]["total"]["from_packets"] == 1


def test_devices_show_their_ipv6_addresses(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    from webui.api import models

    addresses = ["2001:db8:100:1:aaaa::2", "fd12:3456:789a:1::2"]
    control.devices_by_mac[MAC]["ipv6"] = addresses
    devices = client.get(f"{API}/devices", headers=bearer(app)).json["devices"]
    phone = next(d for d in devices if d["mac"] == MAC)
    assert phone["ipv6"] == addresses
    assert models.Device.model_validate(phone).ipv6 == addresses  # what the document says
    assert client.get(f"{API}/devices/{MAC}", headers=bearer(app)).json["ipv6"] == addresses


@pytest.mark.parametrize(
    "form", [MAC, MAC.upper(), MAC.replace(":", "-"), "0200.0000.0002", "020000000002"]
)
def test_a_mac_in_any_common_form(app: Flask, client: FlaskClient, form: str) -> None:
    answer = client.get(f"{API}/devices/{form}", headers=bearer(app))
    assert answer.status_code == 200, answer.json
    assert answer.json["mac"] == MAC and answer.json["hostname"] == "phone"
    assert len(answer.json["history"]) == 24


@pytest.mark.parametrize("form", ["nosuch", "02:00:00:00:00", "02:00:00:00:00:0g", "02-00:00"])
def test_a_bad_mac_is_a_400_and_an_unknown_one_a_404(
    app: Flask, client: FlaskClient, form: str
) -> None:
    answer = client.get(f"{API}/devices/{form}", headers=bearer(app))
    assert answer.status_code == 400 and "not a valid MAC address" in answer.json["error"]
    unknown = client.get(f"{API}/devices/02:00:00:00:00:99", headers=bearer(app))
    assert unknown.status_code == 404 and "02:00:00:00:00:99" in unknown.json["error"]


def test_patch_names_pauses_and_forgets(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    h = bearer(app)
    named = client.patch(f"{API}/devices/02-00-00-00-00-02", json={"name": "Mum's"}, headers=h)
    assert named.status_code == 200 and named.json["changed"] == ["devices"]
    assert control.calls[-1] == ("device_set", MAC, {"name": "Mum's"})
    client.patch(f"{API}/devices/{MAC}", json={"paused": True}, headers=h)
    assert control.calls[-1] == ("device_set", MAC, {"paused": True})
    client.patch(f"{API}/devices/{MAC}", json={"name": None}, headers=h)
    assert control.calls[-1] == ("device_set", MAC, {"name": None})
    device = client.get(f"{API}/devices/{MAC}", headers=h).json
    assert (device["name"], device["user_name"], device["paused"]) == ("phone", None, True)


@pytest.mark.parametrize(
    "payload",
    [{}, {"paused": "yes"}, {"paused": 1}, {"name": ""}, {"name": "x" * 65}, {"name": 5},
     {"name": "a", "vendor": "b"}, [1], "text"],
)  # fmt: skip
def test_patch_refuses_bad_bodies(
    app: Flask, client: FlaskClient, control: FakeControl, payload: Any
) -> None:
    answer = client.patch(f"{API}/devices/{MAC}", json=payload, headers=bearer(app))
    assert answer.status_code == 400 and answer.json["error"], answer.json
    assert not [c for c in control.calls if c[0] == "device_set"]


def test_patch_reports_the_config_key_path(app: Flask, client: FlaskClient) -> None:
    answer = client.patch(f"{API}/devices/{MAC}", json={"name": "a\x07b"}, headers=bearer(app))
    assert answer.status_code == 400
    assert answer.json["problems"] == [{"loc": "devices.0.name", "msg": "control characters"}]


def test_traffic_hours(app: Flask, client: FlaskClient, control: FakeControl) -> None:
    h = bearer(app)
    assert len(client.get(f"{API}/traffic", headers=h).json["traffic"]) == 24
    assert len(client.get(f"{API}/traffic?hours=5", headers=h).json["traffic"]) == 5
    assert control.calls[-1] == ("traffic", 5)


BAD_QUERIES = [
    "/traffic?hours=0",
    "/traffic?hours=169",
    "/traffic?hours=abc",
    "/traffic?hours=1&hours=2",
    "/traffic?days=1",
    "/dns/stats?limit=0",
    "/dns/stats?limit=101",
    "/logs?limit=501",
    "/logs?limit=0",
    "/logs?module=Bad!",
    "/logs?module=" + "a" * 40,
    "/logs?level=info",
]


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_bad_query_parameters_are_a_clear_400(app: Flask, client: FlaskClient, path: str) -> None:
    answer = client.get(API + path, headers=bearer(app))
    assert answer.status_code == 400 and answer.json["error"], answer.json


def test_dns_stats(app: Flask, client: FlaskClient, control: FakeControl) -> None:
    stats = client.get(f"{API}/dns/stats?limit=1", headers=bearer(app)).json
    assert stats["queries"] == 4 and stats["top_blocked"][0]["name"] == "ads.example.com"
    assert control.calls[-1] == ("dns_stats", 1)


def upload(name: str | None, content: bytes | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if name is not None:
        data["name"] = name
    if content is not None:
        data["file"] = (io.BytesIO(content), "list.txt")
    return {"data": data, "content_type": "multipart/form-data"}


def test_upload_a_blocklist_then_see_it(app: Flask, client: FlaskClient) -> None:
    h = bearer(app)
    stored = client.post(f"{API}/dns/blocklists", headers=h, **upload("ads", b"ads.example\n"))
    assert stored.status_code == 201, stored.json
    assert stored.json == {"source": "/var/lib/homegw/blocklists/ads.txt", "entries": 12}
    (listed,) = client.get(f"{API}/dns/blocklists", headers=h).json["blocklists"]
    assert listed["source"] == stored.json["source"] and listed["entries"] == 1


@pytest.mark.parametrize(
    ("form", "status", "text"),
    [
        (upload("Bad Name", b"ads.example\n"), 400, "config rejected"),
        (upload("empty", b""), 400, "config rejected"),
        (upload(None, b"ads.example\n"), 400, "missing form field(s): name"),
        (upload("ads", None), 400, "missing form field(s): file"),
        ({"json": {"name": "ads", "file": "ads.example"}}, 400, "multipart/form-data"),
    ],
)
def test_upload_refusals(
    app: Flask, client: FlaskClient, form: dict[str, Any], status: int, text: str
) -> None:
    answer = client.post(f"{API}/dns/blocklists", headers=bearer(app), **form)
    assert answer.status_code == status and text in answer.json["error"], answer.json


def test_a_big_upload_passes_the_body_limit_of_the_app_even_with_a_session(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    """The app's limit is 4 MiB; a cookie session's CSRF check reads the form
    before the view: the upload's own limit must already hold then."""
    set_up_admin(app, client)
    csrf = login(client)
    big = b"ads.example\n" * (6 * 1024 * 1024 // 12)
    answer = client.post(f"{API}/dns/blocklists", headers=csrf, **upload("big", big))
    assert answer.status_code == 201, answer.json
    assert control.stored_lists["big"] == big
    no_csrf = client.post(f"{API}/dns/blocklists", **upload("other", b"a.example\n"))
    assert no_csrf.status_code == 403 and "other" not in control.stored_lists
    too_big = client.post(
        f"{API}/dns/blocklists", headers=csrf, **upload("huge", b"x" * (UPLOAD_BODY + 1))
    )
    assert too_big.status_code == 413 and "huge" not in control.stored_lists
    json_limit = client.put(f"{API}/config/dns", headers=csrf, json={"x": "y" * (5 << 20)})
    assert json_limit.status_code == 413  # every other path keeps the app's limit


def test_blocklists_refresh(app: Flask, client: FlaskClient, control: FakeControl) -> None:
    answer = client.post(f"{API}/actions/dns/blocklists/refresh", headers=bearer(app))
    assert answer.json == {"done": True, "action": "dns/blocklists/refresh"}
    assert control.calls[-1] == ("refresh",)


def test_logs_by_module_and_limit(app: Flask, client: FlaskClient, control: FakeControl) -> None:
    h = bearer(app)
    every = client.get(f"{API}/logs", headers=h).json["logs"]
    assert [r["time"] for r in every] == [1.0, 2.0, 3.0]
    assert control.calls[-1] == ("logs", None, 500)
    nat = client.get(f"{API}/logs?module=nat&limit=1", headers=h).json["logs"]
    assert [r["message"] for r in nat] == ["3 sessions expired"]
    web = client.get(f"{API}/logs?module=webui", headers=h)
    assert web.json["logs"][0]["message"] == "<script>alert(1)</script>"  # JSON, not markup
    assert web.content_type == "application/json"


def test_alerts(app: Flask, client: FlaskClient) -> None:
    (alert,) = client.get(f"{API}/alerts", headers=bearer(app)).json["alerts"]
    assert alert["code"] == "wan_down" and alert["since"] == 9.0


def test_restart_is_answered_and_needs_the_csrf_token(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    set_up_admin(app, client)
    csrf = login(client)
    assert client.post(f"{API}/actions/restart").status_code == 403
    assert ("restart_all",) not in control.calls
    answer = client.post(f"{API}/actions/restart", headers=csrf)
    assert answer.json == {"done": True, "action": "restart"}
    assert control.calls == [("restart_all",)]
