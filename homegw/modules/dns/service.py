"""DnsService: the DNS forwarder as the appliance runs it.

Builds the resolver from the config (local names, policies, cache, upstream
client, rebind guard, query log), binds ``lan.address:53`` UDP and TCP (and,
unless ``lan.ipv6.mode`` is off, ``[::]:53`` on the LAN NIC only), and
exposes what the rest of the appliance needs: :meth:`lease_name_changed`
(a DHCP name listener: lease names resolve the moment they change),
:attr:`on_answer` (DPI), :meth:`set_fast_path` (the XDP module's
map), :meth:`refresh_blocklists` (when online), :meth:`stats` and
:meth:`query_log`.

``python -m homegw.standalone dns --config FILE`` runs it alone (with
``--xdp`` also the fast path on ``lan.interface``): the benchmark does this.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from homegw.config import Config
from homegw.lan6 import Lan6Table
from homegw.modules.dns.blocklists import (
    GroupSpec,
    ListLoader,
    PolicySet,
    build_policies,
    fetch_list,
)
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.fastpath import FastPathCache
from homegw.modules.dns.listrefresh import ListRefresher, first_delay
from homegw.modules.dns.liststore import list_sources
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.querylog import QueryLog, QueryLogEntry
from homegw.modules.dns.rebind import RebindGuard
from homegw.modules.dns.resolver import AnswerHook, QueryFilter, Resolver
from homegw.modules.dns.servers import DnsServers
from homegw.modules.dns.upstream import UpstreamClient

log = logging.getLogger(__name__)

LIST_DIR = "dns-lists"  # under state_dir: downloaded block lists


class DnsService:
    def __init__(
        self,
        config: Config,
        upstreams_provider: Callable[[], list[str]],
        *,
        port: int = 53,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._provider = upstreams_provider
        dns = config.dns
        self.local = LocalNames(config.lan.domain, config.lan.hostname, config.lan.address)
        reservations = [r for r in config.dhcp.reservations if r.hostname]
        self.local.set_reservations(
            {r.hostname: str(r.address) for r in reservations},
            {r.hostname: str(r.mac) for r in reservations},
        )
        self._lan6: Lan6Table | None = None
        self._reserved_ipv4 = {str(r.mac).lower(): str(r.address) for r in config.dhcp.reservations}
        self._leased_ipv4: dict[str, str] = {}  # MAC -> named lease's address
        self.loader = ListLoader(Path(config.state_dir) / LIST_DIR)
        self.upstream = UpstreamClient(self.upstreams, float(dns.upstream_timeout))
        self.resolver = Resolver(
            cache=DnsCache(dns.cache_size),
            local=self.local,
            policies=self._policies(),
            upstream=self.upstream,
            rebind=RebindGuard(dns.rebind_protection, dns.rebind_allow),
            querylog=QueryLog(dns.query_log_size),
            block_nxdomain=dns.block_response == "nxdomain",
            clock=clock,
        )
        ipv6 = config.lan.interface if config.lan.ipv6.mode != "off" else None
        self.servers = DnsServers(self.resolver, str(config.lan.ip), port, ipv6_interface=ipv6)
        self._fast_path: FastPathCache | None = None
        self._refreshing = threading.Lock()  # one refresh of the lists at a time
        self.fetch_errors: dict[str, str] = {}  # URL -> why its last download failed
        self.refresher: ListRefresher | None = None

    # -- wiring ------------------------------------------------------------------
    @property
    def on_answer(self) -> AnswerHook | None:
        """Called as on_answer(client_ip, name, addresses) for every answer with
        addresses (cache hits and upstream answers; not blocked or local ones)."""
        return self.resolver.on_answer

    @on_answer.setter
    def on_answer(self, hook: AnswerHook | None) -> None:
        self.resolver.on_answer = hook

    @property
    def query_filter(self) -> QueryFilter | None:
        """Asked as query_filter(client_ip, name) before a query is answered:
        True answers it as blocked (DPI's parental controls)."""
        return self.resolver.query_filter

    @query_filter.setter
    def query_filter(self, check: QueryFilter | None) -> None:
        self.resolver.query_filter = check

    def upstreams(self) -> list[str]:
        """wan.dns and wan.ipv6.dns first, then what the provider knows (from
        WAN DHCP and DHCPv6); IPv6 addresses are asked over IPv6."""
        wan = self.config.wan
        configured = [str(a) for a in (*wan.dns, *wan.ipv6.dns)]
        return list(dict.fromkeys(configured + list(self._provider())))

    def set_fast_path(self, fast_path: FastPathCache | None) -> None:
        """Fill the XDP module's dns_cache from now on (None: stop)."""
        if not self.config.dns.fast_path:
            fast_path = None
        self._fast_path = fast_path
        self.resolver.fast_path = fast_path

    def set_ipv6(self, table: Lan6Table | None) -> None:
        """Local names answer AAAA from this view of the LAN's IPv6 (the
        appliance's Lan6Watcher table; None: no AAAA for local names)."""
        self.local.set_ipv6(table)
        self._lan6 = table
        self.resolver.client_alias = None if table is None else self._ipv4_of

    def set_local_hosts(self, mapping: Mapping[str, object]) -> None:
        """Replace every lease name: {hostname: IPv4 (str or IPv4Address)}."""
        self.local.set_hosts({name: str(ip) for name, ip in mapping.items()})

    def lease_name_changed(self, mac: str, hostname: str | None, address: object | None) -> None:
        """One device's lease name (DhcpService.subscribe_names): `hostname`
        at `address`, or no name any more (None). Thread-safe, answered from
        the next query on."""
        self.local.set_device(mac, hostname, None if address is None else str(address))
        if address is None:
            self._leased_ipv4.pop(mac.lower(), None)
        else:
            self._leased_ipv4[mac.lower()] = str(address)

    def _ipv4_of(self, client: str) -> str | None:
        """An IPv6 client's IPv4 address, by MAC (its IPv6 neighbour entry): its
        reservation's or its named lease's. Groups and DPI know devices by
        IPv4 address; a device without either gets the default policy."""
        table = self._lan6
        if table is None:
            return None
        try:
            mac = table.mac_of(ipaddress.IPv6Address(client.split("%")[0]))
        except ValueError:
            return None
        if mac is None:
            return None
        return self._reserved_ipv4.get(mac) or self._leased_ipv4.get(mac)

    def _policies(self, loader: ListLoader | None = None) -> PolicySet:
        dns = self.config.dns
        groups = [
            GroupSpec(
                g.name,
                tuple(str(c) for c in g.clients),
                g.blocklists,
                g.allow,
                g.deny,
                g.use_default,
            )
            for g in dns.groups
        ]
        return build_policies(loader or self.loader, dns.blocklists, dns.allow, dns.deny, groups)

    def refresh_blocklists(self, fetch: bool = True) -> dict[str, str]:
        """Download URL lists (blocking: call it from a worker thread once the
        WAN is up, and daily), reload every list and apply them. Returns the
        problems by source (empty when all went well)."""
        with self._refreshing:
            problems: dict[str, str] = {}
            for source in self.url_lists() if fetch else []:
                try:
                    fetch_list(source, self.loader.cache_dir)
                    self.fetch_errors.pop(source, None)
                except Exception as exc:  # network, HTTP, size: keep the old copy
                    problems[source] = self.fetch_errors[source] = str(exc)
                    log.warning("cannot fetch block list %s: %s", source, exc)
            loader = ListLoader(self.loader.cache_dir)
            self.resolver.policies = self._policies(loader)
            self.loader = loader
            problems.update(loader.problems)
            if self._fast_path is not None:
                self._fast_path.clear()  # a name may be blocked now
            return problems

    def blocklist_sources(self) -> dict[str, list[str]]:
        """Every list source of the config -> the groups using it."""
        return list_sources(self.config.dns)

    def blocklist_status(self) -> list[dict[str, Any]]:
        """Per source: {source, groups, entries, updated_at, error}; a failed
        download's error stands beside the entries of the copy still used."""
        out = []
        for source, groups in self.blocklist_sources().items():
            status = self.loader.status.get(source)
            error = self.fetch_errors.get(source) or (status.error if status else None)
            out.append(
                {
                    "source": source,
                    "groups": groups,
                    "entries": status.entries if status else None,
                    "updated_at": status.updated_at if status else None,
                    "error": error,
                }
            )
        return out

    def url_lists(self) -> list[str]:
        return [s for s in self.blocklist_sources() if s.startswith(("http://", "https://"))]

    def start_list_refresh(self) -> None:
        """Keep the URL lists downloaded from now on (none: nothing to do)."""
        urls = self.url_lists()
        if not urls:
            return
        updated = [s.updated_at if s else None for s in map(self.loader.status.get, urls)]
        self.refresher = ListRefresher(self.refresh_blocklists, urls, first_delay(updated))
        self.refresher.start()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self.servers.start()
        self.start_list_refresh()

    def stop(self) -> None:
        if self.refresher is not None:
            self.refresher.stop()
        self.servers.stop()
        self.upstream.close()  # the upstream socket pool (after the loop has stopped)
        if self._fast_path is not None:
            self._fast_path.clear()

    # -- observation ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        resolver = self.resolver
        out: dict[str, Any] = {
            "resolver": resolver.stats.as_dict(),
            "cache": asdict(resolver.cache.stats()),
            "upstream": asdict(self.upstream.stats),
            "upstreams": self.upstreams(),
            "query_log": {"size": len(resolver.querylog), "total": resolver.querylog.total},
            "local_names": self.local.stats(),
        }
        if self._fast_path is not None:
            out["fast_path"] = asdict(self._fast_path.stats())
        return out

    def flush_cache(self) -> int:
        """Forget every cached answer, here and in the XDP cache; how many here."""
        removed = self.resolver.cache.clear()
        if self._fast_path is not None:
            self._fast_path.clear()
        return removed

    def query_log(self, limit: int | None = None) -> list[QueryLogEntry]:
        return self.resolver.querylog.entries(limit)
