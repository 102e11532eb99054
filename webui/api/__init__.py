"""The management API under /api/v1 (JSON): a Flask blueprint over
homegw.control.Control. Paths and bodies: openapi.py (served at
/api/v1/openapi.json)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from webui.api import module_routes, routes, session_routes, system_routes, ui_routes
from webui.api.openapi import document


def blueprint() -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(document())

    routes.add_routes(bp)
    module_routes.add_routes(bp)
    ui_routes.add_routes(bp)
    session_routes.add_routes(bp)
    system_routes.add_routes(bp)
    return bp
