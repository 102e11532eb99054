"""A home for the web UI's page tests: FakeControl with the Control methods
the pages need (devices, device, device_set, alerts, traffic_history, a
live-looking status, module counters, big tables), filled with realistic
and hostile data (a DHCP hostname that is a script tag, a vendor with
quotes)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from homegw.config import ConfigError, parse_config
from homegw.control import ApplyResult, ConfigRejected, NotFound, Page, Problem
from tests.unit.fake_control import FakeControl
from webui import create_app

HOSTILE = "<script>alert(1)</script>"
NOW = 1_764_590_000.0
CONFIG_EXTRA: dict[str, Any] = {
    "dataplane": {"order": {"lan": ["dhcp", "router", "nat"], "wan": ["nat", "router"]}},
    "devices": [],
}


def _device(i: int, name: str | None, hostname: str | None, online: bool) -> dict[str, Any]:
    return {
        "mac": f"02:00:00:00:00:{i:02x}",
        "name": name or hostname,
        "user_name": name,
        "hostname": hostname,
        "vendor": 'Acme "Networks" & Co' if i % 2 else None,
        "addresses": [f"192.168.1.{100 + i}"],
        "online": online,
        "first_seen": NOW - 86400 * i,
        "last_seen": NOW - (0 if online else 3600),
        "paused": False,
        "reserved_address": None,
        "lease_expires": NOW + 3600,
        "today": {"from_bytes": 1000 * i, "to_bytes": 50_000 * i},
        "total": {
            "from_bytes": 10**6 * i,
            "to_bytes": 10**7 * i,
            "from_packets": 10 * i,
            "to_packets": 20 * i,
            "dropped": 0,
        },
    }


def devices(count: int = 4) -> list[dict[str, Any]]:
    """laptop (named by the owner), phone, a hostile hostname, one nameless;
    more as "host-N" when count > 4."""
    base = [
        _device(1, "Anna's laptop", "anna-laptop", True),
        _device(2, None, "phone", True),
        _device(3, None, HOSTILE, False),
        _device(4, None, None, False),
    ]
    extra = [_device(i, None, f"host-{i}", i % 3 == 0) for i in range(5, count + 1)]
    return (base + extra)[:count]


def network_problems(config: dict[str, Any]) -> list[Problem]:
    """The real config validation's problems (key paths and messages) of the
    sections the pages change: wan, lan, dhcp."""
    wanted = {k: config[k] for k in ("wan", "lan", "dhcp") if k in config}
    try:
        parse_config(wanted)
    except ConfigError as exc:
        return [Problem(*line.split(": ", 1)) for line in exc.lines()]
    return []


class FakeHome(FakeControl):
    def __init__(self, device_count: int = 4) -> None:
        super().__init__()
        self.config.update(copy.deepcopy(CONFIG_EXTRA))
        self.config["lan"]["address"] = "192.168.1.1/24"
        self.device_list = devices(device_count)
        self.alert_list: list[dict[str, Any]] = [
            {
                "code": "pool_nearly_full",
                "severity": "warning",
                "message": "The DHCP pool is 95% used",
                "since": NOW - 60,
            }
        ]
        self.enabled = {"dhcp": True, "router": True, "nat": True, "dpi": False}

    @staticmethod
    def _problems(config: dict[str, Any]) -> list[Problem]:
        return FakeControl._problems(config) + network_problems(config)

    # -- status ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        nic = {"rx_packets": 10, "rx_bytes": 12_000, "tx_packets": 9, "tx_bytes": 9000}
        return {
            "ready": True,
            "version": "0.1.0",
            "uptime_s": 93_784.0,
            "wan": {
                "interface": "wan0",
                "mode": "dhcp",
                "address": "203.0.113.10",
                "gateway": "203.0.113.1",
                "state": "up",
            },
            "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
            "nics": {"lan": dict(nic), "wan": dict(nic)},
            "kernel_path": False,
        }

    # -- devices -----------------------------------------------------------
    def _find(self, mac: str) -> dict[str, Any]:
        for device in self.device_list:
            if device["mac"] == mac:
                return device
        raise NotFound(f"no device {mac}")

    def devices(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.device_list)

    def device(self, mac: str) -> dict[str, Any]:
        device = copy.deepcopy(self._find(mac))
        start = NOW - 24 * 3600
        device["history"] = [
            {"hour": start + 3600 * h, "from_bytes": 100 * h, "to_bytes": 1000 * h}
            for h in range(24)
        ]
        return device

    def device_set(self, mac: str, changes: dict[str, Any]) -> ApplyResult:
        self.calls.append(("device_set", mac, dict(changes)))
        device = self._find(mac)
        name = changes.get("name", device["user_name"])
        if name is not None and (len(name) > 64 or not name.strip()):
            raise ConfigRejected([Problem("devices.0.name", "at most 64 characters")])
        if "name" in changes:
            device["user_name"] = name
            device["name"] = name or device["hostname"]
        if "paused" in changes:
            device["paused"] = bool(changes["paused"])
        self.version += 1
        return ApplyResult(self.version, ["devices"], {"devices": "maps"})

    def traffic_history(self, hours: int = 24) -> list[dict[str, Any]]:
        return [
            {"hour": NOW - 3600 * (hours - h), "from_bytes": h, "to_bytes": h} for h in range(hours)
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.alert_list)

    # -- modules and tables ------------------------------------------------
    def modules(self) -> list[dict[str, Any]]:
        out = super().modules()
        for module in out:
            module["counters"] = {"forwarded": 1234, "drop_bad_checksum": 5}
            if module["name"] == "dpi":
                module.update(loaded=False, counters={}, id=None)
        return out

    def module_set_order(self, nic: str, names: list[str]) -> dict[str, Any]:
        self.calls.append(("order", nic, list(names)))
        if nic == "lan" and names.index("nat") < names.index("router"):
            raise ConfigRejected([Problem("dataplane.order.lan", "nat must come after router")])
        self.order[nic] = [n for n in names if n in self.order[nic]]
        self.config["dataplane"]["order"][nic] = list(names)
        return {"nic": nic, "order": names}

    def module_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        self.calls.append(("enabled", name, enabled))
        return super().module_set_enabled(name, enabled)

    def tables(self) -> list[str]:
        return ["dhcp_leases", "dns_queries", "nat_sessions"]

    def table(
        self, name: str, offset: int = 0, limit: int = 100, filters: dict[str, str] | None = None
    ) -> Page:
        self.calls.append(("table", name, offset, limit, dict(filters or {})))
        if name == "dhcp_leases":
            return super().table(name, offset, limit, filters)
        if name == "dns_queries":
            rows = [
                {"time": NOW, "client": "192.168.1.101", "name": f"q{i}.example", "answer": []}
                for i in range(250)
            ]
            rows.append({"time": NOW, "client": "192.168.1.102", "name": HOSTILE, "answer": []})
        elif name == "nat_sessions":
            rows = [
                {"proto": "tcp", "lan_port": 1000 + i, "wan_port": 40000 + i} for i in range(10)
            ]
        else:
            raise NotFound(f"no table {name!r}")
        for column, wanted in (filters or {}).items():
            rows = [r for r in rows if wanted in str(r.get(column, ""))]
        return Page(len(rows), offset, limit, rows[offset : offset + limit])


# -- helpers of the page tests ---------------------------------------------------

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(state_dir: Path, control: FakeControl, clock: Clock | None = None) -> Flask:
    app = create_app(control, state_dir, clock=clock or Clock())
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def form_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on `path` (a GET of it)."""
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return csrf_of(response.get_data(as_text=True))


def create_admin(app: Flask) -> None:
    app.extensions["homegw"].auth.set_password(PASSWORD)


def log_in(client: FlaskClient, password: str = PASSWORD) -> TestResponse:
    token = form_token(client, "/login")
    return client.post("/login", data={"csrf_token": token, "password": password})


def logged_in(app: Flask) -> FlaskClient:
    """A browser with an admin session (the admin is made if missing)."""
    if not app.extensions["homegw"].auth.has_admin:
        create_admin(app)
    client = app.test_client()
    assert log_in(client).status_code == 302
    return client


def post_form(client: FlaskClient, page: str, action: str, data: dict[str, str]) -> TestResponse:
    """Submit a form of `page` to `action` with the page's CSRF token."""
    return client.post(action, data={"csrf_token": form_token(client, page), **data})


def text_of(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def field_block(html: str, name: str) -> str:
    """The markup of the `field` macro's <div> for the input named `name`."""
    found = re.search(
        r'<div class="field[^"]*">\s*<label for="f-' + re.escape(name) + r'">.*?</div>', html, re.S
    )
    assert found, f"no field {name}"
    return found.group(0)


def assert_no_inline_code(html: str) -> None:
    """The CSP forbids inline scripts and styles: the pages have none."""
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "an inline <script>"
    assert " style=" not in html and "<style" not in html, "an inline style"
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"


def set_cookie(response: TestResponse, name: str) -> str:
    """The Set-Cookie header of the cookie `name` ("" when not set)."""
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return headers[-1] if headers else ""
