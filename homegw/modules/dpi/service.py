"""The DPI module's slow path: classification of punted payload, DNS
attribution, parental-control policies written into the datapath, usage
history folded from the flow table, and what the management API asks.

Threads: punts arrive on the slow-path reader, DNS answers on the DNS
server's loop, ticks on the module's supervised timer thread, questions on
the API's threads; `_lock` guards the classifier and the decision. The
datapath's maps are written only from here (maps.py is the one class that
touches them).
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from homegw import supervise
from homegw.control import Sample
from homegw.dataplane.slowpath import Punt
from homegw.modules.dns.blocklists import cached_path, fetch_list, is_url
from homegw.modules.dpi import categories
from homegw.modules.dpi.appdb import AppDb, AppDbError
from homegw.modules.dpi.appids import AppIds
from homegw.modules.dpi.classify import FINAL_AFTER, FlowClassifier, FlowKey, Verdict
from homegw.modules.dpi.classify.packet import parse_frame
from homegw.modules.dpi.config import DpiConfig
from homegw.modules.dpi.maps import SOURCES, TICK_SHIFT, DpiMaps, FlowRow
from homegw.modules.dpi.policy import Decision, day_start, evaluate, local_zone
from homegw.modules.dpi.usage import FlowCounters, UsageDb

log = logging.getLogger(__name__)

TICK_NS = 1 << TICK_SHIFT  # a datapath tick in ns

TICK_S = 15.0  # usage folds, flow GC and policy checks at least this often
DNS_ATTRIBUTION_S = 3600  # how long an answered address keeps its name
IDLE_S = {6: 1800.0, 17: 120.0}  # flows forgotten after this idle time, by protocol
CLOSED_IDLE_S = 30.0  # a TCP flow after its FIN or RST
MAX_DNS = 65536  # DPI_MAX_DNS: addresses attributed at once
SOURCE_CACHE = "dpi-app-sources"  # under state_dir: downloaded app-database sources

LocalNow = Callable[[], datetime]


def _local_now() -> datetime:
    return datetime.now(local_zone())


class DpiService:
    def __init__(
        self,
        section: DpiConfig,
        state_dir: str | Path,
        maps: DpiMaps,
        *,
        local_now: LocalNow = _local_now,
        monotonic: Callable[[], float] = time.monotonic,
        on_policy_change: Callable[[], None] = lambda: None,
    ) -> None:
        """on_policy_change: called after the datapath's policy changed (the
        fast path's flows must meet it: their entries are retired)."""
        self.section = section
        self.maps = maps
        self.on_policy_change = on_policy_change
        self._macs: dict[str, str] = {}  # LAN address -> device MAC, from the flows
        self.local_now = local_now
        self.monotonic = monotonic
        self.cache_dir = Path(state_dir) / SOURCE_CACHE
        self.ids = AppIds(state_dir)
        self.db_error: str | None = None
        self.db = self._load_db(section)
        self.usage = UsageDb(state_dir, zone=local_now().tzinfo)  # the days of the policies
        self.classifier = FlowClassifier()
        self.classified: Counter[str] = Counter()  # flows by the source of their verdict
        self.decision: Decision | None = None
        self._lock = threading.Lock()
        self._deciding = threading.Lock()
        self._seen: set[tuple] = set()  # flow keys already counted by source
        self._live_flows = 0
        self._dns_expiry: dict[str, int] = {}  # addresses in dpi_dns -> their expiry tick
        self.dropped: Counter[str] = Counter()  # slow-path writes that found a map full
        self.usage.baseline(self._counters(maps.flows()))  # pinned flows of the last run

    def _load_db(self, section: DpiConfig) -> AppDb:
        """The shipped database and the file sources (URL sources are the
        refresher's: downloaded in the background); the shipped one alone
        when a source is bad (the error is shown)."""
        try:
            db = AppDb.load(self._sources(section))
            self.db_error = None
        except AppDbError as error:
            log.error("dpi: app database sources refused, using the shipped one: %s", error)
            self.db_error = str(error)
            db = AppDb.load()
        self.ids.reserve(app.id for app in db.apps)
        return db

    def _sources(self, section: DpiConfig) -> list[str]:
        """The config's sources, a URL as its downloaded copy (once there is one)."""
        paths = []
        for source in section.app_sources:
            if is_url(source):
                copy = cached_path(self.cache_dir, source)
                if copy.exists():
                    paths.append(str(copy))
            else:
                paths.append(source)
        return paths

    def refresh_sources(self) -> None:
        """Download the URL sources (in the background) and load them."""
        urls = [s for s in self.section.app_sources if is_url(s)]
        if urls:
            supervise.Thread(self._download, "dpi-app-sources", args=(urls,)).start()

    def _download(self, urls: list[str]) -> None:
        for url in urls:
            try:
                fetch_list(url, self.cache_dir)
            except Exception as error:  # the last copy (or none) stays in use
                log.warning("dpi: app source %s not downloaded: %s", url, error)
                self.db_error = f"{url}: {error}"
        db, error = self.db.reloaded(self._sources(self.section))
        self.db, self.db_error = db, error or self.db_error
        self.ids.reserve(app.id for app in db.apps)

    # -- punts: a classifying flow's payload ---------------------------------
    def on_payload(self, punt: Punt) -> None:
        now = self.monotonic()
        with self._lock:
            result = self.classifier.feed(punt.packet, now)
            if result is None and punt.meta[0] >= FINAL_AFTER:  # the datapath's last punt
                segment = parse_frame(punt.packet)
                if segment is not None:
                    result = (segment.key, self.classifier.give_up(segment.key))
        if result is not None:
            self._classify(*result)

    def _classify(self, key: FlowKey, verdict: Verdict) -> None:
        app, category = self._app_of(verdict)
        number = self.ids.number(app)
        try:
            self.maps.classify(key, number, categories.category_number(category), verdict.source)
        except Exception:  # dpi_classified full: the flow gives up by itself
            self.dropped["classified_full"] += 1
            return
        log.debug("dpi: %s -> %s (%s, %s)", key, app, category, verdict.source)

    def _app_of(self, verdict: Verdict) -> tuple[str, str]:
        if verdict.name:
            return self.db.label_of(verdict.name)
        app = self.db.app(verdict.app) if verdict.app else None
        if app is None:
            return ("unknown", categories.CATEGORY_UNKNOWN)
        return (app.id, app.category)

    # -- DNS: our forwarder's answers attribute addresses ------------------------
    def on_dns_answer(self, client: str, name: str, addresses: list[str]) -> None:
        app, category = self.db.label_of(name)
        if not app:
            return
        number = self.ids.number(app)
        expires = self.maps.now_tick() + DNS_ATTRIBUTION_S * 10**9 // TICK_NS
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version != 4:
                continue
            if len(self._dns_expiry) >= MAX_DNS and str(ip) not in self._dns_expiry:
                self.dropped["dns_full"] += 1  # the oldest go at the next tick
                continue
            try:
                self.maps.set_dns(ip, number, categories.category_number(category), expires)
            except Exception:
                self.dropped["dns_full"] += 1
                continue
            with self._lock:  # the timer thread walks it
                self._dns_expiry[str(ip)] = expires

    def _forget_answers(self) -> None:
        """Addresses whose DNS attribution expired leave dpi_dns."""
        now_tick = self.maps.now_tick()
        with self._lock:
            old = [addr for addr, expires in self._dns_expiry.items() if expires <= now_tick]
            for addr in old:
                del self._dns_expiry[addr]
        if old:
            self.maps.drop_dns(old)

    def mac_of(self, address: str) -> str | None:
        """The MAC of the LAN device at `address`, from the flows of the last
        tick (no netlink here: this runs on the DNS server's loop)."""
        return self._macs.get(address)

    def dns_blocked(self, client: str, name: str) -> bool:
        """Whether the policies block `name` for the device at `client` now."""
        decision = self.decision
        mac = self.mac_of(client) if decision else None
        if decision is None or mac is None:
            return False
        app, category = self.db.label_of(name)
        entries = decision.entries
        for key in ((mac, "app", app), (mac, "category", category), (mac, "all", "")):
            action = entries.get(key)
            if action is not None:
                return action == "block"
        return False

    # -- time: folds, flow GC, policies ----------------------------------------
    def tick(self) -> float:
        """Fold usage, forget idle flows, decide the policies now; returns the
        seconds until the next tick is due (a policy change is on time)."""
        rows = self.flows()
        self._live_flows = len(rows)
        self._macs = {row.key.lan_addr: row.mac for row in rows if row.mac}
        try:
            self.usage.fold(self._counters(rows), self.local_now().timestamp())
        except sqlite3.Error:  # the history misses a fold; the policies go on
            self.dropped["usage_fold_failed"] += 1
            log.exception("dpi: usage fold failed")
        self._count_sources(rows)
        self._forget_idle(rows)
        self._forget_answers()
        with self._lock:
            stale = self.classifier.expire(self.monotonic())
            verdicts = [(key, self.classifier.give_up(key)) for key in stale]
        for key, verdict in verdicts:  # a guess from the port, or unknown
            self._classify(key, verdict)
        decision = self.decide()
        due = TICK_S
        if decision.next_change is not None:
            now = self.local_now().astimezone(UTC)
            due = min(due, (decision.next_change.astimezone(UTC) - now).total_seconds())
        return max(0.05, due)

    def decide(self) -> Decision:
        """The policies in force now, written into the datapath."""
        with self._deciding:  # the timer and a config change may both decide
            now = self.local_now()
            used = self.usage.used_minutes_at(now.timestamp())
            decision = evaluate(self.section, None, used, self.db, now)
            if self.maps.set_policy(self._policy_entries(decision)):
                self.on_policy_change()
            self.decision = decision
            return decision

    def _policy_entries(self, decision: Decision) -> dict[tuple[str, str, int], str]:
        """The decision in the datapath's numbers: (mac, kind, number) -> action;
        a device with an app or category block also holds its TCP and
        UDP/443 flows' first payload until their verdict (dpi.bpf.c), so a
        short request to a blocked app cannot finish before the slow path
        has answered."""
        entries = {}
        for (mac, kind, ident), action in decision.entries.items():
            if kind == "app":
                number = self.ids.number(ident)
            elif kind == "category":
                number = categories.category_number(ident)
            else:
                number = 0
            entries[(mac, kind, number)] = action
            if kind != "all" and action == "block":
                entries[(mac, "hold", 0)] = "hold"
        return entries

    def flows(self) -> list[FlowRow]:
        """The datapath's flows; one still waiting with the slow path's verdict
        already written (its next packet reads it) shows that verdict."""
        rows = self.maps.flows()
        for i, row in enumerate(rows):
            if row.state == "classifying":
                found = self.maps.classified(row.key)
                if found is not None:
                    app, category, source = found
                    rows[i] = replace(row, app=app, category=category, source=source)
        return rows

    def _counters(self, rows: list[FlowRow]) -> list[FlowCounters]:
        return [
            FlowCounters(
                key=row.key_bytes,
                mac=row.mac,
                app=self.ids.name(row.app) or "unknown",
                category=categories.category_id(row.category),
                up_bytes=row.up_bytes,
                down_bytes=row.down_bytes,
                packets=row.packets,
                started=row.first_tick,
            )
            for row in rows
            if row.mac
        ]

    def _count_sources(self, rows: list[FlowRow]) -> None:
        live = set()
        for row in rows:
            live.add(row.key)
            if row.key not in self._seen and row.source != "none":
                self._seen.add(row.key)
                self.classified[row.source] += 1
        self._seen &= live

    def _forget_idle(self, rows: list[FlowRow]) -> None:
        now_tick = self.maps.now_tick()
        old = []
        for row in rows:
            idle = (now_tick - row.last_tick) * TICK_NS / 1e9
            limit = CLOSED_IDLE_S if row.fin else IDLE_S.get(row.key.proto, 120.0)
            if idle > limit:
                old.append(row.key)
        if old:
            self.maps.forget(old)

    # -- config ---------------------------------------------------------------------
    def apply(self, section: DpiConfig) -> None:
        """A new `dpi` section: the database again if its sources changed,
        the policies decided at once."""
        refresh = section.app_sources != self.section.app_sources
        self.section = section
        if refresh:
            self.db = self._load_db(section)
            self.refresh_sources()
        self.decide()

    # -- what the management API shows ------------------------------------------
    def apps(self) -> dict[str, Any]:
        return {**self.db.describe(), "error": self.db_error}

    def app_usage(self, mac: str | None, hours: int, bucket: str) -> list[dict[str, Any]]:
        until = self.local_now().timestamp()
        return self.usage.usage(mac, until - hours * 3600, until, bucket)

    def top_apps(self, mac: str | None, hours: int, limit: int) -> list[dict[str, Any]]:
        rows = self.usage.top(mac, self.local_now().timestamp() - hours * 3600, limit)
        for row in rows:
            app = self.db.app(row["app"])
            row["label"] = app.label if app else row["app"]
        return rows

    def parental(self) -> dict[str, Any]:
        decision = self.decision or self.decide()
        devices = [state.to_json() for state in decision.devices.values()]
        nxt = decision.next_change
        return {
            "now": self.local_now().timestamp(),
            "devices": devices,
            "next_change": nxt.timestamp() if nxt else None,
        }

    def flow_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "device": row.mac,
                "lan": f"{row.key.lan_addr}:{row.key.lan_port}",
                "remote": f"{row.key.remote_addr}:{row.key.remote_port}",
                "proto": {6: "tcp", 17: "udp"}.get(row.key.proto, str(row.key.proto)),
                "app": self.ids.name(row.app) or "unknown",
                "category": categories.category_id(row.category),
                "source": row.source,
                "state": row.state,
                "verdict": row.verdict,
                "up_bytes": row.up_bytes,
                "down_bytes": row.down_bytes,
            }
            for row in self.flows()
        ]

    def gauges(self) -> dict[str, float]:
        return {
            "flows": float(self._live_flows),
            "dns_attributed_addresses": float(len(self._dns_expiry)),
            **{f"{reason}_writes_refused": float(n) for reason, n in self.dropped.items()},
        }

    def samples(self) -> Iterator[Sample]:
        """Flows by the source of their verdict; bytes since local midnight by category."""
        for source in SOURCES[1:]:
            count = self.classified.get(source, 0)
            help_text = "Flows classified by DPI, by the source of the verdict"
            yield Sample(
                "dpi_flows_classified_total", "counter", help_text, {"source": source}, count
            )
        since = day_start(self.local_now()).timestamp()
        totals: Counter[str] = Counter()
        for row in self.usage.top(None, since, 1000):
            totals[row["category"]] += row["up_bytes"] + row["down_bytes"]
        for category, total in sorted(totals.items()):
            help_text = "Bytes of LAN devices since local midnight, by application category"
            yield Sample(
                "dpi_category_bytes_today", "gauge", help_text, {"category": category}, total
            )

    def close(self) -> None:
        self.usage.close()
        self.ids.close()
