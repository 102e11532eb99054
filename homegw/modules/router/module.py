"""The router IO module's control side: fills its maps from config, WAN
state and the kernel's neighbour table; handles neighbour misses."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from homegw import supervise
from homegw.config import Config
from homegw.dataplane.abi import Nic
from homegw.dataplane.module import IOModule, TableReader
from homegw.dataplane.slowpath import Punt, PuntHandler
from homegw.modules.router.maps import IfaceInfo, RouterMaps
from homegw.modules.router.neigh import CONFIRMED, USABLE, IPAddress, NeighbourTable
from homegw.modules.router.routes import Route, WanState, compute_routes
from homegw.modules.router.watcher import KernelWatcher, LinkEvent, NeighEvent
from homegw.netfacts import Ipv6Facts
from homegw.traffichistory import Bytes, HistoryFolder, TrafficHistory

log = logging.getLogger(__name__)

REASON_NEIGH_MISS = 1  # HOMEGW_REASON_NEIGH_MISS in homegw.h: any module's misses
REASON_NEIGH6_MISS = 2  # ROUTER6_REASON_NEIGH_MISS in router6.h, + the egress NIC


def _iface_info(ifname: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
    with IPRoute() as ipr:
        link = ipr.link("get", index=ipr.link_lookup(ifname=ifname)[0])[0]
    return IfaceInfo(
        ifindex=link["index"],
        mac=link.get_attr("IFLA_ADDRESS"),
        mtu=link.get_attr("IFLA_MTU"),
        up=bool(link["flags"] & 0x10000),  # IFF_LOWER_UP: carrier
        address=address,
    )


class RouterModule(IOModule):
    name = "router"
    module_id = 2
    source = Path(__file__).parent / "router.bpf.c"
    xdp_function = "router_xdp"

    def __init__(
        self,
        config: Config,
        iface_info: Callable[[str, ipaddress.IPv4Address | None], IfaceInfo] = _iface_info,
        watch_kernel: bool = True,
    ) -> None:
        """iface_info reads a NIC's ifindex, MAC, MTU and carrier; without
        watch_kernel neighbours come only from set_neighbour (datapath tests)."""
        self.config = config
        self._iface_info = iface_info
        self._watch_kernel = watch_kernel
        static = config.wan.mode == "static"
        self.wan = WanState(
            config.wan.address if static else None, config.wan.gateway if static else None
        )
        self.table = NeighbourTable(timeout=float(config.router.neighbour_timeout))
        self.maps: RouterMaps | None = None
        self.watcher: KernelWatcher | None = None
        self.ifaces: dict[Nic, IfaceInfo] = {}
        self.routes: list[Route] = []
        self.ipv6 = Ipv6Facts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ager: threading.Thread | None = None
        self._history: HistoryFolder | None = None

    # -- IOModule ---------------------------------------------------------------
    def defines(self) -> dict[str, int | str]:
        return {"ROUTER6_HEADER": f'"{Path(__file__).parent / "router6.h"}"'}

    def on_load(self, bpf) -> None:
        self.maps = RouterMaps(bpf)
        now = time.monotonic()
        for ip, mac, nic in self.maps.adopt_neighbours():  # a restart: no miss
            self.table.learn(ip, mac, nic, now)  # aged, re-confirmed like new ones
        self._write_interfaces()
        self._write_policy()
        self._write_ipv6()
        if not self._watch_kernel:
            return
        self.watcher = KernelWatcher(self._on_neigh, self._on_link)
        self.watcher.start()
        self._ager = supervise.Thread(self._age_loop, "router-aging", restart=True)
        self._ager.start()
        self._history = HistoryFolder(TrafficHistory(self.config.state_dir), self._device_bytes)
        self._history.start()
        self._resolve_gateway()

    def handlers(self) -> dict[int, PuntHandler]:
        return {
            REASON_NEIGH_MISS: self._on_miss,
            REASON_NEIGH6_MISS + Nic.LAN: self._on_miss6,
            REASON_NEIGH6_MISS + Nic.WAN: self._on_miss6,
        }

    def on_unload(self) -> None:
        self._stop.set()
        if self.watcher:
            self.watcher.stop()
        if self._ager:
            self._ager.join(5)
        if self._history:
            self._history.stop()  # folds once more
            self._history.history.close()

    def _device_bytes(self) -> dict[str, Bytes]:
        assert self.maps is not None
        return {m: Bytes(t.from_bytes, t.to_bytes) for m, t in self.maps.devices.read().items()}

    # -- configuration ------------------------------------------------------------
    def set_wan(
        self, address: ipaddress.IPv4Interface | None, gateway: ipaddress.IPv4Address | None
    ) -> None:
        """Follow a WAN address change (DHCP) without reloading anything."""
        with self._lock:
            self.wan = WanState(address, gateway)
            if self.maps:
                self._write_interfaces()
        log.info("router: WAN now %s via %s", address, gateway)
        self._resolve_gateway()

    def _write_interfaces(self) -> None:
        cfg = self.config
        wan_ip = self.wan.address.ip if self.wan.address else None
        self.ifaces = {
            Nic.LAN: self._iface_info(cfg.lan.interface, cfg.lan.address.ip),
            Nic.WAN: self._iface_info(cfg.wan.interface, wan_ip),
        }
        static = tuple((r.destination, r.via) for r in cfg.router.routes)
        self.routes = compute_routes(cfg.lan.address, self.wan, static)
        assert self.maps is not None
        self.maps.set_routes(self.routes)
        self._write_iface(Nic.LAN)
        self._write_iface(Nic.WAN)
        # beyond connected + default, the datapath must search the trie
        self.maps.set_use_lpm(len(self.routes) > len(compute_routes(cfg.lan.address, self.wan)))

    def _write_iface(self, nic: Nic) -> None:
        """Write one NIC's map entry from self.ifaces and the WAN state."""
        network = self.config.lan.address if nic is Nic.LAN else self.wan.address
        gateway = self.wan.gateway if nic is Nic.WAN and self.wan.address else None
        assert self.maps is not None
        self.maps.set_iface(nic, self.ifaces[nic], network, gateway)

    def _resolve_gateway(self) -> None:
        """Resolve the default gateway ahead of the first packet."""
        if self.watcher and self.wan.gateway and Nic.WAN in self.ifaces:
            self.watcher.resolve(self.wan.gateway, self.ifaces[Nic.WAN].ifindex)

    def on_wan(
        self, address: ipaddress.IPv4Interface | None, gateway: ipaddress.IPv4Address | None
    ) -> None:
        self.set_wan(address, gateway)

    def on_ipv6(self, facts: Ipv6Facts) -> None:
        """Forward IPv6 by these facts (prefixes, own addresses, the WAN's
        router, MTUs); the WAN's router is resolved ahead of the first packet."""
        with self._lock:
            self.ipv6 = facts
            if self.maps:
                self._write_ipv6()
        log.info(
            "router: IPv6 LAN %s, via %s",
            ", ".join(map(str, facts.lan_prefixes)) or "off",
            facts.wan_gateway,
        )
        if self.watcher and facts.wan_gateway and Nic.WAN in self.ifaces:
            self.watcher.resolve(facts.wan_gateway, self.ifaces[Nic.WAN].ifindex)

    def _write_ipv6(self) -> None:
        """The IPv6 facts into the maps; MTUs at most the links' own."""
        facts = self.ipv6
        assert self.maps is not None
        self.maps.set_ipv6(
            facts,
            lan_mtu=min(facts.lan_mtu, self.ifaces[Nic.LAN].mtu),
            wan_mtu=min(facts.wan_mtu, self.ifaces[Nic.WAN].mtu),
        )

    def apply(self, config: Config) -> bool:
        """Static routes, the neighbour timeout and paused devices change by map writes."""
        with self._lock:
            self.config = config
            self.table.timeout = float(config.router.neighbour_timeout)
            if self.maps:
                self._write_interfaces()
                self._write_policy()
                self._write_ipv6()
        return True

    def _write_policy(self) -> None:
        """The `devices` config's paused MACs into the shared policy map."""
        assert self.maps is not None
        self.maps.policy.set_paused(d.mac for d in self.config.devices if d.paused)

    # -- neighbours ---------------------------------------------------------------
    def _nic_of(self, ifindex: int) -> Nic | None:
        return next((nic for nic, i in self.ifaces.items() if i.ifindex == ifindex), None)

    def _on_miss(self, punt: Punt) -> None:
        next_hop = ipaddress.IPv4Address(punt.meta[0].to_bytes(4, "little"))
        self._hold(next_hop, Nic(punt.meta[1]), punt)

    def _on_miss6(self, punt: Punt) -> None:
        """An IPv6 miss: the next hop in the four meta words, the NIC in the reason."""
        packed = b"".join(word.to_bytes(4, "little") for word in punt.meta)
        self._hold(ipaddress.IPv6Address(packed), Nic(punt.reason - REASON_NEIGH6_MISS), punt)

    def _hold(self, next_hop: IPAddress, out: Nic, punt: Punt) -> None:
        """Keep the punted frame until next_hop is resolved; start resolving it."""
        whole = punt.packet if punt.pkt_len == len(punt.packet) else None
        with self._lock:
            first = self.table.hold(next_hop, whole, punt.ifindex, time.monotonic())
        if first and self.watcher:
            self.watcher.resolve(next_hop, self.ifaces[out].ifindex)

    def _on_neigh(self, event: NeighEvent) -> None:
        nic = self._nic_of(event.ifindex)
        log.debug(
            "neighbour %s on %s (%s): %s state %#x",
            event.ip,
            event.ifindex,
            nic,
            event.mac,
            event.state,
        )
        if nic is None or self.maps is None:
            return
        frames: list[tuple[bytes, int]] = []
        with self._lock:
            if event.mac and event.state & USABLE:
                changed, frames = self.table.learn(event.ip, event.mac, nic, time.monotonic())
                if changed or frames:
                    self.maps.set_neighbour(event.ip, event.mac, nic)
            elif not event.state & CONFIRMED and self.table.forget(event.ip):
                self.maps.del_neighbour(event.ip)
        for frame, ifindex in frames:
            self.reinject(frame, ifindex)

    def _on_link(self, event: LinkEvent) -> None:
        nic = self._nic_of(event.ifindex)
        if nic is None or self.maps is None:
            return
        info = self.ifaces[nic]
        if (info.up, info.mtu) != (event.carrier, event.mtu):
            with self._lock:
                self.ifaces[nic] = info = IfaceInfo(
                    info.ifindex, info.mac, event.mtu, event.carrier, info.address
                )
                self._write_iface(nic)
                self._write_ipv6()  # its MTUs are at most the links'
            log.warning(
                "router: %s link %s, mtu %d", nic.name, "up" if info.up else "DOWN", info.mtu
            )

    def _age_loop(self) -> None:
        interval = max(0.2, min(5.0, self.table.timeout / 4))
        while not self._stop.wait(interval):
            self.expire(time.monotonic())

    def expire(self, now: float) -> list[IPAddress]:
        """One aging round: unused entries out of the map, used ones
        re-confirmed with the kernel (they stay meanwhile), incomplete ones
        nobody punted for lately out. Returns the entries removed."""
        assert self.maps is not None
        with self._lock:
            work = self.table.age(now, self.maps.last_used)
            for ip in work.stale:
                self.maps.del_neighbour(ip)
            for ip in work.incomplete:
                self.maps.del_incomplete(ip)
            confirm = [(ip, self.table.entries[ip].nic) for ip in work.confirm]
        for ip, nic in confirm:
            if self.watcher:
                self.watcher.confirm(ip, self.ifaces[nic].ifindex)
        if work.stale:
            log.info("router: aged out neighbours %s", ", ".join(map(str, work.stale)))
        if confirm:
            log.debug(
                "router: re-confirming neighbours in use %s", ", ".join(str(c[0]) for c in confirm)
            )
        return work.stale

    def set_neighbour(self, ip: IPAddress, mac: str, nic: Nic) -> None:
        """Install a neighbour as if the kernel had resolved it."""
        with self._lock:
            self.table.learn(ip, mac, nic, time.monotonic())
            assert self.maps is not None
            self.maps.set_neighbour(ip, mac, nic)

    # -- observation ----------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        assert self.maps is not None
        return self.maps.counters()

    def gauges(self) -> dict[str, float]:
        assert self.maps is not None
        return {
            "neighbours": len(self.maps.neighbours()),
            "incomplete_neighbours": len(self.maps.incomplete()),
        }

    def tables(self) -> dict[str, TableReader]:
        return {
            "neighbours": self._neighbour_rows,
            "routes": self._route_rows,
        }

    def _neighbour_rows(self) -> list[dict]:
        assert self.maps is not None
        rows = [
            {"address": str(ip), "mac": mac, "state": "reachable"}
            for ip, mac in self.maps.neighbours().items()
        ]
        rows += [
            {"address": str(ip), "mac": None, "state": "incomplete"}
            for ip in self.maps.incomplete()
        ]
        return rows

    def _route_rows(self) -> list[dict]:
        return [
            {
                "destination": str(route.destination),
                "nic": route.nic.name.lower(),
                "gateway": str(route.gateway) if route.gateway else None,
            }
            for route in self.routes
        ]

    def stats(self) -> dict:
        assert self.maps is not None
        return {
            "counters": self.maps.counters(),
            "nics": self.maps.nic_counters(),
            "devices": self.maps.devices.read(),
            "neighbours": {str(k): v for k, v in self.maps.neighbours().items()},
            "incomplete": [str(ip) for ip in self.maps.incomplete()],
            "pending_dropped": self.table.dropped,
        }
