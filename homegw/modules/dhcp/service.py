"""DhcpService: the LAN DHCP server as the appliance owns it.

It opens the lease database under `state_dir`, builds the pool from the
config, runs `DhcpServer`, and publishes every MAC ↔ address binding to the
datapath through a `BindingsWriter` (the DHCP IO module's pinned
`dhcp_bindings` map): set on ACK, withdrawn on RELEASE, DECLINE and expiry.
Static reservations are published from the start, with or without a lease,
so a reserved device with a static address passes the source guard.

Lease names go to name listeners (`subscribe_names`, the DNS forwarder's
local names) as events, per device: on the ACK that grants a lease or
renews it under another name (before the ACK is sent), on RELEASE, DECLINE,
and on expiry (when the server's timer runs the pool's `reclaim(now)` at
the lease's end). Nobody polls.

The appliance calls, in order: `DhcpService(config, writer).start()` after
the dataplane is loaded, `subscribe_names()` for DNS, `leases()` /
`stats()` / `local_names()` from the web UI, `stop()` on shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from homegw.config import Config
from homegw.modules.dhcp.leases import Lease, LeaseDb, LeasePool, Reservation
from homegw.modules.dhcp.protocol import DhcpProtocol, ServerSettings
from homegw.modules.dhcp.server import DhcpServer

log = logging.getLogger(__name__)

DB_NAME = "dhcp-leases.sqlite3"
# struct dhcp_binding.flags: what a binding came from (the datapath ignores them)
BINDING_LEASED = 1
BINDING_RESERVED = 2


NameListener = Callable[[str, str | None, IPv4Address | None], None]
"""listener(mac, hostname, address): the device is now called `hostname` at
`address`; listener(mac, None, None): it has no name any more."""


@dataclass(frozen=True, slots=True)
class Binding:
    """The value of one `dhcp_bindings` entry."""

    address: IPv4Address
    flags: int


class BindingsWriter(Protocol):
    """Where bindings go (implemented by homegw.modules.dhcp.module.DhcpModule)."""

    def set_binding(self, mac: str, binding: Binding) -> None: ...

    def remove_binding(self, mac: str) -> None: ...

    def sync_bindings(self, bindings: dict[str, Binding]) -> None: ...


def settings_from_config(config: Config, probe_timeout: float = 0.5) -> ServerSettings:
    dhcp, lan = config.dhcp, config.lan
    assert dhcp.range_start is not None and dhcp.range_end is not None  # derived by Config
    reservations = tuple(Reservation(r.mac, int(r.address), r.hostname) for r in dhcp.reservations)
    return ServerSettings(
        interface=lan.interface,
        server_ip=lan.ip,
        network=lan.network,
        range_start=dhcp.range_start,
        range_end=dhcp.range_end,
        lease_time=dhcp.lease_time,
        domain=lan.domain,
        reservations=reservations,
        probe_timeout=probe_timeout,
    )


class DhcpService:
    def __init__(
        self,
        config: Config,
        dataplane_bindings_writer: BindingsWriter | None = None,
        *,
        probe_timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = settings_from_config(config, probe_timeout)
        self.writer = dataplane_bindings_writer
        self.clock = clock
        self.db_path = Path(config.state_dir) / DB_NAME
        self.server: DhcpServer | None = None
        self._db: LeaseDb | None = None
        self._reserved = {r.mac: r for r in self.settings.reservations}
        self._published: dict[str, Binding] = {}
        self._names: dict[str, tuple[str, IPv4Address]] = {}  # MAC -> its lease's name
        self._name_listeners: list[NameListener] = []
        self._names_lock = threading.Lock()  # subscribe (any thread) vs events (server)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Load the leases, publish the bindings, start serving."""
        server = self.load()
        try:
            server.start()
        except OSError:
            self.stop()
            raise
        listen = getattr(self.writer, "set_probe_listener", None)
        if listen is not None:
            listen(server.probe_answer)

    def load(self) -> DhcpServer:
        """Open the lease database, publish bindings and names, build the
        server (not started: start() does that; tests drive it directly)."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = LeaseDb(self.db_path)
        now = self.clock()
        s = self.settings
        pool = LeasePool(s.network, s.range_start, s.range_end, s.reservations, self._db, now=now)
        expired = pool.reclaim(now)  # leases that ran out while we were down
        active = pool.active(now)
        log.info(
            "DHCP leases loaded from %s: %d active, %d expired while stopped",
            self.db_path,
            len(active),
            len(expired),
        )
        self.server = DhcpServer(DhcpProtocol(s, pool), self._bound, self._unbound, self.clock)
        self._published = self._wanted(active)
        if self.writer is not None:
            self.writer.sync_bindings(dict(self._published))
        for lease in active:
            self._set_name(lease.mac, (lease.hostname, lease.ip) if lease.hostname else None)
        return self.server

    def stop(self) -> None:
        """Stop serving and close the database; bindings stay in the datapath."""
        listen = getattr(self.writer, "set_probe_listener", None)
        if listen is not None:
            listen(None)
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- for the web UI and DNS -------------------------------------------------------

    def leases(self) -> list[Lease]:
        """Active leases, by address."""
        if self.server is None:
            return []
        with self.server.lock:
            return self.server.protocol.pool.active(self.clock())

    def stats(self) -> dict[str, object]:
        """Server counters, plus the number of active leases."""
        if self.server is None:
            return {}
        out = self.server.counters.as_dict()
        out["leases"] = len(self.leases())
        s = self.settings
        out["pool_size"] = int(s.range_end) - int(s.range_start) + 1
        return out

    def local_names(self) -> dict[str, IPv4Address]:
        """Host name → address for DNS: named leases, then reservations (which win,
        even without a lease)."""
        names = {lease.hostname: lease.ip for lease in self.leases() if lease.hostname}
        for r in self.settings.reservations:
            if r.hostname:
                names[r.hostname] = IPv4Address(r.address)
        return names

    def bindings(self) -> dict[str, Binding]:
        """The bindings published to the datapath, by MAC."""
        return dict(self._published)

    def subscribe_names(self, listener: NameListener) -> None:
        """Tell `listener` every lease name now, then each change as it
        happens (from the server thread, before the ACK that grants a name
        leaves). A listener that raises is logged; DHCP goes on."""
        with self._names_lock:
            self._name_listeners.append(listener)
            for mac, (hostname, address) in self._names.items():
                self._tell(listener, mac, hostname, address)

    # -- names -------------------------------------------------------------------------

    def _set_name(self, mac: str, name: tuple[str, IPv4Address] | None) -> None:
        with self._names_lock:
            if self._names.get(mac) == name:
                return  # a renewal under the same name: nothing to tell
            if name is None:
                del self._names[mac]
            else:
                self._names[mac] = name
            hostname, address = name if name is not None else (None, None)
            for listener in self._name_listeners:
                self._tell(listener, mac, hostname, address)

    def _drop_name(self, mac: str, address: IPv4Address) -> None:
        """The lease of `mac` at `address` ended: its name goes, unless the
        device has moved on to another address."""
        current = self._names.get(mac)
        if current is not None and current[1] == address:
            self._set_name(mac, None)

    @staticmethod
    def _tell(
        listener: NameListener, mac: str, hostname: str | None, address: IPv4Address | None
    ) -> None:
        try:
            listener(mac, hostname, address)
        except Exception:
            log.exception("dhcp: name listener failed on %s (%s)", mac, hostname)

    # -- bindings ----------------------------------------------------------------------

    def _wanted(self, active: list[Lease]) -> dict[str, Binding]:
        wanted = {
            r.mac: Binding(IPv4Address(r.address), BINDING_RESERVED)
            for r in self.settings.reservations
        }
        for lease in active:
            wanted[lease.mac] = self._binding_for(lease)
        return wanted

    def _binding_for(self, lease: Lease) -> Binding:
        reserved = self._reserved.get(lease.mac)
        if reserved is not None and reserved.address == lease.address:
            return Binding(lease.ip, BINDING_LEASED | BINDING_RESERVED)
        return Binding(lease.ip, BINDING_LEASED)

    def _write(self, action: str, mac: str, *args: object) -> None:
        """One call on the writer; a failure (e.g. a full map) is logged, and
        DHCP goes on: the datapath must never cost a client its lease."""
        if self.writer is None:
            return
        try:
            getattr(self.writer, action)(mac, *args)
        except Exception as exc:
            log.warning("dhcp: cannot %s for %s in the datapath: %s", action, mac, exc)

    def _bound(self, lease: Lease) -> None:
        self._set_name(lease.mac, (lease.hostname, lease.ip) if lease.hostname else None)
        binding = self._binding_for(lease)
        if self._published.get(lease.mac) == binding:
            return  # a renewal: the datapath already has it
        self._published[lease.mac] = binding
        self._write("set_binding", lease.mac, binding)

    def _unbound(self, lease: Lease, expired: bool) -> None:
        self._drop_name(lease.mac, lease.ip)
        if expired and hasattr(self.writer, "forget_device"):
            self._write("forget_device", lease.mac)  # the device left: counters go too
        current = self._published.get(lease.mac)
        if current is None or current.address != lease.ip:
            return  # that MAC has moved on to another address
        reserved = self._reserved.get(lease.mac)
        if reserved is not None:
            self._published[lease.mac] = Binding(IPv4Address(reserved.address), BINDING_RESERVED)
            self._write("set_binding", lease.mac, self._published[lease.mac])
            return
        del self._published[lease.mac]
        self._write("remove_binding", lease.mac)
