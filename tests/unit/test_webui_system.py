"""The System page over a fake Control: password change (the API's rules:
current password under the login limit, other sessions ended), API tokens
(secret shown once, revoke), backup and restore (dry run first, problems by
key path, non-YAML and oversized files), restart with confirmation, logs by
module with hostile text escaped, version; CSRF."""

from __future__ import annotations

import io
import re

import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.unit import webui_pages_fake as fake
from tests.unit.webui_pages_fake import (
    HOSTILE_HOST,
    PASSWORD,
    PagesControl,
    assert_one_control_per_label,
    csrf_refused,
    field_error,
    post,
    value_of,
)

app, client, control = fake.app, fake.client, fake.control
NEW_PASSWORD = "a much longer new password"


def change_password(
    client: FlaskClient, current: str, new: str, again: str | None = None
) -> object:
    data = {"current_password": current, "new_password": new, "new_password_again": again or new}
    return post(client, "/system/password", data)


def test_page_shows_version_tokens_and_labels(client: FlaskClient) -> None:
    html = client.get("/system/").get_data(as_text=True)
    assert '<dd id="version">0.3.1</dd>' in html
    assert "1 day 2 h" in html  # 93784 s of uptime
    for label in (
        "Current password",
        "New password",
        "New password again",
        "Backup file",
        "Module",
    ):
        assert re.search(rf'<label for="[a-z-]+">{label}</label>', html) or re.search(
            rf'<label for="f-[a-z_]+">{label}</label>', html
        ), label
    assert ">Download backup</a>" in html
    assert ">Restart homegw</button>" in html
    assert "local" in html  # the CLI's token is listed
    assert html.count('<div class="table-wrap">') == html.count("<table")


def test_change_password_ends_other_sessions_keeps_this_one(
    app: Flask, client: FlaskClient
) -> None:
    other = app.test_client()
    assert other.post("/api/v1/auth/login", json={"password": PASSWORD}).status_code == 200
    assert other.get("/system/").status_code == 200
    response = change_password(client, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert other.get("/system/").status_code == 302  # to the login page
    page = client.get("/system/")
    assert page.status_code == 200
    assert "Password changed" in page.get_data(as_text=True)
    auth = app.extensions["homegw"].auth
    assert auth.check_login("admin", NEW_PASSWORD) and not auth.check_login("admin", PASSWORD)


def test_wrong_current_password_refused_next_to_its_field(app: Flask, client: FlaskClient) -> None:
    response = change_password(client, "not the password", NEW_PASSWORD)
    assert response.status_code == 403
    html = response.get_data(as_text=True)
    assert "wrong" in field_error(html, "f-current_password")
    assert value_of(html, "f-current_password") == ""  # a password is never sent back
    assert app.extensions["homegw"].auth.check_login("admin", PASSWORD)


def test_wrong_current_passwords_are_rate_limited(client: FlaskClient) -> None:
    for _ in range(5):
        change_password(client, "not the password", NEW_PASSWORD)
    response = change_password(client, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 429
    assert "Too many failed attempts" in field_error(
        response.get_data(as_text=True), "f-current_password"
    )


def test_new_passwords_that_differ_or_are_short_are_refused(
    app: Flask, client: FlaskClient
) -> None:
    html = change_password(client, PASSWORD, NEW_PASSWORD, "something else entirely").get_data(
        as_text=True
    )
    assert "differ" in field_error(html, "f-new_password_again")
    response = change_password(client, PASSWORD, "short")
    assert response.status_code == 400
    assert "10 to 256 characters" in field_error(response.get_data(as_text=True), "f-new_password")
    assert app.extensions["homegw"].auth.check_login("admin", PASSWORD)


def test_create_token_shows_the_secret_once_and_it_works(app: Flask, client: FlaskClient) -> None:
    response = post(client, "/system/tokens", {"token_name": "home-assistant"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    secret = value_of(html, "new-token-secret")
    assert secret and secret.startswith("hgw_")
    assert (
        app.test_client()
        .get("/api/v1/status", headers={"Authorization": f"Bearer {secret}"})
        .status_code
        == 200
    )
    later = client.get("/system/").get_data(as_text=True)
    assert "home-assistant" in later and secret not in later


def test_bad_token_name_refused_next_to_its_field(client: FlaskClient) -> None:
    response = post(client, "/system/tokens", {"token_name": HOSTILE_HOST})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "letters, digits" in field_error(html, "f-token_name")
    assert HOSTILE_HOST not in html
    assert value_of(html, "f-token_name") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_revoke_token(app: Flask, client: FlaskClient) -> None:
    auth = app.extensions["homegw"].auth
    info, secret = auth.create_token("script")
    assert post(client, f"/system/tokens/{info.id}/revoke").status_code == 302
    assert auth.verify_token(secret) is None
    assert post(client, "/system/tokens/nosuch/revoke").status_code == 302
    assert "does not exist" in client.get("/system/").get_data(as_text=True)


def test_backup_is_the_running_config_as_yaml(client: FlaskClient, control: PagesControl) -> None:
    response = client.get("/system/backup")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="homegw-config-'
    )
    assert yaml.safe_load(response.get_data(as_text=True)) == control.config


def restore(client: FlaskClient, content: bytes, name: str = "backup.yaml") -> object:
    return post(
        client,
        "/system/restore",
        {"backup": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
    )


def test_restore_dry_runs_then_applies(client: FlaskClient, control: PagesControl) -> None:
    document = dict(control.config, log_level="debug")
    response = restore(client, yaml.safe_dump(document).encode())
    assert response.status_code == 302
    assert [(section, dry) for section, _, dry in control.applied] == [(None, True), (None, False)]
    assert control.config["log_level"] == "debug"


def test_restore_with_problems_lists_them_by_key_path_and_changes_nothing(
    client: FlaskClient, control: PagesControl
) -> None:
    document = dict(control.config, nat={"dmz_host": "8.8.8.8"}, dhcp={"lease_time": 5})
    response = restore(client, yaml.safe_dump(document).encode())
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<code>nat.dmz_host</code>" in html and "<code>dhcp.lease_time</code>" in html
    assert "Nothing was restored" in field_error(html, "f-backup")
    assert [dry for _, _, dry in control.applied] == [True]


def test_restore_of_a_non_yaml_or_oversized_file_is_a_clear_error(
    client: FlaskClient, control: PagesControl
) -> None:
    for content, expected in (
        (b"\x89PNG\r\n\x1a\n\x00\xff", "not YAML"),
        (b"key: [unclosed", "not YAML"),
        (b"- just\n- a list\n", "no configuration sections"),
        (b"#" * (600 * 1024), "too big"),
        (
            b"a: &a [1, 1, 1, 1]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b]\n",
            "aliases",
        ),
    ):
        response = restore(client, content)
        assert response.status_code == 400
        assert expected in field_error(response.get_data(as_text=True), "f-backup"), expected
    assert control.applied == []


def test_restart_needs_the_confirmation_post(client: FlaskClient, control: PagesControl) -> None:
    confirm = client.get("/system/restart")
    assert ">Yes, restart homegw</button>" in confirm.get_data(as_text=True)
    assert ("restart_appliance",) not in control.calls
    response = post(client, "/system/restart")
    assert response.status_code == 200
    assert ("restart_appliance",) in control.calls
    assert 'id="restart-state"' in response.get_data(as_text=True)


def test_logs_filtered_by_module_with_hostile_text_escaped(
    client: FlaskClient, control: PagesControl
) -> None:
    html = client.get("/system/?module=dhcp").get_data(as_text=True)
    assert ("logs", "dhcp", 500) in control.calls
    assert "lease for &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE_HOST not in html
    assert "router message" not in html
    assert '<option value="dhcp" selected>' in html
    everything = client.get("/system/?module=nosuch").get_data(as_text=True)
    assert ("logs", None, 500) in control.calls and "router message" in everything


def test_posts_without_csrf_token_are_refused(
    app: Flask, client: FlaskClient, control: PagesControl
) -> None:
    data = {
        "current_password": PASSWORD,
        "new_password": NEW_PASSWORD,
        "new_password_again": NEW_PASSWORD,
    }
    assert csrf_refused(client.post("/system/password", data=data))
    assert csrf_refused(client.post("/system/restart"))
    assert csrf_refused(client.post("/system/tokens", data={"token_name": "x"}))
    assert ("restart_appliance",) not in control.calls
    assert app.extensions["homegw"].auth.check_login("admin", PASSWORD)


def test_restore_over_the_request_limit_is_a_clear_error(
    client: FlaskClient, control: PagesControl
) -> None:
    response = restore(client, b"#" * (5 * 1024 * 1024))
    assert response.status_code == 302
    assert "too big" in client.get("/system/").get_data(as_text=True)
    assert control.applied == []


def test_each_label_names_one_control(client: FlaskClient) -> None:
    """A browser test's get_by_label finds one control per label (strict mode)."""
    assert_one_control_per_label(
        client.get("/system/").get_data(as_text=True),
        ["Current password", "New password again", "Backup file", "Module", "Token name"],
    )
