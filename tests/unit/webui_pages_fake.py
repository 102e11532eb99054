"""A Control for the tests of the DHCP, DNS, Firewall & NAT and System pages:
FakeControl with realistic data (devices, leases, queries, logs, hostile
strings) whose config_apply validates with the real config schema, so a
refusal names the key paths the appliance would name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from homegw.config import ConfigError, config_to_dict, parse_config
from homegw.control import ApplyResult, ConfigRejected, Page, Problem
from homegw.management import _problems  # the appliance's own mapping of errors
from tests.unit.fake_control import FakeControl
from webui import create_app

PASSWORD = "correct horse battery"
HOSTILE_HOST = "<script>alert(1)</script>"
HOSTILE_QUERY = "<img src=x onerror=alert(1)>.lan"

BASE_CONFIG: dict[str, Any] = {
    "wan": {"interface": "wan0", "mode": "dhcp", "dns": ["9.9.9.9"]},
    "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
    "dhcp": {
        "lease_time": "12h",
        "reservations": [
            {"mac": "02:00:00:00:00:01", "address": "192.168.1.10", "hostname": "nas"},
            {"mac": "02:00:00:00:00:02", "address": "192.168.1.11", "hostname": "printer"},
        ],
    },
    "nat": {
        "port_forwards": [
            {
                "name": "web",
                "protocol": "tcp",
                "external_port": 8080,
                "internal_address": "192.168.1.10",
                "internal_port": 80,
            },
            {
                "name": "game",
                "protocol": "udp",
                "external_port": "3074-3075",
                "internal_address": "192.168.1.50",
            },
        ]
    },
    "dns": {
        "blocklists": ["https://lists.example/ads.txt"],
        "allow": ["good.example.com"],
        "deny": ["tracker.example.net"],
        "groups": [{"name": "kids", "clients": ["192.168.1.120"], "use_default": True}],
    },
}

LEASES = [
    {
        "address": "192.168.1.100",
        "mac": "02:00:00:00:01:00",
        "hostname": "laptop",
        "expires_in_s": 40000,
    },
    {
        "address": "192.168.1.101",
        "mac": "02:00:00:00:01:01",
        "hostname": HOSTILE_HOST,
        "expires_in_s": 300,
    },
    {
        "address": "192.168.1.102",
        "mac": "02:00:00:00:01:02",
        "hostname": None,
        "expires_in_s": 7200,
    },
    {
        "address": "192.168.1.10",
        "mac": "02:00:00:00:00:01",
        "hostname": "nas",
        "expires_in_s": 3600,
    },
]


def device(mac: str, name: str | None, address: str, online: bool) -> dict[str, Any]:
    return {
        "mac": mac,
        "name": name,
        "user_name": None,
        "hostname": name,
        "vendor": None,
        "addresses": [address],
        "online": online,
        "first_seen": 1_764_000_000.0,
        "last_seen": 1_764_600_000.0,
        "paused": False,
        "reserved_address": None,
        "lease_expires": None,
        "today": {"from_bytes": 0, "to_bytes": 0},
        "total": {"from_bytes": 0, "to_bytes": 0, "from_packets": 0, "to_packets": 0, "dropped": 0},
    }


DEVICES = [
    device("02:00:00:00:00:01", "nas", "192.168.1.10", True),
    device("02:00:00:00:01:00", "laptop", "192.168.1.100", True),
    device("02:00:00:00:01:01", HOSTILE_HOST, "192.168.1.101", False),
    device("02:00:00:00:00:50", "console", "192.168.1.50", False),
]


def queries(count: int) -> list[dict[str, Any]]:
    clients = ("192.168.1.100", "192.168.1.101", "192.168.1.10")
    rows = []
    for i in range(count):
        rows.append(
            {
                "time": 1_764_600_000.0 - i,
                "client": clients[i % 3],
                "name": HOSTILE_QUERY if i == 1 else f"host{i}.example.com",
                "type": "A",
                "rcode": "NOERROR",
                "answer": ["93.184.216.34"],
                "source": "cache" if i % 2 else "upstream",
                "blocked": i % 5 == 0,
                "upstream_ms": 12.5,
            }
        )
    return rows


class PagesControl(FakeControl):
    def __init__(self) -> None:
        super().__init__()
        self.config = config_to_dict(parse_config(copy.deepcopy(BASE_CONFIG)))
        self.applied: list[tuple[str | None, dict[str, Any], bool]] = []
        self.leases = copy.deepcopy(LEASES)
        self.query_log = queries(250)
        self.devices_list = copy.deepcopy(DEVICES)
        self.stored: dict[str, bytes] = {}
        self.log_records = [
            {
                "time": 1_764_600_000.0 + i,
                "level": "INFO",
                "module": module,
                "logger": f"homegw.{module}",
                "message": f"{module} message {i}",
            }
            for i, module in enumerate(("router", "nat", "dhcp", "dns", "webui"))
        ]
        self.log_records.append(
            {
                "time": 1_764_600_009.0,
                "level": "WARNING",
                "module": "dhcp",
                "logger": "homegw.dhcp",
                "message": f"lease for {HOSTILE_HOST}",
            }
        )

    def status(self) -> dict[str, Any]:
        return {
            "ready": True,
            "uptime_s": 93784.0,
            "version": "0.3.1",
            "kernel_path": False,
            "wan": {"state": "up", "address": "203.0.113.7/24"},
        }

    def config_apply(
        self, document: dict[str, Any], section: str | None = None, dry_run: bool = False
    ) -> ApplyResult:
        self.applied.append((section, copy.deepcopy(document), dry_run))
        new = (
            copy.deepcopy(document)
            if section is None
            else {**self.config, section: copy.deepcopy(document)}
        )
        try:
            parsed = parse_config(new)
        except ConfigError as exc:
            raise ConfigRejected(_problems(exc)) from None
        dumped = config_to_dict(parsed)
        changed = sorted(
            k for k in set(dumped) | set(self.config) if dumped.get(k) != self.config.get(k)
        )
        if dry_run:
            return ApplyResult(self.version, changed, {}, dry_run=True)
        how = "restart" if {"wan", "lan"} & set(changed) else "maps"
        self.config = dumped
        self.version += 1
        return ApplyResult(self.version, changed, dict.fromkeys(changed, how))

    def last_applied(self) -> tuple[str | None, dict[str, Any], bool]:
        return self.applied[-1]

    def tables(self) -> list[str]:
        return ["dhcp_leases", "dns_queries"]

    def table(
        self, name: str, offset: int = 0, limit: int = 100, filters: dict[str, str] | None = None
    ) -> Page:
        self.calls.append(("table", name, offset, limit, dict(filters or {})))
        rows = {"dhcp_leases": self.leases, "dns_queries": self.query_log}[name]
        for column, wanted in (filters or {}).items():
            rows = [
                r
                for r in rows
                if wanted == str(r.get(column))
                or (isinstance(r.get(column), str) and wanted in r[column])
            ]
        return Page(len(rows), offset, limit, rows[offset : offset + limit])

    def devices(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.devices_list)

    def modules(self) -> list[dict[str, Any]]:
        counters = {
            "firewall": {
                "wan_passed": 900,
                "wan_to_lan": 120,
                "wan_ping_dropped": 7,
                "malformed": 0,
            },
            "nat": {"translated_out": 5000, "unsolicited_dropped": 300, "ports_exhausted": 2},
            "router": {"forwarded": 7000, "martian": 40, "ttl_exceeded": 1},
            "dhcp": {},
            "dns": {"answered": 10},
        }
        return [
            {"name": name, "id": i, "enabled": True, "loaded": True, "chains": [], "counters": c}
            for i, (name, c) in enumerate(counters.items())
        ]

    def dns_stats(self, limit: int = 10) -> dict[str, Any]:
        return {
            "queries": 250,
            "blocked": 50,
            "top_domains": [
                {"name": HOSTILE_QUERY, "count": 30},
                {"name": "example.com", "count": 20},
            ],
            "top_blocked": [{"name": "ads.example.net", "count": 12}],
            "top_clients": [
                {"name": "192.168.1.100", "count": 100},
                {"name": "192.168.1.77", "count": 3},
            ],
        }

    def blocklists(self) -> list[dict[str, Any]]:
        dns = self.config.get("dns", {})
        out = [
            {
                "source": s,
                "groups": ["default"],
                "entries": 1234,
                "updated_at": 1_764_500_000.0,
                "error": None,
            }
            for s in dns.get("blocklists", [])
        ]
        for group in dns.get("groups", []):
            out += [
                {
                    "source": s,
                    "groups": [group["name"]],
                    "entries": None,
                    "updated_at": None,
                    "error": "HTTP 404 <b>gone</b>",
                }
                for s in group.get("blocklists", [])
            ]
        return out

    def blocklist_store(self, name: str, content: bytes) -> dict[str, Any]:
        self.calls.append(("blocklist_store", name, content))
        if not content.strip():
            raise ConfigRejected([Problem("blocklist", "the file has no domains")])
        self.stored[name] = content
        return {
            "source": f"/var/lib/homegw/blocklists/{name}.txt",
            "entries": len(content.splitlines()),
        }

    def blocklists_refresh(self) -> None:
        self.calls.append(("blocklists_refresh",))

    def logs(self, module: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        self.calls.append(("logs", module, limit))
        records = [r for r in self.log_records if module is None or r["module"] == module]
        return records[-limit:]

    def restart(self) -> None:
        self.calls.append(("restart_appliance",))


# -- fixtures and helpers of the page tests ----------------------------------


@pytest.fixture
def control() -> PagesControl:
    return PagesControl()


@pytest.fixture
def app(tmp_path: Path, control: PagesControl) -> Flask:
    return create_app(control, tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A browser logged in as the admin (a cookie session)."""
    client = app.test_client()
    auth = app.extensions["homegw"].auth
    token = (auth.state_dir / "setup-token").read_text().strip()
    response = client.post("/api/v1/setup", json={"token": token, "password": PASSWORD})
    assert response.status_code == 201, response.json
    client.csrf = response.json["csrf_token"]  # type: ignore[attr-defined]
    return client


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A form POST with the page's CSRF token."""
    return client.post(path, data={"csrf_token": client.csrf, **(data or {})}, **kwargs)  # type: ignore[attr-defined]


def field_error(html: str, field_id: str) -> str | None:
    """The error text shown next to the control with id ``field_id``
    (the element its aria-describedby names), or None."""
    import re

    control = re.search(rf'<(?:input|select|textarea)[^>]*\bid="{re.escape(field_id)}"[^>]*>', html)
    assert control is not None, f"no control {field_id} in the page"
    described = re.search(r'aria-describedby="([^"]+)"', control.group(0))
    if described is None or "aria-invalid" not in control.group(0):
        return None
    error = re.search(
        rf'<(?:p|ul) class="error" id="{re.escape(described.group(1))}">(.*?)</(?:p|ul)>',
        html,
        re.S,
    )
    return error.group(1).strip() if error else None


def value_of(html: str, field_id: str) -> str | None:
    import re

    control = re.search(rf'<input[^>]*\bid="{re.escape(field_id)}"[^>]*>', html)
    assert control is not None, f"no input {field_id} in the page"
    value = re.search(r'value="([^"]*)"', control.group(0))
    return value.group(1) if value else None


def label_holders(html: str, text: str) -> int:
    """How many things on the page a browser test's get_by_label(text) finds
    (Playwright matches a label, an aria-label or the text of an
    aria-labelledby target that contains `text`, case-insensitively)."""
    import re

    wanted = text.lower()
    labels = re.findall(r"<label[^>]*>(.*?)</label>", html, re.S)
    named = re.findall(r'aria-label="([^"]*)"', html)
    targets = set(re.findall(r'aria-labelledby="([^"]*)"', html))
    referrers = {
        ident: len(re.findall(rf'aria-labelledby="{re.escape(ident)}"', html)) for ident in targets
    }
    count = sum(wanted in label.lower() for label in labels + named)
    for ident, body in re.findall(r'<h[1-6] id="([^"]+)"[^>]*>(.*?)</h[1-6]>', html, re.S):
        if ident in targets and wanted in re.sub(r"<[^>]+>", "", body).lower():
            count += referrers[ident]
    return count


def assert_one_control_per_label(html: str, labels: list[str]) -> None:
    for label in labels:
        assert label_holders(html, label) == 1, label


def csrf_refused(response: Any) -> bool:
    """A page form POST without the CSRF token gets the "form expired" page
    (400, HTML, saying to reload), never done."""
    return (
        response.status_code == 400
        and response.mimetype == "text/html"
        and "Reload the page" in response.get_data(as_text=True)
    )
