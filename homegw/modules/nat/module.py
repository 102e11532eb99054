"""The NAT IO module's control side: settings and port forwards into the
maps, the WAN address followed live, expiry of state."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path

from homegw.config import Config
from homegw.configtypes import EPHEMERAL_PORTS
from homegw.dataplane.module import IOModule
from homegw.modules.nat import gc
from homegw.modules.nat.maps import (
    BINDING_QUARANTINE,
    PROTOCOLS,
    BindingEntry,
    NatMaps,
    Settings,
)
from homegw.modules.router.maps import be32

log = logging.getLogger(__name__)

GC_INTERVAL_S = 5.0


class NatModule(IOModule):
    name = "nat"
    module_id = 3
    source = Path(__file__).parent / "nat.bpf.c"
    xdp_function = "nat_xdp"

    def __init__(self, config: Config, run_gc: bool = True) -> None:
        self.config = config
        nat = config.nat
        self.timeouts = gc.Timeouts(
            nat.timeouts.tcp_established,
            nat.timeouts.tcp_transitory,
            nat.timeouts.udp,
            nat.timeouts.icmp,
        )
        self.wan_address = config.wan.address.ip if config.wan.mode == "static" else None
        self.maps: NatMaps | None = None
        self.live_sessions = 0
        self._run_gc = run_gc
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._gc_thread: threading.Thread | None = None

    def defines(self) -> dict[str, int | str]:
        return {"NAT_MAX_SESSIONS": self.config.nat.max_sessions}

    def on_load(self, bpf) -> None:  # noqa: ANN001
        self.maps = NatMaps(bpf)
        self.maps.flush_dynamic()  # the pinned state of a run with maybe another address
        self._write_settings()
        self._install_forwards()
        if self._run_gc:
            self._gc_thread = threading.Thread(target=self._gc_loop, name="nat-gc", daemon=True)
            self._gc_thread.start()

    def on_unload(self) -> None:
        self._stop.set()
        if self._gc_thread:
            self._gc_thread.join(5)

    def _write_settings(self) -> None:
        nat = self.config.nat
        assert self.maps is not None
        self.maps.write_settings(
            Settings(
                wan_addr=be32(self.wan_address),
                lan_addr=be32(self.config.lan.address.ip),
                pool_low=nat.port_range.low,
                pool_high=nat.port_range.high,
                kernel_low=EPHEMERAL_PORTS[0],
                kernel_high=EPHEMERAL_PORTS[1],
                endpoint_independent_filtering=int(nat.filtering == "endpoint-independent"),
                dmz_addr=be32(nat.dmz_host),
            )
        )

    def _install_forwards(self) -> None:
        assert self.maps is not None
        for proto, ext_port, address, port in self._forward_entries(self.config.nat.port_forwards):
            self.maps.bind_static(proto, ext_port, address, port)
        if self.config.nat.port_forwards:
            log.info("nat: %d port forwards installed", len(self.config.nat.port_forwards))

    @staticmethod
    def _forward_entries(rules: tuple) -> set[tuple[int, int, ipaddress.IPv4Address, int]]:
        """(proto, external port, internal address, internal port) of every port."""
        entries = set()
        for rule in rules:
            low = rule.internal_ports.low
            for offset, ext_port in enumerate(
                range(rule.external_port.low, rule.external_port.high + 1)
            ):
                for proto in rule.protocols:
                    entries.add((PROTOCOLS[proto], ext_port, rule.internal_address, low + offset))
        return entries

    def set_port_forwards(self, rules: tuple) -> None:
        """Change the port forwards live (rules: validated PortForward configs):
        removed ones unbound, new ones bound, unchanged ones and every other
        flow untouched."""
        old = self._forward_entries(self.config.nat.port_forwards)
        new = self._forward_entries(rules)
        assert self.maps is not None
        with self._lock:
            for proto, ext_port, address, port in old - new:
                self.maps.unbind(BindingEntry(proto, ext_port, address, port, 0, 0))
            for proto, ext_port, address, port in new - old:
                self.maps.bind_static(proto, ext_port, address, port)
            self.config = self.config.model_copy(
                update={"nat": self.config.nat.model_copy(update={"port_forwards": rules})}
            )
        log.info(
            "nat: port forwards now %d rules (%d ports added, %d removed)",
            len(rules),
            len(new - old),
            len(old - new),
        )

    def set_wan(self, address: ipaddress.IPv4Interface | None) -> None:
        """Follow the WAN address (DHCP): mappings made for the old one are void."""
        new = address.ip if address else None
        if new == self.wan_address:
            return
        with self._lock:
            self.wan_address = new
            if self.maps:
                self.maps.flush_dynamic()
                self._write_settings()
        log.info("nat: masquerading to %s", new)

    # -- expiry -----------------------------------------------------------------------
    def _gc_loop(self) -> None:
        while not self._stop.wait(GC_INTERVAL_S):
            try:
                self.collect(time.monotonic_ns())
            except Exception:
                log.exception("nat: garbage collection failed")

    def collect(self, now_ns: int) -> gc.GcPlan:
        """Expire sessions, quarantine and release bindings as of now_ns (the
        datapath's clock: CLOCK_MONOTONIC)."""
        assert self.maps is not None
        with self._lock:
            result = gc.plan(self.maps.sessions(), self.maps.bindings(), now_ns, self.timeouts)
            for session in result.expired_sessions:
                self.maps.delete_session(session)
            for binding in result.quarantine:
                self.maps.unbind_mapping_only(binding)
                self.maps.set_binding(binding, BINDING_QUARANTINE, now_ns)
            for binding in result.release:
                self.maps.unbind(binding)
            self.maps.expire_others(now_ns - self.timeouts.udp * gc.NS)
            self.live_sessions = result.live_sessions
        if result.expired_sessions or result.release:
            log.info(
                "nat: expired %d sessions, released %d ports, %d sessions live",
                len(result.expired_sessions),
                len(result.release),
                result.live_sessions,
            )
        return result

    def stats(self) -> dict:
        assert self.maps is not None
        return {
            "counters": self.maps.counters(),
            "sessions": self.live_sessions,
            "wan_address": str(self.wan_address) if self.wan_address else None,
        }
