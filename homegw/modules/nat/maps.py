"""The NAT module's maps as Python sees them (ctypes mirrors of nat.bpf.c's
structs) and the one adapter that reads and writes them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.abi import be32
from homegw.dataplane.cenum import counter_names

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}

COUNTERS = counter_names(Path(__file__).parent / "nat.bpf.c", "nat_counter")

BINDING_STATIC = 1
BINDING_QUARANTINE = 2
BINDING_DMZ = 4
SESSION_INBOUND = 1

# nat_parse.h / nat.bpf.c geometry of the budget and port-occupancy arrays.
REMOTE_BUCKETS = 4096
BUDGET_TOTAL, BUDGET_REMOTE, BUDGET_PORT = 0, 1, 1 + REMOTE_BUCKETS
PRIVILEGED_PORTS = (512, 1023)
BLOCK_SHIFT, BLOCKS = 7, 65536 >> 7
OCCUPANCY_SLOTS = 4 * 2 * BLOCKS
U64 = (1 << 64) - 1


class Settings(ctypes.Structure):
    _fields_ = [
        ("wan_addr", ctypes.c_uint32),
        ("lan_addr", ctypes.c_uint32),
        ("pool_low", ctypes.c_uint16),
        ("pool_high", ctypes.c_uint16),
        ("kernel_low", ctypes.c_uint16),
        ("kernel_high", ctypes.c_uint16),
        ("endpoint_independent_filtering", ctypes.c_uint32),
        ("dmz_addr", ctypes.c_uint32),
        ("admin_port", ctypes.c_uint16),
        ("lan_mac", ctypes.c_uint8 * 6),
        ("hash_seed", ctypes.c_uint32),
        ("in_sessions", ctypes.c_uint32),
        ("in_per_remote", ctypes.c_uint32),
        ("in_per_port", ctypes.c_uint32),
    ]


class Endpoint(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Mapping(ctypes.Structure):
    _fields_ = [("ext_port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class BindingKey(ctypes.Structure):
    _fields_ = [("ext_port", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class Binding(ctypes.Structure):
    _fields_ = [("internal", Endpoint), ("flags", ctypes.c_uint32), ("last_seen", ctypes.c_uint64)]


class FragKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("id", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("inbound", ctypes.c_uint8),
    ]

    @classmethod
    def from_meta(cls, meta: tuple[int, ...]) -> FragKey:
        """The key a fragment punt carries in meta[0..2] (nat.bpf.c)."""
        return cls(meta[0], meta[1], meta[2] & 0xFFFF, (meta[2] >> 16) & 0xFF, meta[2] >> 24)

    def ident(self) -> tuple[int, int, int, int, int]:
        return (self.saddr, self.daddr, self.id, self.proto, self.inbound)


class Occupancy(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint64 * OCCUPANCY_SLOTS)]


def occupancy_slot(proto: int, port: int) -> int:
    """nat_parse.h occupancy_slot: (protocol, parity, block of 128 ports)."""
    return (_kind(proto) * 2 + (port & 1)) * BLOCKS + (port >> BLOCK_SHIFT)


def _kind(proto: int) -> int:
    return {socket.IPPROTO_TCP: 0, socket.IPPROTO_UDP: 1}.get(proto, 2)


def allocatable(pool: tuple[int, int], port: int) -> bool:
    """nat_parse.h allocatable(): the pool, and 512-1023 for privileged ports."""
    return pool[0] <= port <= pool[1] or PRIVILEGED_PORTS[0] <= port <= PRIVILEGED_PORTS[1]


def reserved_slots(pool: tuple[int, int], admin_port: int) -> dict[int, int]:
    """Ports the allocator's blocks hold but never hands out, per occupancy
    slot: those outside the ranges in a block a range touches, and the web
    UI's. Counted as taken, so that a full block always holds 64."""
    blocks = {
        block
        for low, high in (pool, PRIVILEGED_PORTS)
        for block in range(low >> BLOCK_SHIFT, (high >> BLOCK_SHIFT) + 1)
    }
    taken: dict[int, int] = {}
    for proto in PROTOCOLS.values():
        for block in blocks:
            for port in range(block << BLOCK_SHIFT, (block + 1) << BLOCK_SHIFT):
                if not allocatable(pool, port) or port == admin_port:
                    slot = occupancy_slot(proto, port)
                    taken[slot] = taken.get(slot, 0) + 1
    return taken


def net16(port: int) -> int:
    """A port as the datapath stores it (network order in a u16)."""
    return socket.htons(port)


def host16(value: int) -> int:
    return socket.ntohs(value)


def ip_of(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value.to_bytes(4, "little"))


@dataclass(frozen=True)
class SessionEntry:
    proto: int
    ext_port: int
    remote: ipaddress.IPv4Address
    remote_port: int
    last_seen_ns: int
    tcp_seen: int
    origin: int = 0  # SESSION_INBOUND: counts against the inbound budget
    remote_bucket: int = 0


@dataclass(frozen=True)
class BindingEntry:
    proto: int
    ext_port: int
    internal: ipaddress.IPv4Address
    internal_port: int
    flags: int
    last_seen_ns: int


class NatMaps:
    """All bcc access of the NAT module goes through here.

    Budget and port-occupancy counters have one writer per value: the
    datapath counts what it creates (nat_in_created, nat_ports_bound), this
    class what it removes (nat_in_released, nat_ports_freed), so a session or
    binding that userspace deletes is accounted here, right after it went.
    """

    def __init__(self, bpf, pool: tuple[int, int], admin_port: int) -> None:
        self._settings = bpf["nat_settings"]
        self._mappings = bpf["nat_mappings"]
        self._bindings = bpf["nat_bindings"]
        self._sessions = bpf["nat_sessions"]
        self._others = bpf["nat_others"]
        self._stats = bpf["nat_stats"]
        self._frags = bpf["nat_frags"]
        self._waiting = bpf["nat_frag_waiting"]
        self._in_created = bpf["nat_in_created"]
        self._in_released = bpf["nat_in_released"]
        self._ports_bound = bpf["nat_ports_bound"]
        self._ports_freed = bpf["nat_ports_freed"]
        self._pool = pool
        self._admin_port = admin_port
        self._freed = Occupancy()  # our counters: the map's one value

    def write_settings(self, settings: Settings) -> None:
        self._settings[ctypes.c_int(0)] = settings

    def settings_wan(self) -> ipaddress.IPv4Address | None:
        """The WAN address in the settings map before we write ours: the last
        run's (its map kept or carried over), None if there was none."""
        wan = self._settings[ctypes.c_int(0)].wan_addr
        return ip_of(wan) if wan else None

    # -- accounting (userspace's side of the counters) --------------------------------
    @staticmethod
    def _add(table, slot: int, delta: int) -> None:
        key = ctypes.c_int(slot)
        table[key] = ctypes.c_uint64((table[key].value + delta) & U64)

    def _port_freed(self, proto: int, port: int, delta: int, write: bool = True) -> None:
        if allocatable(self._pool, port):
            slot = occupancy_slot(proto, port)
            self._freed.slot[slot] = (self._freed.slot[slot] + delta) & U64
            if write:
                self._ports_freed[ctypes.c_int(0)] = self._freed

    def _release_budget(self, session: SessionEntry) -> None:
        for slot in (
            BUDGET_TOTAL,
            BUDGET_REMOTE + session.remote_bucket,
            BUDGET_PORT + session.ext_port,
        ):
            self._add(self._in_released, slot, 1)

    def inbound_sessions(self) -> int:
        """Sessions created from outside that are live (the budget's use)."""
        key = ctypes.c_int(BUDGET_TOTAL)
        return (self._in_created[key].value - self._in_released[key].value) & U64

    def resync_ports(self) -> None:
        """After a (re)load: the fresh occupancy counters learn the ports
        never handed out and the bindings already in the pinned map (port
        forwards of the last run). The datapath's pinned count starts over."""
        self._ports_bound[ctypes.c_int(0)] = Occupancy()
        for slot, taken in reserved_slots(self._pool, self._admin_port).items():
            self._freed.slot[slot] = -taken & U64
        for entry in self.bindings():
            self._port_freed(entry.proto, entry.ext_port, -1, write=False)
        self._ports_freed[ctypes.c_int(0)] = self._freed

    def ports_taken(self, proto: int, port: int) -> int:
        """Ports its block of that parity holds taken, as the allocator sees it."""
        slot = occupancy_slot(proto, port)
        bound = self._ports_bound[ctypes.c_int(0)].slot[slot]
        return (bound - self._freed.slot[slot]) & U64

    # -- bindings and mappings --------------------------------------------------------
    def bind_static(
        self, proto: int, ext_port: int, addr: ipaddress.IPv4Address, port: int
    ) -> None:
        """A port forward: static binding plus its mapping (EIM both ways)."""
        self.bind(proto, ext_port, addr, port, BINDING_STATIC)

    def bind(
        self, proto: int, ext_port: int, addr: ipaddress.IPv4Address, port: int, flags: int
    ) -> None:
        """A binding and its mapping made by userspace (and accounted)."""
        internal = Endpoint(be32(addr), net16(port), proto, 0)
        key = BindingKey(net16(ext_port), proto, 0)
        if self._bindings.get(key) is None:
            self._port_freed(proto, ext_port, -1)  # one more binding there
        self._bindings[key] = Binding(internal, flags, 0)
        self._mappings[internal] = Mapping(net16(ext_port), 0)

    def bindings(self) -> Iterator[BindingEntry]:
        for key, value in self._bindings.items():
            yield BindingEntry(
                key.proto,
                host16(key.ext_port),
                ip_of(value.internal.addr),
                host16(value.internal.port),
                value.flags,
                value.last_seen,
            )

    def set_binding(self, entry: BindingEntry, flags: int, last_seen_ns: int) -> None:
        key = BindingKey(net16(entry.ext_port), entry.proto, 0)
        internal = Endpoint(be32(entry.internal), net16(entry.internal_port), entry.proto, 0)
        self._bindings[key] = Binding(internal, flags, last_seen_ns)

    def unbind_mapping_only(self, entry: BindingEntry) -> None:
        """The endpoint's next flow gets a fresh port; this one stays taken.
        A mapping of the endpoint to another port (made since) stays."""
        internal = Endpoint(be32(entry.internal), net16(entry.internal_port), entry.proto, 0)
        mapping = self._mappings.get(internal)
        if mapping is not None and mapping.ext_port == net16(entry.ext_port):
            with contextlib.suppress(KeyError):
                del self._mappings[internal]

    def release(self, entry: BindingEntry) -> None:
        """The port of a quarantined binding is free again. Its mapping went
        at quarantine: whatever mapping the endpoint has now is newer."""
        with contextlib.suppress(KeyError):
            del self._bindings[BindingKey(net16(entry.ext_port), entry.proto, 0)]
            self._port_freed(entry.proto, entry.ext_port, 1)

    def unbind(self, entry: BindingEntry) -> None:
        """Delete a binding and the endpoint's mapping if it is to this port."""
        self.unbind_mapping_only(entry)
        self.release(entry)

    # -- sessions ---------------------------------------------------------------------
    def sessions(self) -> Iterator[SessionEntry]:
        for key, value in self._sessions.items():
            yield SessionEntry(
                key.proto,
                host16(key.ext_port),
                ip_of(key.remote_addr),
                host16(key.remote_port),
                value.last_seen,
                value.tcp_seen,
                value.origin,
                value.remote_bucket,
            )

    def session_views(self) -> Iterator[tuple[int, int, str, int, int, int]]:
        """(proto, ext_port, remote address text, remote_port, last_seen ns,
        origin) of every session: for the sessions table, which shows 10,000
        of them in a page's time budget (no SessionEntry, no IPv4Address)."""
        for key, value in self._sessions.items():
            yield (
                key.proto,
                host16(key.ext_port),
                socket.inet_ntoa(key.remote_addr.to_bytes(4, "little")),
                host16(key.remote_port),
                value.last_seen,
                value.origin,
            )

    def delete_session(self, entry: SessionEntry) -> bool:
        key = self._sessions.Key(
            be32(entry.remote), net16(entry.remote_port), net16(entry.ext_port), entry.proto
        )
        try:
            del self._sessions[key]
        except KeyError:
            return False
        if entry.origin & SESSION_INBOUND:
            self._release_budget(entry)
        return True

    def expire_others(self, older_than_ns: int) -> int:
        stale = [k for k, v in self._others.items() if v.last_seen < older_than_ns]
        for key in stale:
            del self._others[key]
        return len(stale)

    def flush_dynamic(self, account: bool = True) -> None:
        """Forget every dynamic mapping (the WAN address changed). Without
        `account` (at load, when the counters are fresh) nothing is counted."""
        if account:
            for session in list(self.sessions()):
                self.delete_session(session)
        else:
            self._sessions.clear()
        self._others.clear()
        for entry in list(self.bindings()):
            if not entry.flags & BINDING_STATIC:
                if account:
                    self.unbind(entry)
                else:
                    del self._bindings[BindingKey(net16(entry.ext_port), entry.proto, 0)]
        if not account:
            self._mappings.clear()  # the port forwards' are installed again

    # -- fragments held in userspace --------------------------------------------------
    def fragment_translated(self, key: FragKey) -> bool:
        """Whether the first fragment of that train was translated."""
        return self._frags.get(key) is not None

    def wait_for_first(self, key: FragKey, now_ns: int) -> None:
        self._waiting[key] = ctypes.c_uint64(now_ns)

    def stop_waiting(self, key: FragKey) -> None:
        with contextlib.suppress(KeyError):
            del self._waiting[key]

    def counters(self) -> dict[str, int]:
        return {
            name: int(sum(self._stats.getvalue(ctypes.c_int(i)))) for i, name in enumerate(COUNTERS)
        }
