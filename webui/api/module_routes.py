"""/api/v1 routes of user IO modules (homegw/usermodules): upload, read,
replace, delete, the trial (confirm, revert), the place in the chain, the
exposed maps, the audit log, the examples, the punt stream (Server-Sent
Events) and the packets a controller sends back out. Each is a thin call of
homegw.control.Control, as in routes.py; user modules live under
/modules/user/<name>, apart from the built-in names and /modules/order.

A punt stream holds one of the web server's threads for as long as it is
open: at most MAX_STREAMS are open at once (webui/server.py keeps as many
threads again for everything else), the next is a 409.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from homegw.control import Conflict, Control, NotFound
from homegw.usermodules.punts import Closed, Subscription
from homegw.usermodules.spec import MapEntry, ModuleUpload, name_problem
from webui.api.errors import BadInput, body
from webui.api.models import AuditQuery, PacketOut, PositionRequest
from webui.api.routes import _name
from webui.api.ui_routes import query
from webui.security import state

log = logging.getLogger(__name__)

STREAMS_KEY = "homegw.punt_streams"  # app.extensions: the Streams of the app
USER = "/modules/user/<name>"
MAP = f"{USER}/maps/<map_name>"
MAP_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
KEY_HEX = re.compile(r"^([0-9a-f]{2}){1,256}$")
MAX_STREAMS = 4  # punt streams open at once, over every module
KEEPALIVE_S = 15.0  # a comment line when no punt came for this long
CLIENT_CHECK_S = 1.0  # how often a quiet stream looks whether its client went


def _control() -> Control:
    return state().control


def _admin() -> str | None:
    """The address the caller is connected from: a trial's health check
    pings it, the audit log names it."""
    return request.remote_addr


def _upload() -> ModuleUpload:
    upload = body(ModuleUpload)
    why = name_problem(upload.name)
    if why:
        raise BadInput("invalid request", [{"loc": "name", "msg": why}])
    return upload


def _map_name(value: str) -> str:
    if not MAP_NAME.match(value):
        raise NotFound(f"no map {value!r}")
    return value


def add_routes(bp: Blueprint) -> None:
    _modules(bp)
    _trial_and_place(bp)
    _maps(bp)
    streams = Streams()
    bp.record_once(lambda setup: setup.app.extensions.setdefault(STREAMS_KEY, streams))
    _slow_path(bp, streams)


def end_streams(app: Flask, reason: str) -> None:
    """End the app's open punt streams (the server stops: none holds it up)."""
    streams = app.extensions.get(STREAMS_KEY)
    if streams is not None:
        streams.end_all(reason)


def _modules(bp: Blueprint) -> None:
    @bp.post("/modules")
    def module_upload() -> tuple[Response, int]:
        upload = _upload()
        return jsonify(_control().module_upload(upload.model_dump(), _admin())), 201

    @bp.get(USER)
    def user_module(name: str) -> Response:
        return jsonify(_control().user_module(_name(name, "user module")))

    @bp.put(USER)
    def module_replace(name: str) -> Response:
        name = _name(name, "user module")
        upload = _upload()
        if upload.name != name:
            problem = {"loc": "name", "msg": f"must be {name!r}, the module replaced"}
            raise BadInput("invalid request", [problem])
        return jsonify(_control().module_replace(name, upload.model_dump(), _admin()))

    @bp.delete(USER)
    def module_delete(name: str) -> tuple[str, int]:
        _control().module_delete(_name(name, "user module"), caller=_admin())
        return "", 204

    @bp.get("/modules/audit")
    def module_audit() -> Response:
        return jsonify(entries=_control().module_audit(query(AuditQuery).limit))

    @bp.get("/modules/examples")
    def module_examples() -> Response:
        return jsonify(examples=_control().module_examples())


def _trial_and_place(bp: Blueprint) -> None:
    @bp.post(f"{USER}/confirm")
    def module_confirm(name: str) -> Response:
        return jsonify(_control().module_confirm(_name(name, "user module"), caller=_admin()))

    @bp.post(f"{USER}/revert")
    def module_revert(name: str) -> Response:
        name = _name(name, "user module")
        module = _control().module_revert(name, caller=_admin())
        return jsonify(name=name, removed=module is None, module=module)

    @bp.put(f"{USER}/position")
    def module_move(name: str) -> Response:
        name = _name(name, "user module")
        position = body(PositionRequest).position
        return jsonify(_control().module_move(name, position, caller=_admin()))


def _maps(bp: Blueprint) -> None:
    @bp.get(MAP)
    def module_map(name: str, map_name: str) -> Response:
        name, map_name = _name(name, "user module"), _map_name(map_name)
        return jsonify(entries=_control().module_map(name, map_name))

    @bp.put(MAP)
    def module_map_set(name: str, map_name: str) -> tuple[str, int]:
        name, map_name = _name(name, "user module"), _map_name(map_name)
        entry = body(MapEntry)
        _control().module_map_set(name, map_name, entry.key, entry.value, caller=_admin())
        return "", 204

    @bp.delete(f"{MAP}/<key>")
    def module_map_delete(name: str, map_name: str, key: str) -> tuple[str, int]:
        name, map_name = _name(name, "user module"), _map_name(map_name)
        if not KEY_HEX.match(key):
            problem = {"loc": "key", "msg": "hex of the key's bytes (lower case, 2 digits a byte)"}
            raise BadInput("invalid request", [problem])
        if not _control().module_map_delete(name, map_name, key, caller=_admin()):
            raise NotFound(f"no key {key} in {name}.{map_name}")
        return "", 204


def _slow_path(bp: Blueprint, streams: Streams) -> None:
    @bp.get(f"{USER}/punts")
    def module_punts(name: str) -> Response:
        name = _name(name, "user module")
        gone = request.environ.get("waitress.client_disconnected", _never)
        stream = streams.open(lambda: _control().module_punts(name), gone)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return Response(stream, mimetype="text/event-stream", headers=headers)

    @bp.post(f"{USER}/packets")
    def module_packet_out(name: str) -> tuple[str, int]:
        name = _name(name, "user module")
        packet = body(PacketOut)
        _control().module_packet_out(name, packet.nic, packet.frame_bytes())
        return "", 204


def _never() -> bool:
    return False


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class PuntStream:
    """The body of a punt stream: ``event: punt`` for each punt, a comment
    every KEEPALIVE_S when quiet, ``event: end`` {module, reason} when the
    module went or the server stops. The server calls close() when the
    stream ends or its client went (also when iteration never began): the
    subscription is closed, the stream's place freed."""

    def __init__(
        self,
        subscription: Subscription,
        release: Callable[[PuntStream], None],
        gone: Callable[[], bool],
    ) -> None:
        self._subscription = subscription
        self._release = release
        self._gone = gone
        self._closed = False
        self._end_reason = "the module went"
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        yield b": subscribed\n\n"  # the headers go out now: the client knows it is listening
        quiet_since = time.monotonic()
        while True:
            try:
                event = self._subscription.next_event(CLIENT_CHECK_S)
            except Closed:
                yield sse("end", {"module": self._subscription.module, "reason": self._end_reason})
                return
            now = time.monotonic()
            if event is not None:
                yield sse("punt", event)
                quiet_since = now
            elif self._gone():
                log.info("punt stream of %s: the client went", self._subscription.module)
                return
            elif now - quiet_since >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = now

    def end(self, reason: str) -> None:
        """End the stream from elsewhere: the client gets ``event: end``."""
        self._end_reason = reason
        self._subscription.close()  # a waiting next_event raises Closed now

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._subscription.close()
        self._release(self)


class Streams:
    """An app's open punt streams: at most MAX_STREAMS at once (each holds
    a server thread), all ended when the server stops."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._taken = 0  # places: streams open or being opened
        self._open: set[PuntStream] = set()
        self._ended: str | None = None

    def open(self, subscribe: Callable[[], Subscription], gone: Callable[[], bool]) -> PuntStream:
        with self._lock:
            if self._ended is not None:
                raise Conflict(f"no new punt streams: {self._ended}")
            if self._taken >= self.limit:
                raise Conflict(f"{self.limit} punt streams are open (the most at once): close one")
            self._taken += 1
        try:
            stream = PuntStream(subscribe(), self._free, gone)
        except BaseException:
            self._free(None)
            raise
        with self._lock:
            self._open.add(stream)
        return stream

    def _free(self, stream: PuntStream | None) -> None:
        with self._lock:
            self._taken -= 1
            self._open.discard(stream)  # type: ignore[arg-type]

    def end_all(self, reason: str) -> None:
        with self._lock:
            self._ended = reason
            streams = list(self._open)
        for stream in streams:
            stream.end(reason)
