"""The firewall's maps as Python sees them: the settings it computes from
config and the WAN address (pure), and the one adapter that writes and
reads them with bcc."""

from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.abi import be32
from homegw.dataplane.cenum import counter_names

# enum firewall_counter in firewall.bpf.c, in order.
COUNTERS = counter_names(Path(__file__).parent / "firewall.bpf.c", "firewall_counter")
PASSES = (
    "wan_passed",
    "wan_forwarded",
    "lan_passed",
    "non_ipv4",
    "reinjected",
    "v6_wan_passed",
    "v6_wan_reply",
    "v6_wan_icmp_error",
    "v6_wan_ping",
    "v6_wan_pinhole",
    "v6_wan_fragment",
    "v6_lan_passed",
    "v6_lan_outbound",
)
EVENTS = ("v6_sessions_created",)  # neither a pass nor a drop
DROPS = tuple(name for name in COUNTERS if name not in PASSES + EVENTS)

FW_WAN_PING = 1
FW_FORWARD_WAN_TO_LAN = 2
FW_USE_ROUTES = 4


class SettingsValue(ctypes.Structure):
    """struct fw_settings."""

    _fields_ = [
        ("lan_net", ctypes.c_uint32),
        ("lan_mask", ctypes.c_uint32),
        ("lan_addr", ctypes.c_uint32),
        ("lan_bcast", ctypes.c_uint32),
        ("wan_addr", ctypes.c_uint32),
        ("wan_bcast", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class RouteKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32)]


@dataclass(frozen=True)
class Settings:
    """What the rules need to know, as addresses."""

    lan: ipaddress.IPv4Interface
    wan: ipaddress.IPv4Interface | None
    wan_ping: bool
    forward_wan_to_lan: bool
    inside_routes: tuple[ipaddress.IPv4Network, ...] = ()

    def value(self) -> SettingsValue:
        flags = (
            (FW_WAN_PING if self.wan_ping else 0)
            | (FW_FORWARD_WAN_TO_LAN if self.forward_wan_to_lan else 0)
            | (FW_USE_ROUTES if self.inside_routes else 0)
        )
        return SettingsValue(
            be32(self.lan.network.network_address),
            be32(self.lan.netmask),
            be32(self.lan.ip),
            be32(self.lan.network.broadcast_address),
            be32(self.wan.ip if self.wan else None),
            be32(self._wan_broadcast()),
            flags,
            0,
        )

    def _wan_broadcast(self) -> ipaddress.IPv4Address | None:
        """None on a point-to-point /31 or /32: no broadcast, the other
        address is the peer's."""
        if self.wan is None or self.wan.network.prefixlen >= 31:
            return None
        return self.wan.network.broadcast_address


def inside_routes(
    lan: ipaddress.IPv4Interface,
    routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...],
) -> tuple[ipaddress.IPv4Network, ...]:
    """Networks behind a next hop on the LAN (router.routes): their hosts are
    LAN devices too, as sources and as destinations."""
    return tuple(sorted({dest for dest, via in routes if via in lan.network}))


class FirewallMaps:
    """All bcc access of the firewall module goes through here."""

    def __init__(self, bpf) -> None:  # bcc.BPF
        self._settings = bpf["firewall_settings"]
        self._inside = bpf["firewall_inside"]
        self._stats = bpf["firewall_stats"]

    def write(self, settings: Settings) -> None:
        """Routes first, then the switch that makes the datapath use them."""
        wanted = {(n.prefixlen, be32(n.network_address)) for n in settings.inside_routes}
        for prefixlen, addr in wanted:
            self._inside[RouteKey(prefixlen, addr)] = ctypes.c_uint32(1)
        self._settings[ctypes.c_int(0)] = settings.value()
        for key in list(self._inside.keys()):
            if (key.prefixlen, key.addr) not in wanted:
                del self._inside[key]

    def counters(self) -> dict[str, int]:
        return {
            name: int(sum(self._stats.getvalue(ctypes.c_int(i)))) for i, name in enumerate(COUNTERS)
        }
