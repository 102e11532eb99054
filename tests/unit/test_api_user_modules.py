"""The user-module API (/api/v1/modules, /api/v1/modules/user/<name>/...)
over the fake Control: every route, login and CSRF, bad input as 400s with
the key at fault, 404s and 409s, and the refusals of the compiler and the
verifier with their line. The punt stream through a real waitress server:
tests/unit/test_api_punt_stream.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.dataplane.slowpath import Punt
from homegw.usermodules.spec import MAX_SOURCE_BYTES, ModuleUpload, check_source
from tests.unit.fake_control import FakeControl
from tests.unit.fake_user_modules import COMPILE_ERROR, PASS_SOURCE, VERIFIER_ERROR
from tests.unit.test_api import bearer, login, set_up_admin
from webui import MAX_BODY, create_app
from webui.api import models as m
from webui.api.module_routes import end_streams
from webui.api.openapi import PREFIX, UPLOAD_EXAMPLE, document

API = "/api/v1"
MAC_KEY = "02000000000a0000"  # hgw_mac_key(02:00:00:00:00:0a)
FRAME = bytes.fromhex("ffffffffffff02000000000a0806") + bytes(28)  # an ARP frame's start


def upload(name: str = "blocker", **fields: Any) -> dict[str, Any]:
    return {"name": name, "source": PASS_SOURCE, "nic": "lan", "hook": "xdp",
            "position": "first", "maps": ["blocked"], "counters": ["dropped"]} | fields  # fmt: skip


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def app(tmp_path: Path, control: FakeControl) -> Flask:
    return create_app(control, tmp_path)


@pytest.fixture
def api(app: Flask) -> Iterator[FlaskClient]:
    """A client with the local bearer token on every request."""
    client = app.test_client()
    token = bearer(app)
    original = client.open

    def with_token(*args: Any, **kwargs: Any) -> Any:
        kwargs["headers"] = {**token, **kwargs.get("headers", {})}
        return original(*args, **kwargs)

    client.open = with_token  # type: ignore[method-assign]
    yield client


def uploaded(api: FlaskClient, name: str = "blocker", **fields: Any) -> dict[str, Any]:
    response = api.post(f"{API}/modules", json=upload(name, **fields))
    assert response.status_code == 201, response.json
    return response.json


def locs(response: Any) -> list[str]:
    assert response.status_code == 400, response.json
    return [p["loc"] for p in response.json["problems"]]


# -- upload ----------------------------------------------------------------------


def test_upload_runs_the_module_on_trial(api: FlaskClient, control: FakeControl) -> None:
    module = uploaded(api, defines={"LIMIT": 5, "MODE": "strict"})
    m.UserModule.model_validate(module)  # the document's schema of it
    assert module["name"] == "blocker" and module["kind"] == "user"
    assert module["state"] == "trial" and module["trial"]["remaining_s"] == 60
    assert module["defines"] == {"LIMIT": 5, "MODE": "strict"} and "source" not in module
    assert module["punts"] == {"subscribers": 0, "delivered": 0, "dropped": 0}
    assert ("module_upload", "blocker", "127.0.0.1") in control.calls  # admin: the caller
    listed = api.get(f"{API}/modules").json
    m.Modules.model_validate(listed)
    assert [u["name"] for u in listed["user_modules"]] == ["blocker"]
    assert "source" not in listed["user_modules"][0]
    assert {b["name"] for b in listed["modules"]} == {"router", "nat"}
    got = api.get(f"{API}/modules/user/blocker")
    assert got.status_code == 200 and got.json == module | {"source": PASS_SOURCE}
    m.UserModuleDetail.model_validate(got.json)


def test_upload_fields_are_validated_with_their_key(api: FlaskClient) -> None:
    bad = [
        (upload("Blocker"), "name"),
        (upload("router"), "name"),  # a built-in module
        (upload("audit"), "name"),  # a path of the API
        (upload(nic="dmz"), "nic"),
        (upload(hook="tc_ingress"), "hook"),
        (upload(position="middle"), "position"),
        (upload(trial_s=5), "trial_s"),
        (upload(trial_s="60"), "trial_s"),  # strict: no numbers as text
        (upload(defines={"lower": 1}), "defines.lower.[key]"),
        (upload(defines={"X": "a b"}), "defines.X.int"),
        (upload(maps=["Bad-Map"]), "maps.0"),
        (upload(counters=[f"c{i}" for i in range(17)]), "counters"),
        (upload(source=""), "source"),
        (upload(source="x" * (MAX_SOURCE_BYTES + 1)), "source"),
        (upload(extra=1), "extra"),
        ({k: v for k, v in upload().items() if k != "nic"}, "nic"),
    ]
    for body, loc in bad:
        response = api.post(f"{API}/modules", json=body)
        assert loc in locs(response), (body.get("name"), loc, response.json)
    assert api.post(f"{API}/modules", data="{", content_type="application/json").status_code == 400
    assert api.post(f"{API}/modules", json=[upload()]).status_code == 400
    assert api.get(f"{API}/modules").json["user_modules"] == []


def test_a_64_kib_source_fits_the_body_limit(api: FlaskClient) -> None:
    padding = "// " + "\u00e9" * ((MAX_SOURCE_BYTES - len(PASS_SOURCE)) // 2 - 3) + "\n"
    source = PASS_SOURCE + padding  # at most 64 KiB of UTF-8, about 6 times as much as JSON
    assert len(source.encode()) <= MAX_SOURCE_BYTES
    response = api.post(
        f"{API}/modules",
        data=json.dumps(upload(source=source), ensure_ascii=True),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json
    spaces = b" " * (MAX_BODY + 1)
    too_big = api.post(f"{API}/modules", data=spaces, content_type="application/json")
    assert too_big.status_code == 413


@pytest.mark.parametrize(
    ("line", "stage", "in_message"),
    [
        ("\tint homegw_cursor = 1;", "check", "homegw's own names"),
        (f"\tint x = {COMPILE_ERROR};", "compile", "undeclared identifier"),
        (f"\t/* {VERIFIER_ERROR} */ hgw_count(1);", "verifier", "invalid access"),
    ],
)
def test_a_refused_module_is_a_400_with_the_stage_and_line(
    api: FlaskClient, line: str, stage: str, in_message: str
) -> None:
    lines = PASS_SOURCE.split("\n")
    lines.insert(4, line)  # line 5 of the source
    response = api.post(f"{API}/modules", json=upload(source="\n".join(lines)))
    assert response.status_code == 400, response.json
    answer = response.json
    m.ModuleRefusal.model_validate(answer)
    assert answer["stage"] == stage and answer["line"] == 5, answer
    assert in_message in answer["message"]
    assert answer["error"].endswith("nothing was changed")
    assert set(answer) == {"error", "stage", "line", "message", "log"}
    assert api.get(f"{API}/modules").json["user_modules"] == []
    refusal = api.get(f"{API}/modules/audit").json["entries"][0]
    assert refusal["action"] == "refused" and refusal["module"] == "blocker"


def test_a_taken_name_is_a_conflict(api: FlaskClient) -> None:
    uploaded(api)
    again = api.post(f"{API}/modules", json=upload())
    assert again.status_code == 409 and "exists" in again.json["error"]


# -- read, replace, revert, confirm, delete -----------------------------------------------


def test_unknown_and_impossible_names_are_404s(api: FlaskClient) -> None:
    for path in ("nosuch", "Bad-Name", "x" * 40):
        assert api.get(f"{API}/modules/user/{path}").status_code == 404, path
    for method, tail in (("post", "confirm"), ("post", "revert"), ("delete", ""),
                         ("get", "maps/blocked")):  # fmt: skip
        response = api.open(f"{API}/modules/user/nosuch/{tail}".rstrip("/"), method=method)
        assert response.status_code == 404, (method, tail, response.json)
    move = api.put(f"{API}/modules/user/nosuch/position", json={"position": "last"})
    assert move.status_code == 404


def test_replace_while_on_trial_conflicts_then_runs_on_trial(
    api: FlaskClient, control: FakeControl
) -> None:
    first = uploaded(api)
    on_trial = api.put(f"{API}/modules/user/blocker", json=upload(counters=["a", "b"]))
    assert on_trial.status_code == 409 and "on trial" in on_trial.json["error"]
    confirmed = api.post(f"{API}/modules/user/blocker/confirm")
    assert confirmed.status_code == 200
    assert confirmed.json["state"] == "confirmed" and confirmed.json["trial"] is None
    assert api.post(f"{API}/modules/user/blocker/confirm").status_code == 409  # not on trial
    new = api.put(f"{API}/modules/user/blocker", json=upload(counters=["a", "b"]))
    assert new.status_code == 200, new.json
    assert new.json["version"] == 2 and new.json["state"] == "trial"
    assert new.json["counters"] == {"a": 0, "b": 0}
    reverted = api.post(f"{API}/modules/user/blocker/revert")
    assert reverted.status_code == 200
    m.Reverted.model_validate(reverted.json)
    assert reverted.json["removed"] is False and reverted.json["name"] == "blocker"
    assert reverted.json["module"]["version"] == 1
    assert reverted.json["module"]["source_sha256"] == first["source_sha256"]
    assert api.post(f"{API}/modules/user/blocker/revert").status_code == 409


def test_replace_needs_the_same_name_and_a_good_module(api: FlaskClient) -> None:
    uploaded(api)
    api.post(f"{API}/modules/user/blocker/confirm")
    assert "name" in locs(api.put(f"{API}/modules/user/blocker", json=upload("other")))
    source = PASS_SOURCE.replace("hgw_count(0);", f"{COMPILE_ERROR};")
    refused = api.put(f"{API}/modules/user/blocker", json=upload(source=source))
    assert refused.status_code == 400 and refused.json["stage"] == "compile"
    assert refused.json["line"] == 5
    assert api.get(f"{API}/modules/user/blocker").json["version"] == 1  # unchanged
    missing = api.put(f"{API}/modules/user/nosuch", json=upload("nosuch"))
    assert missing.status_code == 404


def test_reverting_a_new_module_removes_it(api: FlaskClient) -> None:
    uploaded(api)
    reverted = api.post(f"{API}/modules/user/blocker/revert")
    assert reverted.status_code == 200
    assert reverted.json == {"name": "blocker", "removed": True, "module": None}
    assert api.get(f"{API}/modules/user/blocker").status_code == 404


def test_delete_forgets_the_module_and_ends_its_punt_streams(
    api: FlaskClient, control: FakeControl
) -> None:
    uploaded(api)
    subscription = control.punt_hub.subscribe("blocker")
    response = api.delete(f"{API}/modules/user/blocker")
    assert response.status_code == 204 and response.data == b""
    assert subscription.closed
    assert api.get(f"{API}/modules/user/blocker").status_code == 404
    assert api.delete(f"{API}/modules/user/blocker").status_code == 404
    actions = [e["action"] for e in api.get(f"{API}/modules/audit").json["entries"]]
    assert actions == ["delete", "upload"]


def test_enable_and_disable_of_a_user_module(api: FlaskClient) -> None:
    uploaded(api)
    api.post(f"{API}/modules/user/blocker/confirm")
    assert api.post(f"{API}/modules/blocker/disable").status_code == 200
    module = api.get(f"{API}/modules/user/blocker").json
    assert module["enabled"] is False and module["state"] == "disabled" and module["chains"] == []
    assert api.post(f"{API}/modules/blocker/enable").status_code == 200
    assert api.get(f"{API}/modules/user/blocker").json["state"] == "confirmed"


def test_move_in_the_chain(api: FlaskClient) -> None:
    uploaded(api)
    moved = api.put(f"{API}/modules/user/blocker/position", json={"position": "after:router"})
    assert moved.status_code == 200 and moved.json["position"] == "after:router"
    for position in ("before:nosuch", "middle", "after:", 3):
        response = api.put(f"{API}/modules/user/blocker/position", json={"position": position})
        assert locs(response) == ["position"], position
    assert locs(api.put(f"{API}/modules/user/blocker/position", json={})) == ["position"]
    assert api.get(f"{API}/modules/user/blocker").json["position"] == "after:router"


# -- exposed maps ----------------------------------------------------------------------


def test_map_entries_are_written_read_and_deleted_as_hex(api: FlaskClient) -> None:
    uploaded(api)
    path = f"{API}/modules/user/blocker/maps/blocked"
    assert api.get(path).json == {"entries": []}
    written = api.put(path, json={"key": MAC_KEY, "value": "01"})
    assert written.status_code == 204 and written.data == b""
    entries = api.get(path).json
    m.MapEntries.model_validate(entries)
    assert entries == {"entries": [{"key": MAC_KEY, "value": "01"}]}
    assert api.delete(f"{path}/{MAC_KEY}").status_code == 204
    assert api.delete(f"{path}/{MAC_KEY}").status_code == 404  # not there any more
    assert api.get(path).json == {"entries": []}
    actions = [e["action"] for e in api.get(f"{API}/modules/audit?limit=2").json["entries"]]
    assert actions == ["map_delete", "map_set"]


def test_map_entries_refuse_bad_hex_and_sizes(api: FlaskClient) -> None:
    uploaded(api)
    path = f"{API}/modules/user/blocker/maps/blocked"
    bad = [
        ({"key": "02000000000A0000", "value": "01"}, "key"),  # upper case
        ({"key": "0200000", "value": "01"}, "key"),  # half a byte
        ({"key": "zz", "value": "01"}, "key"),
        ({"key": "0200", "value": "01"}, "key"),  # not the key's size
        ({"key": MAC_KEY, "value": "0102"}, "value"),
        ({"key": MAC_KEY, "value": 1}, "value"),
        ({"key": MAC_KEY}, "value"),
        ({"key": MAC_KEY, "value": "01", "more": 1}, "more"),
    ]
    for entry, loc in bad:
        assert loc in locs(api.put(path, json=entry)), entry
    for key in ("zz", "ABCD", "abc"):
        assert locs(api.delete(f"{path}/{key}")) == ["key"], key
    assert api.get(path).json == {"entries": []}
    assert api.get(f"{API}/modules/user/blocker/maps/private").status_code == 404  # not exposed
    assert api.get(f"{API}/modules/user/blocker/maps/Bad-Map").status_code == 404


def test_a_full_map_is_a_conflict(api: FlaskClient) -> None:
    uploaded(api)
    path = f"{API}/modules/user/blocker/maps/blocked"
    for i in range(4):
        assert api.put(path, json={"key": f"{i:016x}", "value": "01"}).status_code == 204
    full = api.put(path, json={"key": "ff" * 8, "value": "01"})
    assert full.status_code == 409 and "full" in full.json["error"]
    assert api.put(path, json={"key": f"{0:016x}", "value": "02"}).status_code == 204  # update


# -- the slow path: packets out, the punt stream -----------------------------------------------


def test_a_packet_goes_out_as_the_decoded_frame(api: FlaskClient, control: FakeControl) -> None:
    uploaded(api)
    frame = base64.b64encode(FRAME).decode()
    path = f"{API}/modules/user/blocker/packets"
    sent = api.post(path, json={"nic": "wan", "frame": frame})
    assert sent.status_code == 204 and sent.data == b""
    assert control.packets_out == [("blocker", "wan", FRAME)]
    longest = base64.b64encode(bytes(1514)).decode()
    assert api.post(path, json={"nic": "lan", "frame": longest}).status_code == 204
    missing = api.post(f"{API}/modules/user/nosuch/packets", json={"nic": "lan", "frame": frame})
    assert missing.status_code == 404


def test_packets_refuse_bad_base64_sizes_and_nics(api: FlaskClient, control: FakeControl) -> None:
    uploaded(api)
    path = f"{API}/modules/user/blocker/packets"
    frame = base64.b64encode(FRAME).decode()
    bad = [
        ({"nic": "dmz", "frame": frame}, "nic"),
        ({"nic": "lan", "frame": frame[:-1]}, "frame"),  # padding cut
        ({"nic": "lan", "frame": "!" + frame[1:]}, "frame"),
        ({"nic": "lan", "frame": frame.replace("A", "-")}, "frame"),  # urlsafe alphabet
        ({"nic": "lan", "frame": base64.b64encode(bytes(13)).decode()}, "frame"),
        ({"nic": "lan", "frame": base64.b64encode(bytes(1515)).decode()}, "frame"),
        ({"nic": "lan", "frame": list(FRAME)}, "frame"),
        ({"nic": "lan"}, "frame"),
    ]
    for packet, loc in bad:
        assert loc in locs(api.post(path, json=packet)), packet
    assert control.packets_out == []


def test_the_punt_stream_through_the_test_client(api: FlaskClient, control: FakeControl) -> None:
    uploaded(api)
    response = api.get(f"{API}/modules/user/blocker/punts", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    chunks = iter(response.response)
    assert next(chunks) == b": subscribed\n\n"
    punt = Punt(module=200, reason=2, ifindex=3, pkt_len=42, meta=(1, 2, 3, 4), packet=FRAME)
    control.punt_hub.publish("blocker", punt, "lan")
    event = next(chunks).decode()
    assert event.startswith("event: punt\ndata: {") and event.endswith("}\n\n")
    assert f'"frame":"{base64.b64encode(FRAME).decode()}"' in event
    assert control.punt_hub.stats("blocker")["subscribers"] == 1
    response.close()
    assert control.punt_hub.stats("blocker") == {"subscribers": 0, "delivered": 1, "dropped": 0}
    assert api.get(f"{API}/modules/user/nosuch/punts").status_code == 404
    end_streams(api.application, "the server stops")
    late = api.get(f"{API}/modules/user/blocker/punts")
    assert late.status_code == 409 and "the server stops" in late.json["error"]


# -- the audit log, the examples --------------------------------------------------------


def test_audit_newest_first_with_a_limit(api: FlaskClient) -> None:
    uploaded(api, "one")
    uploaded(api, "two")
    api.post(f"{API}/modules/user/one/confirm")
    entries = api.get(f"{API}/modules/audit").json["entries"]
    m.Audit.model_validate({"entries": entries})
    assert [(e["action"], e["module"]) for e in entries] == [
        ("confirm", "one"), ("upload", "two"), ("upload", "one")
    ]  # fmt: skip
    assert {e["caller"] for e in entries} == {"127.0.0.1"}  # the confirm's too
    assert len(api.get(f"{API}/modules/audit?limit=1").json["entries"]) == 1
    for query in ("limit=0", "limit=1001", "limit=many", "limit=1&limit=2", "other=1"):
        assert api.get(f"{API}/modules/audit?{query}").status_code == 400, query


def test_examples_are_uploads(api: FlaskClient) -> None:
    examples = api.get(f"{API}/modules/examples").json["examples"]
    m.Examples.model_validate({"examples": examples})
    example = examples[0]
    assert api.post(f"{API}/modules", json=example["upload"]).status_code == 201


# -- login and CSRF, the document -----------------------------------------------------


USER_ROUTES = [
    ("post", "/modules"), ("get", "/modules/audit"), ("get", "/modules/examples"),
    ("get", "/modules/user/blocker"), ("put", "/modules/user/blocker"),
    ("delete", "/modules/user/blocker"), ("post", "/modules/user/blocker/confirm"),
    ("post", "/modules/user/blocker/revert"), ("put", "/modules/user/blocker/position"),
    ("get", "/modules/user/blocker/maps/blocked"), ("put", "/modules/user/blocker/maps/blocked"),
    ("delete", f"/modules/user/blocker/maps/blocked/{MAC_KEY}"),
    ("get", "/modules/user/blocker/punts"), ("post", "/modules/user/blocker/packets"),
]  # fmt: skip


def test_every_user_module_route_needs_a_login(app: Flask, control: FakeControl) -> None:
    anonymous = app.test_client()
    for method, path in USER_ROUTES:
        response = anonymous.open(f"{API}{path}", method=method, json=upload())
        assert response.status_code == 401, (method, path)
    assert control.calls == [] and control.user == {}
    paths = document()["paths"]
    documented = {(m, p.removeprefix(PREFIX)) for p, ops in paths.items() for m in ops}
    templates = {"blocker": "{name}", "blocked": "{map_name}", MAC_KEY: "{key}"}
    for method, path in USER_ROUTES:
        for value, template in templates.items():
            path = path.replace(value, template)
        assert (method, path) in documented


def test_a_cookie_session_needs_the_csrf_token_for_changes(
    app: Flask, control: FakeControl
) -> None:
    client = app.test_client()
    set_up_admin(app, client)
    csrf = login(client)
    frame = base64.b64encode(FRAME).decode()
    changes = [
        ("post", "/modules", upload()),
        ("put", "/modules/user/blocker/maps/blocked", {"key": MAC_KEY, "value": "01"}),
        ("post", "/modules/user/blocker/packets", {"nic": "lan", "frame": frame}),
        ("post", "/modules/user/blocker/confirm", None),
        ("delete", "/modules/user/blocker", None),
    ]
    for method, path, body in changes:
        refused = client.open(f"{API}{path}", method=method, json=body)
        assert refused.status_code == 403 and "CSRF" in refused.json["error"], (method, path)
    assert control.user == {}
    for method, path, body in changes:
        done = client.open(f"{API}{path}", method=method, json=body, headers=csrf)
        assert done.status_code in (200, 201, 204), (method, path, done.json)
    assert client.get(f"{API}/modules/audit").status_code == 200  # reads need none


def test_the_document_describes_the_user_module_operations() -> None:
    doc = document()
    paths = doc["paths"]
    post = paths[f"{PREFIX}/modules"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModuleUpload"
    }
    assert set(post["responses"]) == {"201", "400", "401", "403", "409"}
    refusal = post["responses"]["400"]["content"]["application/json"]["schema"]
    assert refusal == {"$ref": "#/components/schemas/ModuleRefusal"}
    schemas = doc["components"]["schemas"]
    assert {"ModuleUpload", "MapEntry", "ModuleRefusal", "UserModuleDetail"} <= set(schemas)
    for path, method in (("", "post"), ("/user/{name}", "put"), ("/user/{name}/confirm", "post")):
        answer = paths[f"{PREFIX}/modules{path}"][method]["responses"]
        ok = answer["201" if method == "post" and not path else "200"]
        assert ok["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/UserModule"  # the source only in GET
        }
    assert schemas["ModuleUpload"]["properties"]["source"]["maxLength"] == MAX_SOURCE_BYTES
    punts = paths[f"{PREFIX}/modules/user/{{name}}/punts"]["get"]
    assert "text/event-stream" in punts["responses"]["200"]["content"]
    delete = paths[f"{PREFIX}/modules/user/{{name}}/maps/{{map_name}}/{{key}}"]["delete"]
    assert [p["name"] for p in delete["parameters"]] == ["name", "map_name", "key"]
    packets = schemas["PacketOut"]["properties"]["frame"]
    assert (packets["minLength"], packets["maxLength"]) == (20, 2020)


def test_the_documented_example_upload_is_a_valid_module(api: FlaskClient) -> None:
    content = document()["paths"][f"{PREFIX}/modules"]["post"]["requestBody"]["content"]
    example = content["application/json"]["examples"]["example"]["value"]
    assert example == UPLOAD_EXAMPLE
    check_source(ModuleUpload.model_validate(example).source)  # nothing refused
    assert api.post(f"{API}/modules", json=example).status_code == 201
