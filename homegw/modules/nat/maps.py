"""The NAT module's maps as Python sees them (ctypes mirrors of nat.bpf.c's
structs) and the one adapter that reads and writes them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from homegw.modules.router.maps import be32

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}

# enum nat_counter in nat.bpf.c, in order.
COUNTERS = (
    "translated_out",
    "translated_in",
    "hairpinned",
    "new_mappings",
    "new_sessions",
    "refused_table_full",
    "ports_exhausted",
    "unsolicited_dropped",
    "icmp_errors_translated",
    "fragments_translated",
    "fragments_dropped",
    "other_protocol",
    "hairpin_neighbour_miss",
)

BINDING_STATIC = 1
BINDING_QUARANTINE = 2


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


@dataclass(frozen=True)
class BindingEntry:
    proto: int
    ext_port: int
    internal: ipaddress.IPv4Address
    internal_port: int
    flags: int
    last_seen_ns: int


class NatMaps:
    """All bcc access of the NAT module goes through here."""

    def __init__(self, bpf) -> None:  # noqa: ANN001 - bcc.BPF
        self._settings = bpf["nat_settings"]
        self._mappings = bpf["nat_mappings"]
        self._bindings = bpf["nat_bindings"]
        self._sessions = bpf["nat_sessions"]
        self._others = bpf["nat_others"]
        self._stats = bpf["nat_stats"]

    def write_settings(self, settings: Settings) -> None:
        self._settings[ctypes.c_int(0)] = settings

    def bind_static(
        self, proto: int, ext_port: int, addr: ipaddress.IPv4Address, port: int
    ) -> None:
        """A port forward: static binding plus its mapping (EIM both ways)."""
        internal = Endpoint(be32(addr), net16(port), proto, 0)
        self._bindings[BindingKey(net16(ext_port), proto, 0)] = Binding(internal, BINDING_STATIC, 0)
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
        """The endpoint's next flow gets a fresh port; this one stays taken."""
        with contextlib.suppress(KeyError):
            del self._mappings[
                Endpoint(be32(entry.internal), net16(entry.internal_port), entry.proto, 0)
            ]

    def unbind(self, entry: BindingEntry) -> None:
        """Delete a binding and its mapping."""
        internal = Endpoint(be32(entry.internal), net16(entry.internal_port), entry.proto, 0)
        for table, key in (
            (self._bindings, BindingKey(net16(entry.ext_port), entry.proto, 0)),
            (self._mappings, internal),
        ):
            with contextlib.suppress(KeyError):
                del table[key]

    def sessions(self) -> Iterator[SessionEntry]:
        for key, value in self._sessions.items():
            yield SessionEntry(
                key.proto,
                host16(key.ext_port),
                ip_of(key.remote_addr),
                host16(key.remote_port),
                value.last_seen,
                value.tcp_seen,
            )

    def delete_session(self, entry: SessionEntry) -> None:
        key = self._sessions.Key(
            be32(entry.remote), net16(entry.remote_port), net16(entry.ext_port), entry.proto
        )
        with contextlib.suppress(KeyError):
            del self._sessions[key]

    def expire_others(self, older_than_ns: int) -> int:
        stale = [k for k, v in self._others.items() if v.last_seen < older_than_ns]
        for key in stale:
            del self._others[key]
        return len(stale)

    def flush_dynamic(self) -> None:
        """Forget every dynamic mapping (the WAN address changed)."""
        self._sessions.clear()
        self._others.clear()
        for entry in list(self.bindings()):
            if not entry.flags & BINDING_STATIC:
                self.unbind(entry)

    def counters(self) -> dict[str, int]:
        return {
            name: int(sum(self._stats.getvalue(ctypes.c_int(i)))) for i, name in enumerate(COUNTERS)
        }
