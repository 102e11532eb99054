"""The router's maps as Python sees them: ctypes mirrors of router.bpf.c's
structs and one adapter that writes and reads them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.abi import Nic, be32
from homegw.dataplane.cenum import counter_names
from homegw.dataplane.devices import DevicePolicy, Devices
from homegw.modules.router.neigh import IPAddress
from homegw.modules.router.routes import Route
from homegw.netfacts import Ipv6Facts

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


PREFIX_LAN, PREFIX_INSIDE = 1, 2  # ROUTER6_LAN, ROUTER6_INSIDE in router6.h


def prefix_key(net: ipaddress.IPv6Network) -> bytes:
    """struct router6_key: prefix length, then the prefix."""
    return struct.pack("=I", net.prefixlen) + net.network_address.packed


def pack_ipv6_settings(facts: Ipv6Facts, lan_mtu: int, wan_mtu: int) -> bytes:
    """struct router6_settings (router6.h)."""
    addresses = (facts.lan_address, facts.wan_address, facts.wan_gateway)
    return b"".join(a.packed if a else bytes(16) for a in addresses) + struct.pack(
        "=IIII", lan_mtu, wan_mtu, int(facts.enabled), 0
    )


def _sync(table, wanted: dict[bytes, int]) -> None:
    """Make a table with u32 values hold exactly `wanted` (keys as raw
    bytes): write new, then drop stale."""
    for raw, value in wanted.items():
        table[table.Key.from_buffer_copy(raw)] = table.Leaf(value)
    for key in list(table.keys()):
        if bytes(key) not in wanted:
            with contextlib.suppress(KeyError):
                del table[key]


class NeighbourMap:
    """One family's neighbour map (homegw_neigh: __be32 keys, router_neigh6:
    struct in6_addr keys; both hold struct homegw_neighbour), keyed by the
    address's bytes as they sit in a packet."""

    def __init__(self, table) -> None:  # a bcc table
        self._table = table

    def _key(self, ip: IPAddress):
        return self._table.Key.from_buffer_copy(ip.packed)

    @staticmethod
    def _ip(key) -> IPAddress:
        return ipaddress.ip_address(bytes(key))

    def set(self, ip: IPAddress, mac: str, nic: Nic) -> None:
        entry = self._table.Leaf()  # struct homegw_neighbour, as bcc laid it out
        entry.mac = mac_bytes(mac)
        entry.nic = nic
        self._table[self._key(ip)] = entry

    def entry(self, ip: IPAddress):  # -> the table's Leaf | None
        try:
            return self._table[self._key(ip)]
        except KeyError:
            return None

    def delete(self, ip: IPAddress) -> None:
        with contextlib.suppress(KeyError):
            del self._table[self._key(ip)]

    def adopt(self) -> list[tuple[IPAddress, str, Nic]]:
        kept = []
        for key, value in self._table.items():
            if value.nic in (Nic.LAN, Nic.WAN):
                kept.append((self._ip(key), bytes(value.mac).hex(":"), Nic(value.nic)))
            else:
                with contextlib.suppress(KeyError):
                    del self._table[key]
        return kept

    def resolved(self) -> dict[IPAddress, str]:
        return {
            self._ip(k): bytes(v.mac).hex(":") for k, v in self._table.items() if v.nic != NIC_NONE
        }

    def incomplete(self) -> list[IPAddress]:
        return [self._ip(k) for k, v in self._table.items() if v.nic == NIC_NONE]


class RouterMaps:
    """All bcc access of the router module goes through here."""

    def __init__(self, bpf) -> None:  # bcc.BPF
        self._routes = bpf["router_routes"]
        self._ifaces = bpf["router_ifaces"]
        self._settings = bpf["router_settings"]
        self._neigh4 = NeighbourMap(bpf["homegw_neigh"])  # pinned as router_neigh
        self._neigh6 = NeighbourMap(bpf["router_neigh6"])
        self._prefixes = bpf["router6_prefixes"]
        self._own = bpf["router6_own"]
        self._settings6 = bpf["router6_settings"]
        self._stats = bpf["router_stats"]
        self._nic_stats = bpf["homegw_nic_forwarded"]
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

    def neighbour_map(self, ip: IPAddress) -> NeighbourMap:
        return self._neigh4 if ip.version == 4 else self._neigh6

    def adopt_neighbours(self) -> list[tuple[IPAddress, str, Nic]]:
        """The maps are pinned and a restart adopts the running chain: keep the
        resolved entries an earlier run left (the caller ages them like its
        own), drop the incomplete ones. Returns the kept (address, MAC, NIC)."""
        return self._neigh4.adopt() + self._neigh6.adopt()

    def set_neighbour(self, ip: IPAddress, mac: str, nic: Nic) -> None:
        self.neighbour_map(ip).set(ip, mac, nic)

    def last_used(self, ip: IPAddress) -> float | None:
        """When the datapath last forwarded to ip (CLOCK_MONOTONIC seconds, to
        a tick of 2^30 ns, rounded down), or None if never since the entry
        was written."""
        entry = self.neighbour_map(ip).entry(ip)
        return (entry.used_tick << NEIGH_TICK_SHIFT) / 1e9 if entry and entry.used_tick else None

    def del_incomplete(self, ip: IPAddress) -> None:
        """Remove ip's entry if it is still the datapath's incomplete one."""
        entry = self.neighbour_map(ip).entry(ip)
        if entry is not None and entry.nic == NIC_NONE:
            self.del_neighbour(ip)

    def del_neighbour(self, ip: IPAddress) -> None:
        self.neighbour_map(ip).delete(ip)

    def neighbours(self) -> dict[IPAddress, str]:
        """Resolved entries of both families: address -> MAC."""
        return {**self._neigh4.resolved(), **self._neigh6.resolved()}

    def incomplete(self) -> list[IPAddress]:
        """Next hops the datapath missed and nobody resolved yet."""
        return self._neigh4.incomplete() + self._neigh6.incomplete()

    def set_ipv6(self, facts: Ipv6Facts, lan_mtu: int, wan_mtu: int) -> None:
        """The IPv6 facts as router6_xdp reads them: prefixes (LAN /64s and
        the home's space), own addresses, then the settings that enable it,
        with the MTUs of the two NICs for IPv6."""
        kinds = {net: PREFIX_INSIDE for net in facts.inside}
        kinds.update({net: PREFIX_LAN for net in facts.lan_prefixes})  # a LAN /64 wins
        wanted = {
            bytes(self._prefixes.Key.from_buffer_copy(prefix_key(net))): kind
            for net, kind in kinds.items()
        }
        _sync(self._prefixes, wanted)
        _sync(self._own, {bytes(self._own.Key.from_buffer_copy(a.packed)): 1 for a in facts.own})
        settings = pack_ipv6_settings(facts, lan_mtu, wan_mtu)
        self._settings6[ctypes.c_int(0)] = self._settings6.Leaf.from_buffer_copy(settings)

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
