"""The router's maps as Python sees them: ctypes mirrors of router.bpf.c's
structs and one adapter that writes and reads them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.abi import Nic, be32
from homegw.dataplane.cenum import counter_names
from homegw.dataplane.devices import DevicePolicy, Devices
from homegw.modules.router.routes import Route

# enum router_counter in router.bpf.c ("forwarded" is the sum of the per-NIC
# counters, not a counter of its own)
COUNTERS = counter_names(Path(__file__).parent / "router.bpf.c", "router_counter")


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


NIC_NONE = 0xFF  # homegw_neighbour.nic of an incomplete entry (made by the datapath on a miss)


def mac_bytes(mac: str) -> ctypes.Array:
    return (ctypes.c_ubyte * 6)(*bytes.fromhex(mac.replace(":", "")))


@dataclass(frozen=True)
class IfaceInfo:
    ifindex: int
    mac: str
    mtu: int
    up: bool
    address: ipaddress.IPv4Address | None


class RouterMaps:
    """All bcc access of the router module goes through here."""

    def __init__(self, bpf) -> None:  # bcc.BPF
        self._routes = bpf["router_routes"]
        self._ifaces = bpf["router_ifaces"]
        self._settings = bpf["router_settings"]
        self._neigh = bpf["homegw_neigh"]  # pinned as router_neigh
        self._stats = bpf["router_stats"]
        self._nic_stats = bpf["router_nic_stats"]
        self.devices = Devices(bpf["homegw_devices"])
        self.policy = DevicePolicy(bpf["homegw_device_policy"], bpf["homegw_device_policy_gen"])

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

    def adopt_neighbours(self) -> list[tuple[ipaddress.IPv4Address, str, Nic]]:
        """The map is pinned and a restart adopts the running chain: keep the
        resolved entries an earlier run left (the caller ages them like its
        own), drop the incomplete ones. Returns the kept (address, MAC, NIC)."""
        kept = []
        for key, value in self._neigh.items():
            ip = ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("=I", key.value)))
            if value.nic in (Nic.LAN, Nic.WAN):
                kept.append((ip, bytes(value.mac).hex(":"), Nic(value.nic)))
            else:
                with contextlib.suppress(KeyError):
                    del self._neigh[key]
        return kept

    def set_neighbour(self, ip: ipaddress.IPv4Address, mac: str, nic: Nic) -> None:
        entry = self._neigh.Leaf()  # struct homegw_neighbour, as bcc laid it out
        entry.mac = mac_bytes(mac)
        entry.nic = nic
        self._neigh[ctypes.c_uint32(be32(ip))] = entry

    def _entry(self, ip: ipaddress.IPv4Address):  # -> the table's Leaf | None
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
