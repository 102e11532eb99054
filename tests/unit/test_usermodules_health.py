"""The health probes' wire helpers and the checks that do not apply (no
sockets: the live probes are in tests/integration/test_usermodules_health.py)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from homegw.modules.dhcp import packet as dhcp
from homegw.modules.dhcp.l2 import internet_checksum, ipv4_udp
from homegw.usermodules import health
from homegw.usermodules.health import PROBE_MAC, HealthTargets

GATEWAY = IPv4Address("203.0.113.1")
TARGETS = HealthTargets(
    wan_ifname="wan0",
    wan_gateway=GATEWAY,
    lan_ifname="lan0",
    lan_address=IPv4Interface("192.168.1.1/24"),
    dhcp_on=True,
    admin=IPv4Address("192.168.1.10"),
    lan_xdp_root_fd=7,
    lan_ifindex=2,
)


def ip_packet(source: str, proto: int, body: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0, b"", b"")
    return header[:12] + IPv4Address(source).packed + bytes(4) + body


def echo_reply(identifier: int, sequence: int, kind: int = 0) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + health.ECHO_PAYLOAD


def test_echo_request_has_a_valid_checksum() -> None:
    request = health.echo_request(0x1234, 7)
    assert request[0] == 8 and struct.unpack_from("!HH", request, 4) == (0x1234, 7)
    assert internet_checksum(request) == b"\0\0"  # a packet with its checksum sums to zero


def test_echo_reply_matched_by_source_type_and_ids() -> None:
    good = ip_packet("203.0.113.1", 1, echo_reply(0x1234, 7))
    assert health.echo_reply_of(good, GATEWAY) == (0x1234, 7)
    assert health.echo_reply_of(good, IPv4Address("203.0.113.9")) is None
    assert health.echo_reply_of(ip_packet("203.0.113.1", 1, echo_reply(1, 7, 8)), GATEWAY) is None
    assert health.echo_reply_of(ip_packet("203.0.113.1", 17, echo_reply(1, 7)), GATEWAY) is None


@pytest.mark.parametrize("cut", [0, 1, 19, 20, 27])
def test_a_truncated_echo_reply_is_no_match(cut: int) -> None:
    packet = ip_packet("203.0.113.1", 1, echo_reply(0x1234, 7))[:cut]
    assert health.echo_reply_of(packet, GATEWAY) is None


def test_the_discover_frame_is_a_broadcast_discover_from_the_probe_mac() -> None:
    frame = health.discover_frame(0xABCD0001)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == PROBE_MAC and frame[12:14] == b"\x08\x00"
    ip = frame[14:]
    assert ip[12:16] == bytes(4) and ip[16:20] == b"\xff" * 4
    assert struct.unpack_from("!HH", ip, 20) == (68, 67)
    msg = dhcp.parse(ip[28:])
    assert (msg.msg_type, msg.xid, msg.chaddr) == (dhcp.DISCOVER, 0xABCD0001, PROBE_MAC)
    assert PROBE_MAC[0] & 0x02 and not PROBE_MAC[0] & 0x01  # locally administered unicast


def offer(xid: int = 42, chaddr: bytes = PROBE_MAC, kind: int = dhcp.OFFER, ports=(67, 68)):
    msg = dhcp.DhcpMessage(dhcp.BOOTREPLY, xid, chaddr, {dhcp.OPT_MESSAGE_TYPE: bytes((kind,))})
    return ipv4_udp(0xC0A80101, 0xC0A80164, *ports, dhcp.encode(msg))


def test_offer_matched_by_ports_type_xid_and_mac() -> None:
    assert health.offer_for(offer(), 42)
    assert not health.offer_for(offer(), 43)
    assert not health.offer_for(offer(chaddr=bytes(6)), 42)
    assert not health.offer_for(offer(kind=dhcp.ACK), 42)
    assert not health.offer_for(offer(ports=(68, 67)), 42)


@pytest.mark.parametrize("cut", [0, 10, 27, 28, 100, 240])
def test_a_truncated_offer_is_no_match(cut: int) -> None:
    assert not health.offer_for(offer()[:cut], 42)


def test_an_offer_without_a_message_type_is_no_match() -> None:
    msg = dhcp.DhcpMessage(dhcp.BOOTREPLY, 42, PROBE_MAC, {})
    assert not health.offer_for(ipv4_udp(1, 2, 67, 68, dhcp.encode(msg)), 42)


def test_every_jump_of_the_offer_filter_lands_inside_it_and_it_ends_in_returns() -> None:
    program = health._offer_filter()
    count = len(program) // 8
    assert len(program) == count * 8
    for index in range(count):
        code, jt, jf, _k = struct.unpack_from("HBBI", program, index * 8)
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < count
    assert [struct.unpack_from("HBBI", program, i * 8)[0] for i in (count - 2, count - 1)] == [6, 6]


def by_name(results) -> dict[str, health.CheckResult]:
    return {r.name: r for r in results}


def test_checks_that_do_not_apply() -> None:
    assert health._not_applicable(TARGETS) == []
    nothing = HealthTargets(
        "wan0", None, "lan0", TARGETS.lan_address, False, None, -1, TARGETS.lan_ifindex
    )
    skipped = by_name(health._not_applicable(nothing))
    assert {n: r.ok for n, r in skipped.items()} == {"wan": None, "dhcp": None, "admin": None}
    assert "DHCP server is off" in skipped["dhcp"].detail


@pytest.mark.parametrize(
    "admin, why",
    [
        ("10.0.0.5", "not on the LAN"),
        ("192.168.1.1", "not on the LAN"),  # the gateway itself
        ("192.168.1.255", "not on the LAN"),
        ("192.168.1.0", "not on the LAN"),
    ],
)
def test_an_admin_off_the_lan_is_not_checked(admin: str, why: str) -> None:
    targets = HealthTargets(**{**TARGETS.__dict__, "admin": IPv4Address(admin)})
    assert by_name(health._not_applicable(targets))["admin"].detail.endswith(why)


def test_no_lan_xdp_root_skips_dhcp() -> None:
    targets = HealthTargets(**{**TARGETS.__dict__, "lan_xdp_root_fd": -1})
    assert by_name(health._not_applicable(targets))["dhcp"].ok is None


@pytest.mark.parametrize(
    "remote, want",
    [
        ("192.168.1.10", "192.168.1.10"),
        ("::ffff:192.168.1.10", "192.168.1.10"),
        ("fd00::1", None),
        ("", None),
        (None, None),
        ("not an address", None),
    ],
)
def test_admin_address(remote: str | None, want: str | None) -> None:
    got = health.admin_address(remote)
    assert (str(got) if got else None) == want
