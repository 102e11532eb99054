"""The web UI and JSON API (Flask app factory). For now: /healthz."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

StatusProvider = Callable[[], dict[str, Any]]


def create_app(status: StatusProvider) -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():  # noqa: ANN202
        current = status()
        code = 200 if current.get("ready") else 503
        return jsonify(current), code

    return app
