"""Router advertisements to a real host kernel (SLAAC), rdisc6, renumbering,
stop; the gateway's own LAN addresses and unreachable routes.

Two namespaces joined by a veth: `hgw-<tag>-gw` runs the RouterAdvertiser on
`lan0` (threads and sockets made inside `netns.in_netns`), `hgw-<tag>-h1` is a
host with the kernel's defaults (accept_ra, autoconf) on `eth0`. Every wait is
on the host's or the gateway's state (`ip -j`), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homegw import netns
from homegw.modules.ipv6 import lanaddrs
from homegw.modules.ipv6.advertiser import RouterAdvertiser
from homegw.modules.ipv6.prefixes import PrefixPlan
from homegw.modules.ipv6.ula import ula_prefix
from homegw.virtualhome import leftovers

Net = ipaddress.IPv6Network
Addr = ipaddress.IPv6Address
FIRST = Net("2001:db8:100:ab00::/56")
SECOND = Net("2001:db8:200:cd00::/56")
WAIT = 20.0  # seconds: host DAD (1 s) + RS delay + an RA


@dataclass(frozen=True)
class Delegation:
    prefix: Net
    preferred_until: float
    valid_until: float


def delegation(prefix: Net, preferred: float = 1800, valid: float = 3600) -> Delegation:
    now = time.time()
    return Delegation(prefix, now + preferred, now + valid)


def addresses(ns: str, dev: str) -> list[dict]:
    """`ip -j -6 addr` entries of dev (local, prefixlen, lifetimes, flags)."""
    out = json.loads(netns.ip("-j", "-6", "addr", "show", "dev", dev, ns=ns) or "[]")
    return [info for link in out for info in link.get("addr_info", [])]


def address_in(ns: str, dev: str, network: Net) -> dict | None:
    for info in addresses(ns, dev):
        if Addr(info["local"]) in network and info["prefixlen"] == 64:
            return info
    return None


def default_routes(ns: str) -> list[dict]:
    return json.loads(netns.ip("-j", "-6", "route", "show", "default", ns=ns) or "[]")


def unreachable_routes(ns: str) -> set[Net]:
    out = json.loads(netns.ip("-j", "-6", "route", "show", "type", "unreachable", ns=ns) or "[]")
    return {Net(r["dst"]) for r in out}


def host_link_local_ready(ns: str) -> bool:
    return any(
        info["local"].startswith("fe80:") and not info.get("tentative")
        for info in addresses(ns, "eth0")
    )


class Link:
    """The gateway side: a plan, its addresses on lan0 and the advertiser."""

    def __init__(self, tag: str, state_dir: Path) -> None:
        self.gw, self.host = f"hgw-{tag}-gw", f"hgw-{tag}-h1"
        self.ula = ula_prefix(state_dir, None)
        self.plan = PrefixPlan(self.ula, 0)
        self.default_router = True
        self.max_interval = 30
        self.advertiser: RouterAdvertiser | None = None

    def build(self) -> None:
        for ns in (self.gw, self.host):
            netns.add_netns(ns)
        netns.add_veth("lan0", self.gw, "eth0", self.host)
        netns.ip("link", "set", "lan0", "up", ns=self.gw)
        netns.ip("link", "set", "eth0", "up", ns=self.host)

    def dns_address(self) -> Addr:
        return lanaddrs.gateway_address(self.plan.ula_lan)

    def start(self) -> None:
        self.apply()
        with netns.in_netns(self.gw):
            self.advertiser = RouterAdvertiser(
                "lan0",
                lambda: self.plan.advertised(time.time()),
                rdnss=lambda: [self.dns_address()],
                dnssl=["lan", "home.arpa"],
                mtu=1500,
                default_router=lambda: self.default_router,
                managed=False,
                other=True,
                max_interval=self.max_interval,
            )
            self.advertiser.start()

    def apply(self) -> None:
        with netns.in_netns(self.gw):
            lanaddrs.apply_lan_addresses("lan0", self.plan.advertised(time.time()), time.time())

    def renumber(self, *delegations: Delegation) -> None:
        assert self.plan.update(list(delegations), time.time())
        self.apply()
        assert self.advertiser is not None
        self.advertiser.changed()

    def teardown(self) -> None:
        if self.advertiser is not None:
            self.advertiser.stop()
        for ns in (self.gw, self.host):
            netns.delete_netns(ns)


@pytest.fixture
def link(unique_tag: str, tmp_path: Path) -> Iterator[Link]:
    built = Link(unique_tag, tmp_path)
    try:
        built.build()
        yield built
    finally:
        built.teardown()
        lanaddrs._made.pop("lan0", None)
    assert not leftovers(unique_tag)


def wait(cond, what: str, timeout: float = WAIT) -> None:
    assert netns.wait_for(cond, timeout), f"timed out waiting for {what}"


def test_host_autoconfigures_from_ula_and_global_prefix(link: Link) -> None:
    global_lan = Net("2001:db8:100:ab00::/64")
    link.plan.update([delegation(FIRST)], time.time())
    link.start()
    wait(lambda: address_in(link.host, "eth0", global_lan), "a SLAAC address in the global /64")
    wait(lambda: address_in(link.host, "eth0", link.plan.ula_lan), "a SLAAC address in the ULA /64")
    info = address_in(link.host, "eth0", global_lan)
    assert info is not None and 1700 < info["preferred_life_time"] <= 1800
    assert 3500 < info["valid_life_time"] <= 3600
    ula_info = address_in(link.host, "eth0", link.plan.ula_lan)
    assert ula_info is not None and ula_info["valid_life_time"] > 7000  # 2 h, refreshed
    wait(lambda: default_routes(link.host), "the default route through the gateway")
    gateway_ll = default_routes(link.host)[0]["gateway"]
    assert gateway_ll.startswith("fe80:")
    # the gateway's own addresses and the unreachable rest of the /56
    assert address_in(link.gw, "lan0", global_lan)["local"] == "2001:db8:100:ab00::1"
    assert Addr(address_in(link.gw, "lan0", link.plan.ula_lan)["local"]) == link.dns_address()
    assert unreachable_routes(link.gw) == {FIRST}
    # rdisc6 asks (an RS) and shows what the RA carries
    wait(lambda: host_link_local_ready(link.host), "the host's link-local address")
    out = netns.run_cmd(netns.exec_argv(link.host, ["rdisc6", "-1", "-w", "3000", "eth0"]))
    assert f"Recursive DNS server     : {link.dns_address()}" in out
    assert "DNS search list          : lan home.arpa" in out
    assert "Stateful other conf.      :          Yes" in out
    assert f"Prefix                   : {global_lan}" in out
    assert f"from {gateway_ll}" in out
    assert link.advertiser is not None and link.advertiser.stats()["rs_received"] >= 1


def test_renumbering_deprecates_the_old_prefix_without_a_restart(link: Link) -> None:
    old_lan, new_lan = Net("2001:db8:100:ab00::/64"), Net("2001:db8:200:cd00::/64")
    link.plan.update([delegation(FIRST)], time.time())
    link.start()
    wait(lambda: address_in(link.host, "eth0", old_lan), "a SLAAC address in the first /64")
    before = address_in(link.host, "eth0", old_lan)
    link.renumber(delegation(SECOND))
    wait(lambda: address_in(link.host, "eth0", new_lan), "a SLAAC address in the new /64")
    wait(
        lambda: (address_in(link.host, "eth0", old_lan) or {}).get("deprecated"),
        "the old address deprecated",
    )
    old = address_in(link.host, "eth0", old_lan)
    assert old is not None and old["local"] == before["local"]
    assert old["preferred_life_time"] == 0
    assert 3400 < old["valid_life_time"] <= 3600  # what was left, not 2 h, not 0
    new = address_in(link.host, "eth0", new_lan)
    assert new is not None and not new.get("deprecated") and new["preferred_life_time"] > 1700
    # the gateway: new ::1, old ::1 deprecated too, both /56 unreachable while valid
    gw_old = address_in(link.gw, "lan0", old_lan)
    assert gw_old["local"] == "2001:db8:100:ab00::1" and gw_old["preferred_life_time"] == 0
    assert address_in(link.gw, "lan0", new_lan)["local"] == "2001:db8:200:cd00::1"
    assert unreachable_routes(link.gw) == {FIRST, SECOND}


def test_no_default_route_without_upstream_and_stop_withdraws_it(link: Link) -> None:
    link.default_router = False  # the WAN has no IPv6 default route
    link.start()
    wait(lambda: address_in(link.host, "eth0", link.plan.ula_lan), "a ULA SLAAC address")
    assert default_routes(link.host) == []
    link.default_router = True  # the WAN got its route
    assert link.advertiser is not None
    link.advertiser.changed()
    wait(lambda: default_routes(link.host), "the default route")
    link.advertiser.stop()
    link.advertiser = None
    wait(lambda: not default_routes(link.host), "the default route withdrawn")
    # the prefix stays: only the router lifetime went to 0
    assert address_in(link.host, "eth0", link.plan.ula_lan)


def _send_rs(link: Link, message: bytes, hop_limit: int) -> None:
    with netns.in_netns(link.host):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with contextlib.closing(sock):
        index = int(
            netns.run_cmd(netns.exec_argv(link.host, ["cat", "/sys/class/net/eth0/ifindex"]))
        )
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hop_limit)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.sendto(message, ("ff02::2", 0, 0, index))


def test_hostile_solicitations_are_counted_and_dropped(link: Link) -> None:
    link.max_interval = 1800  # unsolicited RAs 16 s apart at first: an RA within 5 s answers
    link.start()
    wait(lambda: host_link_local_ready(link.host), "the host's link-local address")
    assert link.advertiser is not None
    stats = link.advertiser.stats
    rs = struct.pack("!BBHI", 133, 0, 0, 0)
    _send_rs(link, rs, hop_limit=64)  # routed from elsewhere
    _send_rs(link, rs + bytes.fromhex("0100 0a0000000002"), hop_limit=255)  # option length 0
    _send_rs(link, rs[:1] + b"\x07" + rs[2:], hop_limit=255)  # code 7
    wait(
        lambda: (
            stats()["rs_malformed"] == {"bad_hop_limit": 1, "zero_length_option": 1, "bad_code": 1}
        ),
        f"the drops counted (now {stats()})",
    )
    sent = stats()["ra_sent"]
    _send_rs(link, rs, hop_limit=255)  # a good one still gets an answer
    wait(lambda: stats()["ra_sent"] > sent, "an RA answering the good RS", timeout=5)


def test_lan_addresses_touch_only_their_own_and_follow_the_plan(link: Link) -> None:
    old_lan, new_lan = Net("2001:db8:100:ab00::/64"), Net("2001:db8:200:cd00::/64")
    # addresses somebody else put there: never touched
    netns.ip("-6", "addr", "add", "2001:db8:100:ab00::2/64", "dev", "lan0", ns=link.gw)
    netns.ip("-6", "addr", "add", "2001:db8:9::1/64", "dev", "lan0", ns=link.gw)
    netns.ip("-6", "route", "add", "unreachable", "2001:db8:7::/48", ns=link.gw)
    foreign = {"2001:db8:100:ab00::2", "2001:db8:9::1"}

    def ours() -> dict[str, dict]:
        return {
            a["local"]: a
            for a in addresses(link.gw, "lan0")
            if a["local"] not in foreign and not a["local"].startswith("fe80:")
        }

    start = time.time()
    link.plan.update([delegation(FIRST, 600, 1200)], start)
    link.apply()
    link.apply()  # idempotent
    assert set(ours()) == {"2001:db8:100:ab00::1", str(link.dns_address())}
    assert ours()[str(link.dns_address())]["valid_life_time"] == 4294967295  # ULA: forever
    assert "nodad" in json.dumps(ours()["2001:db8:100:ab00::1"])
    assert unreachable_routes(link.gw) == {FIRST, Net("2001:db8:7::/48")}

    link.plan.update([delegation(SECOND)], time.time())
    link.apply()
    assert set(ours()) == {"2001:db8:100:ab00::1", "2001:db8:200:cd00::1", str(link.dns_address())}
    assert ours()["2001:db8:100:ab00::1"]["preferred_life_time"] == 0
    # the first delegation's valid time ends: its address and route go
    later = start + 1300
    with netns.in_netns(link.gw):
        lanaddrs.apply_lan_addresses("lan0", link.plan.advertised(later), later)
    assert set(ours()) == {"2001:db8:200:cd00::1", str(link.dns_address())}
    assert unreachable_routes(link.gw) == {SECOND, Net("2001:db8:7::/48")}
    assert address_in(link.gw, "lan0", old_lan)["local"] == "2001:db8:100:ab00::2"

    # a new process (memory empty) still recognises what an earlier one made
    lanaddrs._made.clear()
    with netns.in_netns(link.gw):
        lanaddrs.apply_lan_addresses("lan0", [], time.time())
    assert ours() == {}
    assert unreachable_routes(link.gw) == {Net("2001:db8:7::/48")}
    assert address_in(link.gw, "lan0", new_lan) is None
    assert {a["local"] for a in addresses(link.gw, "lan0")} >= foreign


def test_stop_without_withdrawing_keeps_the_hosts_default_route(link: Link) -> None:
    link.start()
    wait(lambda: default_routes(link.host), "the default route")
    assert link.advertiser is not None
    sent = link.advertiser.stats()["ra_sent"]
    link.advertiser.stop(withdraw=False)
    assert link.advertiser.stats()["ra_sent"] == sent  # no final RA went out
    link.advertiser = None
    # a second advertiser (the next process) takes over with its first RA at once
    link.start()
    wait(lambda: link.advertiser.stats()["ra_sent"] >= 1, "the new advertiser's first RA")
    assert default_routes(link.host)
