"""/api/v1/system over the real SystemControl (tests/unit/fake_system.py)
on an image's files in a temp dir: the state, an upgrade streamed from the
request body in chunks (bigger than every other route may take) into a file
standing in for the partition, the reboot only once the answer is out, the
400s and 409s, login and CSRF, the factory reset both ways."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.upgrade.bundle import MAX_BUNDLE_BYTES
from homegw.upgrade.control import SystemService
from tests.unit.fake_control import FakeControl
from tests.unit.test_api import bearer, login, set_up_admin
from tests.unit.upgrade_fakes import (
    Image,
    SmallReads,
    bundle_of,
    make_image,
    manifest_of,
    rootfs_bytes,
)
from webui import MAX_BODY, create_app
from webui.api.openapi import PREFIX, document

BIG = os.urandom(5 << 20)  # does not compress: a bundle over the app's 4 MiB limit
UPGRADE = f"{PREFIX}/system/upgrade"
RESET = f"{PREFIX}/system/factory-reset"
OCTETS = "application/octet-stream"


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def image(tmp_path: Path, control: FakeControl) -> Image:
    image = make_image(tmp_path / "image", partition_size=6 << 20)
    control.use_paths(image.paths, tmp_path / "state-of-test", tmp_path / "homegw.yaml")
    return image


@pytest.fixture
def app(tmp_path: Path, control: FakeControl) -> Flask:
    return create_app(control, tmp_path / "webstate")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def upload(client: FlaskClient, app: Flask, data: bytes, **headers: str):  # type: ignore[no-untyped-def]
    stream = SmallReads(data)
    response = client.post(
        UPGRADE,
        input_stream=stream,
        headers={"Content-Type": OCTETS, "Content-Length": str(len(data))} | bearer(app) | headers,
    )
    return response, stream


def test_system_on_a_plain_install_says_no_upgrade(client: FlaskClient, app: Flask) -> None:
    answer = client.get(f"{PREFIX}/system", headers=bearer(app)).json
    assert answer["upgrade_supported"] is False and answer["slots"] is None
    assert "not an image install" in answer["reason"] and answer["image"] is None
    assert answer["version"]


def test_system_on_an_image_shows_the_slots(client: FlaskClient, app: Flask, image: Image) -> None:
    answer = client.get(f"{PREFIX}/system", headers=bearer(app)).json
    assert answer["upgrade_supported"] is True and answer["reason"] is None
    assert answer["image"]["VERSION"] == "0.1.0"
    slots = answer["slots"]
    assert (slots["booted"], slots["active"], slots["trial"]) == ("a", "a", None)
    assert slots["slots"]["a"]["version"] == "0.1.0" and slots["slots"]["a"]["booted"]


def test_upgrade_streams_a_big_bundle_in_chunks_and_reboots_after_answering(
    client: FlaskClient, app: Flask, image: Image, control: FakeControl
) -> None:
    data = bundle_of(BIG)
    assert len(data) > MAX_BODY
    response, stream = upload(client, app, data)
    assert response.status_code == 202, response.json
    assert response.json == {"slot": "b", "version": "0.1.1", "rebooting": True}
    assert 0 < stream.largest <= 1 << 20 and stream.position == len(data)
    assert image.slot_bytes("b", len(BIG)) == BIG
    assert image.env()["homegw_trial"] == "b" and image.env()["homegw_tried"] == "0"
    assert ("system_reboot",) not in control.calls  # not before the answer is out
    response.close()
    assert control.calls.count(("system_reboot",)) == 1
    again = upload(client, app, data)[0]
    assert again.status_code == 409 and "on trial" in again.json["error"]


def test_other_routes_keep_their_body_limit(client: FlaskClient, app: Flask) -> None:
    response = client.put(
        f"{PREFIX}/config/dns",
        data=b"{" + b" " * (5 << 20) + b"}",
        headers={"Content-Type": "application/json"} | bearer(app),
    )
    assert response.status_code == 413


def test_a_rejected_bundle_is_a_400_with_the_reason(
    client: FlaskClient, app: Flask, image: Image, control: FakeControl
) -> None:
    small = rootfs_bytes()
    response, _ = upload(client, app, bundle_of(small, manifest_of(rootfs_bytes(seed=4))))
    assert response.status_code == 400
    assert "sha256" in response.json["error"] and "no slot was marked" in response.json["error"]
    assert "homegw_trial" not in image.env() and image.env()["homegw_version_b"] == "bad"
    response.close()
    assert ("system_reboot",) not in control.calls
    garbage = upload(client, app, b"not a tar at all" * 100)[0]
    assert garbage.status_code == 400 and "bundle rejected" in garbage.json["error"]


def test_upgrade_wants_the_bundle_as_octets(client: FlaskClient, app: Flask, image: Image) -> None:
    response = client.post(UPGRADE, json={"bundle": "x"}, headers=bearer(app))
    assert response.status_code == 400 and OCTETS in response.json["error"]


def test_upgrade_on_a_plain_install_is_a_409(client: FlaskClient, app: Flask) -> None:
    response, stream = upload(client, app, bundle_of(rootfs_bytes()))
    assert response.status_code == 409 and "not an image install" in response.json["error"]


def test_upgrade_needs_a_login_and_a_cookie_session_needs_csrf(
    client: FlaskClient, app: Flask, image: Image
) -> None:
    data = bundle_of(rootfs_bytes())
    anonymous = app.test_client().post(UPGRADE, data=data, content_type=OCTETS)
    assert anonymous.status_code == 401
    set_up_admin(app, client)
    csrf = login(client)
    refused = client.post(UPGRADE, data=data, content_type=OCTETS)
    assert refused.status_code == 403
    assert "homegw_trial" not in image.env()
    done = client.post(UPGRADE, data=data, content_type=OCTETS, headers=csrf)
    assert done.status_code == 202 and image.env()["homegw_trial"] == "b"


def test_factory_reset_on_an_image_flags_and_reboots_after_answering(
    client: FlaskClient, app: Flask, image: Image, control: FakeControl
) -> None:
    for wrong in ({}, {"confirm": "yes"}, {"confirm": "factory-reset", "more": 1}):
        assert client.post(RESET, json=wrong, headers=bearer(app)).status_code == 400
    assert not image.paths.reset_flag.exists()
    response = client.post(RESET, json={"confirm": "factory-reset"}, headers=bearer(app))
    assert response.status_code == 202 and response.json["rebooting"] is True
    assert image.paths.reset_flag.is_file()
    response.close()
    assert control.calls.count(("system_reboot",)) == 1


def test_factory_reset_on_plain_debian(
    client: FlaskClient, app: Flask, image: Image, tmp_path: Path, control: FakeControl
) -> None:
    image.paths.image_release.unlink()
    state = tmp_path / "state-of-test"
    state.mkdir()
    (state / "leases.json").write_text("[]")
    missing = client.post(RESET, json={"confirm": "factory-reset"}, headers=bearer(app))
    assert missing.status_code == 409 and (state / "leases.json").exists()
    image.paths.default_config.write_text("# default\n")
    response = client.post(RESET, json={"confirm": "factory-reset"}, headers=bearer(app))
    assert response.status_code == 200, response.json
    assert response.json["image"] is False and response.json["rebooting"] is False
    assert list(state.iterdir()) == [] and (tmp_path / "homegw.yaml").read_text() == "# default\n"
    response.close()
    assert ("system_reboot",) not in control.calls


def test_the_reboot_runs_in_a_supervised_thread(tmp_path: Path) -> None:
    ran = threading.Event()
    names: list[str] = []

    def reboot() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    SystemService(make_image(tmp_path).paths, tmp_path, tmp_path / "c", reboot).reboot()
    assert ran.wait(10) and names == ["reboot"]


def test_openapi_documents_the_system_paths() -> None:
    paths = document()["paths"]
    upgrade = paths[UPGRADE]["post"]
    assert OCTETS in upgrade["requestBody"]["content"]
    assert {"202", "400", "401", "403", "409", "413"} <= set(upgrade["responses"])
    reset = paths[RESET]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = document()["components"]["schemas"][reset["$ref"].rsplit("/", 1)[1]]
    assert schema["properties"]["confirm"]["const"] == "factory-reset"
    assert json.dumps(paths[f"{PREFIX}/system"]["get"]).count("SystemInfo") == 1


def test_a_body_over_the_bundle_limit_is_a_413(
    client: FlaskClient, app: Flask, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webui.api import system_routes

    monkeypatch.setattr(system_routes, "MAX_BUNDLE_BYTES", 6 << 20)
    response, stream = upload(client, app, bundle_of(os.urandom(7 << 20)))
    assert response.status_code == 413 and response.json["error"]
    assert stream.largest == 0  # refused by its Content-Length, nothing read
    assert "homegw_trial" not in image.env()


def test_through_waitress_a_bundle_is_admitted_and_the_reboot_follows_the_answer(
    tmp_path: Path, control: FakeControl, image: Image
) -> None:
    """A real HTTP upload of a bundle bigger than the other routes' limit."""
    import urllib.request

    from homegw.auth import read_local_token
    from webui.server import WebServer

    state = tmp_path / "served"
    server = WebServer(create_app(control, state), "127.0.0.1", 0)
    # waitress' own limit (1 GiB by default) admits the biggest bundle
    assert server._server.adj.max_request_body_size == MAX_BUNDLE_BYTES
    server.start()
    try:
        data = bundle_of(BIG)
        request = urllib.request.Request(
            server.url + UPGRADE.lstrip("/"),
            data=data,
            method="POST",
            headers={
                "Content-Type": OCTETS,
                "Authorization": f"Bearer {read_local_token(state)}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 202
            assert json.loads(response.read())["slot"] == "b"
    finally:
        server.stop()
    assert image.slot_bytes("b", len(BIG)) == BIG
    assert control.calls.count(("system_reboot",)) == 1  # once the answer was written
