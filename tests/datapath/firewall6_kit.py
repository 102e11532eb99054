"""The IPv6 firewall alone in both chains through BPF_PROG_TEST_RUN: what goes
on leaves the chain (XDP_PASS, untouched), what is dropped is counted under
exactly one reason. The home's addressing comes in as the appliance gives
it (FirewallModule.on_ipv6)."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterator

from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import RunResult, prog_test_run
from homegw.modules.firewall.maps import DROPS
from homegw.modules.firewall.module import FirewallModule
from homegw.modules.firewall.sessions6 import Session6
from homegw.netfacts import Ipv6Facts
from tests.datapath.test_nat import BASE, ISP_MAC, LAN_MAC, WAN_MAC

A6 = ipaddress.IPv6Address
N6 = ipaddress.IPv6Network

DELEGATED = "2001:db8:100::/56"
ULA = "fd00:1:2::/48"
LAN64, ULA64 = "2001:db8:100:1::/64", "fd00:1:2:1::/64"
GW_LAN, GW_ULA, GW_LAN_LL = "2001:db8:100:1::1", "fd00:1:2:1::1", "fe80::1:1"
GW_WAN, GW_WAN_LL = "2001:db8:ffff:1::1000", "fe80::2:1"
ISP_LL = "fe80::99"
HOST, OTHER_HOST, HOST_ULA = "2001:db8:100:1::1234", "2001:db8:100:1::55", "fd00:1:2:1::1234"
HOST_LL = "fe80::1234"
REMOTE, REMOTE2 = "2001:db8:ffff:80::80", "2001:db8:ffff:80::81"
HOST_MAC = "02:48:47:00:00:34"

PINHOLES = [
    {"name": "web", "protocol": "tcp", "port": 8080, "host": "::1234"},
    {"name": "game", "protocol": "udp", "port": "27000-27010", "host": "2001:db8:100:1::55"},
]


def facts(delegated: str = DELEGATED, lan64: str = LAN64, gw_lan: str = GW_LAN) -> Ipv6Facts:
    return Ipv6Facts(
        lan_prefixes=(N6(lan64), N6(ULA64)),
        inside=(N6(delegated), N6(ULA)),
        lan_address=A6(gw_lan),
        wan_address=A6(GW_WAN),
        own=tuple(A6(a) for a in (gw_lan, GW_ULA, GW_LAN_LL, GW_WAN, GW_WAN_LL)),
        wan_gateway=A6(ISP_LL),
    )


def from_wan(l4, src: str = REMOTE, dst: str = HOST, **ip) -> bytes:
    return bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IPv6(src=src, dst=dst, **ip) / l4)


def from_lan(l4, src: str = HOST, dst: str = REMOTE, **ip) -> bytes:
    return bytes(Ether(src=HOST_MAC, dst=LAN_MAC) / IPv6(src=src, dst=dst, **ip) / l4)


def dropped_once(counters: Callable[[], dict[str, int]], send, frame: bytes) -> str:
    """Send the frame; it must be dropped and counted under exactly one
    reason, which is returned."""
    before = counters()
    result = send(frame)
    after = counters()
    assert result.verdict == "XDP_DROP", result.verdict
    moved = [name for name in DROPS if after[name] != before[name]]
    assert len(moved) == 1 and after[moved[0]] == before[moved[0]] + 1, moved
    return moved[0]


class Firewall6:
    """A dataplane with only the firewall in both chains."""

    def __init__(self, firewall: dict | None = None, module_class=FirewallModule) -> None:
        self.pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
        self.dp = Dataplane(self.pin_dir, {})
        self.dp.load()
        config = parse_config({**BASE, "firewall": firewall or {}})
        self.firewall = module_class(config, run_gc=False)
        self.dp.add_module(self.firewall)
        self.dp.set_order(Nic.LAN, ["firewall"])
        self.dp.set_order(Nic.WAN, ["firewall"])
        self.firewall.on_ipv6(facts())

    def lan(self, frame: bytes) -> RunResult:
        return prog_test_run(self.dp.root_fd(Nic.LAN, Hook.XDP), frame)

    def wan(self, frame: bytes) -> RunResult:
        return prog_test_run(self.dp.root_fd(Nic.WAN, Hook.XDP), frame)

    def counters(self) -> dict[str, int]:
        return self.firewall.counters()

    def dropped(self, send, frame: bytes) -> str:
        return dropped_once(self.counters, send, frame)

    def passed(self, send, frame: bytes) -> str:
        """The frame goes on untouched, no drop counted; the one pass counter
        that moved is returned."""
        before = self.counters()
        result = send(frame)
        after = self.counters()
        assert (result.verdict, result.data) == ("XDP_PASS", frame), result.verdict
        moved = [name for name, value in after.items() if value != before[name]]
        passes = [name for name in moved if name != "v6_sessions_created"]
        assert len(passes) == 1 and passes[0] not in DROPS, moved
        return passes[0]

    def close(self) -> None:
        self.firewall.on_unload()
        self.dp.close()
        purge_pins(self.pin_dir)


def only_session(gw: Firewall6, lan_port: int) -> Session6:
    """The one session of the LAN port (or echo identifier)."""
    assert gw.firewall.maps6 is not None
    found = [s for s in gw.firewall.maps6.sessions() if s.lan_port == lan_port]
    assert len(found) == 1, found
    return found[0]


def firewall_with_pinholes() -> Iterator[Firewall6]:
    """The body of the test modules' shared ``fw`` fixture (PINHOLES)."""
    gateway = Firewall6({"ipv6_pinholes": PINHOLES})
    yield gateway
    gateway.close()
