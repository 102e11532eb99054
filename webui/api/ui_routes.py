"""/api/v1 routes of what the web UI's pages show and do beyond the config:
devices (names, pause, traffic), DNS statistics and block lists, the
applications DPI sees and the parental controls in force (pause), logs,
alerts, and the restart of the whole appliance. Each is a thin call of
homegw.control.Control, as in routes.py."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, TypeAdapter, ValidationError

from homegw.configtypes import MacAddress
from homegw.control import Control
from homegw.modules.dns.liststore import MAX_UPLOAD
from webui.api.errors import BadInput, body, parse
from webui.api.models import (
    AppUsageQuery,
    DeviceChange,
    DnsStatsQuery,
    LogsQuery,
    PauseRequest,
    TopAppsQuery,
    TrafficQuery,
)
from webui.security import state

M = TypeVar("M", bound=BaseModel)
UPLOAD_ENDPOINT = "api.blocklist_upload"
UPLOAD_BODY = MAX_UPLOAD + 64 * 1024  # the file and the multipart framing around it
_MAC = TypeAdapter(MacAddress)


def mac_address(text: str) -> str:
    """A MAC in any common form (aa:bb:.., AA-BB-.., aabb.ccdd.eeff,
    aabbccddeeff) as aa:bb:cc:dd:ee:ff; else a 400."""
    try:
        return _MAC.validate_python(text)
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise BadInput(message) from None


def _control() -> Control:
    return state().control


def query(model: type[M]) -> M:
    """The query string as `model`: each parameter at most once."""
    values: dict[str, Any] = {}
    for key in request.args:
        given = request.args.getlist(key)
        if len(given) > 1:
            raise BadInput(f"query parameter {key!r} given {len(given)} times")
        values[key] = given[0]
    return parse(model, values)


def add_routes(bp: Blueprint) -> None:
    _devices(bp)
    _dns(bp)
    _apps(bp)
    _system(bp)


def _devices(bp: Blueprint) -> None:
    @bp.get("/devices")
    def devices() -> Response:
        return jsonify(devices=_control().devices())

    @bp.get("/devices/<mac>")
    def device(mac: str) -> Response:
        return jsonify(_control().device(mac_address(mac)))

    @bp.patch("/devices/<mac>")
    def device_set(mac: str) -> Response:
        address = mac_address(mac)
        change = body(DeviceChange)
        if not change.model_fields_set:
            raise BadInput("give name (a string, or null to forget it) and/or paused")
        changes = change.model_dump(include=change.model_fields_set)
        return jsonify(asdict(_control().device_set(address, changes)))

    @bp.get("/traffic")
    def traffic() -> Response:
        return jsonify(traffic=_control().traffic_history(query(TrafficQuery).hours))


def _dns(bp: Blueprint) -> None:
    @bp.url_value_preprocessor
    def allow_big_uploads(endpoint: str | None, _values: dict[str, Any] | None) -> None:
        # Runs before every before_request (the CSRF check reads the form of
        # a cookie session's POST): only the upload may be over the app's
        # MAX_CONTENT_LENGTH.
        if endpoint == UPLOAD_ENDPOINT:
            request.max_content_length = UPLOAD_BODY

    @bp.get("/dns/stats")
    def dns_stats() -> Response:
        return jsonify(_control().dns_stats(query(DnsStatsQuery).limit))

    @bp.get("/dns/blocklists")
    def blocklists() -> Response:
        return jsonify(blocklists=_control().blocklists())

    @bp.post("/dns/blocklists")
    def blocklist_upload() -> tuple[Response, int]:
        if request.mimetype != "multipart/form-data":
            raise BadInput("send the list as multipart/form-data: a field name and a file file")
        upload = request.files.get("file")
        name = request.form.get("name")
        if upload is None or name is None:
            missing = [k for k, v in (("name", name), ("file", upload)) if v is None]
            raise BadInput(f"missing form field(s): {', '.join(missing)}")
        stored = _control().blocklist_store(name, upload.read(MAX_UPLOAD + 1))
        return jsonify(stored), 201

    @bp.post("/actions/dns/blocklists/refresh")
    def blocklists_refresh() -> Response:
        _control().blocklists_refresh()
        return jsonify(done=True, action="dns/blocklists/refresh")


def _apps(bp: Blueprint) -> None:
    @bp.get("/apps")
    def apps() -> Response:
        return jsonify(_control().apps())

    @bp.get("/apps/usage")
    def app_usage() -> Response:
        wanted = query(AppUsageQuery)
        return jsonify(usage=_control().app_usage(wanted.mac, wanted.hours, wanted.bucket))

    @bp.get("/apps/top")
    def top_apps() -> Response:
        wanted = query(TopAppsQuery)
        return jsonify(apps=_control().top_apps(wanted.mac, wanted.hours, wanted.limit))

    @bp.get("/parental")
    def parental() -> Response:
        return jsonify(_control().parental())

    @bp.post("/parental/pause")
    def pause() -> Response:
        wanted = body(PauseRequest)
        return jsonify(asdict(_control().pause(wanted.target, wanted.minutes)))


def _system(bp: Blueprint) -> None:
    @bp.get("/logs")
    def logs() -> Response:
        wanted = query(LogsQuery)
        return jsonify(logs=_control().logs(wanted.module, wanted.limit))

    @bp.get("/alerts")
    def alerts() -> Response:
        return jsonify(alerts=_control().alerts())

    @bp.post("/actions/restart")
    def restart() -> Response:
        _control().restart()  # answered first: the restart stops this server
        return jsonify(done=True, action="restart")
