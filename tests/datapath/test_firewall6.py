"""IPv6 firewall (RFC 6092 simple security, RFC 4890 ICMPv6) through
BPF_PROG_TEST_RUN: each rule of firewall.bpf.c's IPv6 outcomes, both ways,
with the verdict, the untouched frame and the one counter that moved.
Tests sharing the module's gateway use distinct ports so their sessions
do not meet."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    ICMPv6Unknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.packet import Raw

from homegw.config import parse_config
from homegw.modules.firewall.module import FirewallModule
from homegw.modules.firewall.sessions6 import NS, Session6
from homegw.netfacts import Ipv6Facts
from tests.datapath.firewall6_kit import (
    GW_LAN,
    GW_LAN_LL,
    GW_ULA,
    GW_WAN,
    GW_WAN_LL,
    HOST,
    HOST_LL,
    HOST_ULA,
    ISP_LL,
    OTHER_HOST,
    PINHOLES,
    REMOTE,
    REMOTE2,
    Firewall6,
    facts,
    firewall_with_pinholes,
    from_lan,
    from_wan,
    only_session,
)
from tests.datapath.test_nat import BASE

fw = pytest.fixture(scope="module", name="fw")(firewall_with_pinholes)


@pytest.fixture
def make_fw() -> Iterator:
    made: list[Firewall6] = []

    def make(firewall: dict | None = None, module_class=FirewallModule) -> Firewall6:
        made.append(Firewall6(firewall, module_class))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


def icmp6(kind: int, code: int = 0) -> ICMPv6Unknown:
    """An ICMPv6 message of any type."""
    return ICMPv6Unknown(type=kind, code=code, msgbody=bytes(12))


# --- inbound connections: RFC 6092 -----------------------------------------------


@pytest.mark.parametrize(
    "l4",
    [TCP(sport=40000, dport=22, flags="S"), UDP(sport=40000, dport=53) / b"x"],
    ids=["tcp-syn", "udp"],
)
@pytest.mark.parametrize("dst", [HOST, HOST_ULA])
def test_unsolicited_syn_and_udp_to_a_lan_host_dropped(fw: Firewall6, l4, dst: str) -> None:
    assert fw.dropped(fw.wan, from_wan(l4, dst=dst)) == "v6_unsolicited"


@pytest.mark.parametrize(
    ("out", "back", "stranger"),
    [
        (
            TCP(sport=50001, dport=443, flags="S"),
            TCP(sport=443, dport=50001, flags="SA"),
            TCP(sport=444, dport=50001, flags="SA"),
        ),
        (
            UDP(sport=50002, dport=53) / b"q",
            UDP(sport=53, dport=50002) / b"a",
            UDP(sport=53, dport=50003) / b"a",
        ),
        (
            ICMPv6EchoRequest(id=0x501, seq=1),
            ICMPv6EchoReply(id=0x501, seq=1),
            ICMPv6EchoReply(id=0x502),
        ),
    ],
    ids=["tcp", "udp", "echo"],
)
def test_reply_to_a_lan_opened_flow_passes(fw: Firewall6, out, back, stranger) -> None:
    before = fw.counters()["v6_sessions_created"]
    assert fw.passed(fw.lan, from_lan(out)) == "v6_lan_outbound"
    assert fw.counters()["v6_sessions_created"] == before + 1
    assert fw.passed(fw.wan, from_wan(back)) == "v6_wan_reply"
    # another port (identifier), another remote, another LAN host: nothing opened
    assert fw.dropped(fw.wan, from_wan(stranger)) == "v6_unsolicited"
    assert fw.dropped(fw.wan, from_wan(back, src=REMOTE2)) == "v6_unsolicited"
    assert fw.dropped(fw.wan, from_wan(back, dst=OTHER_HOST)) == "v6_unsolicited"
    # the same flow again refreshes its session, makes none
    assert fw.passed(fw.lan, from_lan(out)) == "v6_lan_outbound"
    assert fw.counters()["v6_sessions_created"] == before + 1


def test_other_protocols_by_addresses_and_protocol(fw: Firewall6) -> None:
    esp = IPv6ExtHdrDestOpt(nh=50) / Raw(bytes(range(24)))  # ESP behind a header
    assert fw.dropped(fw.wan, from_wan(Raw(bytes(24)), nh=50, dst=OTHER_HOST)) == "v6_unsolicited"
    assert fw.passed(fw.lan, from_lan(esp, src=OTHER_HOST)) == "v6_lan_outbound"
    assert fw.passed(fw.wan, from_wan(Raw(bytes(24)), nh=50, dst=OTHER_HOST)) == "v6_wan_reply"
    assert fw.dropped(fw.wan, from_wan(Raw(bytes(24)), nh=50, src=REMOTE2, dst=OTHER_HOST)) == (
        "v6_unsolicited"
    )


def test_any_outbound_tcp_segment_opens_the_session(fw: Firewall6) -> None:
    """Our call: not only a SYN (flows outlive a restart of the appliance)."""
    assert fw.passed(fw.lan, from_lan(TCP(sport=50010, dport=80, flags="A"))) == "v6_lan_outbound"
    back = from_wan(TCP(sport=80, dport=50010, flags="A"))
    assert fw.passed(fw.wan, back) == "v6_wan_reply"


# --- ICMPv6 errors ----------------------------------------------------------------


def quoting(packet) -> bytes:
    """The bytes of a packet the LAN host sent, as an ICMPv6 error quotes it."""
    return bytes(IPv6(src=HOST, dst=REMOTE) / packet)


@pytest.mark.parametrize(
    "error",
    [ICMPv6PacketTooBig(mtu=1280), ICMPv6DestUnreach(code=4), ICMPv6TimeExceeded()],
    ids=["packet-too-big", "port-unreachable", "time-exceeded"],
)
def test_icmp_error_quoting_a_live_flow_passes(fw: Firewall6, error) -> None:
    flow = UDP(sport=50020, dport=4500) / (b"p" * 40)
    assert fw.passed(fw.lan, from_lan(flow)) == "v6_lan_outbound"
    router = "2001:db8:ffff:7::1"  # an ISP router on the path, not the remote
    about_flow = error / Raw(quoting(flow))
    assert fw.passed(fw.wan, from_wan(about_flow, src=router)) == "v6_wan_icmp_error"
    about_nothing = error / Raw(quoting(UDP(sport=50021, dport=4500) / b"q"))
    assert fw.dropped(fw.wan, from_wan(about_nothing, src=router)) == "v6_icmp_error_unmatched"


def test_icmp_error_about_a_live_echo_and_tcp_flow_passes(fw: Firewall6) -> None:
    echo, syn = ICMPv6EchoRequest(id=0x777, seq=3), TCP(sport=50022, dport=443, flags="S")
    fw.passed(fw.lan, from_lan(echo))
    fw.passed(fw.lan, from_lan(syn))
    for quoted in (echo, syn):
        error = from_wan(ICMPv6PacketTooBig(mtu=1400) / Raw(quoting(quoted)))
        assert fw.passed(fw.wan, error) == "v6_wan_icmp_error"


def test_icmp_error_quoting_another_hosts_packet_dropped(fw: Firewall6) -> None:
    flow = UDP(sport=50023, dport=4500) / b"x"
    fw.passed(fw.lan, from_lan(flow))
    # the error goes to another LAN host than the one the quote is from
    error = from_wan(ICMPv6PacketTooBig(mtu=1280) / Raw(quoting(flow)), dst=OTHER_HOST)
    assert fw.dropped(fw.wan, error) == "v6_icmp_error_unmatched"
    # a quote cut before its ports, or of a later fragment, matches nothing
    cut = from_wan(ICMPv6PacketTooBig(mtu=1280) / Raw(quoting(flow)[:42]))
    assert fw.dropped(fw.wan, cut) == "v6_icmp_error_unmatched"
    later = IPv6ExtHdrFragment(nh=17, offset=10, id=5) / Raw(bytes(8))
    error = from_wan(ICMPv6PacketTooBig(mtu=1280) / Raw(quoting(later)))
    assert fw.dropped(fw.wan, error) == "v6_icmp_error_unmatched"


# --- echo requests to LAN hosts ----------------------------------------------------


def test_echo_request_to_a_lan_host_passes_by_default(fw: Firewall6) -> None:
    assert fw.passed(fw.wan, from_wan(ICMPv6EchoRequest(id=9))) == "v6_wan_ping"
    # the LAN host's reply is no session of its own: it goes out
    assert fw.passed(fw.lan, from_lan(ICMPv6EchoReply(id=9))) == "v6_lan_outbound"


def test_echo_request_to_lan_hosts_off(make_fw) -> None:
    quiet = make_fw({"ipv6_ping_lan": False})
    assert quiet.dropped(quiet.wan, from_wan(ICMPv6EchoRequest(id=9))) == "v6_ping_lan_dropped"
    # the gateway's own WAN address: the kernel decides (firewall.wan_ping there)
    assert quiet.passed(quiet.wan, from_wan(ICMPv6EchoRequest(), dst=GW_WAN)) == "v6_wan_passed"


def test_echo_requests_to_lan_hosts_are_rate_limited_per_cpu(make_fw) -> None:
    limited = make_fw()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # one CPU's budget
    try:
        verdicts = [
            limited.wan(from_wan(ICMPv6EchoRequest(id=1, seq=i))).verdict for i in range(80)
        ]
    finally:
        os.sched_setaffinity(0, cpus)
    passed = verdicts.count("XDP_PASS")
    assert 50 <= passed < 80  # the burst, and a few refilled at 100/s
    counters = limited.counters()
    assert (counters["v6_wan_ping"], counters["v6_ping_rate_limited"]) == (passed, 80 - passed)


# --- pinholes -----------------------------------------------------------------------


def test_pinhole_by_interface_id_in_every_lan_prefix(fw: Firewall6) -> None:
    syn = TCP(sport=40100, dport=8080, flags="S")
    assert fw.passed(fw.wan, from_wan(syn, dst=HOST)) == "v6_wan_pinhole"
    assert fw.passed(fw.wan, from_wan(syn, dst=HOST_ULA)) == "v6_wan_pinhole"
    # another host, another port, another protocol
    assert fw.dropped(fw.wan, from_wan(syn, dst=OTHER_HOST)) == "v6_unsolicited"
    other_port = TCP(sport=40100, dport=8081, flags="S")
    assert fw.dropped(fw.wan, from_wan(other_port)) == "v6_unsolicited"
    assert fw.dropped(fw.wan, from_wan(UDP(sport=40100, dport=8080))) == "v6_unsolicited"


def test_pinhole_of_a_full_address_and_a_port_range(fw: Firewall6) -> None:
    for port in (27000, 27005, 27010):
        datagram = UDP(sport=40200, dport=port) / b"join"
        assert fw.passed(fw.wan, from_wan(datagram, dst=OTHER_HOST)) == "v6_wan_pinhole"
    assert fw.dropped(fw.wan, from_wan(UDP(dport=27011), dst=OTHER_HOST)) == "v6_unsolicited"
    # the full address only: not the same interface id in the ULA prefix
    ula_twin = "fd00:1:2:1::55"
    assert fw.dropped(fw.wan, from_wan(UDP(dport=27000), dst=ula_twin)) == "v6_unsolicited"


def test_pinhole_by_interface_id_follows_renumbering(make_fw) -> None:
    renumbered = make_fw({"ipv6_pinholes": PINHOLES[:1]})
    new_host = "2001:db8:200:1::1234"
    syn = from_wan(TCP(sport=40300, dport=8080, flags="S"), dst=new_host)
    assert renumbered.dropped(renumbered.wan, syn) == "v6_wan_transit"  # not ours yet
    renumbered.firewall.on_ipv6(
        facts(
            delegated="2001:db8:200::/56", lan64="2001:db8:200:1::/64", gw_lan="2001:db8:200:1::1"
        )
    )
    assert renumbered.passed(renumbered.wan, syn) == "v6_wan_pinhole"
    old = from_wan(TCP(sport=40300, dport=8080, flags="S"), dst=HOST)
    assert renumbered.dropped(renumbered.wan, old) == "v6_wan_transit"


def test_pinholes_follow_config_apply(make_fw) -> None:
    gw = make_fw()
    syn = from_wan(TCP(sport=40400, dport=8080, flags="S"))
    assert gw.dropped(gw.wan, syn) == "v6_unsolicited"
    config = parse_config({**BASE, "firewall": {"ipv6_pinholes": PINHOLES}})
    assert gw.firewall.apply(config)
    assert gw.passed(gw.wan, syn) == "v6_wan_pinhole"
    assert gw.firewall.apply(parse_config(BASE))
    assert gw.dropped(gw.wan, syn) == "v6_unsolicited"


# --- what the WAN sends the gateway, transit, spoofing -------------------------------


GATEWAYS_OWN = {
    "router advert to all nodes": (ISP_LL, "ff02::1", ICMPv6ND_RA()),
    "neighbour solicitation of the WAN address": (
        ISP_LL,
        "ff02::1:ff00:1000",
        ICMPv6ND_NS(tgt=GW_WAN),
    ),
    "DHCPv6 reply to the link-local": (ISP_LL, GW_WAN_LL, UDP(sport=547, dport=546) / b"reply"),
    "TCP to the WAN address": (REMOTE, GW_WAN, TCP(sport=40500, dport=22, flags="S")),
    "echo to the WAN address": (REMOTE, GW_WAN, ICMPv6EchoRequest()),
    "UDP to the gateway's LAN address": (REMOTE, GW_LAN, UDP(sport=1, dport=53)),
}


@pytest.mark.parametrize("name", GATEWAYS_OWN)
def test_wan_to_the_gateway_goes_to_the_kernel(fw: Firewall6, name: str) -> None:
    """The kernel's nftables input chain guards the gateway (kernelpath.py)."""
    src, dst, l4 = GATEWAYS_OWN[name]
    assert fw.passed(fw.wan, from_wan(l4, src=src, dst=dst)) == "v6_wan_passed"


@pytest.mark.parametrize("dst", ["2001:db8:ffff:80::99", "2001:db8:300::1", "2001:db8:100:100::1"])
def test_wan_to_neither_ours_nor_inside_dropped(fw: Firewall6, dst: str) -> None:
    # the last one: outside the delegated /56
    assert fw.dropped(fw.wan, from_wan(UDP(dport=9), dst=dst)) == "v6_wan_transit"


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        ("2001:db8:100:1::77", "v6_wan_spoofed_lan_source"),
        ("2001:db8:100:ff::1", "v6_wan_spoofed_lan_source"),  # elsewhere in the /56
        ("fd00:1:2:9::1", "v6_wan_spoofed_lan_source"),  # the ULA /48
        (GW_WAN, "v6_wan_spoofed_own_address"),
        (GW_LAN, "v6_wan_spoofed_own_address"),
        ("::1", "v6_wan_martian_source"),
        ("::", "v6_wan_martian_source"),
        ("ff02::1", "v6_wan_martian_source"),
        ("::ffff:198.51.100.1", "v6_wan_martian_source"),
        ("::198.51.100.1", "v6_wan_martian_source"),
    ],
)
@pytest.mark.parametrize("dst", [HOST, GW_WAN])
def test_wan_spoofed_sources_dropped(fw: Firewall6, src: str, reason: str, dst: str) -> None:
    assert fw.dropped(fw.wan, from_wan(UDP(sport=53, dport=50002), src=src, dst=dst)) == reason


def test_wan_link_local_source_never_forwarded(fw: Firewall6) -> None:
    frame = from_wan(ICMPv6EchoRequest(), src=ISP_LL, dst=HOST)
    assert fw.dropped(fw.wan, frame) == "v6_wan_martian_source"


def test_wan_link_local_source_equal_to_one_of_the_gateways_is_the_links(fw: Firewall6) -> None:
    """The ISP router may use fe80::1 as the gateway does on the LAN: its
    adverts are not taken for spoofing (only the kernel may judge that)."""
    advert = from_wan(ICMPv6ND_RA(), src=GW_LAN_LL, dst="ff02::1")
    assert fw.passed(fw.wan, advert) == "v6_wan_passed"
    forwarded = from_wan(ICMPv6EchoRequest(), src=GW_WAN_LL, dst=HOST)
    assert fw.dropped(fw.wan, forwarded) == "v6_wan_martian_source"


def test_on_ipv6_before_any_prefix_keeps_everything_out(make_fw) -> None:
    bare = make_fw()
    bare.firewall.on_ipv6(Ipv6Facts())  # IPv6 off: nothing inside, nothing ours
    assert bare.dropped(bare.wan, from_wan(ICMPv6EchoRequest())) == "v6_wan_transit"
    assert bare.dropped(bare.lan, from_lan(UDP(dport=53))) == "v6_lan_spoofed_source"
    ra = from_wan(ICMPv6ND_RA(), src=ISP_LL, dst="ff02::1")
    assert bare.passed(bare.wan, ra) == "v6_wan_passed"


# --- the LAN side -------------------------------------------------------------------


@pytest.mark.parametrize(
    "src",
    ["2001:db8:ffff:80::5", "2001:db8:300::1", GW_LAN, GW_ULA, "::1", "::ffff:192.168.1.11"],
)
@pytest.mark.parametrize("dst", [REMOTE, GW_LAN])
def test_lan_spoofed_sources_dropped(fw: Firewall6, src: str, dst: str) -> None:
    frame = from_lan(UDP(sport=1, dport=2), src=src, dst=dst)
    assert fw.dropped(fw.lan, frame) == "v6_lan_spoofed_source"


LAN_FOR_THE_GATEWAY = {
    "link-local to the gateway's link-local": (HOST_LL, GW_LAN_LL, UDP(sport=546, dport=547)),
    "link-local DHCPv6 to all servers": (HOST_LL, "ff02::1:2", UDP(sport=546, dport=547)),
    "router solicitation": (HOST_LL, "ff02::2", icmp6(133)),
    "DAD from ::": ("::", "ff02::1:ff00:1234", ICMPv6ND_NS(tgt=HOST)),
    "MLD report from ::": ("::", "ff02::16", icmp6(143)),
    "DNS to the gateway": (HOST, GW_LAN, UDP(sport=5000, dport=53)),
    "to another LAN host": (HOST, HOST_ULA, TCP(sport=5000, dport=22, flags="S")),
    "to another LAN prefix": (HOST, "2001:db8:100:2::9", UDP(dport=9)),
}


@pytest.mark.parametrize("name", LAN_FOR_THE_GATEWAY)
def test_lan_traffic_that_stays_home_passes(fw: Firewall6, name: str) -> None:
    src, dst, l4 = LAN_FOR_THE_GATEWAY[name]
    before = fw.counters()["v6_sessions_created"]
    assert fw.passed(fw.lan, from_lan(l4, src=src, dst=dst)) == "v6_lan_passed"
    assert fw.counters()["v6_sessions_created"] == before


@pytest.mark.parametrize(
    ("src", "dst"), [(HOST_LL, REMOTE), (HOST_LL, HOST), ("::", REMOTE), ("::", GW_LAN)]
)
def test_lan_link_local_and_unspecified_sources_stay_on_the_link(
    fw: Firewall6, src: str, dst: str
) -> None:
    assert fw.dropped(fw.lan, from_lan(UDP(dport=9), src=src, dst=dst)) == "v6_lan_spoofed_source"


# --- RFC 4890 transit filtering -------------------------------------------------------

NEVER_FORWARDED = {
    "router renumbering": 138,
    "node information query": 139,
    "node information reply": 140,
    "experimental 100": 100,
    "experimental 201": 201,
    "unallocated error 5": 5,
    "unallocated error 99": 99,
    "extension 127": 127,
    "router advert": 134,
    "redirect": 137,
    "MLD query": 130,
    "unallocated informational 160": 160,
    "extension 255": 255,
}


@pytest.mark.parametrize("name", NEVER_FORWARDED)
def test_hostile_icmpv6_types_not_forwarded_either_way(fw: Firewall6, name: str) -> None:
    message = icmp6(NEVER_FORWARDED[name])
    assert fw.dropped(fw.wan, from_wan(message)) == "v6_icmp_filtered"
    assert fw.dropped(fw.lan, from_lan(message)) == "v6_icmp_filtered"


def test_forwardable_icmpv6_from_the_lan_goes_out(fw: Firewall6) -> None:
    for kind in (1, 2, 3, 4, 129, 144, 147):
        assert fw.passed(fw.lan, from_lan(icmp6(kind))) == "v6_lan_outbound"


def test_node_information_to_the_gateway_is_the_kernels(fw: Firewall6) -> None:
    assert fw.passed(fw.wan, from_wan(icmp6(139), dst=GW_WAN)) == "v6_wan_passed"


# --- the session table ----------------------------------------------------------------


def idle(session_of: Session6, seconds: int, tcp_seen: int = 0) -> Session6:
    return Session6(
        session_of.lan,
        session_of.remote,
        session_of.lan_port,
        session_of.remote_port,
        session_of.proto,
        time.monotonic_ns() - seconds * NS,
        tcp_seen,
    )


def test_a_new_syn_on_a_closed_flows_ports_starts_afresh(make_fw) -> None:
    gw = make_fw()
    gw.passed(gw.lan, from_lan(TCP(sport=50055, dport=443, flags="S")))
    gw.passed(gw.wan, from_wan(TCP(sport=443, dport=50055, flags="R")))
    assert only_session(gw, 50055).tcp_seen == 1 | 8  # replied, reset
    gw.passed(gw.lan, from_lan(TCP(sport=50055, dport=443, flags="S")))
    assert only_session(gw, 50055).tcp_seen == 0
    gw.passed(gw.wan, from_wan(TCP(sport=443, dport=50055, flags="SA")))
    gw.passed(gw.lan, from_lan(TCP(sport=50055, dport=443, flags="F")))
    assert only_session(gw, 50055).tcp_seen == 1 | 2  # replied, FIN out


def test_idle_sessions_expire_by_protocol_and_tcp_state(make_fw) -> None:
    gw = make_fw()
    maps = gw.firewall.maps6
    assert maps is not None
    gw.passed(gw.lan, from_lan(UDP(sport=50050, dport=53)))
    gw.passed(gw.lan, from_lan(TCP(sport=50051, dport=443, flags="S")))
    gw.passed(gw.wan, from_wan(TCP(sport=443, dport=50051, flags="SA")))
    udp, tcp = only_session(gw, 50050), only_session(gw, 50051)
    assert tcp.tcp_seen == 1  # the reply seen
    maps.put_session(idle(udp, 301))  # UDP: 5 min
    assert gw.dropped(gw.wan, from_wan(UDP(sport=53, dport=50050))) == "v6_unsolicited"
    maps.put_session(idle(tcp, 3600, tcp_seen=1))  # established: 2 h 4 min
    assert gw.passed(gw.wan, from_wan(TCP(sport=443, dport=50051, flags="A"))) == "v6_wan_reply"
    maps.put_session(idle(tcp, 300, tcp_seen=1 | 8))  # reset: transitory, 4 min
    assert gw.dropped(gw.wan, from_wan(TCP(sport=443, dport=50051, flags="A"))) == (
        "v6_unsolicited"
    )
    rows = gw.firewall.tables()["firewall6_sessions"]()
    assert [r["lan_port"] for r in rows] == []  # expired ones are not shown
    assert gw.firewall.gauges()["ipv6_sessions"] == 2
    assert gw.firewall.collect(time.monotonic_ns()) == 2
    assert gw.firewall.gauges()["ipv6_sessions"] == 0


def test_sessions_table_rows(make_fw) -> None:
    gw = make_fw()
    gw.passed(gw.lan, from_lan(TCP(sport=50060, dport=443, flags="S")))
    gw.passed(gw.wan, from_wan(TCP(sport=443, dport=50060, flags="SA")))
    rows = gw.firewall.tables()["firewall6_sessions"]()
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("protocol", "lan", "lan_port", "remote", "remote_port")} == {
        "protocol": "tcp",
        "lan": HOST,
        "lan_port": 50060,
        "remote": REMOTE,
        "remote_port": 443,
    }
    assert row["tcp_replied"] is True and 0 <= row["idle_s"] < 5
    assert gw.firewall.collect(time.monotonic_ns()) == 0


class SmallTable(FirewallModule):
    def defines(self) -> dict[str, int | str]:
        return {**super().defines(), "FW6_MAX_SESSIONS": 2}


def test_full_session_table_refuses_new_flows_not_live_ones(make_fw) -> None:
    gw = make_fw(module_class=SmallTable)
    gw.passed(gw.lan, from_lan(UDP(sport=50070, dport=53)))
    gw.passed(gw.lan, from_lan(UDP(sport=50071, dport=53)))
    assert gw.dropped(gw.lan, from_lan(UDP(sport=50072, dport=53))) == "v6_sessions_full"
    assert gw.passed(gw.lan, from_lan(UDP(sport=50071, dport=53))) == "v6_lan_outbound"
    assert gw.passed(gw.wan, from_wan(UDP(sport=53, dport=50070))) == "v6_wan_reply"
