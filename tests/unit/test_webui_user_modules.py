"""User IO modules on the IO modules page and on a module's own page: user
modules in their chains (marked, with their state), the list (trial
countdown, Confirm, Revert now, Enable / Disable, Move, Delete behind a
confirmation page), the upload form (fields, file, -D options, example),
refusals (the stage, the message, the line marked, the form as typed), the
module page (source, maps as hex, audit) and hostile strings escaped.

FakeUserHome is this file's own fake of the user-module Control methods
(written before tests/unit/fake_user_modules.py landed, and overriding all
of its methods the pages call): uploads validated by the real ModuleUpload
model and source check, a "compiler" that refuses a source with the word
BROKEN on the line it is on, hostile check and audit details."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError

from homegw.control import ConfigRejected, Conflict, ModuleRefused, NotFound, Problem
from homegw.usermodules.spec import ModuleUpload, SourceRefused, check_source
from tests.unit.fake_home import (
    HOSTILE,
    NOW,
    FakeHome,
    assert_no_inline_code,
    form_token,
    logged_in,
    make_app,
    post_form,
)
from tests.unit.fake_home import text_of as text

SOURCE = """#include "homegw_user.h"

int block(struct xdp_md *ctx) {
    hgw_count(0);
    return hgw_next_xdp(ctx);
}
"""
HOSTILE_SOURCE = SOURCE + "// </textarea><script>alert(1)</script> & <b>x</b>\n"
COMPILER_SAYS = "error: use of undeclared identifier '<img src=x onerror=alert(1)>'"


def upload_fields(**changes: Any) -> dict[str, Any]:
    fields = {
        "name": "blocker",
        "nic": "lan",
        "hook": "xdp",
        "position": "first",
        "source": SOURCE,
        "maps": ["blocked"],
        "counters": ["dropped"],
        "trial_s": 60,
    }
    return {**fields, **changes}


class FakeUserHome(FakeHome):
    """FakeHome with user modules: upload, replace, trial, confirm, revert,
    delete, move, maps, audit and examples."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.map_data: dict[tuple[str, str], dict[str, str]] = {}
        self.audit_log: list[dict[str, Any]] = []

    def _note(self, action: str, name: str, detail: str = "") -> None:
        version = self.users[name]["version"] if name in self.users else None
        record = {"time": NOW, "action": action, "module": name, "version": version}
        self.audit_log.insert(0, {**record, "caller": "192.168.1.101", "detail": detail})

    def _validated(self, upload: dict[str, Any]) -> dict[str, Any]:
        try:
            model = ModuleUpload.model_validate(upload)
        except ValidationError as exc:
            problems = [Problem(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
            raise ConfigRejected(problems) from exc
        try:
            check_source(model.source)
        except SourceRefused as exc:
            raise ModuleRefused("check", exc.problems[0].message, exc.problems[0].line) from exc
        for number, line in enumerate(model.source.splitlines(), 1):
            if "BROKEN" in line:
                raise ModuleRefused(
                    "compile", COMPILER_SAYS, number, f"{number}:5: {COMPILER_SAYS}"
                )
        return model.model_dump()

    def _module(self, fields: dict[str, Any], version: int) -> dict[str, Any]:
        return {
            **fields,
            "kind": "user",
            "id": 200 + len(self.users),
            "counters": {c: 7 for c in fields["counters"]},
            "enabled": True,
            "state": "trial",
            "trial": {"ends_at": NOW + 42, "remaining_s": 42.0, "checks": self._checks()},
            "version": version,
            "source_sha256": "ab" * 32,
            "uploaded_at": NOW,
            "confirmed_at": None,
            "chains": [{"nic": fields["nic"], "hook": fields["hook"], "position": 0}],
            "punts": {"subscribers": 0, "delivered": 0, "dropped": 0},
        }

    @staticmethod
    def _checks() -> list[dict[str, Any]]:
        return [
            {"name": "wan", "ok": True, "detail": "203.0.113.1 answered"},
            {"name": "dhcp", "ok": False, "detail": HOSTILE},
            {"name": "admin", "ok": None, "detail": "not on the LAN"},
        ]

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.users:
            raise NotFound(f"no user module {name!r}")
        return self.users[name]

    def module_upload(self, upload: dict[str, Any], admin: str | None) -> dict[str, Any]:
        self.calls.append(("upload", copy.deepcopy(upload), admin))
        fields = self._validated(upload)
        if fields["name"] in self.users:
            raise Conflict(f"a module {fields['name']!r} is loaded already")
        self.users[fields["name"]] = self._module(fields, 1)
        self._note("upload", fields["name"])
        return self.user_module(fields["name"])

    def module_replace(
        self, name: str, upload: dict[str, Any], admin: str | None
    ) -> dict[str, Any]:
        self.calls.append(("replace", name, copy.deepcopy(upload), admin))
        old = self._get(name)
        fields = self._validated(upload)
        self.users[name] = {**self._module(fields, old["version"] + 1), "id": old["id"]}
        self._note("replace", name)
        return self.user_module(name)

    def user_modules(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in copy.deepcopy(m).items() if k != "source"}
            for m in self.users.values()
        ]

    def user_module(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._get(name))

    def module_confirm(self, name: str) -> dict[str, Any]:
        module = self._get(name)
        if module["state"] != "trial":
            raise Conflict(f"{name} is not on trial")
        module.update(state="confirmed", trial=None, confirmed_at=NOW)
        self._note("confirm", name)
        return self.user_module(name)

    def module_revert(self, name: str) -> dict[str, Any] | None:
        module = self._get(name)
        if module["state"] != "trial":
            raise Conflict(f"{name} is not on trial")
        self._note("revert", name)
        del self.users[name]
        return None

    def module_delete(self, name: str) -> None:
        self._get(name)
        self._note("delete", name)
        del self.users[name]

    def module_move(self, name: str, position: str) -> dict[str, Any]:
        self.calls.append(("move", name, position))
        module = self._get(name)
        anchor = position.partition(":")[2]
        if anchor and anchor not in self.order.get(module["nic"], []) and anchor not in self.users:
            raise ConfigRejected([Problem("position", f"{anchor!r} is not in that chain")])
        module["position"] = position
        return self.user_module(name)

    def module_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        if name in self.users:
            self.calls.append(("enabled", name, enabled))
            self.users[name].update(enabled=enabled, state="confirmed" if enabled else "disabled")
            return {"name": name, "enabled": enabled}
        return super().module_set_enabled(name, enabled)

    def module_map(self, name: str, map_name: str) -> list[dict[str, Any]]:
        if map_name not in self._get(name)["maps"]:
            raise NotFound(f"{name} exposes no map {map_name!r}")
        entries = self.map_data.get((name, map_name), {})
        return [{"key": k, "value": v} for k, v in entries.items()]

    def module_map_set(self, name: str, map_name: str, key: str, value: str) -> None:
        self.module_map(name, map_name)
        self.calls.append(("map_set", name, map_name, key, value))
        if len(key) != 16:
            raise ConfigRejected([Problem("key", f"the key is 8 bytes, not {len(key) // 2}")])
        if len(value) != 2:
            raise ConfigRejected([Problem("value", "the value is 1 byte")])
        self.map_data.setdefault((name, map_name), {})[key] = value
        self._note("map_set", name, f"{key}={value}")

    def module_map_delete(self, name: str, map_name: str, key: str) -> bool:
        self.module_map(name, map_name)
        self.calls.append(("map_delete", name, map_name, key))
        return self.map_data.get((name, map_name), {}).pop(key, None) is not None

    def module_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return copy.deepcopy(self.audit_log[:limit])

    def module_examples(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "mac_blocklist",
                "description": "Drop frames from blocked MACs",
                "upload": upload_fields(name="mac_blocklist", defines={"LIMIT": 3}),
            }
        ]


@pytest.fixture
def control() -> FakeUserHome:
    return FakeUserHome()


@pytest.fixture
def client(tmp_path: Path, control: FakeUserHome) -> FlaskClient:
    return logged_in(make_app(tmp_path, control))


def form_data(**changes: str) -> dict[str, str]:
    data = {
        "name": "blocker",
        "nic": "lan",
        "hook": "xdp",
        "position": "first",
        "function": "",
        "source": SOURCE,
        "defines": "",
        "maps": "blocked",
        "counters": "dropped",
        "trial_s": "60",
    }
    return {**data, **changes}


def upload(client: FlaskClient, **changes: str) -> Any:
    return post_form(client, "/modules/", "/modules/user/", form_data(**changes))


def chain(html: str, nic: str) -> list[str]:
    start = html.index(f'<ol class="pipeline" data-nic="{nic}"')
    block = html[start : html.index("</ol>", start)]
    return re.findall(r'data-(?:user-)?module="([a-z_]+)"', block)


def user_card(html: str, name: str) -> str:
    start = html.index(f'<section class="card user-module" data-user-module="{name}"')
    return html[start : html.index('<a class="button danger"', start)]


def test_an_upload_builds_the_module_from_the_form(
    client: FlaskClient, control: FakeUserHome
) -> None:
    response = upload(
        client, defines="LIMIT=3\n-DNAME=abc\nFLAG", maps="blocked, seen", counters="a b"
    )
    assert response.status_code == 302, text(response)
    (call,) = [c for c in control.calls if c[0] == "upload"]
    assert call[1] == {
        "name": "blocker",
        "nic": "lan",
        "hook": "xdp",
        "position": "first",
        "source": SOURCE,
        "function": None,
        "defines": {"LIMIT": 3, "NAME": "abc", "FLAG": 1},
        "maps": ["blocked", "seen"],
        "counters": ["a", "b"],
        "trial_s": 60,
    }
    assert call[2] == "127.0.0.1"  # the admin's address, for the trial's check
    html = text(client.get("/modules/"))
    assert "blocker is loaded and on trial for 42 s" in html
    assert '<form method="post" action="/modules/user/" enctype="multipart/form-data"' in html
    assert 'src="/static/user_modules.js"' in html and 'data-url="/api/v1/modules"' in html


def test_a_source_file_takes_the_place_of_the_textarea(
    client: FlaskClient, control: FakeUserHome
) -> None:
    data: dict[str, Any] = {**form_data(source=""), "csrf_token": form_token(client, "/modules/")}
    data["source_file"] = (io.BytesIO(SOURCE.encode()), "blocker.bpf.c")
    response = client.post("/modules/user/", data=data, content_type="multipart/form-data")
    assert response.status_code == 302
    assert control.users["blocker"]["source"] == SOURCE


def test_a_source_file_that_is_not_text_is_refused_next_to_the_field(client: FlaskClient) -> None:
    data: dict[str, Any] = {**form_data(), "csrf_token": form_token(client, "/modules/")}
    data["source_file"] = (io.BytesIO(b"\xff\xfe\x00binary"), "a.o")
    response = client.post("/modules/user/", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert '<p class="error" id="e-source">the file is not UTF-8 text</p>' in text(response)


def test_user_modules_join_their_chain_marked_with_their_state(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client, name="first_one")
    upload(client, name="after_router", position="after:router")
    upload(client, name="egress", hook="tc", position="last")
    html = text(client.get("/modules/"))
    assert chain(html, "lan") == ["first_one", "dhcp", "router", "after_router", "nat"]
    stage = html[html.index('<li class="stage user running" data-user-module="after_router">') :]
    stage = stage[: stage.index("</li>")]
    assert '<span class="tag">user module</span>' in stage
    assert (
        '<span class="badge user-state state-trial" data-user-state="after_router">trial' in stage
    )
    assert 'href="/modules/user/after_router"' in stage
    assert "Move up" not in stage  # user modules move with their own form
    egress = html[html.index('<ol class="pipeline egress" data-nic="lan"') :]
    assert 'data-user-module="egress"' in egress[: egress.index("</ol>")]
    # the built-ins' first and last still have no Move up / Move down
    dhcp = html[html.index('data-module="dhcp"') :]
    assert "Move up" not in dhcp[: dhcp.index("</li>")]
    assert_no_inline_code(html)


def test_the_built_in_order_form_still_moves_only_built_ins(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client, name="first_one")
    post_form(client, "/modules/", "/modules/order/lan", {"module": "router", "direction": "up"})
    assert ("order", "lan", ["router", "dhcp", "nat"]) in control.calls


def test_the_list_shows_the_trial_its_checks_and_the_actions(client: FlaskClient) -> None:
    upload(client)
    card = user_card(text(client.get("/modules/")), "blocker")
    assert "LAN · XDP · first · version 1" in card
    assert '<span class="countdown" data-remaining="42">42 s left</span>' in card
    assert '<span class="badge ok">wan: ok</span>' in card
    assert '<span class="badge bad">dhcp: failing</span>' in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card and HOSTILE not in card
    assert '<span class="badge ">admin: not checked</span>' in card
    assert 'action="/modules/user/blocker/confirm"' in card and ">Confirm</button>" in card
    assert 'action="/modules/user/blocker/revert"' in card and ">Revert now</button>" in card
    assert 'action="/modules/blocker/enabled"' in card and ">Disable</button>" in card
    assert '<td data-user-counter="dropped">7</td>' in card
    assert '<option value="after:router">After router</option>' in card


def test_confirm_ends_the_trial_and_the_chain_says_confirmed(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client)
    response = post_form(client, "/modules/", "/modules/user/blocker/confirm", {})
    assert response.status_code == 302
    html = text(client.get("/modules/"))
    assert "blocker confirmed." in html
    assert 'data-user-state="blocker">confirmed</span>' in html
    assert "countdown" not in user_card(html, "blocker")
    again = post_form(client, "/modules/", "/modules/user/blocker/confirm", {})
    assert "blocker cannot be confirmed: blocker is not on trial" in text(
        client.get(again.location)
    )


def test_revert_now_takes_a_new_module_out(client: FlaskClient, control: FakeUserHome) -> None:
    upload(client)
    post_form(client, "/modules/", "/modules/user/blocker/revert", {})
    assert "blocker" not in control.users
    assert "No user modules yet." in text(client.get("/modules/"))


def test_disable_and_enable_a_user_module(client: FlaskClient, control: FakeUserHome) -> None:
    upload(client)
    post_form(client, "/modules/", "/modules/blocker/enabled", {"enabled": "0"})
    assert ("enabled", "blocker", False) in control.calls
    html = text(client.get("/modules/"))
    assert 'data-user-state="blocker">disabled</span>' in html
    assert ">Enable</button>" in user_card(html, "blocker")


def test_move_calls_module_move_and_a_refusal_is_said(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client)
    post_form(client, "/modules/", "/modules/user/blocker/move", {"position": "after:nat"})
    assert ("move", "blocker", "after:nat") in control.calls
    assert chain(text(client.get("/modules/")), "lan") == ["dhcp", "router", "nat", "blocker"]
    refused = post_form(client, "/modules/", "/modules/user/blocker/move", {"position": "after:x"})
    assert "cannot be moved (after:x): &#39;x&#39; is not in that chain" in text(
        client.get(refused.location)
    )


def test_delete_asks_first_then_deletes(client: FlaskClient, control: FakeUserHome) -> None:
    upload(client)
    page = text(client.get("/modules/user/blocker/delete"))
    assert "Delete the user module blocker?" in page and "cannot be undone" in page
    unconfirmed = post_form(client, "/modules/", "/modules/user/blocker/delete", {})
    assert unconfirmed.location.endswith("/modules/user/blocker/delete")
    assert "blocker" in control.users
    post_form(
        client, "/modules/user/blocker/delete", "/modules/user/blocker/delete", {"confirmed": "yes"}
    )
    assert "blocker" not in control.users


def test_a_compiler_refusal_shows_stage_message_and_line_and_keeps_the_form(
    client: FlaskClient, control: FakeUserHome
) -> None:
    broken = SOURCE.replace("hgw_count(0);", "hgw_count(0); BROKEN <b>")
    response = upload(client, source=broken, defines="LIMIT=3", counters="dropped, seen")
    assert response.status_code == 400
    html = text(response)
    assert "Refused at the compile stage, line 4:" in html
    assert "use of undeclared identifier &#39;&lt;img src=x onerror=alert(1)&gt;&#39;" in html
    assert "<img src=x" not in html
    refused = re.search(
        r'<li value="4" class="refused-line" aria-current="true"><code>(.*?)</code>', html
    )
    assert refused and refused.group(1) == "    hgw_count(0); BROKEN &lt;b&gt;"
    assert 'data-refused-line="4"' in html
    assert 'value="blocker"' in html and "LIMIT=3</textarea>" in html
    assert 'value="dropped, seen"' in html
    assert "BROKEN &lt;b&gt;" in html[html.index('<textarea id="f-source"') :]
    assert "4:5: error" in html  # the compiler's output, under "The full output"


def test_a_source_check_refusal_names_its_line(client: FlaskClient) -> None:
    sneaky = SOURCE + "int x = homegw_chain;\n"
    html = text(upload(client, source=sneaky))
    assert "Refused at the check stage, line 7:" in html
    assert '<li value="7" class="refused-line"' in html


def test_field_problems_go_next_to_their_fields(client: FlaskClient) -> None:
    response = upload(client, name="Bad-Name", counters="ok, 9bad", trial_s="5")
    assert response.status_code == 400
    html = text(response)
    assert '<p class="error" id="e-trial_s">10 to 600 seconds</p>' in html
    assert 'value="Bad-Name"' in html
    fixed = upload(client, name="Bad-Name", counters="ok, 9bad")
    html = text(fixed)
    assert re.search(r'<p class="error" id="e-name">String should match pattern', html)
    assert re.search(r'<p class="error" id="e-counters">String should match pattern', html)


def test_a_taken_name_is_a_conflict_said_on_the_form(client: FlaskClient) -> None:
    upload(client)
    response = upload(client)
    assert response.status_code == 400
    assert "a module &#39;blocker&#39; is loaded already" in text(response)


def test_load_example_fills_the_form(client: FlaskClient) -> None:
    html = text(client.get("/modules/"))
    assert (
        '<option value="mac_blocklist">mac_blocklist — Drop frames from blocked MACs</option>'
        in html
    )
    html = text(client.get("/modules/?example=mac_blocklist"))
    assert 'id="f-name" name="name" type="text" value="mac_blocklist"' in html
    assert "LIMIT=3</textarea>" in html and 'value="blocked"' in html
    assert "hgw_next_xdp(ctx);" in html[html.index('<textarea id="f-source"') :]
    assert client.get("/modules/?example=nope").status_code == 404


def test_the_module_page_shows_its_source_escaped(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client, source=HOSTILE_SOURCE)
    html = text(client.get("/modules/user/blocker"))
    listing = html[html.index('<ol class="source" id="module-source"') :]
    listing = listing[: listing.index("</ol>")]
    assert (
        "<li><code>// &lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt; "
        "&amp; &lt;b&gt;x&lt;/b&gt;</code></li>" in listing
    )
    assert "<script>alert" not in html and "</textarea><script>" not in html
    assert client.get("/modules/user/nope").status_code == 404
    assert client.get("/modules/user/Bad!").status_code == 404
    assert_no_inline_code(html)


def test_map_entries_are_shown_set_and_deleted_as_hex(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client)
    page = "/modules/user/blocker"
    response = post_form(
        client, page, f"{page}/maps/blocked", {"key": "02:00:00:00:00:01:00:00", "value": "01"}
    )
    assert response.status_code == 302
    assert ("map_set", "blocker", "blocked", "0200000000010000", "01") in control.calls
    html = text(client.get(page))
    assert "<td><code>0200000000010000</code></td>\n          <td><code>01</code></td>" in html
    post_form(client, page, f"{page}/maps/blocked/delete", {"key": "0200000000010000"})
    assert ("map_delete", "blocker", "blocked", "0200000000010000") in control.calls
    assert "No entries." in text(client.get(page))


def test_a_bad_map_entry_is_refused_next_to_its_field(client: FlaskClient) -> None:
    upload(client)
    page = "/modules/user/blocker"
    not_hex = post_form(client, page, f"{page}/maps/blocked", {"key": "<zz>", "value": "01"})
    assert not_hex.status_code == 400
    html = text(not_hex)
    assert '<p class="error" id="blocked-key-e">hex bytes' in html
    assert 'value="&lt;zz&gt;"' in html
    too_short = post_form(client, page, f"{page}/maps/blocked", {"key": "0102", "value": "01"})
    assert '<p class="error" id="blocked-key-e">the key is 8 bytes, not 2</p>' in text(too_short)
    assert (
        post_form(client, page, f"{page}/maps/other", {"key": "01", "value": "01"}).status_code
        == 404
    )


def test_the_audit_log_of_the_module_is_escaped(client: FlaskClient, control: FakeUserHome) -> None:
    upload(client)
    control._note("refused", "blocker", HOSTILE)
    control._note("upload", "someone_else")
    html = text(client.get("/modules/user/blocker"))
    audit = html[html.index('<table class="log audit">') :]
    audit = audit[: audit.index("</table>")]
    assert '<td class="message">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in audit
    assert "someone_else" not in audit and "<td>upload</td>" in audit


def test_replace_uploads_a_new_version_and_a_refusal_stays_on_the_page(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client)
    page = "/modules/user/blocker"
    html = text(client.get(page))
    assert 'action="/modules/user/blocker/replace"' in html
    assert '<input type="hidden" name="name" value="blocker">' in html
    new = SOURCE.replace("hgw_count(0);", "hgw_count(1);")
    response = post_form(client, page, f"{page}/replace", form_data(source=new, name="ignored"))
    assert response.status_code == 302
    assert control.users["blocker"]["version"] == 2
    assert control.users["blocker"]["source"] == new
    broken = post_form(client, page, f"{page}/replace", form_data(source=SOURCE + "BROKEN\n"))
    assert broken.status_code == 400
    assert "Refused at the compile stage, line 7:" in text(broken)
    assert control.users["blocker"]["version"] == 2


def test_every_form_needs_its_csrf_token(client: FlaskClient) -> None:
    upload(client)
    for path in (
        "/modules/user/",
        "/modules/user/blocker/confirm",
        "/modules/user/blocker/revert",
        "/modules/user/blocker/move",
        "/modules/user/blocker/delete",
        "/modules/user/blocker/replace",
        "/modules/user/blocker/maps/blocked",
        "/modules/user/blocker/maps/blocked/delete",
    ):
        assert client.post(path, data=form_data()).status_code == 400, path
    html = text(client.get("/modules/user/blocker"))
    forms = re.findall(r'<form method="post".*?</form>', html, re.S)
    assert forms and all('name="csrf_token"' in f for f in forms)


def test_placement_follows_the_managers_rules_and_a_failure_is_shown(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client, name="before_gone", position="before:router")
    upload(client, name="wan_one", nic="wan", position="after:nat")
    control.users["before_gone"]["position"] = "before:gone"  # its anchor went away
    control.users["wan_one"].update(state="failed", error="<b>the verifier refused it</b>")
    html = text(client.get("/modules/"))
    assert chain(html, "lan") == ["before_gone", "dhcp", "router", "nat"]
    assert chain(html, "wan") == ["nat", "wan_one", "router"]
    assert 'data-user-state="wan_one">failed</span>' in html
    assert "wan_one failed: &lt;b&gt;the verifier refused it&lt;/b&gt;" in html
    page = text(client.get("/modules/user/wan_one"))
    assert "wan_one failed: &lt;b&gt;the verifier refused it&lt;/b&gt;" in page


def test_map_keys_and_values_from_the_control_are_text(
    client: FlaskClient, control: FakeUserHome
) -> None:
    upload(client)
    control.map_data[("blocker", "blocked")] = {HOSTILE: '"><b>v</b>'}
    html = text(client.get("/modules/user/blocker"))
    assert "<td><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></td>" in html
    assert "<td><code>&#34;&gt;&lt;b&gt;v&lt;/b&gt;</code></td>" in html
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html  # its Delete form's key
    assert HOSTILE not in html
