"""Serve the Flask app from a thread of the appliance process."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webui", daemon=True
        )
        self.url = f"http://{host}:{port}/"

    def start(self) -> None:
        self._thread.start()
        log.info("web UI listening on %s", self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
