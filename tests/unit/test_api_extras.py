"""/metrics, the OpenAPI document, sd_notify, the systemd unit, and the CLI
against a real waitress server (over a fake Control)."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from flask import Flask

from homegw import sdnotify
from homegw.auth import AuthStore
from homegw.cli import main
from homegw.control import Sample
from tests.unit.fake_control import FakeControl
from tests.unit.test_api import OPEN_PATHS, _is_page, bearer
from webui import create_app
from webui.api.openapi import PREFIX, document
from webui.server import WebServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def app(tmp_path: Path, control: FakeControl) -> Flask:
    return create_app(control, tmp_path / "state")


# -- metrics -----------------------------------------------------------------


def test_metrics_carry_the_samples_rss_and_start_count(
    tmp_path: Path, app: Flask, control: FakeControl
) -> None:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'homegw_router_packets_total{nic="lan",reason="ok"} 5.0' in text
    assert 'homegw_router_packets_total{nic="wan",reason="ok"} 7.0' in text
    assert "# TYPE homegw_dhcp_leases gauge\nhomegw_dhcp_leases 3.0" in text
    rss = re.search(r"^homegw_process_resident_memory_bytes (\S+)$", text, re.M)
    assert rss and float(rss.group(1)) > 1e6
    assert re.search(r"^homegw_starts_total 1.0$", text, re.M)
    again = create_app(control, tmp_path / "state").test_client().get("/metrics")
    assert re.search(r"^homegw_starts_total 2.0$", again.get_data(as_text=True), re.M)
    names = re.findall(r"^(\w+)[{ ]", text, re.M)
    assert names and all(n.startswith("homegw_") for n in names)


def test_bad_samples_are_left_out_and_counted(app: Flask, control: FakeControl) -> None:
    control.samples_list += [
        Sample("bad name", "gauge", "x", {}, 1),
        Sample("router_packets", "counter", "packets", {"other": "label"}, 1),
        Sample("odd_value", "gauge", "x", {}, "many"),  # not a number
    ]
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert "homegw_metrics_dropped_samples 3.0" in text
    assert "odd_value" not in text
    assert 'homegw_router_packets_total{nic="lan",reason="ok"} 5.0' in text


def test_metrics_need_a_login_when_not_public(app: Flask, control: FakeControl) -> None:
    control.config["webui"]["metrics_public"] = False
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(app)).status_code == 200
    assert client.get("/healthz").status_code == 200


# -- the OpenAPI document ------------------------------------------------------


def _flask_paths(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or _is_page(rule.endpoint):
            continue
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
        out |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_openapi_lists_every_route_and_nothing_else(app: Flask) -> None:
    doc = document()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _flask_paths(app)
    served = app.test_client().get(f"{PREFIX}/openapi.json", headers=bearer(app))
    assert served.json == doc


def test_openapi_says_which_paths_need_a_login(app: Flask) -> None:
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            public = op.get("security") == []
            assert public == (path in OPEN_PATHS), (method, path)
            if not public:
                assert "401" in op["responses"], (method, path)
            if "requestBody" in op:
                assert "400" in op["responses"], (method, path)


def test_openapi_config_body_is_the_config_schema() -> None:
    doc = document()
    put = doc["paths"][f"{PREFIX}/config"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Config"
    }
    config = doc["components"]["schemas"]["Config"]
    assert set(config["required"]) == {"wan", "lan"}
    assert "metrics_public" in doc["components"]["schemas"]["WebuiConfig"]["properties"]


# -- sd_notify -----------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(10)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def test_notify_sends_to_the_socket(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = notify_socket
    assert sdnotify.notify("READY=1\nSTATUS=ready", env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"homegw-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"STOPPING=1"


def test_notify_without_systemd_does_nothing() -> None:
    assert not sdnotify.notify("READY=1", {})
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}) is None


def test_watchdog_pings_only_while_healthy(
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = notify_socket
    healthy = [True, True, False]
    checks: list[bool] = []

    def check() -> bool:
        checks.append(healthy[min(len(checks), 2)])
        return checks[-1]

    dog = sdnotify.Watchdog(check, 0.01, env).start()
    assert sock.recv(64) == b"WATCHDOG=1"
    assert sock.recv(64) == b"WATCHDOG=1"
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # unhealthy from the third check on: silence
        sock.recv(64)
    dog.stop()
    assert len(checks) >= 3 and not checks[-1]


# -- the systemd unit ----------------------------------------------------------


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed"
    unit = (ROOT / "packaging/systemd/homegw.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    # verify needs ExecStart's binary to exist: point it at this venv's
    homegw_bin = Path(sys.executable).with_name("homegw")
    target = tmp_path / "homegw.service"
    target.write_text(unit.replace("/usr/bin/homegw", str(homegw_bin)))
    result = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "homegw.service" not in result.stderr, result.stderr  # e.g. an unknown key
    for key in ("CAP_BPF", "CAP_NET_ADMIN", "ProtectSystem=strict", "NoNewPrivileges=yes"):
        assert key in unit


# -- waitress and the CLI ------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, control: FakeControl) -> Iterator[tuple[WebServer, Path]]:
    state = tmp_path / "state"
    server = WebServer(create_app(control, state), "127.0.0.1", 0)
    server.start()
    config = {
        "state_dir": str(state),
        "wan": {"interface": "wan0"},
        "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
        "webui": {"listen": server.url.removeprefix("http://").rstrip("/")},
    }
    path = tmp_path / "homegw.yaml"
    path.write_text(yaml.safe_dump(config))
    yield server, path
    server.stop()


def test_waitress_serves_and_stops(served: tuple[WebServer, Path]) -> None:
    server, _config = served
    with urllib.request.urlopen(server.url + "healthz", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Server"] == "homegw"
    server.stop()
    port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_cli_talks_to_the_api_with_the_local_token(
    served: tuple[WebServer, Path], control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    _server, config = served
    assert main(["status", "-c", str(config)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["ready"] is True
    assert main(["modules", "-c", str(config)]) == 0
    assert re.search(r"^router\s+yes\s+yes\s+lan/xdp:0 wan/xdp:1", capsys.readouterr().out, re.M)
    assert main(["config", "get", "dns", "-c", str(config)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"enabled": True}
    assert main(["config", "set", "dhcp.lease_time", "7200", "-c", str(config)]) == 0
    assert "changed: dhcp" in capsys.readouterr().out
    assert control.config["dhcp"]["lease_time"] == 7200


def test_cli_prints_every_problem_and_exits_non_zero(
    served: tuple[WebServer, Path], control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    _server, config = served
    assert main(["config", "set", "dhcp.lease_time", "5", "-c", str(config)]) == 1
    assert "homegw: dhcp.lease_time: at least 60s" in capsys.readouterr().err
    assert control.config["dhcp"]["lease_time"] == 3600
    bad = config.with_name("bad.yaml")
    bad.write_text(yaml.safe_dump({"dns": {}}))
    assert main(["config", "apply", "--dry-run", str(bad), "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert "homegw: wan: field required" in err and "homegw: lan: field required" in err
    good = config.with_name("good.yaml")
    good.write_text(yaml.safe_dump(control.config | {"log_level": "debug"}))
    assert main(["config", "apply", "--dry-run", str(good), "-c", str(config)]) == 0
    assert "would change: log_level" in capsys.readouterr().out
    assert control.config["log_level"] == "info"
    assert main(["config", "apply", str(good), "-c", str(config)]) == 0
    assert control.config["log_level"] == "debug"


def test_cli_without_an_appliance_exits_2(
    tmp_path: Path, served: tuple[WebServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, config = served
    server.stop()
    assert main(["status", "-c", str(config)]) == 2
    assert "cannot reach the appliance" in capsys.readouterr().err


def test_cli_passwd(served: tuple[WebServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    server, config = served
    monkeypatch.setattr("sys.stdin", io.StringIO("a long new password\n"))
    assert main(["passwd", "--password-stdin", "-c", str(config)]) == 0
    login = urllib.request.Request(
        server.url + "api/v1/auth/login",
        data=b'{"password": "a long new password"}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(login, timeout=10) as response:
        assert response.status == 200


def test_cli_passwd_without_an_appliance_writes_state_dir(
    served: tuple[WebServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, config = served
    server.stop()
    monkeypatch.setattr("sys.stdin", io.StringIO("console password 1\n"))
    assert main(["passwd", "--password-stdin", "-c", str(config)]) == 0
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    assert AuthStore(state_dir).check_login("admin", "console password 1")
    assert not (state_dir / "setup-token").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["passwd", "--password-stdin", "-c", str(config)]) == 1


def test_stop_lets_an_answer_in_flight_go_out() -> None:
    """An API call that restarts the appliance is answered before the server
    goes: stop() waits for the request in flight, then closes."""
    app = Flask(__name__)
    entered, release = threading.Event(), threading.Event()

    @app.get("/slow")
    def slow() -> str:
        entered.set()
        release.wait(10)
        return "answered"

    server = WebServer(app, "127.0.0.1", 0)
    server.start()
    answers: list[str] = []

    def fetch() -> None:
        with urllib.request.urlopen(server.url + "slow", timeout=20) as response:
            answers.append(response.read().decode())

    client = threading.Thread(target=fetch)
    client.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until stop() has closed the listener
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            break  # refused, or reset in the backlog of the listener closing
    release.set()
    stopper.join(20)
    client.join(20)
    assert answers == ["answered"]
    assert not stopper.is_alive()
