"""A small in-memory homegw.control.Control for tests of the API's mechanics
(the end-to-end tests use the real appliance)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from homegw.control import ApplyResult, ConfigRejected, Conflict, NotFound, Page, Problem, Sample

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


class FakeControl:
    def __init__(self) -> None:
        self.config = copy.deepcopy(CONFIG)
        self.version = 1
        self.history = [{"version": 1, "applied_at": 1.0, "changed": [], "current": True}]
        self.enabled = {"router": True, "nat": True}
        self.order = {"lan": ["router", "nat"], "wan": ["nat", "router"]}
        self.calls: list[tuple[Any, ...]] = []
        self.samples_list: list[Sample] = [
            Sample("router_packets", "counter", "packets", {"nic": "lan", "reason": "ok"}, 5),
            Sample("router_packets", "counter", "packets", {"nic": "wan", "reason": "ok"}, 7),
            Sample("dhcp_leases", "gauge", "leases", {}, 3),
        ]

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
