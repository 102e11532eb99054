"""homegw.control.Control over the running Appliance: what the management
API, the CLI and /metrics see.

Applying a config (faucet's pipeline): parse and validate the whole document
(every problem with its key path; nothing changed on a refusal), diff it
against the running config, let the appliance apply what changed
(Appliance.reconfigure), then write the file atomically and keep it in the
history. Reconfigurations run one at a time in the appliance's control
thread; one that restarts the whole appliance (wan, lan, webui, state_dir)
is answered before it runs, since it restarts the server that answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from homegw import __version__, logbuffer, supervise
from homegw.alerts import AlertWatch, snapshot_of
from homegw.appliance import Appliance, restart_needed
from homegw.config import (
    Config,
    ConfigError,
    changed_keys,
    config_diff,
    config_to_dict,
    parse_config,
    save_config,
)
from homegw.confighistory import ConfigHistory
from homegw.control import ApplyResult, ConfigRejected, Conflict, NotFound, Page, Problem, Sample
from homegw.dataplane.abi import Hook, Nic
from homegw.dpipause import with_pause
from homegw.inventory import Inventory
from homegw.modules.dns.liststore import store_blocklist, unloaded_status
from homegw.modules.dns.querystats import query_stats
from homegw.registry import MODULES, spec
from homegw.upgrade.control import SystemControl
from homegw.usermodules.control import UserModuleControl

log = logging.getLogger(__name__)

FLUSHABLE = ("nat_sessions", "dns_cache", "dns_queries")
DNS_OFF = "the DNS forwarder is off (dns.enabled: false)"
DPI_OFF = "DPI is off: enable the dpi module"
NO_APPS: dict[str, Any] = {"categories": [], "apps": [], "source": "", "loaded_at": 0.0}
Row = dict[str, Any]


def _problems(exc: ConfigError) -> list[Problem]:
    out = []
    for line in exc.lines():
        loc, _, msg = line.partition(": ")
        out.append(Problem(loc, msg) if msg else Problem("", line))
    return out


class Management(UserModuleControl, SystemControl):
    def __init__(self, appliance: Appliance, config_path: Path | None) -> None:
        self.appliance = appliance
        self.config_path = config_path
        self.history = ConfigHistory(Path(appliance.config.state_dir) / "config-history")
        self.inventory = Inventory(appliance)
        if self.history.current_version() == 0 or not self._history_matches():
            self.history.record(appliance.config, [], time.time())
        self.alert_watch = AlertWatch()
        supervise.on_fatal(self.alert_watch.thread_died)

    def _history_matches(self) -> bool:
        try:
            return self.history.load(self.history.current_version()) == self.appliance.config
        except NotFound:
            return False

    # -- status ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        app = self.appliance
        cfg = app.config
        lease = app.wan_client.lease if app.wan_client else None
        address = lease.address if lease else cfg.wan.address
        gateway = lease.router if lease else cfg.wan.gateway
        return {
            "ready": app.ready.is_set(),
            "version": __version__,
            "uptime_s": round(time.time() - app.started_at, 1),
            "config_version": self.history.current_version(),
            "wan": {
                "interface": cfg.wan.interface,
                "mode": cfg.wan.mode,
                "address": str(address) if address else None,
                "gateway": str(gateway) if gateway else None,
                "state": "up" if address else "waiting for a lease",
                "xdp_mode": self._xdp_mode(Nic.WAN),
            },
            "lan": {
                "interface": cfg.lan.interface,
                "address": str(cfg.lan.address),
                "xdp_mode": self._xdp_mode(Nic.LAN),
            },
            "nics": self._nic_counters(),
            "kernel_path": app.kernel_path,
        }

    def _xdp_mode(self, nic: Nic) -> str | None:
        """The XDP mode the NIC's root runs in (dataplane.xdp_mode auto may
        fall back to generic on one NIC); None before it is attached."""
        dataplane = self.appliance.dataplane
        return dataplane.xdp_in_use.get(nic) if dataplane is not None else None

    def _nic_counters(self) -> dict[str, dict[str, int]]:
        dataplane = self.appliance.dataplane
        if dataplane is None:
            return {}
        out = {}
        for nic in Nic:
            counts = {}
            for hook in Hook:
                counter = dataplane.chain_stats(nic, hook)
                direction = "rx" if hook is Hook.XDP else "tx"
                counts[f"{direction}_packets"] = counter.packets
                counts[f"{direction}_bytes"] = counter.bytes
            out[nic.name.lower()] = counts
        return out

    # -- config ----------------------------------------------------------
    def config_get(self, section: str | None = None) -> dict[str, Any]:
        data = config_to_dict(self.appliance.config)
        if section is None:
            return data
        if section not in Config.model_fields:
            raise NotFound(f"no config section {section!r}")
        value = data.get(section, {})
        return value if isinstance(value, dict) else {section: value}

    def _parse(self, document: dict[str, Any], section: str | None) -> Config:
        if not isinstance(document, dict):
            raise ConfigRejected([Problem(section or "", "must be a mapping")])
        if section is not None:
            if section not in Config.model_fields:
                raise NotFound(f"no config section {section!r}")
            field = Config.model_fields[section].annotation
            scalar = not (isinstance(field, type) and hasattr(field, "model_fields"))
            value = document.get(section) if scalar else document
            document = {**config_to_dict(self.appliance.config), section: value}
        try:
            return parse_config(document)
        except ConfigError as exc:
            raise ConfigRejected(_problems(exc)) from None

    def config_apply(
        self, document: dict[str, Any], section: str | None = None, dry_run: bool = False
    ) -> ApplyResult:
        return self._apply(self._parse(document, section), dry_run)

    def _apply(self, new: Config, dry_run: bool) -> ApplyResult:
        old = self.appliance.config
        changed = changed_keys(old, new)
        if dry_run or not changed:
            return ApplyResult(self.history.current_version(), changed, {}, dry_run)
        if restart_needed(old, new):
            version = self._keep(new, changed)
            self.appliance.submit(self.appliance.reconfigure, new)
            return ApplyResult(
                version, changed, dict.fromkeys(sorted(config_diff(old, new)), "restart")
            )
        try:
            applied = self.appliance.submit(self.appliance.reconfigure, new).result()
        except Exception as exc:  # reconfigure went back to the running config
            raise Conflict(f"applying failed, the running config is kept: {exc}") from exc
        return ApplyResult(self._keep(new, changed), changed, applied)

    def _keep(self, config: Config, changed: list[str]) -> int:
        if self.config_path is not None:
            save_config(config, self.config_path)
        version = self.history.record(config, changed, time.time())
        log.info("config version %d applied: %s", version, ", ".join(changed))
        return version

    def config_history(self) -> list[dict[str, Any]]:
        return self.history.entries()

    def config_rollback(self, version: int) -> ApplyResult:
        return self._apply(self.history.load(version), dry_run=False)

    # -- modules ---------------------------------------------------------
    def modules(self) -> list[dict[str, Any]]:
        app = self.appliance
        dataplane = app.dataplane
        out = []
        for entry in MODULES:
            loaded = dataplane.modules.get(entry.name) if dataplane else None
            cls = entry.datapath_class()
            chains = []
            if dataplane and loaded:
                for nic in Nic:
                    for hook in Hook:
                        names = dataplane.chain_of(nic, hook)
                        if entry.name in names:
                            chains.append(
                                {
                                    "nic": nic.name.lower(),
                                    "hook": hook.name.lower(),
                                    "position": names.index(entry.name),
                                }
                            )
            out.append(
                {
                    "name": entry.name,
                    "id": cls.module_id if cls else None,
                    "enabled": bool(getattr(app.config, entry.name).enabled),
                    "loaded": loaded is not None,
                    "chains": chains,
                    "counters": loaded.module.counters() if loaded else {},
                }
            )
        return out

    def _module_names(self, name: str) -> None:
        try:
            spec(name)
        except KeyError as exc:
            raise NotFound(str(exc)) from None

    def module_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        users = self.appliance.user_modules
        if users is not None and users.is_user_module(name):
            return users.set_enabled(name, enabled, None)
        self._module_names(name)
        data = config_to_dict(self.appliance.config)
        data.setdefault(name, {})["enabled"] = enabled
        self._apply(self._parse(data, None), dry_run=False)
        return next(m for m in self.modules() if m["name"] == name)

    def module_set_order(self, nic: str, names: list[str]) -> dict[str, Any]:
        if nic not in ("lan", "wan"):
            raise NotFound(f"no NIC {nic!r} (lan or wan)")
        data = config_to_dict(self.appliance.config)
        data.setdefault("dataplane", {}).setdefault("order", {})[nic] = names
        self._apply(self._parse(data, None), dry_run=False)
        return {"nic": nic, "order": list(getattr(self.appliance.config.dataplane.order, nic))}

    # -- tables ----------------------------------------------------------
    def _readers(self) -> dict[str, Callable[[], list[Row]]]:
        app = self.appliance
        readers: dict[str, Callable[[], list[Row]]] = {}
        if app.dataplane:
            for loaded in app.dataplane.modules.values():
                readers |= loaded.module.tables()
        return readers | {  # the services' tables; devices is the inventory's
            "dhcp_leases": self._lease_rows,
            "dhcp_reservations": self._reservation_rows,
            "dns_queries": self._query_rows,
            "dns_cache": self._dns_cache_rows,
            "devices": self._device_rows,
        }

    def tables(self) -> list[str]:
        """The tables there are now (a module's only while it is loaded)."""
        return sorted(self._readers())

    def table(
        self, name: str, offset: int = 0, limit: int = 100, filters: dict[str, str] | None = None
    ) -> Page:
        reader = self._readers().get(name)
        if reader is None:
            raise NotFound(f"no table {name!r} (there are: {', '.join(self.tables())})")
        rows = reader()
        for column, wanted in (filters or {}).items():
            rows = [row for row in rows if _matches(row.get(column), wanted)]
        return Page(len(rows), offset, limit, rows[offset : offset + limit])

    def _lease_rows(self) -> list[Row]:
        dhcp = self.appliance.dhcp
        now = time.time()
        return [
            {
                "address": str(lease.ip),
                "mac": lease.mac,
                "hostname": lease.hostname,
                "sent_name": lease.sent_name,
                "expires_in_s": round(lease.expires - now),
            }
            for lease in (dhcp.leases() if dhcp else [])
        ]

    def _reservation_rows(self) -> list[Row]:
        return [
            {"mac": r.mac, "address": str(r.address), "hostname": r.hostname}
            for r in self.appliance.config.dhcp.reservations
        ]

    def _query_rows(self) -> list[Row]:
        dns = self.appliance.dns
        return [
            {
                "time": entry.time,
                "client": entry.client,
                "name": entry.name,
                "type": entry.qtype,
                "rcode": entry.rcode,
                "answer": list(entry.answer),
                "source": entry.source,
                "blocked": entry.blocked,
                "upstream_ms": entry.upstream_ms,
            }
            for entry in (reversed(dns.query_log()) if dns else [])
        ]

    def _dns_cache_rows(self) -> list[Row]:
        dns = self.appliance.dns
        return dns.resolver.cache.rows(dns.resolver.clock()) if dns else []

    def _device_rows(self) -> list[Row]:
        """The inventory's devices (the one merge of leases, the device table,
        neighbours and the config) as flat table rows, by MAC."""
        rows = []
        for device in self.inventory.devices():
            row = {k: v for k, v in device.items() if k not in ("today", "total")}
            row |= {f"today_{k}": v for k, v in device["today"].items()}
            rows.append(row | device["total"])
        return sorted(rows, key=lambda row: row["mac"])

    # -- actions ---------------------------------------------------------
    def renew_wan_lease(self) -> None:
        if self.appliance.wan_client is None:
            raise Conflict("the WAN is static (wan.mode: static): there is no lease to renew")
        self.appliance.renew_wan_lease()

    def flush_table(self, name: str) -> int:
        if name not in FLUSHABLE:
            raise NotFound(f"table {name!r} cannot be flushed (these can: {', '.join(FLUSHABLE)})")
        app = self.appliance
        if name == "nat_sessions":
            nat = app.dataplane.modules.get("nat") if app.dataplane else None
            if nat is None:
                raise Conflict("the NAT module is not loaded")
            flushed = app.submit(nat.module.flush).result()
            app.dataplane.invalidate_fastpath("NAT sessions flushed")  # their translations too
            return flushed
        if app.dns is None:
            raise Conflict("the DNS forwarder is off (dns.enabled: false)")
        if name == "dns_cache":
            return app.dns.flush_cache()
        return app.dns.resolver.querylog.clear()

    def restart_module(self, name: str) -> None:
        self._module_names(name)
        app = self.appliance
        if app.dataplane is None or name not in app.dataplane.modules:
            raise Conflict(f"module {name} is not loaded")
        app.submit(app.restart_module, name).result()

    # -- devices ---------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return self.inventory.devices()

    def device(self, mac: str) -> dict[str, Any]:
        return self.inventory.device(mac)

    def device_set(self, mac: str, changes: dict[str, Any]) -> ApplyResult:
        """As a config change of the `devices` section (history, file)."""
        data = self.inventory.config_with(config_to_dict(self.appliance.config), mac, changes)
        return self._apply(self._parse(data, None), dry_run=False)

    def traffic_history(self, hours: int = 24) -> list[dict[str, Any]]:
        return self.inventory.traffic_history(hours)

    # -- logs, alerts, DNS, restart ----------------------------------------
    def restart(self) -> None:
        self.appliance.submit(self.appliance.restart)  # answered first, as a `wan` change

    def logs(self, module: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        buffer = logbuffer.installed()
        return buffer.records(module, limit) if buffer else []

    def alerts(self) -> list[dict[str, Any]]:
        return self.alert_watch.evaluate(snapshot_of(self.appliance), time.time())

    def dns_stats(self, limit: int = 10) -> dict[str, Any]:
        dns = self.appliance.dns
        return query_stats(dns.query_log() if dns else [], limit)

    def blocklists(self) -> list[dict[str, Any]]:
        dns = self.appliance.dns
        if dns is None:
            return unloaded_status(self.appliance.config.dns, DNS_OFF)
        return dns.blocklist_status()

    def blocklist_store(self, name: str, content: bytes) -> dict[str, Any]:
        return store_blocklist(Path(self.appliance.config.state_dir), name, content)

    def blocklists_refresh(self) -> None:
        if self.appliance.dns is None:
            raise Conflict(DNS_OFF)
        self.appliance.dns.refresh_blocklists()

    # -- DPI: the DPI service's answers (appliance.dpi, None while off) -------
    def _dpi(self) -> Any:
        dpi = getattr(self.appliance, "dpi", None)
        if dpi is None:
            raise Conflict(DPI_OFF)
        return dpi

    def apps(self) -> dict[str, Any]:
        """With DPI off: an empty database (the pages only show it)."""
        dpi = getattr(self.appliance, "dpi", None)
        return dpi.apps() if dpi is not None else dict(NO_APPS)

    def app_usage(
        self, mac: str | None = None, hours: int = 24, bucket: str = "hour"
    ) -> list[dict[str, Any]]:
        return self._dpi().app_usage(mac, hours, bucket)

    def top_apps(
        self, mac: str | None = None, hours: int = 24, limit: int = 10
    ) -> list[dict[str, Any]]:
        return self._dpi().top_apps(mac, hours, limit)

    def parental(self) -> dict[str, Any]:
        return self._dpi().parental()

    def pause(self, target: str, minutes: int | None) -> ApplyResult:
        """As a config change of dpi.pauses (history, file), as device_set is."""
        self._dpi()
        data = config_to_dict(self.appliance.config)
        known = {device["mac"] for device in self.inventory.devices()}
        now = datetime.now().astimezone()
        data["dpi"] = with_pause(data.get("dpi") or {}, target, minutes, known, now)
        return self._apply(self._parse(data, None), dry_run=False)

    # -- metrics ---------------------------------------------------------
    def samples(self) -> Iterable[Sample]:
        app = self.appliance
        if app.dataplane is not None:
            for name, loaded in list(app.dataplane.modules.items()):
                for reason, value in loaded.module.counters().items():
                    yield Sample(
                        "module_packets_total",
                        "counter",
                        "Packets a module's datapath handled, by outcome",
                        {"module": name, "reason": reason},
                        value,
                    )
                for gauge, value in loaded.module.gauges().items():
                    yield Sample(
                        f"{name}_{gauge}",
                        "gauge",
                        f"{name} module: {gauge.replace('_', ' ')}",
                        {},
                        value,
                    )
                yield from loaded.module.samples()
            yield from self._chain_samples()
            yield from self._fastpath_samples()
            yield from self._slowpath_samples()
        yield from self.user_module_samples()
        yield from _supervision_samples()
        if app.dhcp is not None:
            yield from _flat("dhcp", app.dhcp.stats())
        if app.dns is not None:
            yield from _flat("dns", app.dns.stats())

    def _chain_samples(self) -> Iterable[Sample]:
        for nic, counts in self._nic_counters().items():
            for key, value in counts.items():
                yield Sample(
                    f"chain_{key}_total",
                    "counter",
                    "Packets and bytes that entered a NIC's chain",
                    {"nic": nic},
                    value,
                )

    def _fastpath_samples(self) -> Iterable[Sample]:
        fastpath = self.appliance.dataplane.fastpath if self.appliance.dataplane else None
        if fastpath is None:
            return
        for outcome, (packets, _) in fastpath.counters().items():
            yield Sample(
                "fastpath_packets_total",
                "counter",
                "Packets of the flow fast path by outcome (forwarded by NIC, "
                "learnt, learn_refused, stale)",
                {"outcome": outcome},
                packets,
            )

    def _slowpath_samples(self) -> Iterable[Sample]:
        slowpath = self.appliance.dataplane.slowpath if self.appliance.dataplane else None
        if slowpath is None:
            return
        for key in ("received", "unhandled", "failed", "lost"):
            yield Sample(
                f"slowpath_{key}_total",
                "counter",
                "Punts from the datapath to the slow path",
                {},
                getattr(slowpath, key),
            )


def _supervision_samples() -> Iterable[Sample]:
    for name, count in supervise.failures.items():
        yield Sample(
            "thread_failures_total",
            "counter",
            "Exceptions that ended a thread or escaped a loop's callback",
            {"thread": name},
            count,
        )
    for name, count in supervise.restarts.items():
        yield Sample(
            "thread_restarts_total",
            "counter",
            "Restarts of a crashed thread",
            {"thread": name},
            count,
        )


def _flat(prefix: str, stats: dict[str, Any]) -> Iterable[Sample]:
    """A service's nested stats as gauges (numbers only)."""
    for key, value in stats.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            yield from _flat(name, value)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float):
            yield Sample(name, "gauge", f"{prefix} service statistic {key}", {}, value)


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return wanted.lower() in value.lower()
    if isinstance(value, list):
        return any(_matches(v, wanted) for v in value)
    return str(value).lower() == wanted.lower()
