"""The firewall IO module's control side: the LAN and WAN addresses and the
switches of ``firewall:`` into its maps, the WAN address followed live; for
IPv6 the home's addressing (on_ipv6), the pinholes, and the expiry of the
IPv6 sessions (a supervised thread)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path

from homegw import supervise
from homegw.config import Config
from homegw.dataplane.module import IOModule, TableReader
from homegw.modules.firewall import sessions6
from homegw.modules.firewall.maps import FirewallMaps, Settings, inside_routes
from homegw.modules.firewall.maps6 import Firewall6Maps
from homegw.netfacts import Ipv6Facts

log = logging.getLogger(__name__)

GC_INTERVAL_S = 30


class FirewallModule(IOModule):
    name = "firewall"
    module_id = 6
    source = Path(__file__).parent / "firewall.bpf.c"
    xdp_function = "firewall_xdp"

    def __init__(self, config: Config, *, run_gc: bool = True) -> None:
        self.config = config
        self.wan = config.wan.address if config.wan.mode == "static" else None
        self.facts = Ipv6Facts()
        self.maps: FirewallMaps | None = None
        self.maps6: Firewall6Maps | None = None
        self.expired_sessions = 0  # IPv6 sessions removed since this process started
        self._run_gc = run_gc
        self._stop = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def defines(self) -> dict[str, int | str]:
        return {"FIREWALL6_HEADER": f'"{Path(__file__).parent / "firewall6.h"}"'}

    def settings(self) -> Settings:
        cfg = self.config
        routes = tuple((r.destination, r.via) for r in cfg.router.routes)
        return Settings(
            lan=cfg.lan.address,
            wan=self.wan,
            wan_ping=cfg.firewall.wan_ping,
            forward_wan_to_lan=cfg.firewall.forward_wan_to_lan,
            inside_routes=inside_routes(cfg.lan.address, routes),
        )

    def settings6(self) -> sessions6.Settings6:
        return sessions6.settings6(self.config.firewall, self.facts)

    def on_load(self, bpf) -> None:
        self.maps = FirewallMaps(bpf)
        self.maps.write(self.settings())
        self.maps6 = Firewall6Maps(bpf)
        self.maps6.write(self.settings6())
        if self._run_gc:
            self._stop = threading.Event()  # a reload's thread is a new one
            self._gc_thread = supervise.Thread(
                self._gc_loop, "firewall6-gc", args=(self._stop,), restart=True
            )
            self._gc_thread.start()

    def on_unload(self) -> None:
        self._stop.set()
        if self._gc_thread:
            self._gc_thread.join(5)

    def on_ipv6(self, facts: Ipv6Facts) -> None:
        """The home's IPv6 prefixes and the gateway's addresses: what is
        inside, what is ours."""
        with self._lock:
            if facts == self.facts:
                return
            self.facts = facts
            if self.maps6:
                self.maps6.write(self.settings6())
        log.info("firewall: IPv6 inside %s", ", ".join(map(str, facts.inside)) or "none")

    def set_wan(self, address: ipaddress.IPv4Interface | None) -> None:
        """Follow the WAN address (DHCP): what is ours, what is spoofed."""
        with self._lock:
            if address == self.wan:
                return
            self.wan = address
            if self.maps:
                self.maps.write(self.settings())
        log.info("firewall: WAN address now %s", address)

    def on_wan(
        self, address: ipaddress.IPv4Interface | None, gateway: ipaddress.IPv4Address | None
    ) -> None:
        self.set_wan(address)

    def apply(self, config: Config) -> bool:
        with self._lock:
            self.config = config
            if self.maps:
                self.maps.write(self.settings())
            if self.maps6:
                self.maps6.write(self.settings6())
        return True

    def _gc_loop(self, stop: threading.Event) -> None:
        while not stop.wait(GC_INTERVAL_S):
            try:
                self.collect(time.monotonic_ns())
            except Exception:
                log.exception("firewall: expiry of IPv6 sessions failed")

    def collect(self, now_ns: int) -> int:
        """Remove the IPv6 sessions idle past their timeout; how many went."""
        assert self.maps6 is not None
        gone = sessions6.expired(self.maps6.sessions(), now_ns, self.settings6().timeouts)
        self.maps6.remove(gone)
        self.expired_sessions += len(gone)
        return len(gone)

    def counters(self) -> dict[str, int]:
        assert self.maps is not None
        return self.maps.counters()

    def gauges(self) -> dict[str, float]:
        assert self.maps6 is not None
        return {
            "ipv6_sessions": self.maps6.session_count(),
            "ipv6_expired_sessions": self.expired_sessions,
        }

    def tables(self) -> dict[str, TableReader]:
        return {"firewall6_sessions": self._session_rows}

    def _session_rows(self) -> list[dict]:
        assert self.maps6 is not None
        now_ns = time.monotonic_ns()
        timeouts = self.settings6().timeouts
        return [s.row(now_ns) for s in self.maps6.sessions() if not s.expired(now_ns, timeouts)]

    def stats(self) -> dict:
        assert self.maps is not None
        return {
            "counters": self.maps.counters(),
            "wan_address": str(self.wan) if self.wan else None,
        }
