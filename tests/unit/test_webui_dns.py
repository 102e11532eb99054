"""The DNS page over a fake Control that validates with the real config
schema: upstreams, block lists (add by URL, upload, remove, update now),
allow and deny lists, groups, the query log (search, device filter, pages),
top domains; errors next to their fields with the input kept, escaping of
hostile DNS names, CSRF."""

from __future__ import annotations

import io
import re

from flask.testing import FlaskClient

from tests.unit import webui_pages_fake as fake
from tests.unit.webui_pages_fake import (
    HOSTILE_QUERY,
    PagesControl,
    assert_one_control_per_label,
    csrf_refused,
    field_error,
    post,
    value_of,
)
from webui.views.dns import upload_name

app, client, control = fake.app, fake.client, fake.control
#: the labels the lead's browser tests find the controls by
LABELS = [
    "Blocklist URL",
    "Blocklist file",
    "Always allow",
    "Always block",
    "Search domains",
    "Device",
    "Upstream DNS servers",
]


def refused(response: object) -> str:
    assert response.status_code == 400  # type: ignore[attr-defined]
    return response.get_data(as_text=True)  # type: ignore[attr-defined]


def textarea(html: str, field_id: str) -> str:
    found = re.search(rf'<textarea id="{field_id}"[^>]*>\n?(.*?)</textarea>', html, re.S)
    assert found is not None, field_id
    return found.group(1)


def test_page_shows_everything_with_hostile_names_escaped(client: FlaskClient) -> None:
    html = client.get("/dns/").get_data(as_text=True)
    assert HOSTILE_QUERY not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.lan" in html  # in the query log and the top list
    assert "HTTP 404 &lt;b&gt;gone&lt;/b&gt;" not in html  # no group list in the base config
    assert "https://lists.example/ads.txt" in html and "1,234" in html
    assert textarea(html, "f-upstreams") == "9.9.9.9"
    assert textarea(html, "f-allow") == "good.example.com"
    assert textarea(html, "f-deny") == "tracker.example.net"
    assert '<td data-label="Group">kids</td>' in html
    assert 'id="grp-0-name"' not in html  # a group's form shows after "Edit"
    for label in LABELS:
        assert re.search(rf'<label for="f-[a-z_]+">{label}</label>', html), label
    for button in (
        "Add blocklist",
        "Upload blocklist",
        "Update now",
        "Remove",
        "Add group",
        "Search",
    ):
        assert f">{button}</button>" in html, button
    assert "ads.example.net" in html  # top blocked
    assert html.count('<div class="table-wrap">') == html.count("<table")


def test_query_log_paged_by_100(client: FlaskClient, control: PagesControl) -> None:
    html = client.get("/dns/?offset=200").get_data(as_text=True)
    assert ("table", "dns_queries", 200, 100, {}) in control.calls
    assert "201–250 of 250" in html
    assert 'rel="prev"' in html and 'rel="next"' not in html


def test_query_log_search_and_device_filter_exactly(
    client: FlaskClient, control: PagesControl
) -> None:
    html = client.get("/dns/?q=host1&device=192.168.1.10").get_data(as_text=True)
    rows = re.findall(r'<td data-label="Domain" class="domain">([^<]*)</td>', html)
    expected = [f"host{i}.example.com" for i in range(250) if i % 3 == 2 and "host1" in f"host{i}."]
    assert rows == expected[:100]
    # 192.168.1.100 and .101 contain "192.168.1.10" but are other devices
    assert "192.168.1.100" not in "".join(
        re.findall(r'<td data-label="Device">.*?</td>', html, re.S)
    )
    assert '<option value="192.168.1.10" selected>' in html
    assert '<option value="192.168.1.77" >192.168.1.77</option>' in html  # a client, no device
    assert html.count('<option value="192.168.1.100"') == 1
    assert 'value="host1"' in html  # the search box keeps its text


def test_upstreams_saved_in_wan_dns(client: FlaskClient, control: PagesControl) -> None:
    response = post(client, "/dns/upstreams", {"upstreams": "1.1.1.1\n\n 8.8.8.8 \n"})
    assert response.status_code == 302
    section, document, _ = control.last_applied()
    assert section == "wan" and document["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert document["interface"] == "wan0"
    assert "restarts" in client.get("/dns/").get_data(as_text=True)


def test_bad_upstream_refused_naming_its_line(client: FlaskClient, control: PagesControl) -> None:
    html = refused(post(client, "/dns/upstreams", {"upstreams": "1.1.1.1\ndns.google"}))
    assert "Line 2:" in field_error(html, "f-upstreams")
    assert textarea(html, "f-upstreams") == "1.1.1.1\ndns.google"
    assert control.config["wan"]["dns"] == ["9.9.9.9"]


def test_allow_and_deny(client: FlaskClient, control: PagesControl) -> None:
    data = {"allow": "ok.example\nfine.example", "deny": "ads.example.org"}
    assert post(client, "/dns/lists", data).status_code == 302
    assert control.config["dns"]["allow"] == ["ok.example", "fine.example"]
    assert control.config["dns"]["deny"] == ["ads.example.org"]


def test_bad_deny_entry_refused_on_its_line_input_kept(
    client: FlaskClient, control: PagesControl
) -> None:
    data = {"allow": "ok.example", "deny": "a.example\nb.example\nnot a domain!"}
    html = refused(post(client, "/dns/lists", data))
    assert "Line 3:" in field_error(html, "f-deny")
    assert field_error(html, "f-allow") is None
    assert textarea(html, "f-deny") == "a.example\nb.example\nnot a domain!"
    assert control.config["dns"]["deny"] == ["tracker.example.net"]


def test_add_blocklist_by_url(client: FlaskClient, control: PagesControl) -> None:
    url = "https://lists.example/malware.txt"
    assert post(client, "/dns/blocklists", {"blocklist_url": url}).status_code == 302
    assert control.config["dns"]["blocklists"] == ["https://lists.example/ads.txt", url]


def test_bad_blocklist_url_refused_next_to_its_field(client: FlaskClient) -> None:
    html = refused(post(client, "/dns/blocklists", {"blocklist_url": "ftp://x.example/l"}))
    assert "http(s)://" in field_error(html, "f-blocklist_url")
    assert value_of(html, "f-blocklist_url") == "ftp://x.example/l"


def test_upload_blocklist_stores_then_adds_its_path(
    client: FlaskClient, control: PagesControl
) -> None:
    upload = {"blocklist_file": (io.BytesIO(b"ads.example\ntrack.example\n"), "My Ads.txt")}
    response = post(client, "/dns/blocklists/upload", upload, content_type="multipart/form-data")
    assert response.status_code == 302
    assert ("blocklist_store", "my-ads", b"ads.example\ntrack.example\n") in control.calls
    assert control.config["dns"]["blocklists"][-1] == "/var/lib/homegw/blocklists/my-ads.txt"
    assert "2 entries" in client.get("/dns/").get_data(as_text=True)


def test_refused_upload_shows_the_reason_next_to_the_file_field(
    client: FlaskClient, control: PagesControl
) -> None:
    upload = {"blocklist_file": (io.BytesIO(b"   \n"), "empty.txt")}
    html = refused(
        post(client, "/dns/blocklists/upload", upload, content_type="multipart/form-data")
    )
    assert "no domains" in field_error(html, "f-blocklist_file")
    assert control.applied == []


def test_upload_names() -> None:
    assert upload_name("C:\\lists\\Ad Servers.txt") == "ad-servers"
    assert upload_name("../../etc/passwd") == "passwd"
    assert upload_name("<script>.txt") == "script"
    assert upload_name("...") == "uploaded"


def test_remove_blocklist_from_default_and_groups(
    client: FlaskClient, control: PagesControl
) -> None:
    control.config["dns"]["groups"][0]["blocklists"] = ["https://lists.example/ads.txt"]
    response = post(client, "/dns/blocklists/remove", {"source": "https://lists.example/ads.txt"})
    assert response.status_code == 302
    assert control.config["dns"]["blocklists"] == []
    assert control.config["dns"]["groups"][0]["blocklists"] == []


def test_update_now(client: FlaskClient, control: PagesControl) -> None:
    assert post(client, "/dns/blocklists/refresh").status_code == 302
    assert ("blocklists_refresh",) in control.calls


def test_add_group(client: FlaskClient, control: PagesControl) -> None:
    data = {"name": "guests", "clients": "192.168.1.130\n192.168.1.131", "blocklists": ""}
    assert post(client, "/dns/groups", data).status_code == 302
    group = control.config["dns"]["groups"][1]
    assert group["name"] == "guests" and group["clients"] == ["192.168.1.130", "192.168.1.131"]
    assert group["use_default"] is False  # the box was not ticked


def test_group_client_in_two_groups_refused_next_to_its_field(client: FlaskClient) -> None:
    data = {"name": "guests", "clients": "192.168.1.120", "use_default": "on"}
    html = refused(post(client, "/dns/groups", data))
    assert "already in group kids" in field_error(html, "grp-new-clients")
    assert value_of(html, "grp-new-name") == "guests"


def test_edit_shows_that_groups_form(client: FlaskClient) -> None:
    html = client.get("/dns/?edit_group=0").get_data(as_text=True)
    assert value_of(html, "grp-0-name") == "kids"
    assert textarea(html, "grp-0-clients") == "192.168.1.120"
    assert 'id="grp-0-use_default" name="use_default" type="checkbox" value="on" checked' in html


def test_edit_group_keeps_its_allow_and_deny(client: FlaskClient, control: PagesControl) -> None:
    control.config["dns"]["groups"][0]["deny"] = ["games.example"]
    data = {"original": "kids", "name": "kids", "clients": "192.168.1.121", "use_default": "on"}
    assert post(client, "/dns/groups/0", data).status_code == 302
    group = control.config["dns"]["groups"][0]
    assert group["clients"] == ["192.168.1.121"] and group["deny"] == ["games.example"]


def test_bad_group_name_refused_next_to_that_groups_field(client: FlaskClient) -> None:
    data = {"original": "kids", "name": "Kids!", "clients": "192.168.1.120"}
    html = refused(post(client, "/dns/groups/0", data))
    assert "must be 1-32" in field_error(html, "grp-0-name")
    assert field_error(html, "grp-new-name") is None
    assert value_of(html, "grp-0-name") == "Kids!"


def test_delete_group(client: FlaskClient, control: PagesControl) -> None:
    assert post(client, "/dns/groups/0/delete", {"original": "kids"}).status_code == 302
    assert control.config["dns"]["groups"] == []
    assert post(client, "/dns/groups/0/delete", {"original": "kids"}).status_code == 302
    assert "changed meanwhile" in client.get("/dns/").get_data(as_text=True)


def test_hostile_blocklist_error_text_escaped(client: FlaskClient, control: PagesControl) -> None:
    control.config["dns"]["groups"][0]["blocklists"] = ["https://lists.example/kids.txt"]
    html = client.get("/dns/").get_data(as_text=True)
    assert "HTTP 404 &lt;b&gt;gone&lt;/b&gt;" in html and "<b>gone" not in html


def test_posts_without_csrf_token_are_refused(client: FlaskClient, control: PagesControl) -> None:
    assert csrf_refused(client.post("/dns/lists", data={"deny": "x.example"}))
    assert csrf_refused(client.post("/dns/blocklists/refresh"))
    assert control.applied == [] and ("blocklists_refresh",) not in control.calls


def test_each_label_names_one_control(client: FlaskClient) -> None:
    """A browser test's get_by_label finds one control per label (strict mode)."""
    assert_one_control_per_label(client.get("/dns/").get_data(as_text=True), LABELS)
