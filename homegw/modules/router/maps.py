"""The router's maps as Python sees them: ctypes mirrors of router.bpf.c's
structs and one adapter that writes and reads them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass

from homegw.dataplane.abi import Nic
from homegw.modules.router.routes import Route

# enum router_counter in router.bpf.c, in order ("forwarded" is the sum of
# the per-NIC counters, not a counter of its own).
COUNTERS = (
    "forwarded",
    "to_kernel",
    "neigh_miss",
    "ttl_exceeded",
    "frag_needed",
    "unreachable",
    "icmp_rate_limited",
    "device_table_full",
    "bad_version",
    "bad_ihl",
    "bad_checksum",
    "bad_length",
    "link_broadcast",
    "martian",
    "wan_to_wan",
    "icmp_suppressed",
    "icmp_failed",
    "to_fragment",
    "frag_too_big",
    "neigh_limited",
)


class RouteKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32)]


class RouteValue(ctypes.Structure):
    _fields_ = [("gateway", ctypes.c_uint32), ("nic", ctypes.c_uint32)]


class Iface(ctypes.Structure):
    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("addr", ctypes.c_uint32),
        ("mask", ctypes.c_uint32),
        ("gateway", ctypes.c_uint32),
        ("mtu", ctypes.c_uint32),
        ("up", ctypes.c_uint32),
        ("mac", ctypes.c_ubyte * 6),
        ("pad", ctypes.c_uint16),
    ]


NEIGH_TICK_SHIFT = 30  # HOMEGW_NEIGH_TICK_SHIFT in homegw.h


class Neighbour(ctypes.Structure):
    # struct homegw_neighbour in include/homegw.h
    _fields_ = [
        ("mac", ctypes.c_ubyte * 6),
        ("nic", ctypes.c_uint16),
        ("used_tick", ctypes.c_uint32),
        ("punted_ns", ctypes.c_uint64),
    ]


NIC_NONE = 0xFF  # Neighbour.nic of an incomplete entry (made by the datapath on a miss)


def be32(address: ipaddress.IPv4Address | None) -> int:
    """An address as the u32 the datapath compares with (network byte order)."""
    if address is None:
        return 0
    return struct.unpack("=I", socket.inet_aton(str(address)))[0]


def mac_bytes(mac: str) -> ctypes.Array:
    return (ctypes.c_ubyte * 6)(*bytes.fromhex(mac.replace(":", "")))


def mac_from_key(key: int) -> str:
    return ":".join(f"{b:02x}" for b in key.to_bytes(8, "little")[:6])


@dataclass(frozen=True)
class IfaceInfo:
    ifindex: int
    mac: str
    mtu: int
    up: bool
    address: ipaddress.IPv4Address | None


class RouterMaps:
    """All bcc access of the router module goes through here."""

    def __init__(self, bpf) -> None:  # noqa: ANN001 - bcc.BPF
        self._routes = bpf["router_routes"]
        self._ifaces = bpf["router_ifaces"]
        self._settings = bpf["router_settings"]
        self._neigh = bpf["homegw_neigh"]  # pinned as router_neigh
        self._stats = bpf["router_stats"]
        self._nic_stats = bpf["router_nic_stats"]
        self._devices = bpf["router_devices"]

    def set_routes(self, routes: list[Route]) -> None:
        """Make the trie hold exactly `routes` (write new, then drop stale)."""
        wanted = {}
        for route in routes:
            key = RouteKey(route.destination.prefixlen, be32(route.destination.network_address))
            wanted[(key.prefixlen, key.addr)] = (key, RouteValue(be32(route.gateway), route.nic))
        for key, value in wanted.values():
            self._routes[key] = value
        for key in list(self._routes.keys()):
            if (key.prefixlen, key.addr) not in wanted:
                del self._routes[key]

    def set_iface(
        self,
        nic: Nic,
        info: IfaceInfo,
        network: ipaddress.IPv4Interface | None,
        default_gateway: ipaddress.IPv4Address | None,
    ) -> None:
        """The NIC, its address and subnet, and the default route's next hop
        when the default route leaves by it."""
        mask = be32(network.netmask) if network else 0
        self._ifaces[ctypes.c_int(nic)] = Iface(
            info.ifindex,
            be32(info.address),
            mask,
            be32(default_gateway),
            info.mtu,
            int(info.up),
            mac_bytes(info.mac),
            0,
        )

    def set_use_lpm(self, use_lpm: bool) -> None:
        self._settings[ctypes.c_int(0)] = self._settings.Leaf(int(use_lpm))

    def clear_neighbours(self) -> None:
        """The map is pinned: forget what an earlier run left in it."""
        self._neigh.clear()

    def set_neighbour(self, ip: ipaddress.IPv4Address, mac: str, nic: Nic) -> None:
        self._neigh[ctypes.c_uint32(be32(ip))] = Neighbour(mac_bytes(mac), nic, 0, 0)

    def _entry(self, ip: ipaddress.IPv4Address) -> Neighbour | None:
        try:
            return self._neigh[ctypes.c_uint32(be32(ip))]
        except KeyError:
            return None

    def last_used(self, ip: ipaddress.IPv4Address) -> float | None:
        """When the datapath last forwarded to ip (CLOCK_MONOTONIC seconds, to
        a tick of 2^30 ns, rounded down), or None if never since the entry
        was written."""
        entry = self._entry(ip)
        return (entry.used_tick << NEIGH_TICK_SHIFT) / 1e9 if entry and entry.used_tick else None

    def del_incomplete(self, ip: ipaddress.IPv4Address) -> None:
        """Remove ip's entry if it is still the datapath's incomplete one."""
        entry = self._entry(ip)
        if entry is not None and entry.nic == NIC_NONE:
            self.del_neighbour(ip)

    def del_neighbour(self, ip: ipaddress.IPv4Address) -> None:
        with contextlib.suppress(KeyError):
            del self._neigh[ctypes.c_uint32(be32(ip))]

    def neighbours(self) -> dict[ipaddress.IPv4Address, str]:
        """Resolved entries: address -> MAC."""
        return {
            ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("=I", k.value))): bytes(v.mac).hex(
                ":"
            )
            for k, v in self._neigh.items()
            if v.nic != NIC_NONE
        }

    def incomplete(self) -> list[ipaddress.IPv4Address]:
        """Next hops the datapath missed and nobody resolved yet."""
        return [
            ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("=I", k.value)))
            for k, v in self._neigh.items()
            if v.nic == NIC_NONE
        ]

    def counters(self) -> dict[str, int]:
        counts = {
            name: int(sum(self._stats.getvalue(ctypes.c_int(i)))) for i, name in enumerate(COUNTERS)
        }
        counts["forwarded"] = sum(packets for packets, _ in self.nic_counters().values())
        return counts

    def nic_counters(self) -> dict[str, tuple[int, int]]:
        out = {}
        for nic in Nic:
            per_cpu = self._nic_stats.getvalue(ctypes.c_int(nic))
            out[nic.name.lower()] = (sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu))
        return out

    def devices(self) -> dict[str, dict[str, int]]:
        out = {}
        for key, per_cpu in self._devices.items():
            fields = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")
            out[mac_from_key(key.value)] = {f: sum(getattr(c, f) for c in per_cpu) for f in fields}
        return out
