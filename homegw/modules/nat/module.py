"""The NAT IO module's control side: settings and port forwards into the
maps, the WAN address followed live, expiry of state, and the fragments
that came before their first (held, then sent through the chain again)."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from homegw import supervise
from homegw.config import Config
from homegw.configtypes import EPHEMERAL_PORTS
from homegw.dataplane.abi import be32
from homegw.dataplane.loader import load_function
from homegw.dataplane.module import IOModule, TableReader
from homegw.dataplane.slowpath import Punt, PuntHandler
from homegw.modules.nat import gc
from homegw.modules.nat.frags import FragmentHolder, Held
from homegw.modules.nat.maps import (
    BINDING_QUARANTINE,
    PROTOCOLS,
    BindingEntry,
    FragKey,
    NatMaps,
    Settings,
)

log = logging.getLogger(__name__)
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}

GC_INTERVAL_S = 5.0
REASON_FRAG_EARLY = 1  # nat.bpf.c NAT_REASON_*
REASON_FRAG_READY = 2
# nat.bpf.c NAT_PROG_*: the paths nat_xdp tail-calls (all but established flows)
PROGRAMS = ("nat_out", "nat_in", "nat_hairpin", "nat_alloc")


def _interface_mac(ifname: str) -> str | None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return ipr.link("get", index=found[0])[0].get_attr("IFLA_ADDRESS") if found else None


def _idle_seconds(last_seen_ns: int) -> float:
    """Seconds since the datapath's clock (CLOCK_MONOTONIC) stamped an entry."""
    return round(max(0, time.monotonic_ns() - last_seen_ns) / 1e9, 1)


def _timeouts(config: Config) -> gc.Timeouts:
    t = config.nat.timeouts
    return gc.Timeouts(t.tcp_established, t.tcp_transitory, t.udp, t.icmp)


class NatModule(IOModule):
    name = "nat"
    module_id = 3
    source = Path(__file__).parent / "nat.bpf.c"
    xdp_function = "nat_xdp"

    def __init__(
        self,
        config: Config,
        run_gc: bool = True,
        interface_mac: Callable[[str], str | None] = _interface_mac,
    ) -> None:
        """interface_mac reads the LAN NIC's MAC (hairpinned frames leave from it)."""
        self.config = config
        self._interface_mac = interface_mac
        self._hash_seed = secrets.randbits(32)
        self._lan_mac = bytes(6)
        self.fragments = FragmentHolder()
        self._frag_lock = threading.Lock()
        self.timeouts = _timeouts(config)
        self.wan_address = config.wan.address.ip if config.wan.mode == "static" else None
        self.maps: NatMaps | None = None
        self.live_sessions = 0
        self.expired_sessions = 0  # by the expiry rounds of this process
        self.released_bindings = 0
        self._run_gc = run_gc
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._gc_thread: threading.Thread | None = None

    def defines(self) -> dict[str, int | str]:
        return {
            "NAT_MAX_SESSIONS": self.config.nat.max_sessions,
            "NAT_PARSE_H": f'"{Path(__file__).parent / "nat_parse.h"}"',
        }

    def on_load(self, bpf) -> None:
        progs = bpf["nat_progs"]
        for index, name in enumerate(PROGRAMS):
            progs[ctypes.c_int(index)] = ctypes.c_int(load_function(bpf, name, "xdp"))
        pool = self.config.nat.port_range
        self.maps = NatMaps(bpf, (pool.low, pool.high), self.admin_port())
        # the maps hold the last run's state (the same build kept, or a new one
        # carried over by the build child): its flows stay if the WAN address
        # is the same (a restart); with DHCP that address holds until a lease
        last_wan = self.maps.settings_wan()
        if self.wan_address is None and self.config.wan.mode == "dhcp":
            self.wan_address = last_wan
        if last_wan is None:  # no last run: fresh budget counters, nothing to account
            self.maps.flush_dynamic(account=False)
        elif last_wan != self.wan_address:
            self.maps.flush_dynamic(account=True)
        self.maps.resync_ports()
        self._lan_mac = self._read_lan_mac()
        self._write_settings()
        self._install_forwards()
        if self._run_gc:
            self._gc_thread = supervise.Thread(self._gc_loop, "nat-gc", restart=True)
            self._gc_thread.start()

    def on_unload(self) -> None:
        self._stop.set()
        if self._gc_thread:
            self._gc_thread.join(5)

    def handlers(self) -> dict[int, PuntHandler]:
        return {REASON_FRAG_EARLY: self._on_early_fragment, REASON_FRAG_READY: self._on_first}

    def _read_lan_mac(self) -> bytes:
        try:
            mac = self._interface_mac(self.config.lan.interface)
        except OSError as exc:
            mac = None
            log.warning("nat: cannot read the MAC of %s: %s", self.config.lan.interface, exc)
        if not mac:
            log.warning("nat: no MAC for %s: hairpinning is off", self.config.lan.interface)
            return bytes(6)
        return bytes.fromhex(mac.replace(":", ""))

    def admin_port(self) -> int:
        webui = getattr(self.config, "webui", None)
        listen = webui.listen if webui is not None else None
        return listen.port if listen is not None else 80

    def _write_settings(self) -> None:
        nat = self.config.nat
        assert self.maps is not None
        sessions, per_remote, per_port = nat.inbound_budget
        settings = Settings(
            wan_addr=be32(self.wan_address),
            lan_addr=be32(self.config.lan.address.ip),
            pool_low=nat.port_range.low,
            pool_high=nat.port_range.high,
            kernel_low=EPHEMERAL_PORTS[0],
            kernel_high=EPHEMERAL_PORTS[1],
            endpoint_independent_filtering=int(nat.filtering == "endpoint-independent"),
            dmz_addr=be32(nat.dmz_host),
            admin_port=self.admin_port(),
            hash_seed=self._hash_seed,
            in_sessions=sessions,
            in_per_remote=per_remote,
            in_per_port=per_port,
        )
        settings.lan_mac[:] = list(self._lan_mac)
        self.maps.write_settings(settings)

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
                self.maps.flush_dynamic(account=True)
                self._write_settings()
        log.info("nat: masquerading to %s", new)

    def on_wan(
        self, address: ipaddress.IPv4Interface | None, gateway: ipaddress.IPv4Address | None
    ) -> None:
        self.set_wan(address)

    def compile_options_changed(self, config: Config) -> bool:
        return config.nat.max_sessions != self.config.nat.max_sessions

    def apply(self, config: Config) -> bool:
        """Forwards, timeouts, filtering, the DMZ and the inbound budget change
        by map writes; a new port pool needs the occupancy counts rebuilt: reload."""
        if config.nat.port_range != self.config.nat.port_range:
            return False
        self.set_port_forwards(config.nat.port_forwards)
        with self._lock:
            self.config = config
            self.timeouts = _timeouts(config)
            if self.maps:
                self._write_settings()
        return True

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
                self.maps.release(binding)
            for binding in result.unbind:
                self.maps.unbind(binding)
            self.maps.expire_others(now_ns - self.timeouts.udp * gc.NS)
            self.live_sessions = result.live_sessions
            self.expired_sessions += len(result.expired_sessions)
            self.released_bindings += len(result.release)
        self.expire_fragments(now_ns)
        if result.expired_sessions or result.release:
            log.info(
                "nat: expired %d sessions, released %d ports, %d sessions live",
                len(result.expired_sessions),
                len(result.release),
                result.live_sessions,
            )
        return result

    # -- fragments before their first ----------------------------------------------
    def _on_early_fragment(self, punt: Punt) -> None:
        """Hold it until the first fragment is translated (or send it at once
        if that happened while the punt was on its way)."""
        now = time.monotonic_ns()
        key = FragKey.from_meta(punt.meta)
        train = key.ident()
        assert self.maps is not None
        with self._frag_lock:
            self._expire_fragments_locked(now)
            if not self.fragments.hold(train, punt.packet, punt.ifindex, now):
                return
            self.maps.wait_for_first(key, now)
            # the datapath reports a first fragment only once it sees we wait
            ready = self.maps.fragment_translated(key)
            frames = self._release_locked(key) if ready else []
        self._send_again(frames)

    def _on_first(self, punt: Punt) -> None:
        assert self.maps is not None
        key = FragKey.from_meta(punt.meta)
        with self._frag_lock:
            frames = self._release_locked(key)
        self._send_again(frames)

    def _release_locked(self, key: FragKey) -> list[Held]:
        assert self.maps is not None
        self.maps.stop_waiting(key)
        return self.fragments.release(key.ident())

    def _send_again(self, frames: list[Held]) -> None:
        for held in frames:
            self.reinject(held.frame, held.ifindex)

    def expire_fragments(self, now_ns: int) -> None:
        with self._frag_lock:
            self._expire_fragments_locked(now_ns)

    def _expire_fragments_locked(self, now_ns: int) -> None:
        assert self.maps is not None
        for train in self.fragments.expire(now_ns):
            self.maps.stop_waiting(FragKey(*train))

    def counters(self) -> dict[str, int]:
        assert self.maps is not None
        return self.maps.counters()

    def gauges(self) -> dict[str, float]:
        assert self.maps is not None
        return {
            "sessions": self.live_sessions,  # as of the last expiry round
            "inbound_sessions": self.maps.inbound_sessions(),
            "expired_sessions": self.expired_sessions,  # since this process started
            "released_bindings": self.released_bindings,
            "held_fragments": self.fragments.stats.held,
        }

    def tables(self) -> dict[str, TableReader]:
        return {"nat_sessions": self._session_rows, "nat_bindings": self._binding_rows}

    def _session_rows(self) -> list[dict]:
        assert self.maps is not None
        now_ns = time.monotonic_ns()
        return [
            {
                "protocol": PROTOCOL_NAMES.get(proto, str(proto)),
                "external_port": ext_port,
                "remote": remote,
                "remote_port": remote_port,
                "inbound": bool(origin),
                "idle_s": round(max(0, now_ns - last_seen) / 1e9, 1),
            }
            for proto, ext_port, remote, remote_port, last_seen, origin in self.maps.session_views()
        ]

    def _binding_rows(self) -> list[dict]:
        assert self.maps is not None
        return [
            {
                "protocol": PROTOCOL_NAMES.get(b.proto, str(b.proto)),
                "external_port": b.ext_port,
                "internal": str(b.internal),
                "internal_port": b.internal_port,
                "flags": b.flags,
                "idle_s": _idle_seconds(b.last_seen_ns),
            }
            for b in self.maps.bindings()
        ]

    def flush(self) -> int:
        """Forget every dynamic session and binding (port forwards stay)."""
        assert self.maps is not None
        with self._lock:
            count = sum(1 for _ in self.maps.sessions())
            self.maps.flush_dynamic(account=True)
            self._install_forwards()
        return count

    def stats(self) -> dict:
        assert self.maps is not None
        held = self.fragments.stats
        return {
            "counters": self.maps.counters(),
            "fragments": {
                "held": held.held,
                "sent_again": held.released,
                "expired": held.expired,
                "over_limit": held.over_limit,
            },
            "inbound_sessions": self.maps.inbound_sessions(),
            "sessions": self.live_sessions,
            "wan_address": str(self.wan_address) if self.wan_address else None,
        }
