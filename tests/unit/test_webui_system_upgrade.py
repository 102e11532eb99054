"""The System page's Upgrade and Factory reset sections over the real
SystemControl on an image's files (tests/unit/fake_system.py): the version
and slots, the upload form (CSRF, a multipart file bigger than the page's
other uploads may be, written in chunks into the inactive slot, the reboot
only once the answer is out), a refused bundle's reason, the plain-install
page, the typed confirmation of the reset."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.unit import webui_pages_fake as fake
from tests.unit.upgrade_fakes import Image, bundle_of, make_image, manifest_of, rootfs_bytes
from tests.unit.webui_pages_fake import (
    PagesControl,
    assert_one_control_per_label,
    csrf_refused,
    field_error,
    post,
)

app, client, control = fake.app, fake.client, fake.control
BIG = os.urandom(5 << 20)  # over the pages' 4 MiB request limit


@pytest.fixture
def image(tmp_path: Path, control: PagesControl) -> Image:
    image = make_image(tmp_path / "image", partition_size=6 << 20)
    control.use_paths(image.paths, tmp_path / "state-of-test", tmp_path / "homegw.yaml")
    return image


def upload(client: FlaskClient, data: bytes, name: str = "homegw-0.1.1.hgwup"):  # type: ignore[no-untyped-def]
    return post(
        client,
        "/system/upgrade",
        {"bundle": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )


def test_page_shows_the_slots_and_the_forms(client: FlaskClient, image: Image) -> None:
    image.set_env("homegw_version_b=bad")
    html = client.get("/system/").get_data(as_text=True)
    assert '<dd id="image-version">0.1.0 (build 20261201T000000Z)</dd>' in html
    assert '<dd id="slot-a">0.1.0 — running, active</dd>' in html
    assert "(its last write did not complete)" in html
    assert ">Upload and upgrade</button>" in html and ">Erase everything</button>" in html
    assert_one_control_per_label(html, ["Upgrade file", "Type factory-reset to confirm"])


def test_plain_install_page_says_why_no_upgrade(client: FlaskClient) -> None:
    html = client.get("/system/").get_data(as_text=True)
    assert 'id="upgrade-unavailable"' in html and "not an image install" in html
    assert "Upload and upgrade" not in html and "Erase everything" in html


def test_upload_writes_the_other_slot_and_reboots_after_the_answer(
    client: FlaskClient, image: Image, control: PagesControl
) -> None:
    response = upload(client, bundle_of(BIG))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "homegw 0.1.1 is in slot b" in html
    assert image.slot_bytes("b", len(BIG)) == BIG and image.env()["homegw_trial"] == "b"
    assert ("system_reboot",) not in control.calls
    response.close()
    assert control.calls.count(("system_reboot",)) == 1
    page = client.get("/system/").get_data(as_text=True)
    assert "slot b is on trial" in page and "Upload and upgrade" not in page


def test_a_refused_bundle_says_why_and_nothing_reboots(
    client: FlaskClient, image: Image, control: PagesControl
) -> None:
    small = rootfs_bytes()
    response = upload(client, bundle_of(small, manifest_of(small, compatible="homegw-arm64")))
    assert response.status_code == 302
    page = client.get("/system/").get_data(as_text=True)
    assert "The upgrade was refused" in page and "homegw-arm64" in page
    response.close()
    assert ("system_reboot",) not in control.calls and "homegw_trial" not in image.env()
    missing = post(client, "/system/upgrade", {}, content_type="multipart/form-data")
    assert missing.status_code == 302
    assert "Choose an upgrade file" in client.get("/system/").get_data(as_text=True)


def test_upgrade_refused_state_comes_back_as_a_message(client: FlaskClient, image: Image) -> None:
    image.set_env("homegw_trial=b")
    assert upload(client, bundle_of(rootfs_bytes())).status_code == 302
    assert "on trial" in client.get("/system/").get_data(as_text=True)


def test_factory_reset_needs_the_typed_word(
    client: FlaskClient, image: Image, control: PagesControl
) -> None:
    wrong = post(client, "/system/factory-reset", {"reset_confirm": "yes"})
    assert wrong.status_code == 400
    assert "Type factory-reset" in (
        field_error(wrong.get_data(as_text=True), "f-reset_confirm") or ""
    )
    assert not image.paths.reset_flag.exists()
    response = post(client, "/system/factory-reset", {"reset_confirm": "factory-reset"})
    assert response.status_code == 200 and "erases its settings" in response.get_data(as_text=True)
    assert image.paths.reset_flag.is_file()
    response.close()
    assert control.calls.count(("system_reboot",)) == 1


def test_posts_without_csrf_are_refused(client: FlaskClient, image: Image) -> None:
    data = {"bundle": (io.BytesIO(bundle_of(rootfs_bytes())), "x.hgwup")}
    assert csrf_refused(client.post("/system/upgrade", data=data))
    assert csrf_refused(
        client.post("/system/factory-reset", data={"reset_confirm": "factory-reset"})
    )
    assert "homegw_trial" not in image.env() and not image.paths.reset_flag.exists()


def test_an_upload_over_the_bundle_limit_names_that_limit(
    client: FlaskClient, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webui.api import system_routes

    monkeypatch.setattr(system_routes, "MAX_BUNDLE_BYTES", 6 << 20)
    response = upload(client, bundle_of(os.urandom(7 << 20)))
    assert response.status_code == 302
    assert "at most 6 MiB" in client.get("/system/").get_data(as_text=True)
    assert "homegw_trial" not in image.env()
