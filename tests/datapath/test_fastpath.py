"""The flow fast path (include/homegw_fastpath.h) through BPF_PROG_TEST_RUN:
router + NAT in both chains, the roots forwarding known flows. The rule it
must keep: a packet the fast path forwards leaves byte for byte as the chain
would have sent it; anything the chain must see goes through the chain."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import Nic
from tests.datapath.test_nat import (
    BASE,
    HOSTS,
    ISP_MAC,
    LAN_MAC,
    REMOTE,
    WAN_MAC,
    Gateway,
    from_lan,
    from_wan,
    to_lan,
    to_wan,
)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    gateway = Gateway(BASE)
    yield gateway
    gateway.close()


def fast(gw: Gateway) -> dict[str, int]:
    return {name: packets for name, (packets, _) in gw.dp.fastpath.counters().items()}


def translated(gw: Gateway) -> tuple[int, int]:
    counts = gw.nat.counters()
    return counts["translated_out"], counts["translated_in"]


def run_fast(gw: Gateway, nic: Nic, frame: bytes):
    """Run a frame the fast path must forward; its result."""
    before, chain = fast(gw), translated(gw)
    result = gw.lan(frame) if nic is Nic.LAN else gw.wan(frame)
    key = "lan_to_wan" if nic is Nic.LAN else "wan_to_lan"
    assert fast(gw)[key] == before[key] + 1, "not forwarded by the fast path"
    assert translated(gw) == chain, "NAT saw a packet the fast path forwarded"
    return result


def run_chain(gw: Gateway, nic: Nic, frame: bytes):
    """Run a frame that must go through the chain; its result."""
    before = fast(gw)
    result = gw.lan(frame) if nic is Nic.LAN else gw.wan(frame)
    after = fast(gw)
    assert (after["lan_to_wan"], after["wan_to_lan"]) == (
        before["lan_to_wan"],
        before["wan_to_lan"],
    ), "the fast path forwarded a packet the chain must see"
    return result


def test_udp_flow_learnt_then_forwarded_as_the_chain_does(gw: Gateway) -> None:
    first = from_lan("192.168.1.11", UDP(sport=5100, dport=443) / b"first")
    learnt = fast(gw)["learnt"]
    assert run_chain(gw, Nic.LAN, first).data == to_wan(first)
    assert fast(gw)["learnt"] == learnt  # it opened the session: NAT vetoes it
    second = from_lan("192.168.1.11", UDP(sport=5100, dport=443) / b"second")
    assert run_chain(gw, Nic.LAN, second).data == to_wan(second)
    assert fast(gw)["learnt"] == learnt + 1
    later = from_lan("192.168.1.11", UDP(sport=5100, dport=443) / b"later, longer", ttl=17)
    result = run_fast(gw, Nic.LAN, later)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_wan(later))
    reply = from_wan(UDP(sport=443, dport=5100) / b"reply")  # the session exists: learnt
    assert run_chain(gw, Nic.WAN, reply).data == to_lan(reply, "192.168.1.11")
    again = from_wan(UDP(sport=443, dport=5100) / b"second reply", ttl=3)
    result = run_fast(gw, Nic.WAN, again)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", to_lan(again, "192.168.1.11"))


def random_frame(rng: random.Random, make, proto: str) -> bytes:
    payload = rng.randbytes(rng.randrange(0, 1400))
    ip = {"ttl": rng.randrange(2, 256), "tos": rng.randrange(256), "flags": rng.choice([0, 2])}
    if proto == "tcp":
        l4 = TCP(sport=0, dport=0, flags=rng.choice(["A", "PA", "AU"]), seq=rng.getrandbits(32))
    else:
        l4 = UDP()
    frame = Ether(make(l4 / payload, **ip))
    if proto == "udp" and rng.random() < 0.2:
        frame[UDP].chksum = 0  # no checksum: it must stay 0
        frame = Ether(bytes(frame))
    return bytes(frame)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_fast_path_bytes_equal_the_chains_for_random_packets(gw: Gateway, proto: str) -> None:
    """Each packet runs through the chain (the epoch moved on) and then
    through the fast path: both outputs must be the same bytes."""
    host, port = ("192.168.1.16", 5200) if proto == "tcp" else ("192.168.1.17", 5201)
    kind = TCP if proto == "tcp" else UDP
    opening_flags = {"flags": "S"} if proto == "tcp" else {}
    opening = from_lan(host, kind(sport=port, dport=443, **opening_flags))
    gw.lan(opening)

    def up(l4, **ip):
        l4[kind].sport, l4[kind].dport = port, 443
        return from_lan(host, l4, **ip)

    def down(l4, **ip):
        l4[kind].sport, l4[kind].dport = 443, port
        return from_wan(l4, **ip)

    rng = random.Random(20261203)
    for number in range(120):
        nic, make = (Nic.LAN, up) if number % 2 else (Nic.WAN, down)
        frame = random_frame(rng, make, proto)
        gw.dp.invalidate_fastpath("test: through the chain first")
        chain = run_chain(gw, nic, frame)
        assert chain.verdict == "XDP_REDIRECT"
        result = run_fast(gw, nic, frame)
        assert (result.verdict, result.data) == (chain.verdict, chain.data), number


def test_syn_fin_and_rst_go_through_the_chain(gw: Gateway) -> None:
    host, port = "192.168.1.18", 5300
    syn = from_lan(host, TCP(sport=port, dport=443, flags="S"))
    run_chain(gw, Nic.LAN, syn)
    ack = from_lan(host, TCP(sport=port, dport=443, flags="A"))
    run_chain(gw, Nic.LAN, ack)
    run_fast(gw, Nic.LAN, ack)
    for flags in ("S", "FA", "R", "RA"):
        frame = from_lan(host, TCP(sport=port, dport=443, flags=flags))
        out = translated(gw)[0]
        assert run_chain(gw, Nic.LAN, frame).data == to_wan(frame)
        assert translated(gw)[0] == out + 1  # NAT saw it: its TCP state bits


def learnt_flow(gw: Gateway, host: str, port: int) -> None:
    for _ in range(2):  # the first opens the session, the second teaches the fast path
        run_chain(gw, Nic.LAN, from_lan(host, UDP(sport=port, dport=443)))
    run_fast(gw, Nic.LAN, from_lan(host, UDP(sport=port, dport=443)))


def test_ttl_1_gets_the_routers_time_exceeded(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5400)
    result = run_chain(gw, Nic.LAN, from_lan("192.168.1.19", UDP(sport=5400, dport=443), ttl=1))
    reply = Ether(result.data)
    assert (reply[ICMP].type, reply[ICMP].code) == (11, 0)
    assert reply[IP].dst == "192.168.1.19"


def test_over_the_mtu_goes_to_the_chain(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5401)
    big = from_lan("192.168.1.19", UDP(sport=5401, dport=443) / bytes(1473), flags="DF")
    reply = Ether(run_chain(gw, Nic.LAN, big).data)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].nexthopmtu) == (3, 4, 1500)


def test_a_bad_ip_checksum_is_the_routers_to_drop(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5402)
    frame = bytearray(from_lan("192.168.1.19", UDP(sport=5402, dport=443)))
    frame[14 + 10] ^= 0x01
    dropped = gw.router.maps.counters()["bad_checksum"]
    assert run_chain(gw, Nic.LAN, bytes(frame)).verdict == "XDP_DROP"
    assert gw.router.maps.counters()["bad_checksum"] == dropped + 1


def test_a_truncated_packet_of_a_learnt_flow_is_the_chains(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5407)
    whole = from_lan("192.168.1.19", UDP(sport=5407, dport=443) / bytes(200))
    cut = whole[: 14 + 20 + 4]  # the IPv4 total length says 228 bytes; 4 of UDP came
    assert run_chain(gw, Nic.LAN, cut).verdict == "XDP_DROP"  # the router's bad length


def test_the_same_flow_from_another_mac_goes_to_the_chain(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5403)
    spoofed = Ether(from_lan("192.168.1.19", UDP(sport=5403, dport=443)))
    spoofed.src = "02:66:66:66:66:66"
    run_chain(gw, Nic.LAN, bytes(spoofed))


def test_a_new_epoch_sends_every_flow_through_the_chain_again(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5404)
    frame = from_lan("192.168.1.19", UDP(sport=5404, dport=443))
    gw.dp.set_order(Nic.LAN, ["router", "nat"])  # a chain installed: a new epoch
    stale = fast(gw)["stale"]
    run_chain(gw, Nic.LAN, frame)
    assert fast(gw)["stale"] == stale + 1
    run_fast(gw, Nic.LAN, frame)  # learnt again


def test_an_entry_retires_after_its_lifetime(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5405)
    frame = from_lan("192.168.1.19", UDP(sport=5405, dport=443))
    stale = fast(gw)["stale"]
    # each run below is a real packet of the flow: fast until the entry is a
    # second old, then the chain's (bounded: 3 s of the coarse clock)
    for _ in range(300_000):
        gw.lan(frame)
        if fast(gw)["stale"] > stale:
            break
    assert fast(gw)["stale"] == stale + 1
    run_fast(gw, Nic.LAN, frame)


def test_a_spoofed_flood_to_a_port_forward_teaches_nothing(gw: Gateway) -> None:
    learnt = fast(gw)["learnt"]
    for number in range(50):
        remote = f"198.51.100.{100 + number}"
        frame = from_wan(UDP(sport=20000 + number, dport=7000), src=remote)
        assert run_chain(gw, Nic.WAN, frame).verdict == "XDP_REDIRECT"
    assert fast(gw)["learnt"] == learnt  # each opened a session: not learnt


def test_icmp_and_fragments_never_take_the_fast_path(gw: Gateway) -> None:
    learnt_flow(gw, "192.168.1.19", 5406)
    ping = from_lan("192.168.1.19", ICMP(type=8, id=77))
    run_chain(gw, Nic.LAN, ping)
    run_chain(gw, Nic.LAN, ping)
    first = from_lan("192.168.1.19", UDP(sport=5406, dport=443) / bytes(64), flags="MF")
    run_chain(gw, Nic.LAN, first)
    run_chain(gw, Nic.LAN, first)


def test_a_paused_device_is_the_routers_to_drop(gw: Gateway) -> None:
    host, mac = "192.168.1.13", HOSTS["192.168.1.13"]
    learnt_flow(gw, host, 5500)
    policy = gw.router.maps.policy
    policy.set_paused({mac})
    try:
        paused = gw.router.maps.counters()["device_paused"]
        dropped = gw.router.stats()["devices"][mac].dropped
        result = run_chain(gw, Nic.LAN, from_lan(host, UDP(sport=5500, dport=443)))
        assert result.verdict == "XDP_DROP"
        assert gw.router.maps.counters()["device_paused"] == paused + 1
        assert gw.router.stats()["devices"][mac].dropped == dropped + 1  # once
    finally:
        policy.set_paused(set())
    run_fast(gw, Nic.LAN, from_lan(host, UDP(sport=5500, dport=443)))


def test_the_fast_path_counts_the_device_and_the_nic(gw: Gateway) -> None:
    host, mac = "192.168.1.14", HOSTS["192.168.1.14"]
    learnt_flow(gw, host, 5600)
    before, wan_before = gw.router.stats()["devices"][mac], gw.router.stats()["nics"]["wan"]
    frame = from_lan(host, UDP(sport=5600, dport=443) / bytes(100))
    run_fast(gw, Nic.LAN, frame)
    after, wan_after = gw.router.stats()["devices"][mac], gw.router.stats()["nics"]["wan"]
    assert after.from_packets == before.from_packets + 1
    assert after.from_bytes == before.from_bytes + len(frame)
    # forwarded out of the WAN, as the router counts it
    assert wan_after == (wan_before[0] + 1, wan_before[1] + len(frame))


def test_the_macs_and_addresses_on_the_wire(gw: Gateway) -> None:
    """One plain case spelled out, so the shared expectation helpers are
    checked against fields, not only against the chain."""
    learnt_flow(gw, "192.168.1.15", 5700)
    out = Ether(run_fast(gw, Nic.LAN, from_lan("192.168.1.15", UDP(sport=5700, dport=443))).data)
    assert (out.src, out.dst) == (WAN_MAC, ISP_MAC)
    assert (out[IP].src, out[IP].dst) == ("203.0.113.2", REMOTE)
    assert LAN_MAC not in (out.src, out.dst)
