"""The OpenAPI 3.1 document of the management API, generated from the
operation table below and the pydantic models of webui.api.models and
homegw.configschema.Config (so the document says what the code checks).
Served at /api/v1/openapi.json; tests/unit/test_api_openapi.py checks that
every route of the app is in it and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from homegw.configschema import Config
from webui.api import models as m
from webui.api import system_models as sm

PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
UNSAFE = {"post", "put", "patch", "delete"}
Schema = type[BaseModel] | dict[str, Any] | str

_ERRORS = {
    400: ("bad input: the message says what (and problems[] where each is)", m.Rejected),
    401: ("no login: a session cookie or Authorization: Bearer <token>", m.Error),
    403: ("refused: the CSRF token (X-CSRFToken) of a cookie session is missing or wrong", m.Error),
    404: ("no such section, module, table, token or history entry", m.Error),
    409: ("valid, but not possible in the current state", m.Error),
    413: ("the body is too large", m.Error),
    429: ("too many failed attempts from this client: see Retry-After", m.Error),
}

_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}},
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    response: Schema | None = None
    status: int = 200
    request: Schema | None = None
    errors: tuple[int, ...] = ()
    query: tuple[dict[str, Any], ...] = ()
    public: bool = False
    content: str = "application/json"
    request_content: str = "application/json"
    extra_responses: dict[int, str] = field(default_factory=dict)
    bad_request: Schema | None = None  # the 400's body when not m.Rejected
    example: dict[str, Any] | None = None  # a request body that works


def _name(what: str) -> dict[str, Any]:
    return {"type": "string", "pattern": NAME_PATTERN, "description": what}


OBJECT = {"type": "object", "additionalProperties": True}
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "section": {"type": "string", "enum": m.config_sections()},
    "version": {"type": "integer", "minimum": 0},
    "name": _name("a module or table name"),
    "nic": {"type": "string", "enum": ["lan", "wan"]},
    "token_id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
    "map_name": {
        "type": "string",
        "pattern": r"^[a-z_][a-z0-9_]{0,31}$",
        "description": "a map the module's upload exposes",
    },
    "key": {
        "type": "string",
        "pattern": "^([0-9a-f]{2}){1,256}$",
        "description": "hex of the key's bytes",
    },
    "mac": {
        "type": "string",
        "description": "aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or aabbccddeeff",
    },
}
_TABLE_QUERY = (
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    {
        "name": "filters",
        "in": "query",
        "description": "any other parameter <column>=<value> keeps rows whose column equals "
        "the value (strings: contain it)",
        "style": "form",
        "explode": True,
        "schema": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN, "not": {"enum": ["offset", "limit"]}},
            "additionalProperties": {"type": "string", "maxLength": 256},
            "maxProperties": 16,
        },
    },
)
_APPLY = "ApplyResult"
_UPLOAD = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$",
            "description": "kept as state_dir/blocklists/<name>.txt",
        },
        "file": {
            "type": "string",
            "format": "binary",
            "description": "hosts format, one domain a line or ||domain^ rules; at most 16 MiB",
        },
    },
}

_MAC_QUERY = {"type": "string", "description": "one device: a MAC in any common form"}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out = {"name": name, "in": "query", "schema": schema}
    return out | ({"description": description} if description else {})


def _int(low: int, high: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, "default": default}


_APP_QUERY = (
    _query("mac", _MAC_QUERY),
    _query("hours", _int(1, m.MAX_HOURS, 24)),
)

_USER = f"{PREFIX}/modules/user/{{name}}"
_MAP = f"{_USER}/maps/{{map_name}}"
_STREAM = (
    "the module's punts as Server-Sent Events, as they come: `event: punt` with `data:` "
    "{reason, meta [4 integers], ifindex, nic, pkt_len, frame (base64 of the captured "
    "bytes), dropped (this stream's events lost to its full queue so far)}; a comment "
    "line every 15 s when quiet; `event: end` when the module goes. 409: too many streams"
)
#: an upload that compiles and runs: counts every frame of the LAN and passes it on
UPLOAD_EXAMPLE = {
    "name": "count_lan",
    "source": '#include "homegw_user.h"\n\nint count_lan(struct xdp_md *ctx)\n{\n'
    "\thgw_count(0);\n\treturn hgw_next_xdp(ctx);\n}\n",
    "nic": "lan",
    "hook": "xdp",
    "position": "last",
    "counters": ["frames"],
}
_USER_MODULE_OPERATIONS = (
    Op("post", f"{PREFIX}/modules", "upload a user module (C with homegw_user.h): checked, "
       "compiled with limits, loaded and chained on trial; 400 with the compiler's or the "
       "verifier's message and line", m.UserModule, 201, "ModuleUpload", (400, 409),
       bad_request=m.ModuleRefusal, example=UPLOAD_EXAMPLE),
    Op("get", f"{PREFIX}/modules/audit", "uploads, confirms, reverts, deletes, ... newest "
       "first", m.Audit, errors=(400,), query=(_query("limit", _int(1, 1000, 100)),)),
    Op("get", f"{PREFIX}/modules/examples", "the example modules, as uploads", m.Examples),
    Op("get", _USER, "one user module with its source", m.UserModuleDetail),
    Op("put", _USER, "a new version of a user module, switched in at once, on trial "
       "(reverting runs the old one again)", m.UserModule, request="ModuleUpload",
       errors=(400, 409), bad_request=m.ModuleRefusal),
    Op("delete", _USER, "take a user module out of its chain and forget it", status=204,
       errors=(409,)),
    Op("post", f"{_USER}/confirm", "end the trial: the module stays (saved, back after a "
       "restart)", m.UserModule, errors=(409,)),
    Op("post", f"{_USER}/revert", "end the trial by going back now", m.Reverted,
       errors=(409,)),
    Op("put", f"{_USER}/position", "move a user module in its chain", m.UserModule,
       request=m.PositionRequest, errors=(400, 409)),
    Op("get", _MAP, "the entries of an exposed map, as hex", m.MapEntries),
    Op("put", _MAP, "write one entry of an exposed map", status=204, request="MapEntry",
       errors=(400, 409)),
    Op("delete", f"{_MAP}/{{key}}", "delete one entry (404 when not there)", status=204,
       errors=(400,)),
    Op("get", f"{_USER}/punts", _STREAM, {"type": "string"}, content="text/event-stream",
       errors=(409,)),
    Op("post", f"{_USER}/packets", "send one Ethernet frame out of a NIC (through its TC "
       "egress chain): the module's slow path answering", status=204, request=m.PacketOut,
       errors=(400, 409)),
)  # fmt: skip

_BUNDLE = {"type": "string", "format": "binary", "description": "the .hgwup bundle"}
_SYSTEM_OPERATIONS = (
    Op("get", f"{PREFIX}/system", "version, image release, A/B slots, whether an upgrade "
       "can be done now", sm.SystemInfo),
    Op("post", f"{PREFIX}/system/upgrade", "write an upgrade bundle (the body, streamed) into "
       "the inactive slot, then reboot into it once (answered first); it becomes the active "
       "slot when it reaches ready, else the next boot falls back. Config and state are kept. "
       "400: the bundle was rejected (reason given); 409: not an image, or a trial pending",
       sm.UpgradeStarted, 202, _BUNDLE, (400, 409, 413), request_content="application/octet-stream",
       bad_request=m.Error),
    Op("post", f"{PREFIX}/system/factory-reset", "erase config and state: on an image at the "
       "next boot (rebooting now, 202), on a plain install at once (200; restart homegw)",
       sm.FactoryReset, 200, sm.FactoryResetRequest, (400, 409),
       extra_responses={202: "the machine reboots into its first boot"}),
)  # fmt: skip

OPERATIONS: tuple[Op, ...] = (
    Op("get", "/healthz", "liveness: 200 when ready, 503 before", m.Status, public=True,
       extra_responses={503: "not ready yet"}),
    Op("get", "/metrics", "Prometheus text (private when webui.metrics_public is false)",
       {"type": "string"}, public=True, content="text/plain", errors=(401,)),
    Op("get", f"{PREFIX}/openapi.json", "this document", OBJECT),
    Op("post", f"{PREFIX}/setup", "first start: create the admin with the setup token",
       m.LoggedIn, 201, m.SetupRequest, (400, 403, 409, 429), public=True),
    Op("post", f"{PREFIX}/auth/login", "open a web session (cookie)", m.LoggedIn,
       request=m.LoginRequest, errors=(400, 401, 409, 429), public=True),
    Op("post", f"{PREFIX}/auth/logout", "end this web session", status=204),
    Op("get", f"{PREFIX}/auth/csrf", "the CSRF token of this session", m.CsrfToken),
    Op("put", f"{PREFIX}/auth/password", "change the admin's password (ends every session)",
       status=204, request=m.PasswordRequest, errors=(400, 429)),
    Op("get", f"{PREFIX}/auth/tokens", "bearer tokens (never their secrets)", m.TokenList),
    Op("post", f"{PREFIX}/auth/tokens", "create a bearer token: its secret is shown once",
       m.TokenCreated, 201, m.TokenRequest, (400,)),
    Op("delete", f"{PREFIX}/auth/tokens/{{token_id}}", "revoke a token", status=204,
       errors=(404,)),
    Op("get", f"{PREFIX}/status", "WAN, LAN, uptime, version, per-NIC counters", m.Status),
    Op("get", f"{PREFIX}/config", "the running config", "Config"),
    Op("put", f"{PREFIX}/config", "replace the whole config", _APPLY, request="Config",
       errors=(400, 409)),
    Op("post", f"{PREFIX}/config/validate", "dry run of PUT /config", _APPLY, request="Config",
       errors=(400,)),
    Op("post", f"{PREFIX}/config/validate/{{section}}", "dry run of PUT /config/{section}",
       _APPLY, request=OBJECT, errors=(400, 404)),
    Op("get", f"{PREFIX}/config/history", "the last 10 applied configs, newest first",
       m.History),
    Op("post", f"{PREFIX}/config/rollback/{{version}}", "apply a kept config again", _APPLY,
       errors=(400, 404, 409)),
    Op("get", f"{PREFIX}/config/{{section}}", "one section of the running config", OBJECT,
       errors=(404,)),
    Op("put", f"{PREFIX}/config/{{section}}", "replace one section", _APPLY, request=OBJECT,
       errors=(400, 404, 409)),
    Op("get", f"{PREFIX}/modules", "every module: state, chain positions, counters",
       m.Modules),
    Op("post", f"{PREFIX}/modules/{{name}}/enable", "put a module in its chains",
       m.ModuleChange, errors=(400, 404, 409)),
    Op("post", f"{PREFIX}/modules/{{name}}/disable", "take a module out of its chains",
       m.ModuleChange, errors=(400, 404, 409)),
    Op("put", f"{PREFIX}/modules/order/{{nic}}", "re-order a NIC's chain", m.ModuleChange,
       request=m.OrderRequest, errors=(400, 404, 409)),
    *_USER_MODULE_OPERATIONS,
    Op("get", f"{PREFIX}/tables", "names of the tables", m.Tables),
    Op("get", f"{PREFIX}/tables/{{name}}", "one page of a table, filtered", m.Page,
       errors=(400, 404), query=_TABLE_QUERY),
    Op("post", f"{PREFIX}/actions/wan/renew", "renew the WAN DHCP lease now", m.Done,
       errors=(409,)),
    Op("post", f"{PREFIX}/actions/tables/{{name}}/flush", "empty a table", m.Flushed,
       errors=(404, 409)),
    Op("post", f"{PREFIX}/actions/modules/{{name}}/restart", "reload one module", m.Done,
       errors=(404, 409)),
    Op("get", f"{PREFIX}/devices", "every device the gateway knows, by name", m.Devices),
    Op("get", f"{PREFIX}/devices/{{mac}}", "one device with its 24 h traffic", m.DeviceDetail,
       errors=(400, 404)),
    Op("patch", f"{PREFIX}/devices/{{mac}}", "name or pause a device (a config change)", _APPLY,
       request=m.DeviceChange, errors=(400, 404, 409)),
    Op("get", f"{PREFIX}/traffic", "the LAN's traffic by hour, oldest first", m.Traffic,
       errors=(400,), query=(_query("hours", _int(1, 168, 24)),)),
    Op("get", f"{PREFIX}/dns/stats", "query log: totals, top domains, blocked, clients",
       m.DnsStats, errors=(400,), query=(_query("limit", _int(1, 100, 10)),)),
    Op("get", f"{PREFIX}/dns/blocklists", "every block list source and its state",
       m.Blocklists),
    Op("post", f"{PREFIX}/dns/blocklists", "upload a block list file (then name its source "
       "in dns.blocklists)", m.BlocklistStored, 201, _UPLOAD, (400, 413),
       request_content="multipart/form-data"),
    Op("post", f"{PREFIX}/actions/dns/blocklists/refresh", "download the URL lists again "
       "and reload every list", m.Done, errors=(409,)),
    Op("get", f"{PREFIX}/apps", "the application database: categories and apps "
       "(empty while DPI is off)", m.Apps),
    Op("get", f"{PREFIX}/apps/usage", "per-app usage by hour or day, oldest first",
       m.AppUsage, errors=(400, 404, 409), query=_APP_QUERY + (
           _query("bucket", {"type": "string", "enum": ["hour", "day"], "default": "hour"}),)),
    Op("get", f"{PREFIX}/apps/top", "the apps with the most bytes, most first", m.TopApps,
       errors=(400, 404, 409), query=_APP_QUERY + (_query("limit", _int(1, 100, 10)),)),
    Op("get", f"{PREFIX}/parental", "what the parental controls do now, per device",
       m.Parental, errors=(409,)),
    Op("post", f"{PREFIX}/parental/pause", "pause a device or a profile (a config change of "
       "dpi.pauses); minutes null: until midnight, 0: resume", _APPLY, request=m.PauseRequest,
       errors=(400, 409)),
    Op("get", f"{PREFIX}/logs", "the last log records, oldest first", m.Logs, errors=(400,),
       query=(_query("module", _name("only this module's records"), "router, nat, dhcp, "
                     "dns, firewall, dataplane, appliance, webui, ..."),
              _query("limit", _int(1, 500, 500)))),
    Op("get", f"{PREFIX}/alerts", "what needs the owner's eye now", m.Alerts),
    Op("post", f"{PREFIX}/actions/restart", "restart the whole appliance (answered first; "
       "the datapath keeps forwarding)", m.Done),
    *_SYSTEM_OPERATIONS,
)  # fmt: skip


def _ref(schema: Schema) -> dict[str, Any]:
    if isinstance(schema, str):
        return {"$ref": REF.format(model=schema)}
    if isinstance(schema, dict):
        return schema
    return {"$ref": REF.format(model=schema.__name__)}


def _json(schema: Schema, content: str = "application/json") -> dict[str, Any]:
    return {content: {"schema": _ref(schema)}}


def _responses(op: Op) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "done"}
    if op.response is not None:
        ok["content"] = _json(op.response, op.content)
    responses: dict[str, Any] = {str(op.status): ok}
    codes = set(op.errors)
    if not op.public:
        codes.add(401)
        if op.method in UNSAFE:
            codes.add(403)
    if op.request is not None:
        codes.add(400)
    if "{" in op.path:
        codes.add(404)
    for code in sorted(codes):
        text, model = _ERRORS[code]
        if code == 400 and op.bad_request is not None:
            model = op.bad_request
        responses[str(code)] = {"description": text, "content": _json(model)}
        if code in _HEADERS:
            responses[str(code)]["headers"] = _HEADERS[code]
    for code, text in op.extra_responses.items():
        responses[str(code)] = {"description": text, "content": _json(op.response or m.Error)}
    return responses


def _operation(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{op.method}_{op.path.removeprefix(PREFIX)}",
        "summary": op.summary,
        "responses": _responses(op),
    }
    params = [
        {"name": p, "in": "path", "required": True, "schema": _PATH_PARAMS[p]}
        for p in _PATH_PARAMS
        if f"{{{p}}}" in op.path
    ]
    params += list(op.query)
    if params:
        out["parameters"] = params
    if op.request is not None:
        content = _json(op.request, op.request_content)
        if op.example is not None:
            content[op.request_content]["examples"] = {"example": {"value": op.example}}
        out["requestBody"] = {"required": True, "content": content}
    if op.public:
        out["security"] = []
    return out


def _schemas() -> dict[str, Any]:
    wanted = [
        value
        for value in vars(m).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == m.__name__
    ]
    wanted += m.SHARED_MODELS + sm.MODELS
    pairs = [(model, "validation") for model in wanted] + [(Config, "validation")]
    _keys, top = models_json_schema(pairs, ref_template=REF)
    return top["$defs"]


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "homegw management API",
            "version": "1",
            "description": "Every path needs a login but /healthz, /metrics (unless "
            "webui.metrics_public is false), login and setup. Cookie sessions send "
            "X-CSRFToken with every POST, PUT and DELETE.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "homegw_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
