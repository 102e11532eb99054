"""Serve the Flask app with waitress (a production WSGI server, pure
Python) from a thread of the appliance process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server

from homegw import supervise
from homegw.upgrade.bundle import MAX_BUNDLE_BYTES
from webui.api.module_routes import MAX_STREAMS, end_streams

log = logging.getLogger(__name__)

REQUEST_THREADS = 4  # concurrent requests; more wait in waitress's queue
# an open punt stream (SSE) holds a thread: as many again, so that the UI and
# the API keep REQUEST_THREADS however many streams are open
THREADS = REQUEST_THREADS + MAX_STREAMS
CONNECTION_LIMIT = 64
CHANNEL_TIMEOUT_S = 30  # idle keep-alive connections are closed after this
DRAIN_S = 5  # at stop, answers in flight get this long to be sent
DRAIN_POLL_S = 0.02
LOOP_END_S = 2  # a loop whose trigger broke is given this long to end


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
            # keep reading while a request runs, so that a stream sees its
            # client go (environ["waitress.client_disconnected"])
            channel_request_lookahead=1,
            ident="homegw",
            # an upgrade bundle is the one big body (webui/api/system_routes.py);
            # Flask's MAX_CONTENT_LENGTH keeps every other route's limit small.
            # waitress holds a body in a temp file (TMPDIR) until it is whole
            max_request_body_size=MAX_BUNDLE_BYTES,
            clear_untrusted_proxy_headers=True,
        )
        self._app = app
        self._thread = supervise.Thread(self._server.run, "webui")
        self._stopped = False
        self.url = f"http://{host}:{self._server.effective_port}/"

    def start(self) -> None:
        self._thread.start()
        log.info("web UI listening on %s", self.url)

    def _in_loop(self, thunk: Callable[[], object]) -> None:
        """Run `thunk` in waitress's loop thread, which owns the sockets; here
        if that loop has ended or cannot be woken (its trigger's pipe closed
        under it: then its select fails and the loop ends)."""
        if self._thread.is_alive():
            try:
                self._server.trigger.pull_trigger(thunk)
                return
            except OSError as exc:
                log.error("the web UI's loop cannot be woken (%s): stopping it from here", exc)
                self._thread.join(timeout=LOOP_END_S)
        thunk()

    def _busy(self) -> bool:
        """A connection has a request in flight or an answer not yet sent."""
        return any(
            isinstance(c, HTTPChannel) and (c.requests or c.total_outbufs_len)
            for c in list(self._channels.values())
        )

    def stop(self) -> None:
        """Stop listening, end the punt streams, let the answers in flight
        go out (an API call that restarts the appliance is answered first),
        then close every connection and end the worker threads."""
        if self._stopped:
            return
        self._stopped = True
        server = self._server
        self._in_loop(lambda: wasyncore.dispatcher.close(server))
        end_streams(self._app, "the server stops")  # open punt streams end at once
        deadline = time.monotonic() + DRAIN_S
        while self._busy() and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)

        def close_all() -> None:
            for channel in list(self._channels.values()):
                channel.close()

        self._in_loop(close_all)
        self._thread.join(timeout=5)
        server.task_dispatcher.shutdown(timeout=5)
