"""A home for the web UI's page tests: FakeControl with the Control methods
the pages need (devices, device, device_set, alerts, traffic_history, a
live-looking status, module counters, big tables), filled with realistic
and hostile data (a DHCP hostname that is a script tag, a vendor with
quotes, a profile named <b>x</b>, an app whose label is a script tag), and a
``dpi`` section checked the way the DPI config would (key paths), with
pauses and parental() following it."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta
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
HOSTILE_PROFILE = "<b>x</b>"
NOW = 1_764_590_000.0
LAPTOP, PHONE = "02:00:00:00:00:01", "02:00:00:00:00:02"
BEDTIME = {
    "name": "bedtime",
    "who": ["Anna"],
    "block_apps": ["youtube"],
    "block_categories": ["games"],
    "block_all": False,
    "allow_apps": ["khan_academy"],
    "allow_categories": [],
    "schedule": [{"days": ["sun", "mon", "tue", "wed", "thu"], "start": "21:00", "end": "07:00"}],
    "budget_minutes": None,
}
DPI: dict[str, Any] = {
    "enabled": True,
    "app_sources": [],
    "profiles": [
        {"name": "Anna", "devices": [LAPTOP]},
        {"name": HOSTILE_PROFILE, "devices": [PHONE]},
    ],
    "rules": [BEDTIME],
    "pauses": [],
}
CONFIG_EXTRA: dict[str, Any] = {
    "dataplane": {"order": {"lan": ["dhcp", "router", "nat"], "wan": ["nat", "router"]}},
    "devices": [],
    "dpi": DPI,
}
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
ID = re.compile(r"^[a-z0-9_]+$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


def _name_problems(loc: str, name: Any, seen: list[str], what: str) -> list[Problem]:
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        return [Problem(f"{loc}.name", "1 to 64 characters")]
    if name in seen:
        return [Problem(f"{loc}.name", f"the {what} name {name!r} is used twice")]
    return []


def _window_problems(loc: str, window: dict[str, Any]) -> list[Problem]:
    days = window.get("days") or []
    out = [Problem(f"{loc}.days", "at least one day")] if not days else []
    out += [
        Problem(f"{loc}.days.{j}", "a day: mon..sun") for j, d in enumerate(days) if d not in DAYS
    ]
    for end in ("start", "end"):
        if not CLOCK.match(str(window.get(end, ""))):
            out.append(Problem(f"{loc}.{end}", "a time of day as HH:MM, 00:00 to 23:59"))
    return out


def _rule_problems(loc: str, rule: dict[str, Any], profiles: list[str]) -> list[Problem]:
    who = rule.get("who") or []
    out = [] if who else [Problem(f"{loc}.who", "at least one profile or device")]
    for j, target in enumerate(who):
        if target not in profiles and not MAC.match(str(target)):
            out.append(Problem(f"{loc}.who.{j}", f"no profile {target!r} and not a MAC address"))
    for key in ("block_apps", "block_categories", "allow_apps", "allow_categories"):
        for j, value in enumerate(rule.get(key) or []):
            if not ID.match(str(value)):
                out.append(Problem(f"{loc}.{key}.{j}", f"not an id: {value!r}"))
    for k, window in enumerate(rule.get("schedule") or []):
        out += _window_problems(f"{loc}.schedule.{k}", window)
    keys = ("block_all", "block_apps", "block_categories", "allow_apps", "allow_categories")
    if not any(rule.get(key) for key in keys):
        out.append(Problem(loc, "the rule neither blocks nor allows anything"))
    budget = rule.get("budget_minutes")
    if budget is not None and not (isinstance(budget, int) and 1 <= budget <= 1440):
        out.append(Problem(f"{loc}.budget_minutes", "1 to 1440 minutes a day"))
    return out


def dpi_problems(config: dict[str, Any]) -> list[Problem]:
    """What the DPI config's validation says of a ``dpi`` section (its key paths)."""
    dpi = config.get("dpi") or {}
    out: list[Problem] = []
    profiles: list[str] = []
    for i, profile in enumerate(dpi.get("profiles") or []):
        loc = f"dpi.profiles.{i}"
        out += _name_problems(loc, profile.get("name"), profiles, "profile")
        profiles.append(profile.get("name"))
        for j, mac in enumerate(profile.get("devices") or []):
            if not MAC.match(str(mac)):
                out.append(Problem(f"{loc}.devices.{j}", "not a MAC address"))
    rules: list[str] = []
    for i, rule in enumerate(dpi.get("rules") or []):
        out += _name_problems(f"dpi.rules.{i}", rule.get("name"), rules, "rule")
        rules.append(rule.get("name"))
        out += _rule_problems(f"dpi.rules.{i}", rule, profiles)
    return out


def until_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now).astimezone()
    return (
        today.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    ).timestamp()


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
        return FakeControl._problems(config) + network_problems(config) + dpi_problems(config)

    # -- DPI: pauses and parental() follow the dpi section ------------------
    def pause(self, target: str, minutes: int | None) -> ApplyResult:
        self.calls.append(("pause", target, minutes))
        self._dpi()
        dpi = self.config["dpi"]
        known = {p["name"] for p in dpi["profiles"]} | {d["mac"] for d in self.device_list}
        if target not in known:
            raise ConfigRejected([Problem("dpi.pauses", f"{target!r} is no profile or device")])
        pauses = [p for p in dpi["pauses"] if p["who"] != target]
        if minutes != 0:
            until = until_midnight(self.now) if minutes is None else self.now + 60 * minutes
            stamp = datetime.fromtimestamp(until).astimezone().isoformat()
            pauses.append({"who": target, "until": stamp})
        dpi["pauses"] = pauses
        self.version += 1
        return ApplyResult(self.version, ["dpi"], {"dpi": "maps"})

    def _paused_until(self, targets: set[str]) -> float | None:
        ends = [
            datetime.fromisoformat(p["until"]).timestamp()
            for p in self.config["dpi"]["pauses"]
            if p["who"] in targets
        ]
        return max([end for end in ends if end > self.now], default=None)

    def _in_force(self, mac: str, profile: str | None) -> dict[str, Any]:
        targets = {mac} | ({profile} if profile else set())
        rules = [r for r in self.config["dpi"]["rules"] if targets & set(r.get("who") or [])]
        return {
            "mac": mac,
            "profile": profile,
            "blocked_apps": sorted({a for r in rules for a in r.get("block_apps") or []}),
            "blocked_categories": sorted(
                {c for r in rules for c in r.get("block_categories") or []}
            ),
            "paused_until": self._paused_until(targets),
            "budgets": [
                {
                    "rule": r["name"],
                    "used_minutes": 42,
                    "limit_minutes": r["budget_minutes"],
                    "exhausted": r["budget_minutes"] <= 42,
                }
                for r in rules
                if r.get("budget_minutes")
            ],  # fmt: skip
            "rules": [r["name"] for r in rules],
            "blocked_all": any(r.get("block_all") for r in rules),
            "allowed_apps": sorted({a for r in rules for a in r.get("allow_apps") or []}),
            "allowed_categories": sorted(
                {c for r in rules for c in r.get("allow_categories") or []}
            ),
        }

    def parental(self) -> dict[str, Any]:
        self._dpi()
        profile_of = {m: p["name"] for p in self.config["dpi"]["profiles"] for m in p["devices"]}
        devices = [self._in_force(d["mac"], profile_of.get(d["mac"])) for d in self.device_list]
        return {"now": self.now, "devices": devices, "next_change": self.now + 1800}

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
