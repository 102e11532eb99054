"""The firewall IO module's control side: the LAN and WAN addresses and the
switches of ``firewall:`` into its maps, the WAN address followed live."""

from __future__ import annotations

import ipaddress
import logging
import threading
from pathlib import Path

from homegw.config import Config
from homegw.dataplane.module import IOModule
from homegw.modules.firewall.maps import FirewallMaps, Settings, inside_routes

log = logging.getLogger(__name__)


class FirewallModule(IOModule):
    name = "firewall"
    module_id = 6
    source = Path(__file__).parent / "firewall.bpf.c"
    xdp_function = "firewall_xdp"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.wan = config.wan.address if config.wan.mode == "static" else None
        self.maps: FirewallMaps | None = None
        self._lock = threading.Lock()

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

    def on_load(self, bpf) -> None:
        self.maps = FirewallMaps(bpf)
        self.maps.write(self.settings())

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
        return True

    def counters(self) -> dict[str, int]:
        assert self.maps is not None
        return self.maps.counters()

    def stats(self) -> dict:
        assert self.maps is not None
        return {
            "counters": self.maps.counters(),
            "wan_address": str(self.wan) if self.wan else None,
        }
