"""DNS over IPv6 in the virtual home, against real peers: `dig` on a LAN host
asks the gateway's DnsService (in the gateway namespace, in this process) on
its ULA and global LAN addresses, UDP and TCP; the upstream is a real dnsmasq
in the ISP namespace reached over IPv6 (2001:db8:ffff:53::53, AAAA
www.example.test -> 2001:db8:ffff:80::80). The second answer comes from the
cache, then from the XDP fast path (over IPv6, its UDP checksum checked by
the client's kernel); local names get AAAA (and their addresses PTR) from
the kernel's IPv6 neighbours of the LAN NIC; the WAN is never served.

The IPv6 addressing is this file's own (the lead's IspIpv6 brings RAs and
DHCPv6; these tests need neither): static, nodad, documentation prefixes."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

import pytest

from homegw import netns
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.lan6 import Lan6Watcher
from homegw.modules.dns.service import DnsService
from homegw.netfacts import Ipv6Facts
from homegw.virtualhome import VirtualHome
from tests.integration.dns_helpers import in_netns, xdp_pass
from tests.integration.test_dns import GW, Home, dig, fast_path

ULA_NET, GLOBAL_NET = "fd12:3456:789a:1::/64", "2001:db8:100:1::/64"
GW_ULA, GW_GLOBAL = "fd12:3456:789a:1::1", "2001:db8:100:1::1"
H1_ULA, H1_GLOBAL = "fd12:3456:789a:1::11", "2001:db8:100:1::11"
GW_WAN6, ISP6 = "2001:db8:ffff:1::2", "2001:db8:ffff:1::1"
DNS6, WEB6 = "2001:db8:ffff:53::53", "2001:db8:ffff:80::80"
CLOSED6 = "2001:db8:ffff:53::54"  # on the ISP's side, nobody listening
H1_IPV4 = "192.168.1.11"


def _addr(ns: str, address: str, dev: str) -> None:
    netns.ip("-6", "addr", "add", address, "dev", dev, "nodad", ns=ns)


@pytest.fixture(scope="module")
def home(virtual_home_module: VirtualHome) -> Iterator[Home]:
    vh = virtual_home_module
    gw, isp, h1 = vh.ns("gw"), vh.ns("isp"), vh.host("h1").ns
    netns.ip("addr", "add", "203.0.113.2/24", "dev", "wan0", ns=gw)
    netns.ip("route", "add", "default", "via", vh.isp_address, ns=gw)
    netns.ip("addr", "add", f"{GW}/24", "dev", "lan0", ns=gw)
    _addr(gw, f"{GW_ULA}/64", "lan0")
    _addr(gw, f"{GW_GLOBAL}/64", "lan0")
    _addr(gw, f"{GW_WAN6}/64", "wan0")
    netns.ip("-6", "route", "add", "default", "via", ISP6, ns=gw)
    _addr(isp, f"{ISP6}/64", "isp0")
    _addr(isp, f"{DNS6}/128", "inet0")
    _addr(isp, f"{CLOSED6}/128", "inet0")
    _addr(h1, f"{H1_ULA}/64", "eth0")
    _addr(h1, f"{H1_GLOBAL}/64", "eth0")
    vh._spawn("dns6", "isp", _upstream_argv(vh))
    vh._wait_ready("dns6", lambda: netns.listening(isp, "udp", f"[{DNS6}]", 53))
    yield Home(vh, None)  # type: ignore[arg-type]


def _upstream_argv(vh: VirtualHome) -> list[str]:
    return [
        *vh._dnsmasq_common("dns6"),
        "--port=53",
        f"--listen-address={DNS6}",
        "--address=/#/",  # NXDOMAIN for every other name
        "--local-ttl=300",
        f"--host-record=www.example.test,198.51.100.80,{WEB6}",
    ]


@contextlib.contextmanager
def service(
    h: Home, watcher: bool = False, upstreams: tuple[str, ...] = (DNS6,), **dns: str
) -> Iterator[DnsService]:
    """The gateway's DnsService with IPv6 on, its upstreams the ISP's IPv6
    dnsmasq (as the lead hands DHCPv6's DNS option over), and with
    `watcher` the LAN NIC's IPv6 view for local names."""
    overrides = {"wan": {"dns": []}, "lan": {"ipv6": {"mode": "auto"}}, "dns": dns}
    config = parse_config(h.home.gateway_config(**overrides))
    svc = DnsService(config, lambda: list(upstreams))
    lan6 = Lan6Watcher("lan0") if watcher else None
    with in_netns(h.home.ns("gw")):
        svc.start()
        if lan6 is not None:
            lan6.start()
            svc.set_ipv6(lan6.table)
    try:
        yield svc
    finally:
        if lan6 is not None:
            lan6.stop()
        svc.stop()


def test_aaaa_over_ipv6_from_upstream_then_cache_on_both_lan_addresses(home: Home) -> None:
    with service(home) as svc:
        first = dig(home, "h1", "AAAA", "www.example.test", server=GW_ULA)
        assert (first.status, first.data) == ("NOERROR", [WEB6])
        upstream = svc.stats()["upstream"]
        assert (upstream["queries"], upstream["failures"], upstream["wrong_source"]) == (1, 0, 0)
        hits = svc.stats()["resolver"]["udp_hits"]
        # asked on the global address from h1's ULA: the reply must come from
        # the global one (else dig ignores it: "reply from unexpected source")
        second = dig(home, "h1", "-b", H1_ULA, "AAAA", "www.example.test", server=GW_GLOBAL)
        assert (second.status, second.data) == ("NOERROR", [WEB6])
        assert 0 < second.answers[0][1] <= 300
        assert svc.stats()["resolver"]["udp_hits"] == hits + 1  # from the cache
        tcp = dig(home, "h1", "+tcp", "AAAA", "www.example.test", server=GW_ULA)
        assert tcp.data == [WEB6]
        assert svc.stats()["resolver"]["tcp_queries"] == 1
        a = dig(home, "h1", "A", "www.example.test", server=GW_ULA)
        assert a.data == ["198.51.100.80"]  # A over IPv6 from the IPv6 upstream


def test_a_refusing_ipv6_upstream_fails_over_at_once(home: Home) -> None:
    """Nobody listens on CLOSED6: the ICMPv6 port unreachable (IPV6_RECVERR
    on the pool's socket) moves the question on before the stagger would."""
    with service(home, upstreams=(CLOSED6, DNS6), upstream_timeout="1s") as svc:
        reply = dig(home, "h1", "AAAA", "www.example.test", server=GW_ULA)
        assert reply.data == [WEB6]
        assert reply.msec < 490, reply.msec
        upstream = svc.stats()["upstream"]
        assert (upstream["refused"], upstream["failovers"]) == (1, 1)


def test_never_served_on_the_wan(home: Home) -> None:
    with service(home):
        for transport in ("+notcp", "+tcp"):
            argv = ["dig", f"@{GW_WAN6}", transport, "+tries=1", "+timeout=2", "www.example.test"]
            out = home.home.run("isp", argv, check=False).stdout
            assert "status:" not in out, out
        assert dig(home, "h1", "www.example.test", server=GW_ULA).status == "NOERROR"


def test_xdp_answers_repeat_aaaa_queries_over_ipv6(home: Home) -> None:
    vh = home.home
    with (
        xdp_pass(vh.ns("sw"), "p-lan"),
        service(home) as svc,
        fast_path(vh, svc) as dataplane,
    ):
        assert dataplane.chain_of(Nic.LAN, Hook.XDP) == ["dns"]
        module = dataplane.modules["dns"].module
        prefixes = (ipaddress.IPv6Network(ULA_NET), ipaddress.IPv6Network(GLOBAL_NET))
        module.on_ipv6(Ipv6Facts(lan_prefixes=prefixes))
        first = dig(home, "h1", "+nocookie", "AAAA", "www.example.test", server=GW_ULA)
        assert first.data == [WEB6]
        assert svc.stats()["resolver"]["fast_path_writes"] == 1
        python_saw = svc.stats()["resolver"]["udp_queries"]
        second = dig(home, "h1", "+nocookie", "AAAA", "www.example.test", server=GW_ULA)
        third = dig(home, "h1", "+noedns", "AAAA", "WWW.example.test", server=GW_GLOBAL)
        assert second.data == third.data == [WEB6]
        assert second.msec < 200 and third.msec < 200, (second.msec, third.msec)
        stats = svc.stats()
        fast = stats["fast_path"]
        # A veth hands XDP a copy of the frame with only its 64-byte alignment
        # slack as tailroom: the 107-byte EDNS query cannot grow by its 28-byte
        # record there, so its reply grows at the front instead (headers and
        # question moved); the query without EDNS fits at the tail.
        assert (fast["hits"], fast["no_room"], fast["passed"]) == (2, 0, 0), fast
        assert stats["resolver"]["udp_queries"] == python_saw


def test_local_names_get_aaaa_from_the_lan_neighbours(home: Home) -> None:
    vh = home.home
    h1 = vh.host("h1")
    with service(home, watcher=True) as svc:
        svc.lease_name_changed(h1.mac, "h1", H1_IPV4)
        for target in (GW_ULA, GW_GLOBAL):  # the gateway learns h1's addresses (ND)
            vh.run("h1", ["ping", "-6", "-c1", "-W2", target])
        mac = h1.mac.lower()
        assert netns.wait_for(
            lambda: len(svc.local._lan6.name_addresses(mac)) == 2,  # type: ignore[union-attr]
            10,
        ), svc.local._lan6.all_devices()  # type: ignore[union-attr]
        named = dig(home, "h1", "AAAA", "h1.lan", server=GW_ULA)
        assert (named.status, named.data) == ("NOERROR", [H1_ULA, H1_GLOBAL])
        assert dig(home, "h1", "A", "h1.lan", server=GW_ULA).data == [H1_IPV4]
        gateway = dig(home, "h1", "AAAA", "homegw.lan", server=GW_ULA)
        assert gateway.data == [GW_ULA, GW_GLOBAL]
        for address in (H1_ULA, H1_GLOBAL):
            assert dig(home, "h1", "-x", address, server=GW_ULA).data == ["h1.lan."]
