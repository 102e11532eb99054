"""The router forwarding IPv6 live in XDP between three namespaces (a LAN
host, the gateway, the ISP) with static IPv6 facts: ping6, a TCP download
verified by hash, an ICMPv6 time exceeded the host's kernel accepts, and
next hops of both sides resolved by the kernel's NDP on the first packet."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import sys
from collections.abc import Iterator

import pytest

from homegw import netns
from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.modules.router.module import RouterModule
from homegw.netfacts import Ipv6Facts
from tests.conftest import new_tag

N, A = ipaddress.IPv6Network, ipaddress.IPv6Address
HOST, GW_LAN, GW_WAN, ISP = (
    "2001:db8:100::11",
    "2001:db8:100::1",
    "2001:db8:ffff:1::2",
    "2001:db8:ffff:1::1",
)
ISP_LINK_LOCAL, GW_WAN_LINK_LOCAL = "fe80::1", "fe80::2"
SECOND = "2001:db8:100::12"  # the host's other address: nobody resolved it yet
FACTS = Ipv6Facts(
    lan_prefixes=(N("2001:db8:100::/64"),),
    inside=(N("2001:db8:100::/56"),),
    lan_address=A(GW_LAN),
    wan_address=A(GW_WAN),
    own=(A(GW_LAN), A(GW_WAN), A(GW_WAN_LINK_LOCAL)),
    wan_gateway=A(ISP_LINK_LOCAL),
)
DOWNLOAD = 2 * 1024 * 1024
SERVER = f"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{ISP}", 8080))
s.listen(1)
print("listening", flush=True)
conn, _ = s.accept()
conn.sendall(bytes(range(256)) * ({DOWNLOAD} // 256))
conn.close()
"""
CLIENT = f"""
import hashlib, socket
s = socket.create_connection(("{ISP}", 8080), timeout=20)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(len(data), hashlib.sha256(data).hexdigest())
"""


class Topology:
    """h0 (host) -- lan0 [gateway] wan0 -- isp0 (ISP), each in a namespace."""

    def __init__(self, tag: str) -> None:
        self.ns = {name: f"hgw-{tag}-{name}" for name in ("h", "gw", "isp")}

    def build(self) -> None:
        for name in self.ns.values():
            netns.add_netns(name)
        netns.add_veth("h0", self.ns["h"], "lan0", self.ns["gw"])
        netns.add_veth("wan0", self.ns["gw"], "isp0", self.ns["isp"])
        for dev, ns in (("h0", "h"), ("lan0", "gw"), ("wan0", "gw"), ("isp0", "isp")):
            netns.tx_offload_off(dev, self.ns[ns])
            self.ip(ns, "link", "set", dev, "up")
        for dev, ns in (("h0", "h"), ("isp0", "isp")):
            netns.xdp_pass_on(dev, self.ns[ns])  # takes what XDP redirects to it
        self.address("h", "h0", f"{HOST}/64")
        self.address("h", "h0", f"{SECOND}/64", "preferred_lft", "0")  # never a source
        self.ip("h", "-6", "route", "add", "default", "via", GW_LAN)
        self.address("gw", "lan0", f"{GW_LAN}/64")
        self.address("gw", "wan0", f"{GW_WAN}/64")
        self.address("gw", "wan0", f"{GW_WAN_LINK_LOCAL}/64")
        self.address("isp", "isp0", f"{ISP}/64")
        self.address("isp", "isp0", f"{ISP_LINK_LOCAL}/64")
        # the ISP routes the delegated prefix to the gateway's link-local address
        self.ip(
            "isp",
            "-6",
            "route",
            "add",
            "2001:db8:100::/56",
            "via",
            GW_WAN_LINK_LOCAL,
            "dev",
            "isp0",
        )

    def ip(self, ns: str, *args: str) -> str:
        return netns.ip(*args, ns=self.ns[ns])

    def address(self, ns: str, dev: str, address: str, *options: str) -> None:
        self.ip(ns, "-6", "addr", "add", address, "dev", dev, "nodad", *options)

    def run(self, ns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            netns.exec_argv(self.ns[ns], argv), capture_output=True, text=True, timeout=timeout
        )

    def popen(self, ns: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            netns.exec_argv(self.ns[ns], argv), stdout=subprocess.PIPE, text=True
        )

    def delete(self) -> None:
        for name in self.ns.values():
            netns.delete_netns(name)


@pytest.fixture(scope="module")
def routed6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, RouterModule]]:
    tag = new_tag()
    topo = Topology(tag)
    pin_dir = f"/sys/fs/bpf/homegw-test-{tag}"
    state = tmp_path_factory.mktemp("router6")
    config = parse_config(
        {
            "wan": {
                "interface": "wan0",
                "mode": "static",
                "address": "203.0.113.2/24",
                "gateway": "203.0.113.1",
            },
            "lan": {"interface": "lan0", "address": "192.168.1.1/24"},
            "state_dir": str(state),
        }
    )
    dp = Dataplane(pin_dir, {Nic.LAN: "lan0", Nic.WAN: "wan0"})
    try:
        topo.build()
        with netns.in_netns(topo.ns["gw"]):
            dp.load()
            router = RouterModule(config)  # watches the gateway's kernel: NDP
            dp.add_module(router)
            dp.set_order(Nic.LAN, ["router"])
            dp.set_order(Nic.WAN, ["router"])
            router.on_ipv6(FACTS)
            assert dp.slowpath is not None
            dp.slowpath.start()
            dp.attach()
        yield topo, router
    finally:
        with netns.in_netns(topo.ns["gw"]):
            dp.close()
        topo.delete()
        purge_pins(pin_dir)


def test_ping6_through_xdp(routed6) -> None:
    topo, router = routed6
    before = router.counters()["v6_forwarded"]
    ping = topo.run("h", ["ping", "-6", "-c", "5", "-i", "0.05", "-W", "3", ISP])
    assert " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    # 5 requests out, 5 replies back, all in XDP (the first one held while
    # the kernel resolved the next hop, then re-injected)
    assert router.counters()["v6_forwarded"] - before >= 10
    neighbours = {row["address"] for row in router.tables()["neighbours"]()}
    assert {HOST, ISP_LINK_LOCAL} <= neighbours, neighbours


def test_tcp_download_verified_by_hash(routed6) -> None:
    topo, router = routed6
    server = topo.popen("isp", [sys.executable, "-c", SERVER])
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        got = topo.run("h", [sys.executable, "-c", CLIENT])
        expected = hashlib.sha256(bytes(range(256)) * (DOWNLOAD // 256)).hexdigest()
        assert got.stdout.split() == [str(DOWNLOAD), expected], got.stderr
    finally:
        server.terminate()
        server.wait(10)


def test_hop_limit_1_answered_with_time_exceeded(routed6) -> None:
    """The host's kernel accepts the error only with a right checksum."""
    topo, router = routed6
    before = router.counters()["v6_hop_limit_exceeded"]
    ping = topo.run("h", ["ping", "-6", "-c", "1", "-t", "1", "-W", "3", ISP])
    assert f"From {GW_LAN}" in ping.stdout and "Time exceeded" in ping.stdout, ping.stdout
    assert router.counters()["v6_hop_limit_exceeded"] == before + 1


def test_unused_inside_prefix_unreachable(routed6) -> None:
    topo, router = routed6
    ping = topo.run("h", ["ping", "-6", "-c", "1", "-W", "3", "2001:db8:100:7::1"])
    assert f"From {GW_LAN}" in ping.stdout and "Destination unreachable" in ping.stdout, ping.stdout
    assert router.counters()["v6_unreachable"] >= 1


def test_first_packet_to_an_unresolved_host_survives_resolution(routed6) -> None:
    """One ping from the ISP, one packet: the router misses the next hop,
    holds the packet while the kernel's NDP resolves it, then sends it."""
    topo, router = routed6
    misses = router.counters()["v6_neigh_miss"]
    ping = topo.run("isp", ["ping", "-6", "-c", "1", "-W", "3", SECOND])
    assert " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    assert router.counters()["v6_neigh_miss"] == misses + 1
    assert SECOND in {row["address"] for row in router.tables()["neighbours"]()}
