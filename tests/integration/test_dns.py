"""The DNS forwarder in the virtual home: real `dig` on LAN hosts, the gateway's
DnsService in the gateway namespace (in this process, so a fake clock can
drive its cache), the real dnsmasq resolver at 198.51.100.53 and the odd
upstreams of :mod:`tests.integration.dns_helpers` in the ISP namespace."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from homegw import netns
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.dns import upstream_pool
from homegw.modules.dns.module import DnsModule
from homegw.modules.dns.service import DnsService
from homegw.virtualhome import DNS_SERVER, VirtualHome
from tests.integration.dns_helpers import (
    BIG,
    BLACK_HOLE,
    CLOSED,
    GATED,
    REBINDING,
    TRUNCATING,
    Upstreams,
    in_netns,
    xdp_pass,
)

GW = "192.168.1.1"


@dataclass
class Home:
    home: VirtualHome
    upstreams: Upstreams


@pytest.fixture(scope="module")
def home(virtual_home_module: VirtualHome) -> Iterator[Home]:
    vh = virtual_home_module
    gw = vh.ns("gw")
    netns.ip("addr", "add", "203.0.113.2/24", "dev", "wan0", ns=gw)
    netns.ip("route", "add", "default", "via", vh.isp_address, ns=gw)
    netns.ip("addr", "add", f"{GW}/24", "dev", "lan0", ns=gw)
    upstreams = Upstreams(vh)
    yield Home(vh, upstreams)
    upstreams.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def service(
    h: Home,
    wan_dns: list[str],
    clock: FakeClock | None = None,
    sections: dict[str, Any] | None = None,
    provider: list[str] | None = None,
    **dns: Any,
) -> Iterator[DnsService]:
    """A DnsService listening in the gateway namespace, for the block; `provider`
    stands for the upstreams the appliance learns from WAN DHCP."""
    overrides: dict[str, Any] = {"wan": {"dns": wan_dns}, "dns": dns, **(sections or {})}
    config = parse_config(h.home.gateway_config(**overrides))
    kwargs = {"clock": clock} if clock else {}
    svc = DnsService(config, lambda: list(provider or []), **kwargs)
    with in_netns(h.home.ns("gw")):
        svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@dataclass
class Dig:
    status: str
    flags: set[str]
    answers: list[tuple[str, int, str, str]]  # name, TTL, type, data
    msec: int
    text: str

    @property
    def data(self) -> list[str]:
        return [a[3] for a in self.answers]


def dig(h: Home, host: str, *args: str, server: str = GW) -> Dig:
    argv = ["dig", f"@{server}", "+tries=1", "+timeout=4", *args]
    out = h.home.run(host, argv).stdout
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([\w ]+);", out)
    msec = re.search(r"Query time: (\d+) msec", out)
    assert status and flags and msec, out
    section = (
        out.split(";; ANSWER SECTION:\n")[1].split("\n\n")[0] if "ANSWER SECTION" in out else ""
    )
    answers = []
    for line in section.splitlines():
        name, ttl, _cls, rtype, rdata = line.split(None, 4)
        answers.append((name, int(ttl), rtype, rdata))
    return Dig(status.group(1), set(flags.group(1).split()), answers, int(msec.group(1)), out)


def test_forwards_to_real_resolver_and_cached_ttl_counts_down(home: Home) -> None:
    clock = FakeClock()
    published: list[tuple[str, str, list[str]]] = []
    with service(home, [DNS_SERVER], clock) as svc:
        svc.on_answer = lambda client, name, addrs: published.append((client, name, addrs))
        first = dig(home, "h1", "www.example.test")
        assert (first.status, first.answers) == (
            "NOERROR",
            [("www.example.test.", 300, "A", "198.51.100.80")],
        )
        assert {"qr", "rd", "ra"} <= first.flags and "aa" not in first.flags
        clock.now += 100.5
        second = dig(home, "h1", "WWW.Example.Test")
        assert second.answers == [("WWW.Example.Test.", 200, "A", "198.51.100.80")]
        clock.now += 100
        assert dig(home, "h2", "www.example.test").answers[0][1] == 100
        stats = svc.stats()
        assert stats["upstream"]["queries"] == 1
        assert stats["resolver"]["udp_hits"] == 2
        log = svc.query_log()
        assert [(e.client, e.name, e.source, e.answer) for e in log] == [
            ("192.168.1.11", "www.example.test", "upstream", ("A 198.51.100.80",)),
            ("192.168.1.11", "www.example.test", "cache", ("A 198.51.100.80",)),
            ("192.168.1.12", "www.example.test", "cache", ("A 198.51.100.80",)),
        ]
        assert log[0].upstream_ms is not None and log[1].upstream_ms is None
    assert published == [
        ("192.168.1.11", "www.example.test", ["198.51.100.80"]),
        ("192.168.1.11", "www.example.test", ["198.51.100.80"]),
        ("192.168.1.12", "www.example.test", ["198.51.100.80"]),
    ]


def test_lan_names_answered_locally(home: Home) -> None:
    reservation = {"mac": "02:48:47:00:00:99", "address": "192.168.1.20", "hostname": "printer"}
    with service(home, [DNS_SERVER], sections={"dhcp": {"reservations": [reservation]}}) as svc:
        svc.set_local_hosts({"laptop": "192.168.1.11"})
        assert dig(home, "h2", "laptop.lan").answers == [("laptop.lan.", 0, "A", "192.168.1.11")]
        assert dig(home, "h2", "laptop").data == ["192.168.1.11"]
        assert dig(home, "h2", "printer.lan").data == ["192.168.1.20"]
        assert dig(home, "h2", "homegw.lan").data == ["192.168.1.1"]
        assert dig(home, "h2", "-x", "192.168.1.11").data == ["laptop.lan."]
        assert dig(home, "h2", "ghost.lan").status == "NXDOMAIN"
        assert dig(home, "h2", "-x", "10.9.8.7").status == "NXDOMAIN"
        svc.set_local_hosts({})
        assert dig(home, "h2", "laptop.lan").status == "NXDOMAIN"
        svc.lease_name_changed("02:48:47:00:00:01", "tablet", "192.168.1.150")  # DHCP's event
        assert dig(home, "h2", "tablet.lan").data == ["192.168.1.150"]
        svc.lease_name_changed("02:48:47:00:00:01", None, None)
        assert dig(home, "h2", "tablet.lan").status == "NXDOMAIN"
        assert svc.stats()["upstream"]["queries"] == 0  # none of it went upstream


def test_blocklists_and_group_policy(home: Home) -> None:
    assert home.home.tmpdir is not None
    hosts = home.home.tmpdir / "block.hosts"
    hosts.write_text("0.0.0.0 ads.example.test\n")
    kids = {"name": "kids", "clients": ["192.168.1.12"], "deny": ["www.example.test"]}
    with service(home, [DNS_SERVER], blocklists=[str(hosts)], groups=[kids]) as svc:
        assert dig(home, "h1", "ads.example.test").data == ["0.0.0.0"]
        assert dig(home, "h1", "x.ads.example.test", "AAAA").data == ["::"]
        assert dig(home, "h1", "www.example.test").data == ["198.51.100.80"]
        # cached now, but still blocked for the kids' device
        assert dig(home, "h2", "www.example.test").data == ["0.0.0.0"]
        assert dig(home, "h2", "example.test").data == ["198.51.100.80"]
        assert svc.stats()["resolver"]["blocked"] == 3
        assert [e.blocked for e in svc.query_log()] == [True, True, False, True, False]
    with service(home, [DNS_SERVER], blocklists=[str(hosts)], block_response="nxdomain"):
        reply = dig(home, "h1", "ads.example.test")
        assert (reply.status, reply.answers) == ("NXDOMAIN", [])


def test_truncated_answer_retried_over_tcp(home: Home) -> None:
    before = home.upstreams.received.copy()
    with service(home, [TRUNCATING]) as svc:
        reply = dig(home, "h1", "big.example.test")
        assert (reply.status, sorted(reply.data)) == ("NOERROR", sorted(BIG))
        got = home.upstreams.received - before
        assert got == Counter({(TRUNCATING, "udp"): 1, (TRUNCATING, "tcp"): 1})
        assert svc.stats()["upstream"]["tcp_retries"] == 1
        # too big for a client without EDNS (512 bytes): TC, and dig retries over TCP
        plain = dig(home, "h1", "+noedns", "big.example.test")
        assert "Truncated, retrying in TCP mode." in plain.text
        assert sorted(plain.data) == sorted(BIG)
        stats = svc.stats()["resolver"]
        assert (stats["truncated"], stats["tcp_queries"]) == (1, 1)


def test_upstream_down_servfail_within_timeout(home: Home) -> None:
    with service(home, [BLACK_HOLE], upstream_timeout="1s") as svc:
        reply = dig(home, "h1", "www.example.test")
        assert reply.status == "SERVFAIL"
        assert 990 <= reply.msec <= 1600, reply.msec
        assert svc.stats()["upstream"]["failures"] == 1


def test_failover_to_second_upstream(home: Home) -> None:
    before = home.upstreams.received[(BLACK_HOLE, "udp")]
    with service(home, [BLACK_HOLE, DNS_SERVER], upstream_timeout="1s") as svc:
        reply = dig(home, "h1", "www.example.test")
        assert reply.data == ["198.51.100.80"]
        assert 490 <= reply.msec < 1000, reply.msec  # asked .53 after 1s / 2 upstreams
        assert svc.upstream.preferred == DNS_SERVER
        assert dig(home, "h1", "example.test").data == ["198.51.100.80"]
        assert home.upstreams.received[(BLACK_HOLE, "udp")] == before + 1  # not asked again
        assert svc.stats()["upstream"]["failovers"] == 1


def test_refusing_upstream_fails_over_at_once(home: Home) -> None:
    with service(home, [CLOSED, DNS_SERVER], upstream_timeout="1s") as svc:
        reply = dig(home, "h1", "www.example.test")
        assert reply.data == ["198.51.100.80"]
        assert reply.msec < 490, reply.msec  # the ICMP error, not the stagger, moved it on
        upstream = svc.stats()["upstream"]
        assert (upstream["refused"], upstream["failovers"]) == (1, 1)


def test_concurrent_identical_queries_coalesced(home: Home) -> None:
    """Six clients ask while the upstream holds the first question: one goes out."""
    before = home.upstreams.received[(GATED, "udp")]
    with service(home, [], provider=[GATED], upstream_timeout="20s", query_log_size=4) as svc:
        digs = [
            home.home.popen(
                f"h{1 + i % 3}",
                ["dig", f"@{GW}", "+tries=1", "+timeout=15", "+short", "fine.example.test"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(6)
        ]
        arrived = netns.wait_for(lambda: svc.stats()["resolver"]["udp_queries"] == 6, 15)
        assert arrived and home.upstreams.received[(GATED, "udp")] == before + 1
        home.upstreams.open_gate()
        outputs = [proc.communicate(timeout=15)[0].split() for proc in digs]
        assert outputs == [["198.51.100.99"]] * 6
        stats = svc.stats()
        assert (stats["resolver"]["coalesced"], stats["upstream"]["queries"]) == (5, 1)
        assert stats["upstreams"] == [GATED]
        assert len(svc.query_log()) == 4 and stats["query_log"]["total"] == 6


def test_rebinding_protection(home: Home) -> None:
    with service(home, [REBINDING]) as svc:
        assert dig(home, "h1", "evil.example.test").status == "REFUSED"
        assert dig(home, "h1", "fine.example.test").data == ["198.51.100.99"]
        assert svc.stats()["resolver"]["rebind_refused"] == 1
    with service(home, [REBINDING], rebind_protection=False):
        assert dig(home, "h1", "evil.example.test").data == ["192.168.1.50"]


def test_negative_answer_cached_from_soa(home: Home) -> None:
    clock = FakeClock()
    with service(home, [REBINDING], clock) as svc:
        assert dig(home, "h1", "nx.example.test").status == "NXDOMAIN"
        clock.now += 59
        again = dig(home, "h1", "nx.example.test")
        assert again.status == "NXDOMAIN"
        assert re.search(r"^example\.test\.\s+1\s+IN\s+SOA\s", again.text, re.M), again.text
        clock.now += 1
        dig(home, "h1", "nx.example.test")
        assert svc.stats()["upstream"]["queries"] == 2


def test_malformed_queries_answered_or_dropped_and_service_keeps_going(home: Home) -> None:
    loop_query = struct.pack(">HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    long_label = struct.pack(">HHHHHH", 0xCAFE, 0x0100, 1, 0, 0, 0) + b"\x40" + b"a" * 64
    local = DNSRecord.question("homegw.lan")
    with in_netns(home.home.ns("h1")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with service(home, [DNS_SERVER]) as svc, sock:
        sock.settimeout(5)
        for data in (loop_query, long_label + b"\x00\x00\x01\x00\x01"):
            sock.sendto(data, (GW, 53))
            reply = sock.recv(512)
            assert reply == data[:2] + b"\x81\x81" + bytes(8)  # QR RD RA, FORMERR
        sock.sendto(b"\x01\x02\x03", (GW, 53))  # no header: dropped
        sock.sendto(local.pack(), (GW, 53))  # answered after the drop (same event loop)
        assert DNSRecord.parse(sock.recv(512)).header.id == local.header.id
        stats = svc.stats()["resolver"]
        assert (stats["formerr"], stats["dropped"]) == (2, 1)
        assert dig(home, "h1", "www.example.test").data == ["198.51.100.80"]


def test_xdp_fast_path_answers_repeat_queries(home: Home) -> None:
    vh = home.home
    with (
        xdp_pass(vh.ns("sw"), "p-lan"),
        service(home, [DNS_SERVER]) as svc,
        fast_path(vh, svc) as dataplane,
    ):
        assert dataplane.chain_of(Nic.LAN, Hook.XDP) == ["dns"]
        first = dig(home, "h1", "+nocookie", "www.example.test")
        assert first.data == ["198.51.100.80"]
        assert svc.stats()["resolver"]["fast_path_writes"] == 1
        second = dig(home, "h1", "+nocookie", "www.example.test")
        third = dig(home, "h1", "+noedns", "WWW.example.test")
        assert second.data == third.data == ["198.51.100.80"]
        # answered at once: without an XDP program on the veth peer the frames
        # would wait in its ring for unrelated traffic (seen: 0.7 and 2.4 s)
        assert second.msec < 200 and third.msec < 200, (second.msec, third.msec)
        assert 0 < third.answers[0][1] <= second.answers[0][1] <= 300
        stats = svc.stats()
        assert stats["resolver"]["udp_queries"] == 1  # Python saw only the first
        assert stats["fast_path"]["hits"] == 2


@contextlib.contextmanager
def fast_path(vh: VirtualHome, svc: DnsService) -> Iterator[Dataplane]:
    config = svc.config
    dataplane = Dataplane(config.dataplane.pin_dir, {Nic.LAN: "lan0"}, "native")
    module = DnsModule(config)
    with in_netns(vh.ns("gw")):
        dataplane.load()
        dataplane.add_module(module)
        dataplane.set_order(Nic.LAN, ["dns"])
        dataplane.attach()
    svc.set_fast_path(module.fast_path())
    try:
        yield dataplane
    finally:
        svc.set_fast_path(None)
        with in_netns(vh.ns("gw")):
            dataplane.close()


SPOOFER, SPOOF_OTHER = "198.51.100.59", "198.51.100.60"
POISON = "6.6.6.6"


class Spoofer:
    """An upstream that answers each query five times, the real answer last:
    first forged replies as an off-path attacker would send them (wrong ID;
    right ID from the upstream's address but another port; right ID from
    another address; right ID and source for another question), each saying
    POISON. It notes the source port of every query."""

    def __init__(self, home: VirtualHome) -> None:
        isp = home.ns("isp")
        for address in (SPOOFER, SPOOF_OTHER):
            netns.ip("addr", "add", f"{address}/32", "dev", "inet0", ns=isp)
        with in_netns(isp):
            self.sock = self._bind(SPOOFER, 53)
            self.other_port = self._bind(SPOOFER, 5353)
            self.other_address = self._bind(SPOOF_OTHER, 53)
        self.ports: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _bind(address: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, port))
        return sock

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if not data:
                return
            self.ports.append(peer[1])
            query = DNSRecord.parse(data)
            forged = self._answer(query, POISON)
            wrong_id = bytearray(forged)
            wrong_id[0] ^= 0x5A
            self.sock.sendto(bytes(wrong_id), peer)
            self.other_port.sendto(forged, peer)
            self.other_address.sendto(forged, peer)
            other = DNSRecord.question("bank.example.test")
            other.header.id = query.header.id
            self.sock.sendto(self._answer(other, POISON), peer)
            self.sock.sendto(self._answer(query, "198.51.100.99"), peer)

    @staticmethod
    def _answer(query: DNSRecord, address: str) -> bytes:
        reply = query.reply()
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=300))
        return reply.pack()

    def close(self) -> None:
        for sock in (self.sock, self.other_port, self.other_address):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def spoofer(home: Home) -> Iterator[Spoofer]:
    s = Spoofer(home.home)
    yield s
    s.close()


def test_forged_upstream_replies_are_ignored_and_counted(home: Home, spoofer: Spoofer) -> None:
    with service(home, [SPOOFER]) as svc:
        first = dig(home, "h1", "www.example.test")
        assert first.data == ["198.51.100.99"], first.text
        upstream = svc.stats()["upstream"]
        counted = {k: upstream[k] for k in ("unknown_id", "wrong_source", "wrong_question")}
        assert counted == {"unknown_id": 1, "wrong_source": 2, "wrong_question": 1}
        assert upstream["queries"] == 1
        assert dig(home, "h2", "www.example.test").data == ["198.51.100.99"]  # the cache
        assert dig(home, "h2", "WWW.Example.TEST", "AAAA").data == ["198.51.100.99"]
        upstream = svc.stats()["upstream"]
        assert (upstream["queries"], upstream["wrong_source"]) == (2, 4)
        assert [e.answer for e in svc.query_log()] == [("A 198.51.100.99",)] * 3


def test_upstream_sockets_get_fresh_random_ports(
    home: Home, spoofer: Spoofer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool socket is replaced (new port) after SOCKET_USES queries."""
    monkeypatch.setattr(upstream_pool, "SOCKET_USES", 1)
    with service(home, [SPOOFER]) as svc:
        start = len(spoofer.ports)
        for i in range(6):
            assert dig(home, "h1", f"n{i}.example.test").data == ["198.51.100.99"]
        ports = spoofer.ports[start:]
        assert len(ports) == 6 and len(set(ports)) == 6, ports
        assert svc.stats()["upstream"]["sockets_opened"] == 6
