"""Serve the Flask app with waitress (a production WSGI server, pure
Python) from a thread of the appliance process."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from waitress.server import create_server

log = logging.getLogger(__name__)

THREADS = 4  # concurrent requests; more wait in waitress's queue
CONNECTION_LIMIT = 64
CHANNEL_TIMEOUT_S = 30  # idle keep-alive connections are closed after this


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        # waitress binds here, so a taken port fails start-up, not the thread
        self._channels: dict = {}  # waitress's socket map: the listener and connections
        self._server = create_server(
            app,
            map=self._channels,
            host=host,
            port=port,
            threads=THREADS,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT_S,
            ident="homegw",
            clear_untrusted_proxy_headers=True,
        )
        self._thread = threading.Thread(target=self._server.run, name="webui", daemon=True)
        self._stopped = False
        port = self._server.effective_port
        self.url = f"http://{host}:{port}/"

    def start(self) -> None:
        self._thread.start()
        log.info("web UI listening on %s", self.url)

    def stop(self) -> None:
        """Close the listening socket and every connection from waitress's
        own loop thread (its trigger), then end the worker threads."""
        if self._stopped:
            return
        self._stopped = True
        server = self._server

        def close_all() -> None:
            for channel in list(self._channels.values()):
                channel.close()

        if self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout=5)
        else:
            close_all()
        server.task_dispatcher.shutdown(timeout=5)
