"""The DNS module's XDP fast path through BPF_PROG_TEST_RUN, via the LAN root
program: a cached A or AAAA query, over IPv4 or IPv6, comes back as the exact
reply (redirected to its ingress; over IPv6 with its UDP checksum); everything
it cannot answer goes on down the chain unchanged."""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dnslib import AAAA, EDNS0, QTYPE, RR, A, DNSHeader, DNSQuestion, DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.dns.fastpath import TYPE_AAAA, FastPathCache, FastPathStats, answer_addresses
from homegw.modules.dns.module import DnsModule
from homegw.modules.dns.wire import text_to_wire
from homegw.netfacts import Ipv6Facts
from tests.fixtures.stamp import STAMP_PORT, StampModule

CLIENT_MAC, GW_MAC = "02:00:00:00:01:0b", "02:00:00:00:01:01"
CLIENT, GW = "192.168.1.11", "192.168.1.1"
NAME = "www.example.test"
CLIENT6, ULA6, GLOBAL6 = "fd12:3456:789a:1::2c", "fd12:3456:789a:1::1", "2001:db8:100:1::1"
LAN_PREFIXES = (
    ipaddress.IPv6Network("fd12:3456:789a:1::/64"),
    ipaddress.IPv6Network("2001:db8:100:1::/64"),
)
SECOND = 1_000_000_000


def frame(
    dns: bytes,
    dst: str = GW,
    dport: int = 53,
    src_mac: str = CLIENT_MAC,
    dst_mac: str = GW_MAC,
    src: str = CLIENT,
    sport: int = 40000,
    ip_id: int = 7,
) -> bytes:
    packet = (
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src, dst=dst, id=ip_id)
        / UDP(sport=sport, dport=dport)
        / dns
    )
    return bytes(packet)


def query(
    name: str = NAME,
    qtype: str = "A",
    edns: EDNS0 | None = None,
    qid: int = 0x1234,
    rd: int = 1,
    cd: int = 0,
) -> DNSRecord:
    record = DNSRecord(DNSHeader(id=qid, rd=rd, cd=cd), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns is not None:
        record.add_ar(edns)
    return record


def frame6(dns: bytes, dst: str = ULA6, src: str = CLIENT6, sport: int = 40000) -> bytes:
    """A query over IPv6, its UDP checksum computed by scapy."""
    packet = (
        Ether(src=CLIENT_MAC, dst=GW_MAC)
        / IPv6(src=src, dst=dst, tc=0x20, fl=0x12345, hlim=255)
        / UDP(sport=sport, dport=53)
        / dns
    )
    return bytes(packet)


def reply_message(q: DNSRecord, addresses: list[str], ttl: int, edns: bool = False) -> bytes:
    """The DNS reply, built independently with dnslib."""
    reply = DNSRecord(DNSHeader(id=q.header.id, qr=1, rd=q.header.rd, ra=1, cd=q.header.cd), q=q.q)
    for address in addresses:
        if q.q.qtype == QTYPE.AAAA:
            reply.add_answer(RR(q.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
        else:
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
    if edns:
        reply.add_ar(EDNS0(udp_len=1232))
    return reply.pack()


def expected_reply(q: DNSRecord, addresses: list[str], ttl: int, edns: bool = False) -> bytes:
    """What a resolver sends back over IPv4, built independently with dnslib and scapy."""
    packet = (
        Ether(src=GW_MAC, dst=CLIENT_MAC)
        / IP(src=GW, dst=CLIENT, id=0, flags="DF", ttl=64)
        / UDP(sport=53, dport=40000, chksum=0)
        / reply_message(q, addresses, ttl, edns)
    )
    return bytes(packet)


def expected_reply6(
    q: DNSRecord, addresses: list[str], ttl: int, edns: bool = False, src: str = ULA6
) -> bytes:
    """The reply over IPv6: scapy computes the UDP checksum."""
    packet = (
        Ether(src=GW_MAC, dst=CLIENT_MAC)
        / IPv6(src=src, dst=CLIENT6, tc=0, fl=0, hlim=64)
        / UDP(sport=53, dport=40000)
        / reply_message(q, addresses, ttl, edns)
    )
    return bytes(packet)


@dataclass
class Loaded:
    dataplane: Dataplane
    fast_path: FastPathCache
    module: DnsModule


@pytest.fixture(scope="module")
def loaded() -> Iterator[Loaded]:
    """One compile for the whole file (each test empties the map)."""
    pin_dir = f"/sys/fs/bpf/homegw-test-{secrets.token_hex(3)}"
    config = parse_config(
        {
            "wan": {"interface": "wan0"},
            "lan": {"interface": "lan0", "address": f"{GW}/24"},
            "dns": {"cache_size": 64},
            "dataplane": {"pin_dir": pin_dir},
        }
    )
    dp = Dataplane(pin_dir, {})
    try:
        dp.load()
        module = DnsModule(config)
        dp.add_module(module)
        dp.add_module(StampModule("A", 16))
        module.on_ipv6(Ipv6Facts(lan_prefixes=LAN_PREFIXES))
        fast_path = FastPathCache(pin_dir)
        yield Loaded(dp, fast_path, module)
        fast_path.close()
    finally:
        dp.close()
        purge_pins(pin_dir)


class Counting:
    """The fast path of one test: an empty map, stats counted from zero."""

    def __init__(self, fast_path: FastPathCache) -> None:
        self.fp = fast_path
        self.fp.clear()
        self.base = fast_path.stats()

    def put(self, qname: bytes, addresses: list[str], expires_ns: int, qtype: int = 1) -> bool:
        return self.fp.put(qname, addresses, expires_ns, qtype)

    def get(self, qname: bytes, qtype: int = 1):
        return self.fp.get(qname, qtype)

    def clear(self) -> int:
        return self.fp.clear()

    def stats(self) -> FastPathStats:
        now = self.fp.stats()
        return FastPathStats(
            *(
                getattr(now, f) - getattr(self.base, f)
                for f in ("hits", "misses", "expired", "passed", "no_room")
            )
        )


@pytest.fixture
def dataplane(loaded: Loaded) -> Dataplane:
    loaded.dataplane.set_order(Nic.LAN, ["dns"])
    return loaded.dataplane


@pytest.fixture
def dns(loaded: Loaded) -> Counting:
    return Counting(loaded.fast_path)


def run(dp: Dataplane, data: bytes):
    return prog_test_run(dp.root_fd(Nic.LAN, Hook.XDP), data)


def publish(
    fp: Counting, addresses: list[str], seconds: float, name: str = NAME, qtype: int = 1
) -> None:
    deadline = time.monotonic_ns() + int(seconds * SECOND)
    assert fp.put(text_to_wire(name), addresses, deadline, qtype)


def test_cached_query_answered_in_place(dataplane: Dataplane, dns: Counting) -> None:
    publish(dns, ["198.51.100.80"], 299.5)  # rounds up to 300 for the next half second
    q = query()
    result = run(dataplane, frame(q.pack()))
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == expected_reply(q, ["198.51.100.80"], 300)
    assert dns.stats() == FastPathStats(hits=1)


def test_ttl_counts_down_to_the_deadline(dataplane: Dataplane, dns: Counting) -> None:
    publish(dns, ["198.51.100.80"], 99.5)
    q = query()
    assert run(dataplane, frame(q.pack())).data == expected_reply(q, ["198.51.100.80"], 100)


def test_mixed_case_several_addresses_edns(dataplane: Dataplane, dns: Counting) -> None:
    addresses = [f"198.51.100.{i}" for i in range(1, 9)]
    publish(dns, addresses, 59.5)
    q = query("WwW.ExAmPlE.tEsT", edns=EDNS0(udp_len=4096), cd=1, rd=0, qid=0xFFFF)
    result = run(dataplane, frame(q.pack()))
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == expected_reply(q, addresses, 60, edns=True)


def test_miss_goes_on_down_the_chain(dataplane: Dataplane, dns: Counting) -> None:
    data = frame(query("other.example.test").pack())
    result = run(dataplane, data)
    assert (result.verdict, result.data) == ("XDP_PASS", data)
    assert dns.stats() == FastPathStats(misses=1)


def test_expired_entry_passes_and_is_removed(dataplane: Dataplane, dns: Counting) -> None:
    publish(dns, ["198.51.100.80"], -1)
    data = frame(query().pack())
    assert run(dataplane, data).data == data
    assert dns.get(text_to_wire(NAME)) is None
    assert dns.stats() == FastPathStats(expired=1)


CASES = {
    "MX question": frame(query(qtype="MX").pack()),
    "EDNS option (cookie)": frame(
        query(edns=EDNS0(udp_len=1232, opts=[])).pack()[:-2]
        + b"\x00\x0c\x00\x0a\x00\x08"
        + bytes(8)
    ),
    "EDNS version 1": frame(query(edns=EDNS0(version=1)).pack()),
    "a response": frame(DNSRecord(DNSHeader(id=1, qr=1), q=DNSQuestion(NAME)).pack()),
    "two questions": frame(query().pack()[:5] + b"\x02" + query().pack()[6:] + query().pack()[12:]),
    "trailing bytes": frame(query().pack() + b"xx"),
    "truncated": frame(query().pack()[:20]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_queries_it_does_not_handle_pass_unchanged(
    dataplane: Dataplane, dns: Counting, case: str
) -> None:
    publish(dns, ["198.51.100.80"], 300)
    data = CASES[case]
    result = run(dataplane, data)
    assert (result.verdict, result.data) == ("XDP_PASS", data)
    assert dns.stats() == FastPathStats(passed=1)


def test_traffic_not_for_our_resolver_is_not_even_counted(
    dataplane: Dataplane, dns: Counting
) -> None:
    publish(dns, ["198.51.100.80"], 300)
    for data in (frame(query().pack(), dst="198.51.100.53"), frame(query().pack(), dport=5353)):
        assert run(dataplane, data).data == data
    assert dns.stats() == FastPathStats()


def test_name_too_long_for_the_key_passes(dataplane: Dataplane, dns: Counting) -> None:
    long_name = ".".join(["a" * 60, "b" * 60, "c" * 10, "test"])  # 138 bytes on the wire
    assert not dns.put(text_to_wire(long_name), ["198.51.100.80"], time.monotonic_ns() + SECOND)
    data = frame(query(long_name).pack())
    assert run(dataplane, data).data == data
    assert dns.stats() == FastPathStats(passed=1)


def test_a_miss_reaches_the_next_module(dataplane: Dataplane, dns: Counting) -> None:
    dataplane.set_order(Nic.LAN, ["dns", "stampA"])
    result = run(dataplane, frame(b"....", dport=STAMP_PORT))
    assert result.data == frame(b"A...", dport=STAMP_PORT)


def test_clear_empties_the_map(dataplane: Dataplane, dns: Counting) -> None:
    for i in range(5):
        publish(dns, ["198.51.100.80"], 300, f"n{i}.example.test")
    assert dns.clear() == 5
    assert dns.get(text_to_wire("n0.example.test")) is None


# -- AAAA, and queries over IPv6 ----------------------------------------------------
V6_ADDRESSES = ["2001:db8:ffff:80::80", "2001:db8:ffff:80::81"]


def test_cached_aaaa_answered_over_ipv4(dataplane: Dataplane, dns: Counting) -> None:
    publish(dns, V6_ADDRESSES, 299.5, qtype=TYPE_AAAA)
    q = query(qtype="AAAA")
    result = run(dataplane, frame(q.pack()))
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == expected_reply(q, V6_ADDRESSES, 300)
    assert dns.stats() == FastPathStats(hits=1)


def test_a_and_aaaa_are_cached_apart(dataplane: Dataplane, dns: Counting) -> None:
    publish(dns, V6_ADDRESSES, 300, qtype=TYPE_AAAA)
    data = frame(query().pack())  # A: not cached
    assert run(dataplane, data).data == data
    assert dns.stats() == FastPathStats(misses=1)
    assert answer_addresses(dns.get(text_to_wire(NAME), TYPE_AAAA), TYPE_AAAA) == V6_ADDRESSES


@pytest.mark.parametrize("name", [NAME, "odd.example.test", "WwW.ExAmPlE.tEsT"])
def test_cached_a_answered_over_ipv6_with_its_checksum(
    dataplane: Dataplane, dns: Counting, name: str
) -> None:
    """Odd and even name lengths: the checksum covers records at odd offsets."""
    publish(dns, ["198.51.100.80"], 59.5, name=name.lower())
    q = query(name)
    result = run(dataplane, frame6(q.pack()))
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == expected_reply6(q, ["198.51.100.80"], 60)
    assert dns.stats() == FastPathStats(hits=1)


def test_cached_aaaa_over_ipv6_to_the_global_address_with_edns(
    dataplane: Dataplane, dns: Counting
) -> None:
    addresses = [f"2001:db8:ffff:80::{i:x}" for i in range(1, 9)]
    publish(dns, addresses, 9.5, qtype=TYPE_AAAA)
    q = query(qtype="AAAA", edns=EDNS0(udp_len=4096), cd=1, qid=0xBEEF)
    result = run(dataplane, frame6(q.pack(), dst=GLOBAL6))
    assert result.verdict == "XDP_REDIRECT"
    assert result.data == expected_reply6(q, addresses, 10, edns=True, src=GLOBAL6)


def test_a_wrong_query_checksum_does_not_matter(dataplane: Dataplane, dns: Counting) -> None:
    """A veth hands XDP a partial checksum: the reply's is computed afresh."""
    publish(dns, V6_ADDRESSES, 299.5, qtype=TYPE_AAAA)
    q = query(qtype="AAAA")
    data = bytearray(frame6(q.pack()))
    data[14 + 40 + 6 : 14 + 40 + 8] = b"\x12\x34"
    assert run(dataplane, bytes(data)).data == expected_reply6(q, V6_ADDRESSES, 300)


def test_ipv6_not_for_our_addresses_is_not_even_counted(
    dataplane: Dataplane, dns: Counting
) -> None:
    publish(dns, V6_ADDRESSES, 300, qtype=TYPE_AAAA)
    q = query(qtype="AAAA").pack()
    for data in (
        frame6(q, dst="2001:db8:ffff:53::53"),  # a LAN host asking an outside resolver
        frame6(q, dst="fe80::1"),  # link-local: the Python resolver answers
        bytes(Ether() / IPv6(src=CLIENT6, dst=ULA6) / UDP(sport=40000, dport=5353) / q),
    ):
        assert run(dataplane, data).data == data
    assert dns.stats() == FastPathStats()


def test_ipv6_queries_it_does_not_handle_pass_unchanged(
    dataplane: Dataplane, dns: Counting
) -> None:
    publish(dns, V6_ADDRESSES, 300, qtype=TYPE_AAAA)
    q = query(qtype="AAAA").pack()
    multicast_source = frame6(q, src="ff02::1")
    hop_by_hop = bytes(
        Ether(src=CLIENT_MAC, dst=GW_MAC)
        / IPv6(src=CLIENT6, dst=ULA6)
        / IPv6ExtHdrHopByHop()
        / UDP(sport=40000, dport=53)
        / q
    )
    long_payload = bytearray(frame6(q))
    long_payload[14 + 4 : 14 + 6] = (len(q) + 8 + 2).to_bytes(2, "big")
    long_payload += b"xx"  # IPv6 payload longer than the UDP datagram
    for data in (multicast_source, bytes(long_payload)):
        assert run(dataplane, data).data == data
    assert dns.stats() == FastPathStats(passed=2)
    assert run(dataplane, hop_by_hop).data == hop_by_hop  # extension header: Python's
    assert dns.stats() == FastPathStats(passed=2)


def test_on_ipv6_follows_the_lan_prefixes(loaded: Loaded, dns: Counting) -> None:
    module = loaded.module
    renumbered = ipaddress.IPv6Network("2001:db8:200:1::/64")
    try:
        module.on_ipv6(Ipv6Facts(lan_prefixes=(LAN_PREFIXES[0], renumbered)))
        assert module.addresses6_in_map() == {
            ipaddress.IPv6Address(ULA6),
            ipaddress.IPv6Address("2001:db8:200:1::1"),
        }
        publish(dns, V6_ADDRESSES, 300, qtype=TYPE_AAAA)
        q = query(qtype="AAAA").pack()
        gone = frame6(q, dst=GLOBAL6)
        assert run(loaded.dataplane, gone).data == gone
        assert run(loaded.dataplane, frame6(q, dst="2001:db8:200:1::1")).verdict == "XDP_REDIRECT"
    finally:
        module.on_ipv6(Ipv6Facts(lan_prefixes=LAN_PREFIXES))
