"""The firewall's settings as computed from config and the WAN address (pure)."""

from __future__ import annotations

import ipaddress
import socket

from homegw.config import parse_config
from homegw.modules.firewall.maps import FW_FORWARD_WAN_TO_LAN, FW_USE_ROUTES, FW_WAN_PING
from homegw.modules.firewall.module import FirewallModule

BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0", "address": "192.168.7.1/24"}}


def addr(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def test_lan_and_wan_addresses_in_network_order() -> None:
    module = FirewallModule(parse_config(BASE))
    assert module.wan is None  # WAN by DHCP: nothing until the lease
    module.wan = ipaddress.IPv4Interface("203.0.113.9/24")
    value = module.settings().value()
    assert [addr(v) for v in (value.lan_net, value.lan_mask, value.lan_addr, value.lan_bcast)] == [
        "192.168.7.0",
        "255.255.255.0",
        "192.168.7.1",
        "192.168.7.255",
    ]
    assert (addr(value.wan_addr), addr(value.wan_bcast)) == ("203.0.113.9", "203.0.113.255")
    assert value.flags == FW_WAN_PING


def test_point_to_point_wan_has_no_broadcast() -> None:
    static = {"mode": "static", "address": "198.51.100.6/31", "gateway": "198.51.100.7"}
    module = FirewallModule(parse_config({**BASE, "wan": {"interface": "wan0", **static}}))
    value = module.settings().value()
    assert (addr(value.wan_addr), value.wan_bcast) == ("198.51.100.6", 0)


def test_switches_and_networks_behind_lan_routers() -> None:
    config = {
        **BASE,
        "nat": {"enabled": False},
        "firewall": {"wan_ping": False, "forward_wan_to_lan": True},
        "router": {
            "routes": [
                {"destination": "10.20.0.0/16", "via": "192.168.7.5"},  # behind the LAN
                {"destination": "172.16.0.0/12", "via": "203.0.113.77"},  # out of the WAN
            ]
        },
    }
    settings = FirewallModule(parse_config(config)).settings()
    assert settings.inside_routes == (ipaddress.IPv4Network("10.20.0.0/16"),)
    assert settings.value().flags == FW_FORWARD_WAN_TO_LAN | FW_USE_ROUTES
