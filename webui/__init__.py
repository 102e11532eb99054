"""The web UI and the management API (Flask app factory).

create_app() builds the app over the appliance's homegw.control.Control:
/healthz and /metrics, the JSON API under /api/v1 (webui.api), login for
everything else (webui.security). At its first start without an admin it
writes the one-time setup token; at every start, a new local token for the
CLI (both 0600 in state_dir).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, jsonify, request

from homegw.auth import AuthStore
from homegw.control import Control
from webui import metrics, views
from webui.api import blueprint
from webui.api import errors as api_errors
from webui.security import WebState, install, load_secret_key

MAX_BODY = 4 * 1024 * 1024  # a config with long lists fits; a flood does not
STARTED_KEY = "homegw.started"


def _server_timing(app: Flask) -> None:
    """Every answer says how long the app took to make it (the Server-Timing
    header, in ms): what bench/webui_bench.py measures, seen in a browser's
    developer tools too."""

    @app.before_request
    def started() -> None:
        request.environ[STARTED_KEY] = time.perf_counter()

    @app.after_request
    def timed(response: Response) -> Response:
        began = request.environ.get(STARTED_KEY)
        if began is not None:
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1e3:.1f}"
        return response


def create_app(
    control: Control, state_dir: Path | str, clock: Callable[[], float] = time.time
) -> Flask:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    auth = AuthStore(state_dir)
    auth.ensure_setup_token()
    auth.write_local_token()

    app = Flask(__name__)
    app.config.update(SECRET_KEY=load_secret_key(state_dir), MAX_CONTENT_LENGTH=MAX_BODY)
    app.json.sort_keys = False
    _server_timing(app)  # first: the time includes the login check
    install(app, WebState(control, auth, clock=clock))
    api_errors.install(app)
    app.register_blueprint(blueprint())
    views.register(app)
    registry = metrics.registry(control, state_dir)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        current = control.status()
        return jsonify(current), 200 if current.get("ready") else 503

    @app.get("/metrics", endpoint="metrics")
    def metrics_text() -> Response:
        return Response(metrics.exposition(registry), content_type=metrics.CONTENT_TYPE)

    return app
