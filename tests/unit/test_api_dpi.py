"""The DPI routes of the API over a fake Control: the application database,
usage and top apps (bounds checked, 400 naming the field), what the parental
controls do now, pause; 409 while DPI is off; login and CSRF like the rest;
the OpenAPI document says exactly this."""

from __future__ import annotations

import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.config import parse_config
from homegw.control import ConfigRejected, Conflict
from homegw.management import Management
from tests.unit.fake_control import HOSTILE_LABEL, FakeControl
from tests.unit.test_api import app, bearer, client, clock, control, login, set_up_admin
from webui.api import models as m
from webui.api.openapi import PREFIX, document

API = "/api/v1"
MAC = "02:00:00:00:00:02"
FIXTURES = (app, client, clock, control)  # test_api's, used here by name
DPI_GETS = ("/apps/usage", "/apps/top", "/parental")


def get(app: Flask, client: FlaskClient, path: str, **args: Any) -> Any:
    return client.get(f"{API}{path}", query_string=args, headers=bearer(app))


def test_apps_is_the_database_with_labels_as_given(app: Flask, client: FlaskClient) -> None:
    answer = get(app, client, "/apps")
    assert answer.status_code == 200
    assert {"id": "video", "label": "Video streaming"} in answer.json["categories"]
    youtube = next(a for a in answer.json["apps"] if a["id"] == "youtube")
    assert youtube == {
        "id": "youtube",
        "label": "YouTube",
        "category": "video",
        "domains": ["youtube.com", "googlevideo.com", "ytimg.com"],
    }
    assert HOSTILE_LABEL in [a["label"] for a in answer.json["apps"]]  # JSON: the UI escapes


def test_usage_passes_the_validated_query(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    answer = get(app, client, "/apps/usage", mac=MAC.upper().replace(":", "-"), hours=168,
                 bucket="day")  # fmt: skip
    assert answer.status_code == 200, answer.json
    assert control.calls[-1] == ("app_usage", MAC, 168, "day")
    usage = answer.json["usage"]
    assert len({row["start"] for row in usage}) == 7 and {row["mac"] for row in usage} == {MAC}
    assert usage == sorted(usage, key=lambda row: row["start"])
    assert get(app, client, "/apps/usage").status_code == 200
    assert control.calls[-1] == ("app_usage", None, 24, "hour")


def test_top_apps_passes_the_validated_query(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    answer = get(app, client, "/apps/top", hours=720, limit=2)
    assert answer.status_code == 200
    assert control.calls[-1] == ("top_apps", None, 720, 2)
    assert [a["app"] for a in answer.json["apps"]] == ["youtube", "evil_app"]
    get(app, client, "/apps/top", mac=MAC, hours=1, limit=100)
    assert control.calls[-1] == ("top_apps", MAC, 1, 100)


@pytest.mark.parametrize(
    ("path", "args", "field"),
    [
        ("/apps/usage", {"hours": 0}, "hours"),
        ("/apps/usage", {"hours": 721}, "hours"),
        ("/apps/usage", {"hours": "a day"}, "hours"),
        ("/apps/usage", {"bucket": "week"}, "bucket"),
        ("/apps/usage", {"mac": "02:00:00:00:00"}, "mac"),
        ("/apps/usage", {"when": "now"}, "when"),
        ("/apps/top", {"limit": 0}, "limit"),
        ("/apps/top", {"limit": 101}, "limit"),
        ("/apps/top", {"hours": 721}, "hours"),
        ("/apps/top", {"mac": "<script>"}, "mac"),
    ],
)
def test_out_of_bounds_is_a_400_naming_the_field(
    app: Flask, client: FlaskClient, control: FakeControl, path: str, args: dict, field: str
) -> None:
    answer = get(app, client, path, **args)
    assert answer.status_code == 400, answer.json
    assert [p["loc"] for p in answer.json["problems"]] == [field]
    assert control.calls == []


def test_a_query_parameter_twice_is_a_400(app: Flask, client: FlaskClient) -> None:
    answer = client.get(f"{API}/apps/top?limit=1&limit=2", headers=bearer(app))
    assert answer.status_code == 400 and "'limit' given 2 times" in answer.json["error"]


def test_usage_of_a_device_never_seen_is_a_404(app: Flask, client: FlaskClient) -> None:
    answer = get(app, client, "/apps/usage", mac="02:00:00:00:00:99")
    assert answer.status_code == 404 and "02:00:00:00:00:99" in answer.json["error"]


def test_parental_says_what_is_in_force(app: Flask, client: FlaskClient) -> None:
    answer = get(app, client, "/parental")
    assert answer.status_code == 200
    device = answer.json["devices"][0]
    assert device["mac"] == MAC and device["profile"] == "<b>x</b>"
    assert device["budgets"] == [
        {"rule": "games", "used_minutes": 42, "limit_minutes": 60, "exhausted": False}
    ]


@pytest.mark.parametrize("minutes", [30, 60, None, 0])
def test_pause_passes_target_and_minutes(
    app: Flask, client: FlaskClient, control: FakeControl, minutes: int | None
) -> None:
    body = {"target": MAC, "minutes": minutes}
    answer = client.post(f"{API}/parental/pause", json=body, headers=bearer(app))
    assert answer.status_code == 200, answer.json
    assert answer.json["changed"] == ["dpi.pauses"]
    assert control.calls[-1] == ("pause", MAC, minutes)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": MAC}, "minutes"),  # null must be said: "until midnight" is no default
        ({"target": MAC, "minutes": -1}, "minutes"),
        ({"target": MAC, "minutes": 7 * 24 * 60 + 1}, "minutes"),
        ({"target": MAC, "minutes": "30"}, "minutes"),
        ({"target": "", "minutes": 30}, "target"),
        ({"target": "x" * 65, "minutes": 30}, "target"),
        ({"target": MAC, "minutes": 30, "why": "x"}, "why"),
    ],
)
def test_a_bad_pause_is_a_400_naming_the_field(
    app: Flask, client: FlaskClient, control: FakeControl, body: dict, field: str
) -> None:
    answer = client.post(f"{API}/parental/pause", json=body, headers=bearer(app))
    assert answer.status_code == 400
    assert [p["loc"] for p in answer.json["problems"]] == [field]
    assert control.calls == []


def test_a_pause_of_an_unknown_target_is_refused_by_the_config(
    app: Flask, client: FlaskClient
) -> None:
    body = {"target": "Nobody", "minutes": 30}
    answer = client.post(f"{API}/parental/pause", json=body, headers=bearer(app))
    assert answer.status_code == 400
    assert answer.json["problems"][0]["loc"] == "dpi.pauses"


def test_with_dpi_off_usage_top_parental_and_pause_are_409(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    control.dpi_on = False
    for path in DPI_GETS:
        answer = get(app, client, path)
        assert answer.status_code == 409, path
        assert answer.json["error"] == "DPI is off: enable the dpi module"
    body = {"target": MAC, "minutes": 30}
    assert client.post(f"{API}/parental/pause", json=body, headers=bearer(app)).status_code == 409
    empty = get(app, client, "/apps")
    assert empty.status_code == 200 and empty.json["apps"] == []


def test_login_needed_and_csrf_for_the_cookie_session(
    app: Flask, client: FlaskClient, control: FakeControl
) -> None:
    for path in ("/apps", *DPI_GETS):
        assert client.get(f"{API}{path}").status_code == 401
    body = {"target": MAC, "minutes": 30}
    assert client.post(f"{API}/parental/pause", json=body).status_code == 401
    set_up_admin(app, client)
    csrf = login(client)
    assert client.get(f"{API}/apps/top").status_code == 200  # reads need no token
    refused = client.post(f"{API}/parental/pause", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    assert ("pause", MAC, 30) not in control.calls
    assert client.post(f"{API}/parental/pause", json=body, headers=csrf).status_code == 200


def test_openapi_documents_the_dpi_paths_with_their_bounds() -> None:
    paths = document()["paths"]
    usage = paths[f"{PREFIX}/apps/usage"]["get"]
    params = {p["name"]: p["schema"] for p in usage["parameters"]}
    assert params["hours"] == {"type": "integer", "minimum": 1, "maximum": 720, "default": 24}
    assert params["bucket"]["enum"] == ["hour", "day"]
    assert set(usage["responses"]) == {"200", "400", "401", "404", "409"}
    top = {p["name"]: p["schema"] for p in paths[f"{PREFIX}/apps/top"]["get"]["parameters"]}
    assert top["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}
    pause = paths[f"{PREFIX}/parental/pause"]["post"]
    assert set(pause["responses"]) == {"200", "400", "401", "403", "409"}
    schema = document()["components"]["schemas"]["PauseRequest"]
    assert schema["required"] == ["target", "minutes"]
    assert set(paths[f"{PREFIX}/parental"]) == {"get"} and set(paths[f"{PREFIX}/apps"]) == {"get"}


class Service:
    """What the lead's DPI service answers: each call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((name, *args))
            return {"answered": name}

        return call


def management(dpi: Any) -> Management:
    """Management over a stub appliance: the config parsed and applied are
    recorded, not run."""
    out = Management.__new__(Management)
    config = parse_config({"wan": {"interface": "wan0"}, "lan": {"interface": "lan0"}})
    out.appliance = SimpleNamespace(dpi=dpi, config=config)  # type: ignore[assignment]
    out.inventory = SimpleNamespace(devices=lambda: [{"mac": MAC}])  # type: ignore[assignment]
    out.applied = []  # type: ignore[attr-defined]
    out._parse = lambda data, section: data  # type: ignore[method-assign]
    out._apply = lambda data, dry_run: out.applied.append(data) or "applied"  # type: ignore[method-assign, attr-defined, func-returns-value]
    return out


def test_management_hands_the_dpi_reads_to_the_service() -> None:
    service = Service()
    control = management(service)
    assert control.apps() == {"answered": "apps"}
    control.app_usage(MAC, 48, "day")
    control.top_apps(None, 24, 5)
    control.parental()
    assert service.calls == [
        ("apps",),
        ("app_usage", MAC, 48, "day"),
        ("top_apps", None, 24, 5),
        ("parental",),
    ]


def test_management_pauses_as_a_config_change_of_dpi_pauses() -> None:
    control = management(Service())
    before = time.time()
    assert control.pause(MAC.upper(), 30) == "applied"
    (document,) = control.applied  # type: ignore[attr-defined]
    (pause,) = document["dpi"]["pauses"]
    assert pause["who"] == MAC
    assert 30 * 60 - 2 <= datetime.fromisoformat(pause["until"]).timestamp() - before <= 30 * 60 + 2
    assert document["wan"]["interface"] == "wan0"  # the rest of the config as it was
    with pytest.raises(ConfigRejected) as refused:
        control.pause("02:00:00:00:00:99", 30)
    assert refused.value.problems[0].loc == "dpi.pauses"


def test_management_with_dpi_off() -> None:
    control = management(None)
    assert control.apps() == {"categories": [], "apps": [], "source": "", "loaded_at": 0.0}
    calls = (
        lambda: control.app_usage(),
        lambda: control.top_apps(),
        lambda: control.parental(),
        lambda: control.pause(MAC, 30),
    )
    for call in calls:
        with pytest.raises(Conflict, match="^DPI is off: enable the dpi module$"):
            call()
    assert control.applied == []  # type: ignore[attr-defined]


def test_the_answers_are_what_the_document_says(app: Flask, client: FlaskClient) -> None:
    for path, model in (
        ("/apps", m.Apps),
        ("/apps/usage", m.AppUsage),
        ("/apps/top", m.TopApps),
        ("/parental", m.Parental),
    ):
        answer = get(app, client, path)
        model.model_validate(answer.json)  # raises when a field is missing or of another type
    # the DPI service's own shape of a device (next_change at the top, blocked_all, allowed_*)
    service_device = {
        "mac": MAC, "profile": None, "rules": [], "blocked_apps": [], "blocked_categories": [],
        "blocked_all": True, "allowed_apps": ["khan_academy"], "allowed_categories": [],
        "paused_until": 1_764_600_000, "budgets": [],
    }  # fmt: skip
    m.Parental.model_validate({"now": 1.0, "devices": [service_device], "next_change": None})
