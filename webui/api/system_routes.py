"""/api/v1/system: the version and A/B state, an upgrade (the bundle as the
request body, read in chunks straight into the inactive slot) and the
factory reset. Thin calls of homegw.control.Control, as in routes.py.

Only the upgrade takes a big body: its request limit is raised to
MAX_BUNDLE_BYTES before anything reads the body (a URL value preprocessor
runs ahead of the login and CSRF checks); every other route keeps the app's
MAX_CONTENT_LENGTH. The reboot after a 202 starts once the answer is out.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from homegw.control import Control
from homegw.upgrade.bundle import CHUNK, MAX_BUNDLE_BYTES
from homegw.upgrade.manifest import BundleRejected
from webui.api.errors import BadInput, body
from webui.api.system_models import FactoryResetRequest
from webui.security import state

BUNDLE_TYPE = "application/octet-stream"
#: endpoints whose body may be a bundle (the System page's form too)
BIG_BODY_ENDPOINTS = {"api.system_upgrade", "system.upgrade"}


class ChunkedBody:
    """The request body as a file object whose reads never exceed a chunk."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK:
            size = CHUNK
        return self._stream.read(size)


def admit_bundles(_endpoint: str | None, _values: dict[str, Any] | None) -> None:
    """A URL value preprocessor: a bundle's endpoint may take a big body."""
    if request.endpoint in BIG_BODY_ENDPOINTS:
        request.max_content_length = MAX_BUNDLE_BYTES


def _rejected(exc: BundleRejected) -> tuple[Response, int]:
    return jsonify(error=f"bundle rejected: {exc.reason}; no slot was marked for trial"), 400


def answered_then_reboot(control: Control, payload: dict[str, Any], status: int) -> Response:
    """The answer; when it says so, the reboot starts once it is sent."""
    response = jsonify(payload)
    response.status_code = status
    if payload.get("rebooting"):
        response.call_on_close(control.system_reboot)
    return response


def add_routes(bp: Blueprint) -> None:
    bp.url_value_preprocessor(admit_bundles)
    bp.register_error_handler(BundleRejected, _rejected)

    @bp.get("/system")
    def system() -> Response:
        return jsonify(state().control.system())

    @bp.post("/system/upgrade")
    def system_upgrade() -> Response:
        if request.mimetype != BUNDLE_TYPE:
            raise BadInput(f"send the bundle (.hgwup) as the body with Content-Type: {BUNDLE_TYPE}")
        control = state().control
        result = control.system_upgrade(ChunkedBody(request.stream))
        return answered_then_reboot(control, result, 202)

    @bp.post("/system/factory-reset")
    def system_factory_reset() -> Response:
        body(FactoryResetRequest)
        control = state().control
        result = control.system_factory_reset()
        return answered_then_reboot(control, result, 202 if result.get("rebooting") else 200)
