"""NAT state a stranger cannot break, and nothing untranslated out of the
WAN: the inbound session budget, the DMZ, the gateway's own ports, ICMP
error matching, hairpin rules, untranslatable LAN packets, the DNAT record
in the chain cursor, and release of quarantined ports. BPF_PROG_TEST_RUN,
exact bytes and counters."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from homegw.modules.nat.gc import NS
from homegw.modules.nat.maps import BINDING_QUARANTINE
from tests.datapath.test_nat import (
    BASE,
    HOSTS,
    LAN_MAC,
    WAN,
    Gateway,
    expect,
    from_lan,
    from_wan,
    icmp_error_about,
    sport_of,
    to_lan,
    to_wan,
)

IP4 = ipaddress.IPv4Address
FORWARD_UDP = {"protocol": "udp", "external_port": 7000, "internal_address": "192.168.1.13"}


@pytest.fixture
def make() -> Iterator:
    made: list[Gateway] = []

    def build(nat: dict, **top) -> Gateway:
        gateway = Gateway({**BASE, **top, "nat": nat})
        made.append(gateway)
        return gateway

    yield build
    for gateway in made:
        gateway.close()


def counters(gw: Gateway) -> dict[str, int]:
    return gw.nat.stats()["counters"]


def stranger(i: int) -> str:
    return str(ipaddress.IPv4Address("198.18.0.0") + i)


# -- 1. the inbound budget --------------------------------------------------------------


def test_a_flood_to_a_port_forward_leaves_the_lan_its_sessions(make) -> None:
    gw = make({"max_sessions": 1024, "port_forwards": [FORWARD_UDP]})
    accepted = 0
    for i in range(1100):  # more remotes than the whole table holds
        frame = from_wan(UDP(sport=1000 + i % 50, dport=7000), src=stranger(i))
        accepted += gw.wan(frame).verdict == "XDP_REDIRECT"
    # default budget: a quarter of the table, half of that per port
    assert accepted == 128
    assert counters(gw)["inbound_port_cap"] == 1100 - 128
    assert gw.nat.maps.inbound_sessions() == 128
    # the home's own new flows still get sessions
    out = from_lan("192.168.1.11", UDP(sport=5000, dport=53))
    result = gw.lan(out)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(out))


def test_budget_total_and_per_remote_caps_and_expiry_gives_back(make) -> None:
    forward = {**FORWARD_UDP, "external_port": "7000-7003"}
    limits = {"sessions": 64, "per_remote": 5, "per_port": 40}
    gw = make({"max_sessions": 1024, "port_forwards": [forward], "inbound_limits": limits})
    one_remote = [gw.wan(from_wan(UDP(sport=2000 + i, dport=7000))).verdict for i in range(8)]
    assert one_remote == ["XDP_REDIRECT"] * 5 + ["XDP_DROP"] * 3
    assert counters(gw)["inbound_remote_cap"] == 3
    verdicts = [
        gw.wan(from_wan(UDP(sport=9, dport=7000 + i % 4), src=stranger(i))).verdict
        for i in range(100)
    ]
    assert verdicts.count("XDP_REDIRECT") == 64 - 5
    # per-remote caps count hashed buckets (random seed): a stranger that
    # shares the first remote's full bucket is refused by that cap instead
    refused = counters(gw)
    assert refused["inbound_budget_full"] + refused["inbound_remote_cap"] - 3 == 100 - 59
    assert refused["inbound_budget_full"] >= 100 - 59 - 5
    # the sessions expire (UDP: 5 min): the budget is free again
    now = max(s.last_seen_ns for s in gw.nat.maps.sessions())
    gw.nat.collect(now + 301 * NS)
    assert gw.nat.maps.inbound_sessions() == 0
    assert gw.nat.gauges()["expired_sessions"] == 64  # the metric of what expiry removed
    again = from_wan(UDP(sport=9, dport=7001), src=stranger(500))
    assert gw.wan(again).data == to_lan(again, "192.168.1.13")


def test_endpoint_independent_filtering_is_budgeted_too(make) -> None:
    gw = make(
        {
            "max_sessions": 1024,
            "filtering": "endpoint-independent",
            "inbound_limits": {"sessions": 64},
        }
    )
    gw.lan(from_lan("192.168.1.11", UDP(sport=5002, dport=3478)))
    verdicts = [
        gw.wan(from_wan(UDP(sport=9, dport=5002), src=stranger(i))).verdict for i in range(80)
    ]
    assert verdicts.count("XDP_REDIRECT") == 32  # per port: half of 64
    assert counters(gw)["inbound_port_cap"] == 48


# -- 2. releasing a quarantined port ----------------------------------------------------


def test_release_keeps_the_endpoints_newer_mapping(make) -> None:
    gw = make({})
    first = from_lan("192.168.1.11", UDP(sport=5005, dport=53))
    gw.lan(first)
    (session,) = gw.nat.maps.sessions()
    (binding,) = [b for b in gw.nat.maps.bindings() if b.ext_port == 5005]
    now = session.last_seen_ns
    # as the garbage collection leaves an idle binding: quarantined (long ago)
    gw.nat.maps.delete_session(session)
    gw.nat.maps.unbind_mapping_only(binding)
    gw.nat.maps.set_binding(binding, BINDING_QUARANTINE, now - 200 * NS)
    # the endpoint talks again: a new port, 5005 being in quarantine
    again = from_lan("192.168.1.11", UDP(sport=5005, dport=123))
    new_port = sport_of(gw.lan(again).data)
    assert new_port != 5005
    released = gw.nat.collect(now + NS).release
    assert [b.ext_port for b in released] == [5005]
    assert sport_of(gw.lan(again).data) == new_port  # the newer mapping survived
    assert counters(gw)["new_mappings"] == 2


# -- 3. the DMZ ------------------------------------------------------------------------


def test_the_dmz_host_serves_every_remote(make) -> None:
    gw = make({"dmz_host": "192.168.1.16"})
    first = from_wan(UDP(sport=1111, dport=4000), src="198.51.100.7")
    assert gw.wan(first).data == to_lan(first, "192.168.1.16")
    reply = from_lan("192.168.1.16", UDP(sport=4000, dport=1111), dst="198.51.100.7")
    assert gw.lan(reply).data == to_wan(reply)  # from port 4000, as the remote expects
    second = from_wan(UDP(sport=2222, dport=4000), src="198.51.100.8")
    result = gw.wan(second)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(second, "192.168.1.16"))
    assert counters(gw)["new_dmz_bindings"] == 1


def test_the_dmz_never_takes_the_gateways_own_ports(make) -> None:
    gw = make({"dmz_host": "192.168.1.16"}, webui={"listen": "192.168.1.1:8443"})
    own = [
        UDP(sport=9, dport=53),
        TCP(sport=9, dport=53, flags="S"),
        UDP(sport=67, dport=68),
        TCP(sport=9, dport=8443, flags="S"),
        UDP(sport=9, dport=40000),  # the kernel's ephemeral range
    ]
    assert [gw.wan(from_wan(l4)).verdict for l4 in own] == ["XDP_PASS"] * 5
    assert counters(gw)["new_dmz_bindings"] == 0


# -- 4. the gateway's own ports --------------------------------------------------------


@pytest.mark.parametrize(
    ("l4", "own"),
    [
        (UDP(sport=53, dport=53), 53),
        (TCP(sport=53, dport=53, flags="S"), 53),
        (UDP(sport=68, dport=67), 68),
        (TCP(sport=8443, dport=443, flags="S"), 8443),
    ],
)
def test_source_ports_the_gateway_uses_are_not_kept(make, l4, own: int) -> None:
    gw = make({}, webui={"listen": "192.168.1.1:8443"})
    out = from_lan("192.168.1.11", l4)
    port = sport_of(gw.lan(out).data)
    assert port != own
    assert 512 <= port <= 1023 if own < 1024 else 10000 <= port <= 32767


# -- 5. inbound ICMP errors ------------------------------------------------------------


def test_icmp_errors_must_quote_a_live_session_of_ours(make) -> None:
    gw = make({})
    left = gw.lan(from_lan("192.168.1.11", UDP(sport=5003, dport=33434))).data
    quoted = Ether(left)
    # quoting a packet we did not send: another source address
    forged = quoted.copy()
    forged[IP].src = "203.0.113.77"
    del forged[IP].chksum
    assert gw.wan(from_wan(icmp_error_about(bytes(forged), 3, 3))).verdict == "XDP_DROP"
    assert counters(gw)["icmp_errors_bad"] == 1
    # quoting our port but towards a remote it never talked to
    other = quoted.copy()
    other[IP].dst = "198.51.100.99"
    del other[IP].chksum
    assert gw.wan(from_wan(icmp_error_about(bytes(other), 3, 3))).verdict == "XDP_DROP"
    assert counters(gw)["icmp_errors_unmatched"] == 1
    # the real one still comes through
    assert gw.wan(from_wan(icmp_error_about(left, 3, 3))).verdict == "XDP_REDIRECT"


# -- 9. hairpinning --------------------------------------------------------------------


def test_hairpin_answers_from_our_mac_and_ignores_broadcast(make) -> None:
    gw = make(BASE["nat"])
    request = from_lan("192.168.1.11", TCP(sport=5555, dport=8080, flags="S"), dst=WAN)
    broadcast = bytes(Ether(src=HOSTS["192.168.1.11"], dst="ff:ff:ff:ff:ff:ff")) + request[14:]
    assert gw.lan(broadcast).verdict != "XDP_REDIRECT"
    multicast = bytes(Ether(src=HOSTS["192.168.1.11"], dst="01:00:5e:00:00:01")) + request[14:]
    assert gw.lan(multicast).verdict != "XDP_REDIRECT"
    assert counters(gw)["hairpinned"] == 0
    result = gw.lan(request)
    assert Ether(result.data).src == LAN_MAC
    assert result.data == expect(
        request, LAN_MAC, HOSTS["192.168.1.12"], src=WAN, dst="192.168.1.12", dport=80
    )


def test_hairpin_is_for_tcp_and_udp_only(make) -> None:
    gw = make({})
    gw.lan(from_lan("192.168.1.11", ICMP(type=8, id=0x4321), dst="198.51.100.80"))
    ping_wan = from_lan("192.168.1.14", ICMP(type=8, id=0x4321), dst=WAN)
    assert gw.lan(ping_wan).verdict == "XDP_PASS"  # the gateway answers its own ping
    assert counters(gw)["hairpinned"] == 0


# -- 10. nothing untranslated out of the WAN --------------------------------------------


def test_icmp_queries_with_an_id_are_translated_the_rest_dropped(make) -> None:
    gw = make({})
    stamp = from_lan("192.168.1.11", ICMP(type=13, id=0x0777, seq=1) / bytes(12))
    assert gw.lan(stamp).data == to_wan(stamp)
    reply = from_wan(ICMP(type=14, id=0x0777, seq=1) / bytes(12))
    assert gw.wan(reply).data == to_lan(reply, "192.168.1.11")
    for l4 in (ICMP(type=0, id=9), ICMP(type=5, code=1), ICMP(type=9)):
        assert gw.lan(from_lan("192.168.1.11", l4)).verdict == "XDP_DROP"
    assert counters(gw)["icmp_out_dropped"] == 3


def test_truncated_headers_are_dropped_not_sent_out(make) -> None:
    gw = make({})
    for proto in (6, 17, 1):
        frame = from_lan("192.168.1.11", b"\x13\x88", proto=proto)
        assert gw.lan(frame).verdict == "XDP_DROP"
    assert counters(gw)["truncated_dropped"] == 3
    assert counters(gw)["other_protocol"] == 0


# -- 11. the DNAT record in the cursor --------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    flags: int
    orig_daddr: ipaddress.IPv4Address
    orig_dport: int  # host order


def cursor_after(gw: Gateway, run, frame: bytes) -> tuple:
    """The chain cursor as the packet left it: run on CPU 0, read CPU 0's
    (struct homegw_cursor: flags at 28, orig_daddr at 44, orig_dport at 48)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        result = run(frame)
    finally:
        os.sched_setaffinity(0, saved)
    dump = subprocess.run(
        [
            "bpftool",
            "-j",
            "map",
            "lookup",
            "pinned",
            f"{gw.pin_dir}/cursor_xdp",
            "key",
            "0",
            "0",
            "0",
            "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (cpu0,) = [v for v in json.loads(dump.stdout)["values"] if v["cpu"] == 0]
    raw = bytes(int(b, 16) for b in cpu0["value"])
    cursor = Cursor(
        int.from_bytes(raw[28:32], "little"),
        ipaddress.IPv4Address(raw[44:48]),
        int.from_bytes(raw[48:50], "big"),
    )
    return result, cursor


def test_inbound_translation_records_the_original_destination(make) -> None:
    gw = make(BASE["nat"])
    syn = from_wan(TCP(sport=41000, dport=8080, flags="S"), src="198.51.100.7")
    result, cursor = cursor_after(gw, gw.wan, syn)
    assert result.verdict == "XDP_REDIRECT"
    dnat = 2  # HOMEGW_F_DNAT
    assert (cursor.flags & dnat, cursor.orig_daddr, cursor.orig_dport) == (dnat, IP4(WAN), 8080)
    _, cursor = cursor_after(gw, gw.lan, from_lan("192.168.1.11", UDP(sport=5000, dport=53)))
    assert not cursor.flags & dnat


def test_established_flows_take_the_same_path(make) -> None:
    """An established flow's packet is handled by nat_xdp itself: the mapping
    and the session are found, nothing else is created or counted (the
    fast path, which would take them from the second packet on, is off)."""
    gw = make({})
    gw.dp.set_fastpath(False)
    out = from_lan("192.168.1.11", UDP(sport=5010, dport=53))
    gw.lan(out)
    before = counters(gw)
    for _ in range(5):
        assert gw.lan(out).data == to_wan(out)
    after = counters(gw)
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "translated_out": 5
    }
