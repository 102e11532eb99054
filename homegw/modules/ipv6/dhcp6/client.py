"""The WAN's DHCPv6 client as a pure state machine (RFC 8415); time passed in.

    fsm = ClientFsm(duid, iaid, want_address=True, want_prefix=True, prefix_hint=56)
    fsm.start(now, persisted_lease)
    loop: wait until fsm.next_due() or a datagram; fsm.handle(decoded, now);
          for msg in fsm.poll(now): send msg; look at fsm.lease

Phases and their transitions (every one has a test in test_dhcp6_client.py):

    SOLICIT --ADVERTISE(s), best by preference, 255 at once--> REQUEST
    REQUEST --REPLY with bindings--> BOUND;  --MRC (10) sends, no REPLY--> SOLICIT
            --REPLY NotOnLink / nothing bound--> SOLICIT
    BOUND   --T1--> RENEW (to the server: its SERVERID) --REPLY--> BOUND
    RENEW   --T2--> REBIND (any server) --REPLY--> BOUND
    REBIND  --every valid lifetime over--> lease lost, SOLICIT
    RENEW/REBIND --REPLY NoBinding for an IA--> REQUEST to that server
            (unanswered MRC times while the lease holds: REBIND)
    any     --valid lifetime of an item over--> item dropped (all gone: SOLICIT)
    release(now) --> RELEASE (MRC 4) --REPLY or give up--> STOPPED

A REPLY that gives an address or prefix with valid lifetime 0 removes it (the
ISP renumbering: old prefix at 0, new prefix alongside); items a REPLY does
not mention are kept until their valid lifetime ends (RFC 8415 18.2.10.1).
NoAddrsAvail / NoPrefixAvail in one IA keep what the other IA got; the empty
IA is asked for again in every RENEW (so at T1). UseMulticast and other
failure statuses of the whole message: the REPLY is ignored and the request
retransmitted on schedule (this client always sends to ff02::1:2 anyway).
Retransmission per RFC 8415 15 (IRT/MRT/MRC/MRD per message type, RAND in
[-0.1, 0.1], the first SOLICIT delayed by up to SOL_MAX_DELAY). A persisted
lease still valid at start() is confirmed with a REBIND (18.2.12 for IA_PD).
Times are wall-clock (`time.time()`, as Lease6's are); the runner calls
`shift(delta)` when the wall clock jumps, see wanclient.ClockWatch.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.lease import IaAddress, IaPrefix, Lease6
from homegw.modules.ipv6.dhcp6.wire import MsgType, Opt, Status

ORO = (Opt.DNS_SERVERS, Opt.DOMAIN_LIST)
SOL_MAX_DELAY = 1.0
INFINITE = math.inf
__all__ = ["ClientFsm", "IaAddress", "IaPrefix", "Lease6", "Phase"]


@dataclass(frozen=True)
class Retransmission:
    """RFC 8415 7.6 parameters: initial/maximum RT, maximum count/duration (0: none)."""

    irt: float
    mrt: float
    mrc: int = 0
    mrd: float = 0.0


PARAMS = {
    MsgType.SOLICIT: Retransmission(1, 3600),
    MsgType.REQUEST: Retransmission(1, 30, mrc=10),
    MsgType.RENEW: Retransmission(10, 600),  # MRD: until T2
    MsgType.REBIND: Retransmission(10, 600),  # MRD: until the lease is over
    MsgType.RELEASE: Retransmission(1, 0, mrc=4),
}


class Phase(enum.StrEnum):
    IDLE = "idle"
    SOLICIT = "solicit"
    REQUEST = "request"
    BOUND = "bound"
    RENEW = "renew"
    REBIND = "rebind"
    RELEASE = "release"
    STOPPED = "stopped"


@dataclass
class _Exchange:
    """One message being (re)transmitted until answered or given up."""

    kind: MsgType
    xid: int
    params: Retransmission
    next_send: float
    deadline: float | None  # MRD as an absolute time
    started: float | None = None  # first transmission
    rt: float = 0.0
    sent: int = 0


def _rand_default() -> float:
    return random.uniform(-0.1, 0.1)


def _xid_default() -> int:
    return random.getrandbits(24)


class ClientFsm:
    """See the module docstring. Not thread-safe: one runner drives it."""

    def __init__(
        self,
        duid: bytes,
        iaid: int,
        *,
        want_address: bool = True,
        want_prefix: bool = True,
        prefix_hint: int = 56,
        rand: Callable[[], float] = _rand_default,
        new_xid: Callable[[], int] = _xid_default,
    ) -> None:
        if not (want_address or want_prefix):
            raise ValueError("the DHCPv6 client must want an address or a prefix")
        self.duid = duid
        self.iaid = iaid
        self.want_address = want_address
        self.want_prefix = want_prefix
        self.prefix_hint = prefix_hint
        self._rand = rand
        self._new_xid = new_xid
        self.phase = Phase.IDLE
        self.lease: Lease6 | None = None
        self._ex: _Exchange | None = None
        self._server: bytes | None = None  # the server REQUEST/RENEW talk to
        self._offer: wire.Message | None = None  # the best ADVERTISE so far
        self._collect_until = 0.0  # end of the first SOLICIT RT: pick the best offer
        self._advertised: wire.Message | None = None  # what REQUEST asks for
        self._releasing: Lease6 | None = None  # what RELEASE gives back
        self._renew_at: float | None = None
        self._rebind_at: float | None = None
        #: what was ignored and why (the runner's stats)
        self.ignored: dict[str, int] = {}

    # ----------------------------------------------------------- public

    def start(self, now: float, persisted: Lease6 | None = None) -> None:
        lease = persisted.valid(now) if persisted else None
        if lease is not None:
            self.lease = lease
            self._rebind(now)
        else:
            self._solicit(now + self._initial_delay())

    def next_due(self) -> float | None:
        times = [self._collect_until if self._offer is not None else None]
        if self._ex is not None:
            times += [self._ex.next_send, self._ex.deadline]
        if self.phase is Phase.BOUND:
            times.append(self._renew_at)
        if self.lease is not None and self.phase is not Phase.RELEASE:
            times.append(min(i.valid_until for i in (*self.lease.addresses, *self.lease.prefixes)))
        due = [t for t in times if t is not None and t != INFINITE]
        return min(due) if due else None

    def poll(self, now: float) -> list[wire.Message]:
        """Run what is due at `now`; the messages to send now."""
        self._expire(now)
        if self.phase is Phase.SOLICIT and self._offer is not None and now >= self._collect_until:
            self._request(self._offer, now)
        if self.phase is Phase.BOUND and self._renew_at is not None and now >= self._renew_at:
            self._renew(now)
        ex = self._ex
        if ex is not None and _exhausted(ex, now):
            self._give_up(now)  # may start the next exchange, due now
        ex = self._ex
        if ex is None or now < ex.next_send:
            return []
        return [self._transmit(ex, now)]

    def handle(self, msg: wire.Message, now: float) -> None:
        """A decoded datagram from a server."""
        ex = self._ex
        if ex is None or msg.transaction_id != ex.xid:
            return self._ignore("unexpected_xid")
        if msg.client_id != self.duid:
            return self._ignore("foreign_client_id")
        if msg.server_id is None:
            return self._ignore("no_server_id")
        if msg.msg_type == MsgType.ADVERTISE and ex.kind == MsgType.SOLICIT:
            return self._on_advertise(msg, now)
        if msg.msg_type == MsgType.REPLY and ex.kind == MsgType.RELEASE:
            return self._stopped()
        if msg.msg_type == MsgType.REPLY and ex.kind != MsgType.SOLICIT:
            return self._on_reply(msg, now)
        return self._ignore("unexpected_type")

    def renew(self, now: float) -> None:
        """Renew at once (an operator's request): BOUND -> RENEW; else nothing."""
        if self.phase is Phase.BOUND and self.lease is not None:
            self._renew(now)

    def release(self, now: float) -> None:
        """Give the lease back (RELEASE until answered or MRC); lease is None at once."""
        lease, self.lease = self.lease, None
        self._offer = None
        if lease is None:
            return self._stopped()
        self._server = lease.server_id
        self._releasing = lease
        self._begin(Phase.RELEASE, MsgType.RELEASE, now, None)

    def shift(self, delta: float) -> None:
        """The wall clock jumped by `delta` (NTP at boot on a box without RTC):
        move every absolute time along, so lifetimes and timers keep their
        remaining durations instead of expiring (or lasting) by the jump."""
        self.lease = self.lease.shifted(delta) if self.lease else None
        self._releasing = self._releasing.shifted(delta) if self._releasing else None
        self._collect_until += delta
        if self._renew_at is not None:
            self._renew_at += delta
        if self._rebind_at is not None:
            self._rebind_at += delta
        ex = self._ex
        if ex is not None:
            ex.next_send += delta
            ex.deadline = None if ex.deadline is None else ex.deadline + delta
            ex.started = None if ex.started is None else ex.started + delta

    # ----------------------------------------------------------- transitions

    def _begin(self, phase: Phase, kind: MsgType, at: float, deadline: float | None) -> None:
        self.phase = phase
        self._ex = _Exchange(kind, self._new_xid() & 0xFFFFFF, PARAMS[kind], at, deadline)

    def _solicit(self, at: float) -> None:
        self._server = None
        self._offer = None
        self._renew_at = self._rebind_at = None
        self._begin(Phase.SOLICIT, MsgType.SOLICIT, at, None)

    def _request(self, advertise: wire.Message, now: float) -> None:
        self._offer = None
        self._server = advertise.server_id
        self._advertised = advertise
        self._begin(Phase.REQUEST, MsgType.REQUEST, now, None)

    def _renew(self, now: float) -> None:
        assert self.lease is not None
        self._server = self.lease.server_id
        deadline = self._rebind_at if self._rebind_at is not None else self.lease.expires()
        self._begin(Phase.RENEW, MsgType.RENEW, now, deadline)

    def _rebind(self, now: float) -> None:
        assert self.lease is not None
        self._server = None
        self._begin(Phase.REBIND, MsgType.REBIND, now, self.lease.expires())

    def _give_up(self, now: float) -> None:
        ex = self._ex
        assert ex is not None
        if ex.kind in (MsgType.RENEW, MsgType.REQUEST) and self.lease is not None:
            self._rebind(now)  # the lease still holds: ask any server
        elif ex.kind == MsgType.RELEASE:
            self._stopped()
        else:  # REQUEST without a lease unanswered, or REBIND until the lease ended
            self.lease = None
            self._solicit(now)

    def _stopped(self) -> None:
        self.phase = Phase.STOPPED
        self._ex = None

    def _expire(self, now: float) -> None:
        if self.lease is None or self.phase is Phase.RELEASE:
            return
        lease = self.lease.valid(now)
        if lease != self.lease:
            self.lease = lease
            if lease is None and self.phase is not Phase.SOLICIT:
                self._solicit(now)

    def _ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1

    # ----------------------------------------------------------- sending

    def _next_rt(self, ex: _Exchange) -> float:
        rand = self._rand()
        if ex.sent == 0:
            rt = ex.params.irt + (abs(rand) if ex.kind == MsgType.SOLICIT else rand) * ex.params.irt
        else:
            rt = 2 * ex.rt + rand * ex.rt
        if ex.params.mrt and rt > ex.params.mrt:
            rt = ex.params.mrt + rand * ex.params.mrt
        return rt

    def _initial_delay(self) -> float:
        """RFC 8415 18.2.1: the first SOLICIT waits a random time up to SOL_MAX_DELAY."""
        return (self._rand() + 0.1) * 5 * SOL_MAX_DELAY

    def _transmit(self, ex: _Exchange, now: float) -> wire.Message:
        if ex.started is None:
            ex.started = now
        ex.rt = self._next_rt(ex)
        if ex.sent == 0 and ex.kind == MsgType.SOLICIT:
            self._collect_until = now + ex.rt
        ex.sent += 1
        ex.next_send = now + ex.rt
        elapsed = min(int((now - ex.started) * 100), 0xFFFF)
        return self._build(ex, elapsed)

    def _build(self, ex: _Exchange, elapsed: int) -> wire.Message:
        server = (
            self._server if ex.kind in (MsgType.REQUEST, MsgType.RENEW, MsgType.RELEASE) else None
        )
        return wire.Message(
            ex.kind,
            ex.xid,
            client_id=self.duid,
            server_id=server,
            ia_na=self._ia_na(ex.kind),
            ia_pd=self._ia_pd(ex.kind),
            oro=ORO if ex.kind != MsgType.RELEASE else (),
            elapsed=elapsed,
        )

    def _items(self, kind: MsgType) -> tuple[tuple[IPv6Address, ...], tuple[IPv6Network, ...]]:
        lease = self._releasing if kind == MsgType.RELEASE else self.lease
        held: tuple[tuple[IPv6Address, ...], tuple[IPv6Network, ...]] = ((), ())
        if kind != MsgType.SOLICIT and lease is not None:
            held = (
                tuple(a.address for a in lease.addresses),
                tuple(p.prefix for p in lease.prefixes),
            )
        if kind != MsgType.REQUEST or self._advertised is None:
            return held
        adv = self._advertised  # what was offered, and what we hold (after NoBinding)
        offered = [a.address for ia in self._mine(adv.ia_na) for a in ia.addresses if a.valid]
        delegated = [p.prefix for ia in self._mine(adv.ia_pd) for p in ia.prefixes if p.valid]
        return tuple(dict.fromkeys([*held[0], *offered])), tuple(
            dict.fromkeys([*held[1], *delegated])
        )

    def _ia_na(self, kind: MsgType) -> tuple[wire.IaNa, ...]:
        addresses, _ = self._items(kind)
        if not self.want_address or (kind == MsgType.RELEASE and not addresses):
            return ()
        return (wire.IaNa(self.iaid, addresses=tuple(wire.IaAddr(a, 0, 0) for a in addresses)),)

    def _ia_pd(self, kind: MsgType) -> tuple[wire.IaPd, ...]:
        _, prefixes = self._items(kind)
        if not self.want_prefix or (kind == MsgType.RELEASE and not prefixes):
            return ()
        if not prefixes and kind != MsgType.RELEASE:
            hint = IPv6Network(("::", self.prefix_hint))
            return (wire.IaPd(self.iaid, prefixes=(wire.IaPrefix(hint, 0, 0),)),)
        return (wire.IaPd(self.iaid, prefixes=tuple(wire.IaPrefix(p, 0, 0) for p in prefixes)),)

    # ----------------------------------------------------------- receiving

    def _on_advertise(self, msg: wire.Message, now: float) -> None:
        if msg.status is not None and msg.status.code != Status.SUCCESS:
            return self._ignore("advertise_status")
        if not _offered(msg):
            return self._ignore("advertise_empty")
        if self._offer is None or _rank(msg) > _rank(self._offer):
            self._offer = msg
        if msg.preference == 255 or (self._ex is not None and self._ex.sent > 1):
            self._request(self._offer, now)  # at once: best possible, or after the first RT

    def _on_reply(self, msg: wire.Message, now: float) -> None:
        if msg.status is not None and msg.status.code != Status.SUCCESS:
            return self._ignore(f"reply_status_{msg.status.code}")
        statuses = {ia.status.code for ia in (*msg.ia_na, *msg.ia_pd) if ia.status is not None}
        kind = self._ex.kind if self._ex else None
        if Status.NO_BINDING in statuses and kind in (MsgType.RENEW, MsgType.REBIND):
            merged = _merge(self.lease, msg, now, self._mine(msg.ia_na), self._mine(msg.ia_pd))
            self.lease = merged or self.lease  # the IAs that did renew
            return self._request(msg, now)  # re-establish the binding with this server
        if Status.NOT_ON_LINK in statuses or Status.NO_BINDING in statuses:
            self.lease = None
            return self._solicit(now)
        lease = _merge(self.lease, msg, now, self._mine(msg.ia_na), self._mine(msg.ia_pd))
        if lease is None:
            self.lease = None
            return self._solicit(now + SOL_MAX_DELAY)
        self.lease = lease
        self._set_timers(msg, now)
        self._ex = None
        self.phase = Phase.BOUND

    def _mine(self, ias: Iterable[Any]) -> list[Any]:
        return [ia for ia in ias if ia.iaid == self.iaid]

    def _set_timers(self, msg: wire.Message, now: float) -> None:
        t1s, t2s = [], []
        for ia in (*self._mine(msg.ia_na), *self._mine(msg.ia_pd)):
            items = getattr(ia, "addresses", None) or getattr(ia, "prefixes", ())
            preferred = [i.preferred for i in items if i.valid]
            if not preferred:
                continue
            shortest = min(preferred)
            t1 = ia.t1 or shortest * 0.5
            t2 = ia.t2 or shortest * 0.8
            t1s.append(min(t1, t2))
            t2s.append(t2)
        self._renew_at = _at(now, min(t1s)) if t1s else None
        self._rebind_at = _at(now, min(t2s)) if t2s else None


def _exhausted(ex: _Exchange, now: float) -> bool:
    """MRD passed, or MRC transmissions made and the last one's RT is over."""
    if ex.deadline is not None and now >= ex.deadline:
        return True
    return bool(ex.params.mrc) and ex.sent >= ex.params.mrc and now >= ex.next_send


def _at(now: float, seconds: float) -> float:
    return INFINITE if seconds >= wire.INFINITY else now + max(seconds, 1.0)


def _until(now: float, lifetime: int) -> float:
    return INFINITE if lifetime == wire.INFINITY else now + lifetime


def _offered(msg: wire.Message) -> int:
    """How many addresses and prefixes an ADVERTISE offers."""
    return sum(1 for ia in msg.ia_na for a in ia.addresses if a.valid) + sum(
        1 for ia in msg.ia_pd for p in ia.prefixes if p.valid
    )


def _rank(msg: wire.Message) -> tuple[int, int]:
    """RFC 8415 18.2.9: preference first, then how much is offered."""
    return (msg.preference or 0, _offered(msg))


def _merge(
    base: Lease6 | None,
    msg: wire.Message,
    now: float,
    ia_na: list[wire.IaNa],
    ia_pd: list[wire.IaPd],
) -> Lease6 | None:
    """`base` updated by a REPLY: given items replace, lifetime-0 items go."""
    addresses = {a.address: a for a in base.addresses} if base else {}
    prefixes = {p.prefix: p for p in base.prefixes} if base else {}
    for ia in ia_na:
        for item in ia.addresses:
            addresses.pop(item.address, None)
            if item.valid:
                addresses[item.address] = IaAddress(
                    item.address, _until(now, item.preferred), _until(now, item.valid)
                )
    for ia in ia_pd:
        for item in ia.prefixes:
            prefixes.pop(item.prefix, None)
            if item.valid:
                prefixes[item.prefix] = IaPrefix(
                    item.prefix, _until(now, item.preferred), _until(now, item.valid)
                )
    if not addresses and not prefixes:
        return None
    assert msg.server_id is not None
    return Lease6(
        addresses=tuple(addresses.values()),
        prefixes=tuple(prefixes.values()),
        dns=msg.dns_servers or (base.dns if base else ()),
        domains=msg.domains or (base.domains if base else ()),
        server_id=msg.server_id,
        obtained_at=now,
    )
