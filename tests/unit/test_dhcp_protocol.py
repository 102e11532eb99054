"""RFC 2131 server decisions (protocol.DhcpProtocol) with a fake clock:
replies, their options and order, where they go, and the lease events."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.leases import LeasePool, Reservation, State
from homegw.modules.dhcp.protocol import BROADCAST, Destination, DhcpProtocol, ServerSettings

T0 = 1_700_000_000.0
MAC = bytes.fromhex("024847000001")
MAC2 = bytes.fromhex("024847000002")
SERVER = p.ip_int("192.168.1.1")
FIRST = p.ip_int("192.168.1.100")


def settings(**kw: object) -> ServerSettings:
    base = dict(
        interface="lan0",
        server_ip=IPv4Address("192.168.1.1"),
        network=IPv4Network("192.168.1.0/24"),
        range_start=IPv4Address("192.168.1.100"),
        range_end=IPv4Address("192.168.1.101"),
        lease_time=43200,
        domain="lan",
        reservations=(Reservation("02:48:47:00:00:09", p.ip_int("192.168.1.50"), "nas"),),
    )
    base.update(kw)
    return ServerSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def proto() -> DhcpProtocol:
    s = settings()
    return DhcpProtocol(s, LeasePool(s.network, s.range_start, s.range_end, s.reservations, now=T0))


def msg(kind: int, chaddr: bytes = MAC, **fields: object) -> p.DhcpMessage:
    options = {p.OPT_MESSAGE_TYPE: bytes((kind,))}
    options.update(fields.pop("options", {}))  # type: ignore[arg-type]
    return p.DhcpMessage(p.BOOTREQUEST, 0x1234, chaddr, options, **fields)  # type: ignore[arg-type]


def reply_of(out) -> p.DhcpMessage:
    assert out.reply is not None
    assert len(out.reply) >= 300
    return p.parse(out.reply, expect_op=p.BOOTREPLY)


def dora(proto: DhcpProtocol, chaddr: bytes = MAC, now: float = T0, **opts: bytes) -> int:
    offer = reply_of(proto.handle(msg(p.DISCOVER, chaddr), now))
    options = {p.OPT_SERVER_ID: p.ip_int("192.168.1.1").to_bytes(4, "big")}
    options[p.OPT_REQUESTED_IP] = offer.yiaddr.to_bytes(4, "big")
    options.update({int(k[1:]): v for k, v in opts.items()})
    ack = reply_of(proto.handle(msg(p.REQUEST, chaddr, options=options), now))
    assert ack.msg_type == p.ACK
    return ack.yiaddr


def test_offer_options_follow_the_parameter_request_list(proto: DhcpProtocol) -> None:
    prl = bytes((6, 3, 1, 15, 12, 119))
    out = proto.handle(msg(p.DISCOVER, options={p.OPT_PARAM_LIST: prl}), T0)
    offer = reply_of(out)
    assert out.counter == "offers" and out.probe == FIRST
    assert offer.msg_type == p.OFFER and offer.yiaddr == FIRST and offer.xid == 0x1234
    assert list(offer.options) == [53, 54, 6, 3, 1, 15, 51, 58, 59, 28]
    assert offer.options[p.OPT_DNS] == bytes((192, 168, 1, 1))
    assert offer.options[p.OPT_ROUTER] == bytes((192, 168, 1, 1))
    assert offer.options[p.OPT_SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert offer.options[p.OPT_BROADCAST] == bytes((192, 168, 1, 255))
    assert offer.options[p.OPT_DOMAIN] == b"lan"
    assert offer.options[p.OPT_LEASE_TIME] == (43200).to_bytes(4, "big")
    assert offer.options[p.OPT_T1] == (21600).to_bytes(4, "big")
    assert offer.options[p.OPT_T2] == (37800).to_bytes(4, "big")
    # No address, no broadcast flag: a raw frame to chaddr.
    assert out.dest == Destination(FIRST, 68, MAC)


def test_broadcast_flag_and_known_client_skip_unicast_and_probe(proto: DhcpProtocol) -> None:
    dora(proto)
    out = proto.handle(msg(p.DISCOVER, flags=p.BROADCAST_FLAG), T0 + 1)
    assert out.dest == Destination(BROADCAST, 68)
    assert out.probe is None  # the address is already this client's
    assert reply_of(out).yiaddr == FIRST


def test_no_probe_when_probing_is_off() -> None:
    s = settings(probe_timeout=0)
    proto = DhcpProtocol(s, LeasePool(s.network, s.range_start, s.range_end, now=T0))
    assert proto.handle(msg(p.DISCOVER), T0).probe is None


def test_selecting_request_is_acked_with_a_lease_event(proto: DhcpProtocol) -> None:
    proto.handle(msg(p.DISCOVER), T0)
    options = {
        p.OPT_SERVER_ID: bytes((192, 168, 1, 1)),
        p.OPT_REQUESTED_IP: FIRST.to_bytes(4, "big"),
        p.OPT_HOSTNAME: b"My Laptop!",
        p.OPT_PARAM_LIST: bytes((12,)),
    }
    out = proto.handle(msg(p.REQUEST, options=options), T0)
    ack = reply_of(out)
    assert out.counter == "acks"
    assert out.event == "DHCPACK 192.168.1.100 to 02:48:47:00:00:01 (my-laptop) lease 43200 s"
    assert out.bound is not None and out.bound.hostname == "my-laptop"
    assert out.bound.expires == T0 + 43200 and out.bound.state is State.BOUND
    assert list(ack.options)[:3] == [53, 54, 12] and ack.options[12] == b"my-laptop"


def test_request_for_another_server_frees_our_offer(proto: DhcpProtocol) -> None:
    proto.handle(msg(p.DISCOVER), T0)
    options = {p.OPT_SERVER_ID: bytes((192, 168, 1, 2)), p.OPT_REQUESTED_IP: bytes(4)}
    out = proto.handle(msg(p.REQUEST, options=options), T0)
    assert (out.reply, out.counter) == (None, "other_server")
    assert reply_of(proto.handle(msg(p.DISCOVER, MAC2), T0)).yiaddr == FIRST


def test_init_reboot_in_a_wrong_subnet_gets_a_broadcast_nak(proto: DhcpProtocol) -> None:
    out = proto.handle(msg(p.REQUEST, options={p.OPT_REQUESTED_IP: bytes((10, 1, 2, 3))}), T0)
    nak = reply_of(out)
    assert out.counter == "naks" and out.dest == Destination(BROADCAST, 68)
    assert out.event == "DHCPNAK 10.1.2.3 to 02:48:47:00:00:01: wrong subnet"
    assert nak.msg_type == p.NAK and nak.yiaddr == 0
    assert nak.options[p.OPT_SERVER_ID] == bytes((192, 168, 1, 1))
    assert nak.options[p.OPT_MESSAGE] == b"wrong subnet"


def test_init_reboot_for_someone_elses_address_is_naked(proto: DhcpProtocol) -> None:
    address = dora(proto)
    options = {p.OPT_REQUESTED_IP: address.to_bytes(4, "big")}
    out = proto.handle(msg(p.REQUEST, MAC2, options=options), T0)
    assert out.event == "DHCPNAK 192.168.1.100 to 02:48:47:00:00:02: address not available"


def test_init_reboot_of_a_forgotten_but_free_address_is_adopted(proto: DhcpProtocol) -> None:
    out = proto.handle(msg(p.REQUEST, options={p.OPT_REQUESTED_IP: bytes((192, 168, 1, 101))}), T0)
    assert out.counter == "acks" and reply_of(out).yiaddr == p.ip_int("192.168.1.101")


def test_renewing_is_acked_by_unicast_to_ciaddr(proto: DhcpProtocol) -> None:
    address = dora(proto)
    out = proto.handle(msg(p.REQUEST, ciaddr=address), T0 + 21600)
    ack = reply_of(out)
    assert out.dest == Destination(address, 68)
    assert ack.ciaddr == address and ack.yiaddr == address
    assert out.bound.expires == T0 + 21600 + 43200


def test_relayed_messages_go_back_to_the_relay(proto: DhcpProtocol) -> None:
    relay = p.ip_int("192.168.1.7")
    out = proto.handle(msg(p.DISCOVER, giaddr=relay), T0)
    assert out.dest == Destination(relay, 67) and reply_of(out).giaddr == relay
    bad = msg(p.REQUEST, giaddr=relay, options={p.OPT_REQUESTED_IP: bytes((10, 0, 0, 1))})
    nak_out = proto.handle(bad, T0)
    assert nak_out.dest == Destination(relay, 67)
    assert reply_of(nak_out).broadcast  # RFC 2131 §4.3.2: the relay broadcasts the NAK
    foreign = proto.handle(msg(p.DISCOVER, giaddr=p.ip_int("10.9.0.1")), T0)
    assert (foreign.reply, foreign.counter) == (None, "foreign_relay")


def test_inform_gets_configuration_without_a_lease(proto: DhcpProtocol) -> None:
    ciaddr = p.ip_int("192.168.1.30")
    out = proto.handle(msg(p.INFORM, ciaddr=ciaddr), T0)
    ack = reply_of(out)
    assert out.counter == "informs" and out.dest == Destination(ciaddr, 68)
    assert ack.msg_type == p.ACK and ack.yiaddr == 0 and ack.ciaddr == ciaddr
    assert not {51, 58, 59} & set(ack.options) and {1, 3, 6, 15, 28} <= set(ack.options)


def test_release_and_decline_withdraw_the_binding(proto: DhcpProtocol) -> None:
    address = dora(proto)
    released = proto.handle(msg(p.RELEASE, ciaddr=address), T0 + 5)
    assert released.event == "DHCPRELEASE 192.168.1.100 from 02:48:47:00:00:01"
    assert released.unbound is not None and released.unbound.address == address
    assert released.reply is None
    address = dora(proto, now=T0 + 6)
    options = {p.OPT_REQUESTED_IP: address.to_bytes(4, "big")}
    declined = proto.handle(msg(p.DECLINE, options=options), T0 + 7)
    assert (
        declined.event == "DHCPDECLINE 192.168.1.100 from 02:48:47:00:00:01: quarantined for 600 s"
    )
    assert declined.counter == "declines"
    assert reply_of(proto.handle(msg(p.DISCOVER, MAC2), T0 + 8)).yiaddr == FIRST + 1


def test_pool_exhaustion_gives_no_offer_and_a_warning(proto: DhcpProtocol) -> None:
    dora(proto, MAC)
    dora(proto, MAC2)
    out = proto.handle(msg(p.DISCOVER, bytes.fromhex("024847000003")), T0)
    assert out.reply is None and out.counter == "exhausted" and out.warning
    assert out.event == "DHCP pool exhausted: no address to offer to 02:48:47:00:00:03"


def test_client_identifier_beats_chaddr(proto: DhcpProtocol) -> None:
    cid = {p.OPT_CLIENT_ID: b"\xffdevice-1"}
    first = reply_of(proto.handle(msg(p.DISCOVER, MAC, options=cid), T0)).yiaddr
    same_id = reply_of(proto.handle(msg(p.DISCOVER, MAC2, options=cid), T0)).yiaddr
    other_id = {p.OPT_CLIENT_ID: b"\xffdevice-2"}
    other = reply_of(proto.handle(msg(p.DISCOVER, MAC, options=other_id), T0)).yiaddr
    assert (first, same_id, other) == (FIRST, FIRST, FIRST + 1)


def test_reservation_gets_its_address_and_name(proto: DhcpProtocol) -> None:
    reserved = bytes.fromhex("024847000009")
    assert dora(proto, reserved, o55=bytes((12,))) == p.ip_int("192.168.1.50")
    lease = proto.pool.lease_of("hw:02:48:47:00:00:09", T0)
    assert lease is not None and lease.hostname == "nas"


def test_fqdn_option_is_answered(proto: DhcpProtocol) -> None:
    fqdn = bytes((0x04, 0, 0)) + b"\x05phone\x00"
    proto.handle(msg(p.DISCOVER), T0)
    options = {
        p.OPT_SERVER_ID: bytes((192, 168, 1, 1)),
        p.OPT_REQUESTED_IP: FIRST.to_bytes(4, "big"),
        p.OPT_FQDN: fqdn,
    }
    ack = reply_of(proto.handle(msg(p.REQUEST, options=options), T0))
    assert ack.options[p.OPT_FQDN] == bytes((0x07, 255, 255)) + b"\x05phone\x03lan\x00"
