"""The LAN DHCPv6 server logic: stateless answers, the stateful exchanges
(SOLICIT/ADVERTISE, rapid commit, REQUEST, RENEW, REBIND, RELEASE, DECLINE),
renumbered pools, foreign addresses, and the bounds against hostile clients."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

import pytest

from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.server import (
    BURST,
    BURST_ALL,
    MAX_IA_NA,
    MAX_PER_SOURCE,
    QUARANTINE,
    BindingTable,
    ServerLogic,
    ServerOptions,
    State,
    client_mac,
    mac_from_link_local,
)
from homegw.modules.ipv6.dhcp6.wire import IaAddr, IaNa, IaPd, Message, MsgType, Status

SERVER = wire.duid_ll(bytes.fromhex("020000000fff"))
C1 = wire.duid_ll(bytes.fromhex("024847000001"))
C2 = wire.duid_ll(bytes.fromhex("024847000002"))
LL1 = IPv6Address("fe80::48:47ff:fe00:1")
LL2 = IPv6Address("fe80::48:47ff:fe00:2")
DNS = (IPv6Address("fd00:1::1"),)
POOL_A = (IPv6Address("2001:db8:100::1000"), IPv6Address("2001:db8:100::1fff"))
POOL_U = (IPv6Address("fd00:1::1000"), IPv6Address("fd00:1::1fff"))
POOL_N = (IPv6Address("2001:db8:200::1000"), IPv6Address("2001:db8:200::1fff"))
STATELESS = ServerOptions(DNS, ("home.arpa",))
STATEFUL = ServerOptions(DNS, ("home.arpa",), pools=(POOL_A, POOL_U), preferred=1000, valid=2000)


@pytest.fixture
def changes() -> list:
    return []


@pytest.fixture
def logic(changes: list) -> ServerLogic:
    return ServerLogic(SERVER, BindingTable(on_change=changes.append, on_delete=changes.append))


def msg(kind: int, client: bytes | None = C1, server: bytes | None = None, **kw) -> Message:
    return Message(kind, 0x4242, client_id=client, server_id=server, **kw)


def addresses(reply: Message) -> list[IPv6Address]:
    return [a.address for ia in reply.ia_na for a in ia.addresses if a.valid]


def bind(
    logic: ServerLogic,
    client: bytes = C1,
    source: IPv6Address = LL1,
    options: ServerOptions = STATEFUL,
    **kw,
) -> Message:
    request = msg(MsgType.REQUEST, client, SERVER, ia_na=(IaNa(1),), **kw)
    reply = logic.handle(request, source, options, 100.0)
    assert reply is not None and reply.msg_type == MsgType.REPLY
    return reply


def test_information_request_gets_dns_domains_refresh(logic: ServerLogic) -> None:
    info = msg(MsgType.INFORMATION_REQUEST, oro=(23, 24))
    reply = logic.handle(info, LL1, STATELESS, 1.0)
    assert reply == Message(
        MsgType.REPLY,
        0x4242,
        client_id=C1,
        server_id=SERVER,
        dns_servers=DNS,
        domains=("home.arpa",),
        info_refresh=3600,
    )
    anonymous = logic.handle(msg(MsgType.INFORMATION_REQUEST, client=None), LL1, STATELESS, 2.0)
    assert anonymous is not None and anonymous.client_id is None
    assert wire.decode(wire.encode(reply)) == reply


def test_stateless_solicit_gets_no_addrs_avail(logic: ServerLogic) -> None:
    reply = logic.handle(msg(MsgType.SOLICIT, ia_na=(IaNa(1),)), LL1, STATELESS, 1.0)
    assert reply is not None and reply.msg_type == MsgType.ADVERTISE
    assert reply.status == wire.StatusCode(Status.NO_ADDRS_AVAIL) and reply.ia_na == ()


def test_solicit_advertises_one_address_per_pool(logic: ServerLogic) -> None:
    reply = logic.handle(msg(MsgType.SOLICIT, ia_na=(IaNa(1),)), LL1, STATEFUL, 1.0)
    assert reply is not None and reply.msg_type == MsgType.ADVERTISE and not reply.rapid_commit
    (ia,) = reply.ia_na
    assert (ia.iaid, ia.t1, ia.t2) == (1, 500, 800)
    assert [(a.preferred, a.valid) for a in ia.addresses] == [(1000, 2000), (1000, 2000)]
    first, second = (a.address for a in ia.addresses)
    assert POOL_A[0] <= first <= POOL_A[1] and POOL_U[0] <= second <= POOL_U[1]
    assert logic.table.active(1.0) == []  # advertised, not bound
    again = logic.handle(msg(MsgType.REQUEST, server=SERVER, ia_na=(IaNa(1),)), LL1, STATEFUL, 2)
    assert again is not None and addresses(again) == [first, second]  # same again: stable


def test_held_address_is_not_advertised_to_another_client(logic: ServerLogic) -> None:
    tiny = ServerOptions(DNS, (), pools=((POOL_A[0], POOL_A[0]),))
    first = logic.handle(msg(MsgType.SOLICIT, ia_na=(IaNa(1),)), LL1, tiny, 1.0)
    other = logic.handle(msg(MsgType.SOLICIT, C2, ia_na=(IaNa(1),)), LL2, tiny, 2.0)
    assert first is not None and addresses(first) == [POOL_A[0]]
    assert other is not None and addresses(other) == []
    assert other.ia_na[0].status == wire.StatusCode(Status.NO_ADDRS_AVAIL)
    later = logic.handle(msg(MsgType.SOLICIT, C2, ia_na=(IaNa(1),)), LL2, tiny, 40.0)
    assert later is not None and addresses(later) == [POOL_A[0]]  # the hold ended


def test_request_binds_with_mac_and_sanitised_hostname(logic: ServerLogic, changes) -> None:
    reply = bind(logic, fqdn=b"\x01\x0aMy_Laptop!\x04home\x00")
    bound = logic.table.active(100.0)
    assert sorted(b.address for b in bound) == sorted(addresses(reply))
    assert {(b.mac, b.hostname, b.state, b.expires) for b in bound} == {
        ("02:48:47:00:00:01", "my-laptop", State.BOUND, 2100.0)
    }
    assert len(changes) == 2


def test_rapid_commit_binds_at_once(logic: ServerLogic) -> None:
    solicit = msg(MsgType.SOLICIT, ia_na=(IaNa(1),), rapid_commit=True)
    reply = logic.handle(solicit, LL1, STATEFUL, 1.0)
    assert reply is not None and reply.msg_type == MsgType.REPLY and reply.rapid_commit
    assert len(logic.table.active(1.0)) == 2


@pytest.mark.parametrize(
    ("kind", "server", "reason"),
    [
        (MsgType.REQUEST, None, "not_for_us"),
        (MsgType.RENEW, C2, "not_for_us"),
        (MsgType.SOLICIT, SERVER, "unexpected_server_id"),
        (MsgType.REBIND, SERVER, "unexpected_server_id"),
        (MsgType.REPLY, SERVER, "not_a_request"),
        (MsgType.CONFIRM, None, "confirm"),
        (MsgType.INFORMATION_REQUEST, C2, "not_for_us"),
    ],
)
def test_misaddressed_messages_are_dropped_and_counted(
    logic: ServerLogic, kind: int, server: bytes | None, reason: str
) -> None:
    assert logic.handle(msg(kind, server=server, ia_na=(IaNa(1),)), LL1, STATEFUL, 1.0) is None
    assert logic.counters[f"drop_{reason}"] == 1


def test_no_client_id_and_ia_in_information_request(logic: ServerLogic) -> None:
    assert logic.handle(msg(MsgType.SOLICIT, client=None), LL1, STATEFUL, 1.0) is None
    assert (
        logic.handle(msg(MsgType.INFORMATION_REQUEST, ia_na=(IaNa(1),)), LL1, STATEFUL, 1) is None
    )
    assert logic.counters["drop_no_client_id"] == 1
    assert logic.counters["drop_ia_in_information_request"] == 1


def test_renew_extends_the_binding(logic: ServerLogic) -> None:
    held = addresses(bind(logic))
    renew = msg(
        MsgType.RENEW,
        server=SERVER,
        ia_na=(IaNa(1, addresses=tuple(IaAddr(a, 0, 0) for a in held)),),
    )
    reply = logic.handle(renew, LL1, STATEFUL, 1500.0)
    assert reply is not None and addresses(reply) == held
    assert {b.expires for b in logic.table.active(1500.0)} == {3500.0}


def test_renew_of_a_foreign_address_gets_lifetime_zero(logic: ServerLogic) -> None:
    theirs = addresses(bind(logic, C2, LL2))[0]
    renew = msg(MsgType.RENEW, server=SERVER, ia_na=(IaNa(1, addresses=(IaAddr(theirs, 0, 0),)),))
    reply = logic.handle(renew, LL1, STATEFUL, 200.0)
    assert reply is not None
    items = reply.ia_na[0].addresses
    assert IaAddr(theirs, 0, 0) in items and len([a for a in items if a.valid]) == 2
    assert theirs not in addresses(reply) and logic.counters["foreign_address"] == 1
    assert logic.table.get(theirs).client == C2.hex()


def test_rebind_of_a_free_pool_address_is_adopted(logic: ServerLogic) -> None:
    lost = IPv6Address("2001:db8:100::1234")  # a binding the store forgot
    rebind = msg(MsgType.REBIND, ia_na=(IaNa(1, addresses=(IaAddr(lost, 0, 0),)),))
    reply = logic.handle(rebind, LL1, STATEFUL, 1.0)
    assert reply is not None and lost in addresses(reply)
    assert logic.table.get(lost).client == C1.hex()


def test_renew_after_renumbering_moves_to_the_new_pool(logic: ServerLogic) -> None:
    old = addresses(bind(logic))
    renumbered = ServerOptions(DNS, (), pools=(POOL_N, POOL_U), preferred=1000, valid=2000)
    ia = IaNa(1, addresses=tuple(IaAddr(a, 0, 0) for a in old))
    reply = logic.handle(msg(MsgType.RENEW, server=SERVER, ia_na=(ia,)), LL1, renumbered, 200.0)
    assert reply is not None
    items = {a.address: a.valid for a in reply.ia_na[0].addresses}
    assert items[old[0]] == 0 and items[old[1]] == 2000  # the ULA one stays
    (new,) = [a for a, valid in items.items() if valid and a != old[1]]
    assert POOL_N[0] <= new <= POOL_N[1]
    assert logic.table.get(old[0]).state is State.RELEASED


def test_release_frees_and_decline_quarantines(logic: ServerLogic) -> None:
    first, second = addresses(bind(logic))
    release = msg(
        MsgType.RELEASE, server=SERVER, ia_na=(IaNa(1, addresses=(IaAddr(first, 0, 0),)),)
    )
    reply = logic.handle(release, LL1, STATEFUL, 200.0)
    assert reply is not None and reply.status == wire.StatusCode(Status.SUCCESS)
    assert logic.table.get(first).state is State.RELEASED
    decline = msg(
        MsgType.DECLINE, server=SERVER, ia_na=(IaNa(1, addresses=(IaAddr(second, 0, 0),)),)
    )
    logic.handle(decline, LL1, STATEFUL, 201.0)
    declined = logic.table.get(second)
    assert declined.state is State.DECLINED and declined.expires == 201.0 + QUARANTINE
    again = logic.handle(msg(MsgType.SOLICIT, ia_na=(IaNa(1),)), LL1, STATEFUL, 300.0)
    assert again is not None and first in addresses(again) and second not in addresses(again)
    assert logic.counters["released"] == 1 and logic.counters["declined"] == 1


def test_release_of_someone_elses_address_changes_nothing(logic: ServerLogic) -> None:
    theirs = addresses(bind(logic, C2, LL2))[0]
    release = msg(
        MsgType.RELEASE, server=SERVER, ia_na=(IaNa(1, addresses=(IaAddr(theirs, 0, 0),)),)
    )
    logic.handle(release, LL1, STATEFUL, 200.0)
    assert logic.table.get(theirs).state is State.BOUND


def test_prefix_delegation_is_refused_in_the_ia(logic: ServerLogic) -> None:
    reply = bind(logic, ia_pd=(IaPd(9),))
    assert reply.ia_pd == (
        IaPd(9, status=wire.StatusCode(Status.NO_PREFIX_AVAIL, "no prefix delegation on the LAN")),
    )


def test_rate_limit_per_source(logic: ServerLogic) -> None:
    info = msg(MsgType.INFORMATION_REQUEST)
    answered = [logic.handle(info, LL1, STATELESS, 1.0) is not None for _ in range(int(BURST) + 5)]
    assert answered.count(True) == BURST and logic.counters["drop_rate_limited"] == 5
    assert logic.handle(info, LL2, STATELESS, 1.0) is not None  # another source: its own bucket
    assert logic.handle(info, LL1, STATELESS, 2.0) is not None  # tokens come back


def test_rate_limit_over_all_sources(logic: ServerLogic) -> None:
    info = msg(MsgType.INFORMATION_REQUEST)
    sources = [IPv6Address(f"fe80::{i:x}") for i in range(int(BURST_ALL) + 10)]
    answered = [logic.handle(info, source, STATELESS, 1.0) is not None for source in sources]
    assert answered.count(True) == BURST_ALL and logic.counters["drop_rate_limited_all"] == 10


def test_many_duids_from_one_source_are_capped(logic: ServerLogic) -> None:
    logic.rate.burst = logic.rate.rate = 10**6
    for i in range(MAX_PER_SOURCE):  # each binds 2 addresses (two pools)
        request = msg(
            MsgType.REQUEST, wire.duid_ll(struct.pack(">IH", 7, i)), SERVER, ia_na=(IaNa(1),)
        )
        logic.handle(request, LL1, STATEFUL, 1.0)
    assert logic.table.count_live(1.0, str(LL1)) == MAX_PER_SOURCE
    assert logic.counters["drop_source_limit"] == MAX_PER_SOURCE


def test_ia_na_beyond_the_limit_are_not_served(logic: ServerLogic) -> None:
    many = tuple(IaNa(i) for i in range(MAX_IA_NA + 3))
    reply = logic.handle(msg(MsgType.REQUEST, server=SERVER, ia_na=many), LL1, STATEFUL, 1.0)
    assert reply is not None and len(reply.ia_na) == MAX_IA_NA
    assert logic.counters["drop_ia_over_limit"] == 3


def test_exhausted_pool_gives_no_addrs_avail(logic: ServerLogic) -> None:
    two = ServerOptions(DNS, (), pools=((POOL_A[0], IPv6Address(int(POOL_A[0]) + 1)),))
    got = [
        addresses(bind(logic, wire.duid_ll(bytes([2, 0, 0, 0, 0, i])), options=two))
        for i in range(3)
    ]
    assert sorted(a for g in got[:2] for a in g) == [POOL_A[0], IPv6Address(int(POOL_A[0]) + 1)]
    assert got[2] == [] and logic.counters["pool_exhausted"] == 1


def test_reclaim_forgets_ended_bindings(logic: ServerLogic, changes) -> None:
    first, second = addresses(bind(logic))
    release = msg(
        MsgType.RELEASE, server=SERVER, ia_na=(IaNa(1, addresses=(IaAddr(first, 0, 0),)),)
    )
    logic.handle(release, LL1, STATEFUL, 200.0)
    assert logic.table.next_expiry() == 2100.0
    assert logic.table.reclaim(300.0) == 1 and changes[-1] == first
    assert logic.table.reclaim(2100.0) == 1 and logic.table.get(second) is None
    assert logic.table.next_expiry() is None


def test_client_mac_from_duid_or_eui64_link_local() -> None:
    assert client_mac(C1, IPv6Address("fe80::1")) == "02:48:47:00:00:01"
    en = struct.pack(">HI", 2, 9) + b"box"
    assert client_mac(en, LL2) == "02:48:47:00:00:02"
    assert mac_from_link_local(IPv6Address("fe80::1234:5678:9abc:def0")) is None
    assert mac_from_link_local(IPv6Address("2001:db8::48:47ff:fe00:1")) is None
