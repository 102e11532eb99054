"""The punt stream (GET /api/v1/modules/user/<name>/punts) through a real
waitress server and a real HTTP client: each event sent at once (not
buffered), keep-alives, the end when the module goes, the subscription
closed when the client goes, and streams bounded so that the rest of the
API keeps its threads. The fake Control's module_punts is a real PuntHub
subscription; punts are published from another thread."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from homegw.dataplane.slowpath import Punt
from tests.unit.fake_control import FakeControl
from tests.unit.fake_user_modules import PASS_SOURCE
from tests.unit.test_api import bearer
from webui import create_app
from webui.api import module_routes
from webui.server import DRAIN_S, REQUEST_THREADS, WebServer

TIMEOUT_S = 10.0  # a read that gets nothing for this long fails the test
FRAME = bytes.fromhex("02000000000102000000000a0800") + bytes(range(50))


class Served:
    def __init__(self, server: WebServer, control: FakeControl, token: dict[str, str]) -> None:
        self.server = server
        self.control = control
        self.token = token
        self.port = int(server.url.rsplit(":", 1)[1].rstrip("/"))

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            headers = dict(self.token, **({"Content-Type": "application/json"} if body else {}))
            connection.request(method, path, json.dumps(body) if body else None, headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            connection.close()

    def stream(self, module: str = "blocker") -> Stream:
        return Stream(self, f"/api/v1/modules/user/{module}/punts")


class Stream:
    """One SSE client: blocks on the socket, never sleeps."""

    def __init__(self, served: Served, path: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=TIMEOUT_S)
        self.connection.request("GET", path, headers=served.token)
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def message(self) -> str:
        """The next message (up to its blank line), as text."""
        lines = []
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError(f"the stream ended after {lines!r}")
            if line == b"\n":
                return "".join(lines)
            lines.append(line.decode())

    def event(self) -> tuple[str, dict[str, Any]]:
        text = self.message()
        fields = dict(line.split(": ", 1) for line in text.splitlines())
        return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.response.close()
        self.connection.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    control = FakeControl()
    app = create_app(control, tmp_path)
    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    served = Served(server, control, bearer(app))
    upload = {"name": "blocker", "source": PASS_SOURCE, "nic": "lan"}
    assert served.request("POST", "/api/v1/modules", upload)[0] == 201
    yield served
    control.punt_hub.close_all()  # as the appliance does before the server stops
    server.stop()


def punt(reason: int, meta0: int = 0) -> Punt:
    return Punt(module=200, reason=reason, ifindex=4, pkt_len=1200, meta=(meta0, 0, 0, 7),
                packet=FRAME)  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    ready = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "the state was not reached in time"
        ready.wait(0.02)


def publish_later(served: Served, *punts: Punt, nic: str = "lan") -> threading.Thread:
    thread = threading.Thread(
        target=lambda: [served.control.punt_hub.publish("blocker", p, nic) for p in punts]
    )
    thread.start()
    return thread


def test_each_punt_arrives_at_once_as_an_event(served: Served) -> None:
    stream = served.stream()
    assert stream.status == 200
    assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert stream.response.getheader("Transfer-Encoding") == "chunked"
    assert stream.message() == ": subscribed\n"  # the subscription is made
    for reason in (1, 2, 3):  # one at a time: a buffered stream would time out here
        publish_later(served, punt(reason, meta0=reason * 10)).join()
        name, data = stream.event()
        assert name == "punt"
        assert data == {
            "reason": reason,
            "meta": [reason * 10, 0, 0, 7],
            "ifindex": 4,
            "nic": "lan",
            "pkt_len": 1200,
            "frame": base64.b64encode(FRAME).decode(),
            "dropped": 0,
        }
    stats = served.control.punt_hub.stats("blocker")
    assert stats == {"subscribers": 1, "delivered": 3, "dropped": 0}
    status, module = served.request("GET", "/api/v1/modules/user/blocker")
    assert status == 200 and module["punts"]["subscribers"] == 1
    stream.close()


def test_a_quiet_stream_sends_keep_alives(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module_routes, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(module_routes, "CLIENT_CHECK_S", 0.05)
    stream = served.stream()
    assert stream.message() == ": subscribed\n"
    assert stream.message() == ": keep-alive\n"
    publish_later(served, punt(9), nic="wan").join()
    assert stream.event()[1]["nic"] == "wan"
    stream.close()


def test_the_stream_ends_when_the_module_goes(served: Served) -> None:
    stream = served.stream()
    assert stream.message() == ": subscribed\n"
    publish_later(served, punt(1))
    assert stream.event()[0] == "punt"
    assert served.request("DELETE", "/api/v1/modules/user/blocker")[0] == 204
    assert stream.event() == ("end", {"module": "blocker", "reason": "the module went"})
    assert stream.response.read() == b""  # the last chunk: the response is complete
    assert served.control.punt_hub.stats("blocker")["subscribers"] == 0
    assert served.request("GET", "/api/v1/modules/user/blocker/punts")[0] == 404
    stream.close()


def test_a_client_gone_closes_its_subscription(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module_routes, "CLIENT_CHECK_S", 0.05)
    hub = served.control.punt_hub
    streams = [served.stream() for _ in range(module_routes.MAX_STREAMS)]
    for stream in streams:
        assert stream.message() == ": subscribed\n"
    assert hub.stats("blocker")["subscribers"] == module_routes.MAX_STREAMS
    streams.pop().close()  # no punt comes: the server sees the socket close
    wait_until(lambda: hub.stats("blocker")["subscribers"] == module_routes.MAX_STREAMS - 1)
    again = served.stream()  # its place is free again
    assert again.status == 200 and again.message() == ": subscribed\n"
    for stream in [*streams, again]:
        stream.close()
    wait_until(lambda: hub.stats("blocker")["subscribers"] == 0)


def test_streams_are_bounded_and_the_api_keeps_its_threads(served: Served) -> None:
    assert served.control.punt_hub.max_subscribers == module_routes.MAX_STREAMS
    streams = [served.stream() for _ in range(module_routes.MAX_STREAMS)]
    for stream in streams:
        assert stream.message() == ": subscribed\n"
    refused = served.stream()
    assert refused.status == 409
    assert "punt streams are open" in json.loads(refused.response.read())["error"]
    refused.close()
    # every request thread is free: as many requests at once as there are
    answers: list[int] = []
    workers = [
        threading.Thread(target=lambda: answers.append(served.request("GET", "/api/v1/status")[0]))
        for _ in range(REQUEST_THREADS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=TIMEOUT_S)
    assert answers == [200] * REQUEST_THREADS
    served.control.punt_hub.close_module("blocker")
    for stream in streams:
        assert stream.event() == ("end", {"module": "blocker", "reason": "the module went"})
        stream.close()


def test_a_full_queue_is_told_in_the_next_event(served: Served) -> None:
    hub = served.control.punt_hub
    hub.queue_size = 8  # the streams subscribed from now on
    stream = served.stream()
    assert stream.message() == ": subscribed\n"
    # the server reads the queue as fast as it can send: flood past the queue
    # while the client reads nothing, so that the socket's buffers fill too
    flood = publish_later(served, *[punt(1, meta0=i) for i in range(20_000)])
    flood.join(timeout=60)
    assert not flood.is_alive()
    dropped = hub.stats("blocker")["dropped"]
    assert dropped > 0
    seen = []
    while len(seen) < 20_000 - dropped:
        seen.append(stream.event()[1])
    assert seen[-1]["dropped"] == dropped
    assert [e["meta"][0] for e in seen] == sorted(e["meta"][0] for e in seen)
    stream.close()


def test_a_stopping_server_ends_its_streams_at_once(served: Served) -> None:
    stream = served.stream()
    assert stream.message() == ": subscribed\n"
    began = time.monotonic()
    stopping = threading.Thread(target=served.server.stop)
    stopping.start()
    assert stream.event() == ("end", {"module": "blocker", "reason": "the server stops"})
    stopping.join(timeout=TIMEOUT_S)
    assert not stopping.is_alive()
    assert time.monotonic() - began < DRAIN_S  # the stream did not hold the stop up
    assert served.control.punt_hub.stats("blocker")["subscribers"] == 0
    stream.close()


def test_a_loop_that_cannot_be_woken_still_stops(served: Served) -> None:
    """Seen once in CI: the loop's trigger pipe was closed under it (by a
    close of a descriptor number reused meanwhile). stop() ends the loop from
    its own thread then, and every connection is closed."""
    stream = served.stream()
    assert stream.message() == ": subscribed\n"
    trigger = served.server._server.trigger
    os.close(trigger.trigger)  # the write end: pulling it fails with EBADF
    trigger._fds = [trigger._fds[0]]  # (its close must not close that number again)
    served.server.stop()
    assert stream.event() == ("end", {"module": "blocker", "reason": "the server stops"})
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", served.port, timeout=TIMEOUT_S).connect()
    stream.close()
