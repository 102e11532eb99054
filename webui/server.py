"""Serve the Flask app from a thread of the appliance process."""

from __future__ import annotations

import logging
import socketserver
import threading

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer

log = logging.getLogger(__name__)


class _Server(ThreadedWSGIServer):
    def server_bind(self) -> None:
        # http.server looks up the listen address's FQDN here: a reverse DNS
        # query that stalls start-up for 10 s when no resolver answers (a
        # gateway is often its own resolver, not running yet). The name is unused.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._server = _Server(host, port, app)
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
