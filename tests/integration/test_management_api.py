"""The management API of the real appliance in the virtual home: first-start
setup, login + CSRF with a real HTTP client (curl from a LAN host), the CLI
in the gateway's namespace, nothing of it reachable from the ISP, sd_notify
from `homegw run`, and schemathesis against the served OpenAPI document."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess

pytestmark = pytest.mark.netns

STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
LAN_IP, WAN_IP, PORT = "192.168.1.1", "203.0.113.2", 8080
BASE = f"http://{LAN_IP}:{PORT}"
PASSWORD = "correct horse battery"


def config(home: VirtualHome, listen: str = f"{LAN_IP}:{PORT}") -> dict[str, Any]:
    return home.gateway_config(wan=STATIC_WAN, webui={"listen": listen})


def http(
    home: VirtualHome,
    method: str,
    url: str,
    body: Any = None,
    headers: tuple[str, ...] = (),
    jar: Path | None = None,
    ns: str = "h1",
) -> tuple[int, Any]:
    """One request with curl from namespace `ns`: (status, JSON body or text)."""
    argv = ["curl", "-sS", "--max-time", "30", "-X", method, "-o", "-", "-w", "\n%{http_code}"]
    if jar is not None:
        argv += ["-b", str(jar), "-c", str(jar)]
    for header in headers:
        argv += ["-H", header]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    result = home.run(ns, [*argv, url])
    assert result.returncode == 0, result.stderr
    text, _, code = result.stdout.rpartition("\n")
    try:
        return int(code), json.loads(text) if text.strip() else None
    except ValueError:
        return int(code), text


def wait_healthy(home: VirtualHome, base: str = BASE) -> None:
    """Poll /healthz (curl retries until it answers 200) instead of the log."""
    argv = ["curl", "-sS", "--fail", "--max-time", "5", "--retry", "90", "--retry-delay", "1"]
    argv += ["--retry-all-errors", f"{base}/healthz"]
    result = home.run("h1", argv, timeout=150)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ready"] is True


def local_token(home: VirtualHome) -> str:
    return (Path(home.state_dir) / "api-token").read_text().strip()


def bearer(home: VirtualHome) -> str:
    return f"Authorization: Bearer {local_token(home)}"


@pytest.fixture
def appliance(virtual_home: VirtualHome) -> Iterator[ApplianceProcess]:
    app = ApplianceProcess(virtual_home, config(virtual_home)).start()
    wait_healthy(virtual_home)
    yield app
    assert app.stop() == 0
    assert "Traceback" not in app.log


def set_up_admin(home: VirtualHome, jar: Path) -> dict[str, Any]:
    token = (Path(home.state_dir) / "setup-token").read_text().strip()
    status, answer = http(
        home, "POST", f"{BASE}/api/v1/setup", {"token": token, "password": PASSWORD}, jar=jar
    )
    assert status == 201, answer
    return answer


def test_first_start_setup_then_login_and_csrf_over_http(
    appliance: ApplianceProcess, tmp_path: Path
) -> None:
    home = appliance.home
    setup_file = Path(home.state_dir) / "setup-token"
    assert stat.S_IMODE(setup_file.stat().st_mode) == 0o600
    assert setup_file.read_text().strip() in appliance.log  # logged for the console
    assert stat.S_IMODE((Path(home.state_dir) / "api-token").stat().st_mode) == 0o600
    jar = tmp_path / "cookies"
    assert http(home, "GET", f"{BASE}/api/v1/status")[0] == 401
    assert http(home, "POST", f"{BASE}/api/v1/auth/login", {"password": PASSWORD})[0] == 409
    wrong = {"token": "guess", "password": PASSWORD}
    assert http(home, "POST", f"{BASE}/api/v1/setup", wrong)[0] == 403
    set_up_admin(home, jar)
    assert not setup_file.exists()
    assert http(home, "POST", f"{BASE}/api/v1/auth/logout", jar=jar)[0] == 403  # no CSRF token

    status, answer = http(
        home, "POST", f"{BASE}/api/v1/auth/login", {"password": PASSWORD}, jar=jar
    )
    assert status == 200
    csrf = f"X-CSRFToken: {answer['csrf_token']}"
    assert "HttpOnly" in jar.read_text()  # curl marks HttpOnly cookies "#HttpOnly_"
    status, state = http(home, "GET", f"{BASE}/api/v1/status", jar=jar)
    assert status == 200 and state["ready"] is True

    new_token = {"name": "script"}
    assert http(home, "POST", f"{BASE}/api/v1/auth/tokens", new_token, jar=jar)[0] == 403
    status, created = http(home, "POST", f"{BASE}/api/v1/auth/tokens", new_token, (csrf,), jar)
    assert status == 201
    script = f"Authorization: Bearer {created['token']}"
    assert http(home, "GET", f"{BASE}/api/v1/status", headers=(script,))[0] == 200
    path = f"{BASE}/api/v1/auth/tokens/{created['id']}"
    assert http(home, "DELETE", path, headers=(csrf,), jar=jar)[0] == 204
    assert http(home, "GET", f"{BASE}/api/v1/status", headers=(script,))[0] == 401

    assert http(home, "POST", f"{BASE}/api/v1/auth/logout", headers=(csrf,), jar=jar)[0] == 204
    assert http(home, "GET", f"{BASE}/api/v1/status", jar=jar)[0] == 401


def test_metrics_over_http(appliance: ApplianceProcess) -> None:
    home = appliance.home
    status, text = http(home, "GET", f"{BASE}/metrics")
    assert status == 200
    rss = re.search(r"^homegw_process_resident_memory_bytes (\S+)$", text, re.M)
    assert rss and float(rss.group(1)) > 10e6
    assert re.search(r"^homegw_starts_total 1.0$", text, re.M)
    # the appliance's own samples, every one carried
    assert re.search(r'^homegw_module_packets_total\{module="router",', text, re.M), text
    assert "homegw_metrics_dropped_samples 0.0" in text
    assert "homegw_metrics_scrape_errors_total 0.0" in text


def cli(home: VirtualHome, app: ApplianceProcess, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "homegw", *args, "-c", str(app.config_path)]
    return home.run("gw", argv, timeout=120)


def test_cli_against_the_running_appliance(appliance: ApplianceProcess) -> None:
    home = appliance.home
    status = cli(home, appliance, "status")
    assert status.returncode == 0, status.stderr
    assert yaml.safe_load(status.stdout)["ready"] is True
    modules = cli(home, appliance, "modules")
    assert modules.returncode == 0, modules.stderr
    assert re.search(r"^router\s+yes\s+yes\s", modules.stdout, re.M), modules.stdout
    dns = cli(home, appliance, "config", "get", "dns")
    assert dns.returncode == 0 and yaml.safe_load(dns.stdout)["enabled"] is True
    refused = cli(home, appliance, "config", "set", "dhcp.lease_time", "5")
    assert refused.returncode == 1
    assert "homegw: dhcp.lease_time:" in refused.stderr, refused.stderr
    changed = cli(home, appliance, "config", "set", "dhcp.lease_time", "10800")
    assert changed.returncode == 0, changed.stderr
    assert "dhcp" in changed.stdout
    after = cli(home, appliance, "config", "get", "dhcp")
    assert yaml.safe_load(after.stdout)["lease_time"] == "3h"  # durations print as written
    assert yaml.safe_load(appliance.config_path.read_text())["dhcp"]["lease_time"] == "3h"


def test_passwd_on_the_console_then_login_from_the_lan(
    appliance: ApplianceProcess, tmp_path: Path
) -> None:
    home = appliance.home
    argv = [sys.executable, "-m", "homegw", "passwd", "--password-stdin"]
    argv += ["-c", str(appliance.config_path)]
    done = home.run("gw", argv, input="set on the console\n", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (Path(home.state_dir) / "setup-token").exists()
    login = {"password": "set on the console"}
    status, answer = http(home, "POST", f"{BASE}/api/v1/auth/login", login, jar=tmp_path / "c")
    assert status == 200, answer
    wrong = {"password": "something else"}
    assert http(home, "POST", f"{BASE}/api/v1/auth/login", wrong)[0] == 401


def tcp_connects(home: VirtualHome, ns: str, address: str, port: int) -> bool:
    probe = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return home.run(ns, [sys.executable, "-c", probe]).returncode == 0


def test_nothing_of_the_admin_surface_answers_from_the_isp(virtual_home: VirtualHome) -> None:
    home = virtual_home
    # listening on every address, the WAN's included: only the input guard stands between
    app = ApplianceProcess(home, config(home, listen=f"0.0.0.0:{PORT}")).start()
    try:
        wait_healthy(home)
        home.add_lan_route_on_isp(WAN_IP)  # the ISP routes the LAN subnet to our WAN address
        assert tcp_connects(home, "h1", LAN_IP, PORT)
        for address in (LAN_IP, WAN_IP):
            assert not tcp_connects(home, "isp", address, PORT), address
            for path in ("/healthz", "/metrics", "/api/v1/status", "/api/v1/openapi.json"):
                argv = ["curl", "-sS", "--max-time", "3", f"http://{address}:{PORT}{path}"]
                answer = home.run("isp", argv)
                assert answer.returncode != 0 and answer.stdout == "", (address, path)
    finally:
        assert app.stop() == 0


class NotifiedAppliance(ApplianceProcess):
    """`homegw run` as systemd starts it: NOTIFY_SOCKET and WATCHDOG_USEC set."""

    def start_with(self, env: dict[str, str]) -> NotifiedAppliance:
        argv = [sys.executable, "-m", "homegw", "run", "-c", str(self.config_path)]
        self.proc = self.home.popen(
            "gw",
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ | env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self


def test_homegw_run_notifies_systemd(virtual_home: VirtualHome, tmp_path: Path) -> None:
    home = virtual_home
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(120)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
        app = NotifiedAppliance(home, config(home)).start_with(env)
        try:
            assert sock.recv(4096).startswith(b"READY=1")
            # READY comes once the web API answers
            status, answer = http(home, "GET", f"{BASE}/healthz")
            assert status == 200 and answer["ready"] is True
            sock.settimeout(10)
            assert sock.recv(64) == b"WATCHDOG=1"
            assert sock.recv(64) == b"WATCHDOG=1"
        finally:
            assert app.stop() == 0
        messages = []
        sock.settimeout(0.5)
        try:
            while True:
                messages.append(sock.recv(64))
        except TimeoutError:
            pass
        assert messages[-1] == b"STOPPING=1", messages


SCHEMATHESIS_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "ignored_auth",
        "unsupported_method",
    ]
)


def test_config_writes_refuse_bad_bodies(appliance: ApplianceProcess) -> None:
    """PUT /config and /config/{section}, left out of schemathesis (a valid
    generated config would be applied): bad bodies are 400s with key paths,
    and nothing changes."""
    home = appliance.home
    auth = (bearer(home),)
    before = http(home, "GET", f"{BASE}/api/v1/config", headers=auth)[1]
    bad = [
        ("/config", {}, "wan"),
        ("/config", {**before, "nat": {"port_range": "1-2-3"}}, "nat.port_range"),
        ("/config", {**before, "bogus": 1}, "bogus"),
        ("/config/dhcp", {"lease_time": 5}, "dhcp.lease_time"),
        ("/config/lan", {"interface": "lan0", "address": "300.1.1.1/24"}, "lan.address"),
        ("/config/dns", {"cache_size": "many"}, "dns.cache_size"),
        ("/config/webui", {"listen": f"{WAN_IP}:80"}, "webui.listen"),
        ("/config/dataplane", {"pin_dir": "/tmp/x"}, "dataplane.pin_dir"),
    ]
    for path, body, loc in bad:
        status, answer = http(home, "PUT", f"{BASE}/api/v1{path}", body, auth)
        assert status == 400, (path, answer)
        assert any(p["loc"].startswith(loc) for p in answer["problems"]), (path, answer)
    for path, body in (("/config", [1]), ("/config/dns", "text"), ("/config/nosuch", {})):
        status, answer = http(home, "PUT", f"{BASE}/api/v1{path}", body, auth)
        assert status in (400, 404) and answer["error"], (path, answer)
    assert http(home, "GET", f"{BASE}/api/v1/config", headers=auth)[1] == before
    assert len(http(home, "GET", f"{BASE}/api/v1/config/history", headers=auth)[1]["history"]) == 1


def test_schemathesis_against_the_served_document(appliance: ApplianceProcess) -> None:
    """No 500, no response that breaks the document, no path answering without
    a login but the open ones (ignored_auth sends each request without it)."""
    home = appliance.home
    set_up_admin(home, Path(home.state_dir) / "unused-cookies")
    schemathesis = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(schemathesis),
        "run",
        f"{BASE}/api/v1/openapi.json",
        "-H",
        bearer(home),
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        "40",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "too_slow,filter_too_much",
        # the admin's password would change under the test's feet, and a
        # generated config that happens to be valid would really be applied
        # (a new LAN address, the machine's own pin_dir): PUT /config and
        # PUT /config/{section} are fuzzed through their dry-run twins
        # (POST /config/validate[/{section}], the same parsing and checks)
        # and tested with fixed bodies in test_config_writes_refuse_bad_bodies
        "--exclude-path",
        "/api/v1/auth/password",
        "--exclude-operation-id",
        "put_/config",
        "--exclude-operation-id",
        "put_/config/{section}",
        # a restart stops the server under test: the requests after it would
        # fail for that reason alone (test_ui_api.py restarts it live)
        "--exclude-operation-id",
        "post_/actions/restart",
        # a valid body ({"confirm": "factory-reset"}) would erase the state
        # under test (tests/unit/test_api_system.py covers it)
        "--exclude-operation-id",
        "post_/system/factory-reset",
        # a punt stream is open until its module goes: each request of it
        # would hang until --request-timeout once schemathesis has uploaded
        # the document's example module (it reuses its name in the paths);
        # the stream is tested through waitress in test_api_punt_stream.py
        # and end to end in test_user_modules.py
        "--exclude-operation-id",
        "get_/modules/user/{name}/punts",
    ]
    result = home.run("h1", argv, timeout=900, cwd=str(home.state_dir))
    report = result.stdout[-20000:] + result.stderr[-3000:]
    assert result.returncode == 0, report + "\nappliance log:\n" + appliance.log[-20000:]
    # every operation selected (all but the excluded ones) was tested
    selected = re.search(r"Selected: *(\d+)/(\d+)", result.stdout)
    tested = re.search(r"Tested: *(\d+)", result.stdout)
    assert selected and tested, result.stdout[-3000:]
    assert int(tested.group(1)) == int(selected.group(1)) >= 38, result.stdout[-3000:]
