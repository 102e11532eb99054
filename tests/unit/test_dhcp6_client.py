"""The DHCPv6 client state machine with a fake clock, through every transition:
SOLICIT/ADVERTISE selection, REQUEST, RENEW at T1, REBIND at T2, expiry,
NoBinding / NoPrefixAvail / UseMulticast, renumbering, RELEASE, restarts,
and the RFC 8415 retransmission schedule."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from itertools import count

import pytest

from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.client import ClientFsm, IaAddress, IaPrefix, Lease6, Phase
from homegw.modules.ipv6.dhcp6.wanclient import ClockWatch
from homegw.modules.ipv6.dhcp6.wire import IaAddr, IaNa, IaPd, Message, MsgType, Status, StatusCode

DUID = wire.duid_ll(bytes.fromhex("020000000001"))
S1 = bytes.fromhex("0001000100000001020000000091")
S2 = bytes.fromhex("0001000100000001020000000092")
ADDR = IPv6Address("2001:db8:ffff:1::1000")
P1 = IPv6Network("2001:db8:100::/56")
P2 = IPv6Network("2001:db8:200::/56")
DNS = IPv6Address("2001:db8:ffff:53::53")
IAID = 7


def make_fsm(**kw) -> ClientFsm:
    xids = count(0x100)
    return ClientFsm(DUID, IAID, rand=lambda: 0.0, new_xid=lambda: next(xids), **kw)


def answer(
    to: Message,
    kind: int = MsgType.REPLY,
    server: bytes = S1,
    addrs=((ADDR, 30, 40),),
    prefixes=((P1, 30, 40),),
    t1: int = 10,
    t2: int = 16,
    na_status: int | None = None,
    pd_status: int | None = None,
    **kw,
) -> Message:
    na = IaNa(
        IAID,
        t1,
        t2,
        tuple(IaAddr(a, p, v) for a, p, v in addrs),
        StatusCode(na_status) if na_status is not None else None,
    )
    pd = IaPd(
        IAID,
        t1,
        t2,
        tuple(wire.IaPrefix(n, p, v) for n, p, v in prefixes),
        StatusCode(pd_status) if pd_status is not None else None,
    )
    return Message(
        kind,
        to.transaction_id,
        client_id=DUID,
        server_id=server,
        ia_na=(na,),
        ia_pd=(pd,),
        dns_servers=(DNS,),
        **kw,
    )


def one(msgs: list[Message], kind: int) -> Message:
    assert [m.msg_type for m in msgs] == [kind]
    return msgs[0]


def bound(now: float = 0.0) -> tuple[ClientFsm, float]:
    """A client BOUND at `now + 2` (SOLICIT at +0.5, ADVERTISE 255, REPLY)."""
    fsm = make_fsm()
    fsm.start(now)
    solicit = one(fsm.poll(now + 0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), now + 0.6)
    request = one(fsm.poll(now + 0.6), MsgType.REQUEST)
    fsm.handle(answer(request), now + 2)
    assert fsm.phase is Phase.BOUND
    return fsm, now + 2


def test_solicit_asks_for_address_and_prefix_hint() -> None:
    fsm = make_fsm(prefix_hint=60)
    fsm.start(100.0)
    assert fsm.poll(100.0) == [] and fsm.next_due() == 100.5  # SOL_MAX_DELAY, RAND 0
    solicit = one(fsm.poll(100.5), MsgType.SOLICIT)
    assert solicit.client_id == DUID and solicit.server_id is None
    assert solicit.ia_na == (IaNa(IAID),)
    assert solicit.ia_pd == (IaPd(IAID, prefixes=(wire.IaPrefix(IPv6Network("::/60"), 0, 0),)),)
    assert solicit.oro == (wire.Opt.DNS_SERVERS, wire.Opt.DOMAIN_LIST) and solicit.elapsed == 0


def test_solicit_retransmission_doubles_and_caps_elapsed() -> None:
    fsm = make_fsm(want_prefix=False)
    fsm.start(0.0)
    first = one(fsm.poll(0.5), MsgType.SOLICIT)
    assert first.ia_pd == () and fsm.next_due() == 1.5
    assert fsm.poll(1.4) == []
    second = one(fsm.poll(1.5), MsgType.SOLICIT)
    assert second.transaction_id == first.transaction_id and second.elapsed == 100
    assert fsm.next_due() == 3.5


def test_rand_shapes_the_schedule() -> None:
    fsm = ClientFsm(DUID, IAID, rand=lambda: -0.1, new_xid=lambda: 1)
    fsm.start(0.0)
    assert fsm.next_due() == 0.0  # no initial delay at RAND -0.1
    fsm.poll(0.0)
    assert fsm.next_due() == pytest.approx(1.1)  # SOLICIT's first RAND is made positive


def test_request_backoff_caps_at_mrt_then_gives_up_to_solicit() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    fsm.handle(answer(one(fsm.poll(0.5), MsgType.SOLICIT), MsgType.ADVERTISE, preference=255), 1)
    times = []
    now = 1.0
    for _ in range(10):
        one(fsm.poll(now), MsgType.REQUEST)
        times.append(now)
        now = fsm.next_due()
    assert [b - a for a, b in zip(times[:-1], times[1:], strict=True)] == [
        1,
        2,
        4,
        8,
        16,
        30,
        30,
        30,
        30,
    ]
    again = one(fsm.poll(now), MsgType.SOLICIT)  # MRC 10 reached: start over
    assert fsm.phase is Phase.SOLICIT and again.server_id is None


def test_best_advertise_by_preference_after_the_first_rt() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, server=S1, preference=10), 0.7)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, server=S2, preference=20), 0.8)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, server=S1, preference=5), 0.9)
    assert fsm.poll(1.0) == [] and fsm.next_due() == 1.5
    request = one(fsm.poll(1.5), MsgType.REQUEST)
    assert request.server_id == S2
    assert request.ia_na[0].addresses[0].address == ADDR
    assert request.ia_pd[0].prefixes[0].prefix == P1


def test_equal_preference_prefers_the_fuller_offer() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, server=S1, prefixes=()), 0.7)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, server=S2), 0.8)
    assert one(fsm.poll(1.5), MsgType.REQUEST).server_id == S2


def test_advertise_255_is_taken_at_once_and_late_advertise_too() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 0.6)
    assert one(fsm.poll(0.6), MsgType.REQUEST).server_id == S1
    late = make_fsm()
    late.start(0.0)
    solicit = one(late.poll(0.5), MsgType.SOLICIT)
    one(late.poll(1.5), MsgType.SOLICIT)  # nothing in the first RT
    late.handle(answer(solicit, MsgType.ADVERTISE, preference=1), 2.0)
    assert one(late.poll(2.0), MsgType.REQUEST).server_id == S1


def test_ignored_messages_are_counted() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    adv = answer(solicit, MsgType.ADVERTISE, preference=255)
    fsm.handle(Message(MsgType.ADVERTISE, solicit.transaction_id + 1, DUID, S1), 0.6)
    fsm.handle(Message(MsgType.ADVERTISE, solicit.transaction_id, S2, S1), 0.6)
    fsm.handle(Message(MsgType.ADVERTISE, solicit.transaction_id, DUID, None), 0.6)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, addrs=(), prefixes=(), preference=255), 0.6)
    fsm.handle(answer(solicit, MsgType.REPLY), 0.6)  # no rapid commit asked
    fail = answer(solicit, MsgType.ADVERTISE, preference=255, status=StatusCode(Status.UNSPEC_FAIL))
    fsm.handle(fail, 0.6)
    assert fsm.phase is Phase.SOLICIT and fsm.poll(0.6) == []
    assert fsm.ignored == {
        "unexpected_xid": 1,
        "foreign_client_id": 1,
        "no_server_id": 1,
        "advertise_empty": 1,
        "unexpected_type": 1,
        "advertise_status": 1,
    }
    fsm.handle(adv, 0.7)
    assert one(fsm.poll(0.7), MsgType.REQUEST)


def test_reply_binds_with_lifetimes_and_timers() -> None:
    fsm, now = bound(1000.0)
    lease = fsm.lease
    assert lease is not None
    assert lease.addresses == (IaAddress(ADDR, now + 30, now + 40),)
    assert lease.prefixes == (IaPrefix(P1, now + 30, now + 40),)
    assert lease.dns == (DNS,) and lease.server_id == S1 and lease.obtained_at == now
    assert fsm.next_due() == now + 10  # T1


def test_renew_at_t1_to_the_server_then_bound_again() -> None:
    fsm, now = bound()
    assert fsm.poll(now + 9.9) == []
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    assert renew.server_id == S1
    assert [a.address for a in renew.ia_na[0].addresses] == [ADDR]
    assert [p.prefix for p in renew.ia_pd[0].prefixes] == [P1]
    fsm.handle(answer(renew), now + 11)
    assert fsm.phase is Phase.BOUND
    assert fsm.lease is not None and fsm.lease.prefixes[0].valid_until == now + 51
    assert fsm.next_due() == now + 21


def test_t1_and_t2_zero_come_from_the_preferred_lifetime() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 1)
    fsm.handle(answer(one(fsm.poll(1), MsgType.REQUEST), t1=0, t2=0), 2)
    assert fsm.next_due() == 2 + 15  # half of preferred 30


def test_infinite_t1_means_no_renew() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 1)
    forever = wire.INFINITY
    reply = answer(
        one(fsm.poll(1), MsgType.REQUEST),
        t1=forever,
        t2=forever,
        addrs=((ADDR, forever, forever),),
        prefixes=((P1, forever, forever),),
    )
    fsm.handle(reply, 2)
    assert fsm.phase is Phase.BOUND and fsm.next_due() is None
    assert fsm.poll(10**9) == [] and fsm.lease is not None


def test_renew_unanswered_rebinds_at_t2_to_any_server() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    assert fsm.next_due() == now + 16  # RT 10 would pass T2: T2 first
    rebind = one(fsm.poll(now + 16), MsgType.REBIND)
    assert rebind.server_id is None and rebind.transaction_id != renew.transaction_id
    fsm.handle(answer(renew, server=S2), now + 17)  # the old exchange: ignored
    assert fsm.phase is Phase.REBIND
    fsm.handle(answer(rebind, server=S2), now + 17)
    assert fsm.phase is Phase.BOUND and fsm.lease is not None and fsm.lease.server_id == S2


def test_rebind_unanswered_until_valid_lifetime_loses_the_lease() -> None:
    fsm, now = bound()
    one(fsm.poll(now + 10), MsgType.RENEW)
    one(fsm.poll(now + 16), MsgType.REBIND)
    one(fsm.poll(now + 26), MsgType.REBIND)
    assert fsm.next_due() == now + 40
    solicit = one(fsm.poll(now + 40), MsgType.SOLICIT)
    assert fsm.lease is None and solicit.ia_pd[0].prefixes[0].prefix == IPv6Network("::/56")


def test_shorter_address_expires_alone() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 1)
    reply = answer(one(fsm.poll(1), MsgType.REQUEST), addrs=((ADDR, 5, 8),), t1=100, t2=160)
    fsm.handle(reply, 2)
    assert fsm.next_due() == 10
    assert fsm.poll(10) == []
    assert fsm.lease is not None and fsm.lease.addresses == () and len(fsm.lease.prefixes) == 1


def test_no_binding_on_renew_requests_again_with_what_is_held() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    fsm.handle(answer(renew, addrs=(), prefixes=(), pd_status=Status.NO_BINDING), now + 11)
    request = one(fsm.poll(now + 11), MsgType.REQUEST)
    assert request.server_id == S1
    assert [p.prefix for p in request.ia_pd[0].prefixes] == [P1]
    fsm.handle(answer(request), now + 12)
    assert fsm.phase is Phase.BOUND


def test_no_prefix_avail_keeps_the_address_and_asks_again_at_t1() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 1)
    request = one(fsm.poll(1), MsgType.REQUEST)
    fsm.handle(answer(request, prefixes=(), pd_status=Status.NO_PREFIX_AVAIL), 2)
    assert fsm.phase is Phase.BOUND
    assert fsm.lease is not None and fsm.lease.prefixes == () and len(fsm.lease.addresses) == 1
    renew = one(fsm.poll(12), MsgType.RENEW)
    assert renew.ia_pd[0].prefixes[0].prefix == IPv6Network("::/56")  # the hint again


def test_nothing_bound_starts_over() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    solicit = one(fsm.poll(0.5), MsgType.SOLICIT)
    fsm.handle(answer(solicit, MsgType.ADVERTISE, preference=255), 1)
    reply = answer(
        one(fsm.poll(1), MsgType.REQUEST),
        addrs=(),
        prefixes=(),
        na_status=Status.NO_ADDRS_AVAIL,
        pd_status=Status.NO_PREFIX_AVAIL,
    )
    fsm.handle(reply, 2)
    assert fsm.phase is Phase.SOLICIT and fsm.lease is None and fsm.next_due() == 3


def test_not_on_link_starts_over() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    fsm.handle(answer(renew, addrs=(), prefixes=(), na_status=Status.NOT_ON_LINK), now + 11)
    assert fsm.phase is Phase.SOLICIT and fsm.lease is None


@pytest.mark.parametrize("code", [Status.USE_MULTICAST, Status.UNSPEC_FAIL])
def test_failed_reply_is_ignored_and_retransmitted(code: int) -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    fsm.handle(answer(renew, status=StatusCode(code)), now + 11)
    assert fsm.phase is Phase.RENEW and fsm.ignored == {f"reply_status_{code}": 1}
    again = one(fsm.poll(now + 16), MsgType.REBIND)
    assert again.server_id is None


def test_renumbering_old_prefix_at_zero_new_prefix_kept() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    fsm.handle(answer(renew, prefixes=((P1, 0, 0), (P2, 30, 40))), now + 11)
    assert fsm.lease is not None
    assert [p.prefix for p in fsm.lease.prefixes] == [P2]


def test_unmentioned_prefix_is_kept_until_it_expires() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    fsm.handle(answer(renew, prefixes=((P2, 30, 50),)), now + 11)
    assert fsm.lease is not None and {p.prefix for p in fsm.lease.prefixes} == {P1, P2}
    fsm.poll(now + 40)
    assert [p.prefix for p in fsm.lease.prefixes] == [P2]


def test_release_gives_everything_back() -> None:
    fsm, now = bound()
    fsm.release(now + 1)
    assert fsm.lease is None
    release = one(fsm.poll(now + 1), MsgType.RELEASE)
    assert release.server_id == S1 and release.oro == ()
    assert [a.address for a in release.ia_na[0].addresses] == [ADDR]
    assert [p.prefix for p in release.ia_pd[0].prefixes] == [P1]
    fsm.handle(answer(release, addrs=(), prefixes=()), now + 1.5)
    assert fsm.phase is Phase.STOPPED and fsm.next_due() is None and fsm.poll(now + 99) == []


def test_release_unanswered_stops_after_mrc() -> None:
    fsm, now = bound()
    fsm.release(now)
    sent = 0
    at = now
    while fsm.phase is Phase.RELEASE:
        sent += len(fsm.poll(at))
        at = fsm.next_due() or at
    assert sent == 4 and fsm.phase is Phase.STOPPED


def test_release_without_lease_just_stops() -> None:
    fsm = make_fsm()
    fsm.start(0.0)
    fsm.release(0.1)
    assert fsm.phase is Phase.STOPPED and fsm.poll(5) == []


def persisted(valid_until: float) -> Lease6:
    return Lease6(
        addresses=(IaAddress(ADDR, valid_until - 10, valid_until),),
        prefixes=(IaPrefix(P1, valid_until - 10, valid_until),),
        dns=(DNS,),
        domains=("isp.example",),
        server_id=S1,
        obtained_at=valid_until - 40,
    )


def test_restart_with_valid_lease_rebinds_it() -> None:
    fsm = make_fsm()
    fsm.start(100.0, persisted(130.0))
    assert fsm.lease == persisted(130.0)
    rebind = one(fsm.poll(100.0), MsgType.REBIND)
    assert [p.prefix for p in rebind.ia_pd[0].prefixes] == [P1] and rebind.server_id is None


def test_restart_with_expired_lease_solicits() -> None:
    fsm = make_fsm()
    fsm.start(200.0, persisted(130.0))
    assert fsm.lease is None and fsm.phase is Phase.SOLICIT


def test_lease_json_round_trip() -> None:
    lease = persisted(130.0)
    assert Lease6.from_json(lease.to_json()) == lease
    forever = Lease6((), (IaPrefix(P1, float("inf"), float("inf")),), (), (), S1, 1.0)
    assert Lease6.from_json(forever.to_json()) == forever


def test_must_want_something() -> None:
    with pytest.raises(ValueError):
        ClientFsm(DUID, 1, want_address=False, want_prefix=False)


def test_request_after_no_binding_unanswered_rebinds_the_held_lease() -> None:
    fsm, now = bound()
    renew = one(fsm.poll(now + 10), MsgType.RENEW)
    renewed_address = ((ADDR, 300, 400),)
    reply = answer(renew, addrs=renewed_address, prefixes=(), pd_status=Status.NO_BINDING)
    fsm.handle(reply, now + 11)
    assert fsm.lease is not None and fsm.lease.addresses[0].valid_until == now + 411
    sent: list[Message] = []
    at = now + 11
    for _ in range(20):  # bounded: a wrong machine must fail, not hang
        sent += fsm.poll(at)
        if fsm.phase is not Phase.REQUEST:
            break
        at = fsm.next_due()
    # MRC REQUESTs, then the lease still held goes to any server
    assert [m.msg_type for m in sent] == [MsgType.REQUEST] * 10 + [MsgType.REBIND]
    assert sent[-1].server_id is None
    assert fsm.lease is not None and [a.address for a in fsm.lease.addresses] == [ADDR]
    assert fsm.lease.prefixes == ()  # the prefix's valid lifetime ended meanwhile


def test_shift_moves_every_time_along() -> None:
    fsm, now = bound()
    before = fsm.lease
    fsm.shift(10_000.0)
    assert fsm.lease is not None and before is not None
    assert fsm.lease.prefixes[0].valid_until == before.prefixes[0].valid_until + 10_000
    assert fsm.lease.obtained_at == before.obtained_at + 10_000
    assert fsm.next_due() == now + 10 + 10_000  # T1, as far away as before
    assert fsm.poll(now + 10_000) == [] and fsm.lease is not None  # not expired by the jump
    renew = one(fsm.poll(now + 10_010), MsgType.RENEW)
    fsm.shift(-5.0)  # during an exchange too
    assert fsm.next_due() == now + 10_010 + 6 - 5  # T2 deadline moved
    assert renew.msg_type == MsgType.RENEW


def test_clock_watch_notices_jumps_only() -> None:
    watch = ClockWatch(1000.0, 5.0)
    assert watch.jump(1010.0, 15.0) == 0.0
    assert watch.jump(1011.5, 16.0) == 0.0  # under CLOCK_JUMP: scheduling noise
    assert watch.jump(90_000.0, 17.0) == pytest.approx(90_000.0 - 1011.5 - 1.0)
    assert watch.jump(89_000.0, 18.0) == -1001.0
