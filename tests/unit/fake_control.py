"""A small in-memory homegw.control.Control for tests of the API's mechanics
(the end-to-end tests use the real appliance)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from homegw.control import ApplyResult, ConfigRejected, Conflict, NotFound, Page, Problem, Sample
from homegw.modules.dns.liststore import LIST_NAME, MAX_UPLOAD
from tests.unit.fake_system import FakeSystem
from tests.unit.fake_user_modules import FakeUserModules

CONFIG: dict[str, Any] = {
    "state_dir": "/var/lib/homegw",
    "log_level": "info",
    "wan": {"interface": "wan0", "mode": "dhcp"},
    "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
    "dhcp": {"lease_time": 3600},
    "dns": {"enabled": True},
    "webui": {"metrics_public": True},
}
ROWS = [
    {"mac": "02:00:00:00:00:01", "address": "192.168.1.100", "hostname": "laptop"},
    {"mac": "02:00:00:00:00:02", "address": "192.168.1.101", "hostname": "phone"},
    {"mac": "02:00:00:00:00:03", "address": "192.168.1.102", "hostname": "printer"},
]


def device_row(mac: str, hostname: str | None, address: str) -> dict[str, Any]:
    return {
        "mac": mac,
        "name": hostname,
        "user_name": None,
        "hostname": hostname,
        "vendor": None,
        "addresses": [address],
        "online": True,
        "first_seen": 100.0,
        "last_seen": 200.0,
        "paused": False,
        "reserved_address": None,
        "lease_expires": 3700.0,
        "today": {"from_bytes": 10, "to_bytes": 20},
        "total": {
            "from_bytes": 10,
            "to_bytes": 20,
            "from_packets": 1,
            "to_packets": 2,
            "dropped": 0,
        },
    }


LOGS = [
    {"time": 1.0, "level": "INFO", "module": "nat", "logger": "homegw.modules.nat.module",
     "message": "NAT ready"},
    {"time": 2.0, "level": "WARNING", "module": "webui", "logger": "waitress",
     "message": "<script>alert(1)</script>"},
    {"time": 3.0, "level": "INFO", "module": "nat", "logger": "homegw.modules.nat.gc",
     "message": "3 sessions expired"},
]  # fmt: skip


HOSTILE_LABEL = "<script>alert('app')</script>"
DPI_OFF = "DPI is off: enable the dpi module"
CATEGORIES = [
    {"id": "unknown", "label": "Unknown"},
    {"id": "video", "label": "Video streaming"},
    {"id": "social", "label": "Social networks"},
    {"id": "games", "label": "Games"},
    {"id": "education", "label": "Education"},
    {"id": "other", "label": "Other"},
]
APPS = [
    {"id": "youtube", "label": "YouTube", "category": "video",
     "domains": ["youtube.com", "googlevideo.com", "ytimg.com"]},
    {"id": "netflix", "label": "Netflix", "category": "video", "domains": ["netflix.com"]},
    {"id": "tiktok", "label": "TikTok", "category": "social", "domains": ["tiktok.com"]},
    {"id": "fortnite", "label": "Fortnite", "category": "games", "domains": ["epicgames.com"]},
    {"id": "roblox", "label": "Roblox", "category": "games", "domains": ["roblox.com"]},
    {"id": "khan_academy", "label": "Khan Academy", "category": "education",
     "domains": ["khanacademy.org"]},
    {"id": "evil_app", "label": HOSTILE_LABEL, "category": "other", "domains": ["evil.example"]},
]  # fmt: skip
DPI_MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def usage_rows(mac: str | None, hours: int, bucket: str, now: float) -> list[dict[str, Any]]:
    """Per-app rows, oldest first: youtube every bucket, the hostile app and
    an unknown domain every other one."""
    step = 3600 if bucket == "hour" else 86400
    buckets = max(1, hours * 3600 // step)
    start = now - now % step - step * (buckets - 1)
    rows = []
    for i in range(buckets):
        apps = [("youtube", "video")] + (
            [("evil_app", "other"), ("example.co.uk", "unknown")] if i % 2 else []
        )
        for n, (app, category) in enumerate(apps):
            for device in [mac] if mac else DPI_MACS:
                rows.append(
                    {"start": start + i * step, "mac": device, "app": app, "category": category,
                     "up_bytes": 1000 * (i + 1), "down_bytes": 50_000 * (i + 1) // (n + 1),
                     "packets": 40 * (i + 1), "active_minutes": min(60, 10 + i)}
                )  # fmt: skip
    return rows


def top_rows(limit: int) -> list[dict[str, Any]]:
    rows = [
        ("youtube", "YouTube", "video", 2_000_000, 900_000_000, 95),
        ("evil_app", HOSTILE_LABEL, "other", 50_000, 40_000_000, 30),
        ("example.co.uk", "example.co.uk", "unknown", 7000, 120_000, 3),
    ]
    keys = ("app", "label", "category", "up_bytes", "down_bytes", "active_minutes")
    return [dict(zip(keys, row, strict=True)) for row in rows][:limit]


class FakeControl(FakeUserModules, FakeSystem):
    def __init__(self) -> None:
        self.config = copy.deepcopy(CONFIG)
        self.version = 1
        self.history = [{"version": 1, "applied_at": 1.0, "changed": [], "current": True}]
        self.enabled = {"router": True, "nat": True}
        self.order = {"lan": ["router", "nat"], "wan": ["nat", "router"]}
        self.calls: list[tuple[Any, ...]] = []
        self.devices_by_mac = {
            r["mac"]: device_row(r["mac"], r["hostname"], r["address"]) for r in ROWS
        }
        self.stored_lists: dict[str, bytes] = {}
        self.dpi_on = True
        self.now = 1_764_590_000.0
        self.samples_list: list[Sample] = [
            Sample("router_packets", "counter", "packets", {"nic": "lan", "reason": "ok"}, 5),
            Sample("router_packets", "counter", "packets", {"nic": "wan", "reason": "ok"}, 7),
            Sample("dhcp_leases", "gauge", "leases", {}, 3),
        ]
        self._init_user_modules()

    def status(self) -> dict[str, Any]:
        return {"ready": True, "uptime_s": 1.5, "version": "0.1.0", "kernel_path": False}

    def config_get(self, section: str | None = None) -> dict[str, Any]:
        if section is None:
            return copy.deepcopy(self.config)
        if section not in self.config:
            raise NotFound(f"no config section {section!r}")
        return copy.deepcopy(self.config[section])

    def config_apply(
        self, document: dict[str, Any], section: str | None = None, dry_run: bool = False
    ) -> ApplyResult:
        self.calls.append(("apply", section, dry_run))
        new = copy.deepcopy(self.config)
        if section is None:
            new = copy.deepcopy(document)
        elif section not in new:
            raise NotFound(f"no config section {section!r}")
        else:
            new[section] = copy.deepcopy(document)
        problems = self._problems(new)
        if problems:
            raise ConfigRejected(problems)
        changed = sorted(k for k in set(new) | set(self.config) if new.get(k) != self.config.get(k))
        if dry_run:
            return ApplyResult(self.version, changed, {}, dry_run=True)
        self.config = new
        self.version += 1
        self.history.insert(0, {"version": self.version, "applied_at": 2.0, "changed": changed})
        return ApplyResult(self.version, changed, dict.fromkeys(changed, "maps"))

    @staticmethod
    def _problems(config: dict[str, Any]) -> list[Problem]:
        problems = [Problem(k, "field required") for k in ("wan", "lan") if k not in config]
        lease = config.get("dhcp", {}).get("lease_time", 60)
        if not isinstance(lease, int) or lease < 60:
            problems.append(Problem("dhcp.lease_time", "at least 60s"))
        return problems

    def config_history(self) -> list[dict[str, Any]]:
        return [dict(h, current=i == 0) for i, h in enumerate(self.history)]

    def config_rollback(self, version: int) -> ApplyResult:
        if version not in [h["version"] for h in self.history]:
            raise NotFound(f"config version {version} is not kept")
        return ApplyResult(self.version + 1, [], {})

    def modules(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "id": i,
                "enabled": on,
                "loaded": on,
                "chains": [
                    {"nic": nic, "hook": "xdp", "position": order.index(name)}
                    for nic, order in self.order.items()
                    if name in order
                ],
                "counters": {"ok": 1},
            }
            for i, (name, on) in enumerate(self.enabled.items())
        ]

    def module_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        if name in self.user:
            return self.user_set_enabled(name, enabled)
        if name not in self.enabled:
            raise NotFound(f"no module {name!r}")
        if name == "router" and not enabled:
            raise Conflict("nat needs the router")
        self.enabled[name] = enabled
        return {"name": name, "enabled": enabled}

    def module_set_order(self, nic: str, names: list[str]) -> dict[str, Any]:
        if sorted(names) != sorted(self.order[nic]):
            raise ConfigRejected([Problem(f"dataplane.order.{nic}", "unknown module")])
        self.order[nic] = names
        return {"nic": nic, "order": names}

    def tables(self) -> list[str]:
        return ["dhcp_leases"]

    def table(
        self, name: str, offset: int = 0, limit: int = 100, filters: dict[str, str] | None = None
    ) -> Page:
        if name != "dhcp_leases":
            raise NotFound(f"no table {name!r}")
        rows = [r for r in ROWS if all(v in str(r.get(k, "")) for k, v in (filters or {}).items())]
        return Page(len(rows), offset, limit, rows[offset : offset + limit])

    def renew_wan_lease(self) -> None:
        self.calls.append(("renew",))

    def flush_table(self, name: str) -> int:
        if name != "dhcp_leases":
            raise NotFound(f"no table {name!r}")
        return len(ROWS)

    def restart_module(self, name: str) -> None:
        if name not in self.enabled:
            raise NotFound(f"no module {name!r}")
        self.calls.append(("restart", name))

    def samples(self) -> Iterable[Sample]:
        return list(self.samples_list)

    def restart(self) -> None:
        self.calls.append(("restart_all",))

    # -- devices -----------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return sorted(self.devices_by_mac.values(), key=lambda d: str(d["name"]))

    def device(self, mac: str) -> dict[str, Any]:
        if mac not in self.devices_by_mac:
            raise NotFound(f"no device {mac}")
        history = [{"hour": 3600.0 * h, "from_bytes": h, "to_bytes": 2 * h} for h in range(24)]
        return {**self.devices_by_mac[mac], "history": history}

    def device_set(self, mac: str, changes: dict[str, Any]) -> ApplyResult:
        self.calls.append(("device_set", mac, changes))
        name = changes.get("name")
        if name is not None and not name.isprintable():
            raise ConfigRejected([Problem("devices.0.name", "control characters")])
        device = self.devices_by_mac.setdefault(mac, device_row(mac, None, "192.168.1.200"))
        if "name" in changes:
            device["user_name"] = name
            device["name"] = name or device["hostname"]
        if "paused" in changes:
            device["paused"] = changes["paused"]
        self.version += 1
        return ApplyResult(self.version, ["devices"], {"router": "maps"})

    def traffic_history(self, hours: int = 24) -> list[dict[str, Any]]:
        self.calls.append(("traffic", hours))
        return [{"hour": 3600.0 * h, "from_bytes": h, "to_bytes": h} for h in range(hours)]

    # -- DNS ---------------------------------------------------------------
    def dns_stats(self, limit: int = 10) -> dict[str, Any]:
        self.calls.append(("dns_stats", limit))
        top = [{"name": "example.com", "count": 3}][:limit]
        blocked = [{"name": "ads.example.com", "count": 1}][:limit]
        clients = [{"name": "192.168.1.100", "count": 4}][:limit]
        return {
            "queries": 4,
            "blocked": 1,
            "top_domains": top,
            "top_blocked": blocked,
            "top_clients": clients,
        }

    def blocklists(self) -> list[dict[str, Any]]:
        return [
            {
                "source": f"/var/lib/homegw/blocklists/{name}.txt",
                "groups": ["default"],
                "entries": content.count(b"\n"),
                "updated_at": 5.0,
                "error": None,
            }
            for name, content in sorted(self.stored_lists.items())
        ]

    def blocklist_store(self, name: str, content: bytes) -> dict[str, Any]:
        if not LIST_NAME.match(name):
            raise ConfigRejected([Problem("blocklist", f"bad name {name!r}")])
        if len(content) > MAX_UPLOAD or not content.strip():
            raise ConfigRejected([Problem("blocklist", "too big or no domain")])
        self.stored_lists[name] = content
        return {"source": f"/var/lib/homegw/blocklists/{name}.txt", "entries": len(content)}

    def blocklists_refresh(self) -> None:
        self.calls.append(("refresh",))

    # -- logs and alerts ---------------------------------------------------
    def logs(self, module: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        self.calls.append(("logs", module, limit))
        rows = [r for r in LOGS if module is None or r["module"] == module]
        return rows[-limit:]

    def alerts(self) -> list[dict[str, Any]]:
        message = "no address from the ISP: no DHCP lease on wan0"
        return [{"code": "wan_down", "severity": "critical", "message": message, "since": 9.0}]

    # -- DPI ---------------------------------------------------------------
    def _dpi(self) -> None:
        if not self.dpi_on:
            raise Conflict(DPI_OFF)

    def apps(self) -> dict[str, Any]:
        if not self.dpi_on:
            return {"categories": [], "apps": [], "source": "", "loaded_at": 0.0}
        source = "/usr/lib/homegw/apps"
        return {"categories": copy.deepcopy(CATEGORIES), "apps": copy.deepcopy(APPS),
                "source": source, "loaded_at": self.now - 600}  # fmt: skip

    def _known(self, mac: str | None) -> None:
        if mac is not None and mac not in {d["mac"] for d in self.devices()}:
            raise NotFound(f"no device {mac}")

    def app_usage(
        self, mac: str | None = None, hours: int = 24, bucket: str = "hour"
    ) -> list[dict[str, Any]]:
        self.calls.append(("app_usage", mac, hours, bucket))
        self._dpi()
        self._known(mac)
        return usage_rows(mac, hours, bucket, self.now)

    def top_apps(
        self, mac: str | None = None, hours: int = 24, limit: int = 10
    ) -> list[dict[str, Any]]:
        self.calls.append(("top_apps", mac, hours, limit))
        self._dpi()
        self._known(mac)
        return top_rows(limit)

    def parental(self) -> dict[str, Any]:
        self._dpi()
        device = {
            "mac": DPI_MACS[1],
            "profile": "<b>x</b>",
            "blocked_apps": ["youtube", "evil_app"],
            "blocked_categories": ["games"],
            "paused_until": None,
            "budgets": [{"rule": "games", "used_minutes": 42, "limit_minutes": 60,
                         "exhausted": False}],
            "rules": ["bedtime"],
            "next_change": self.now + 1800,
        }  # fmt: skip
        return {"now": self.now, "devices": [device]}

    def pause(self, target: str, minutes: int | None) -> ApplyResult:
        self.calls.append(("pause", target, minutes))
        self._dpi()
        if target not in {d["mac"] for d in self.devices()} | {"<b>x</b>"}:
            raise ConfigRejected([Problem("dpi.pauses", f"no device or profile {target!r}")])
        self.version += 1
        return ApplyResult(self.version, ["dpi.pauses"], {"dpi": "maps"})
