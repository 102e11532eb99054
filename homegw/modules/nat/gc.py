"""Expiry of NAT state (pure: the clock comes in as `now_ns`).

Sessions expire by protocol and TCP state (RFC 5382/7857: established 2 h
4 min, transitory 4 min; RFC 4787: UDP 5 min; RFC 5508: ICMP 60 s). A dynamic
binding whose sessions are all gone is put in quarantine: its mapping goes
(the next flow of that endpoint gets a fresh port) but the port stays taken
for QUARANTINE_S (RFC 6888: do not reuse a freed port for 120 s), then
released: only the binding goes, never the endpoint's newer mapping. A
binding the datapath made for the DMZ host goes at once, mapping and all: its
port goes back to the same host (the DMZ), which must keep serving it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from homegw.modules.nat.maps import (
    BINDING_DMZ,
    BINDING_QUARANTINE,
    BINDING_STATIC,
    BindingEntry,
    SessionEntry,
)

QUARANTINE_S = 120
NS = 1_000_000_000
TCP_SYN_OUT, TCP_SYN_IN, TCP_FIN_OUT, TCP_FIN_IN, TCP_RST = 1, 2, 4, 8, 16


@dataclass(frozen=True)
class Timeouts:
    tcp_established: int
    tcp_transitory: int
    udp: int
    icmp: int


@dataclass
class GcPlan:
    expired_sessions: list[SessionEntry] = field(default_factory=list)
    quarantine: list[BindingEntry] = field(default_factory=list)
    release: list[BindingEntry] = field(default_factory=list)
    unbind: list[BindingEntry] = field(default_factory=list)  # DMZ bindings
    live_sessions: int = 0


def tcp_established(tcp_seen: int) -> bool:
    closing = tcp_seen & TCP_RST or (tcp_seen & TCP_FIN_OUT and tcp_seen & TCP_FIN_IN)
    return bool(tcp_seen & TCP_SYN_OUT and tcp_seen & TCP_SYN_IN and not closing)


def session_timeout(session: SessionEntry, timeouts: Timeouts) -> int:
    """Seconds a session may stay idle."""
    if session.proto == socket.IPPROTO_TCP:
        if tcp_established(session.tcp_seen):
            return timeouts.tcp_established
        return timeouts.tcp_transitory
    if session.proto == socket.IPPROTO_UDP:
        return timeouts.udp
    return timeouts.icmp


def plan(
    sessions: Iterable[SessionEntry],
    bindings: Iterable[BindingEntry],
    now_ns: int,
    timeouts: Timeouts,
) -> GcPlan:
    result = GcPlan()
    in_use: set[tuple[int, int]] = set()
    for session in sessions:
        if now_ns - session.last_seen_ns > session_timeout(session, timeouts) * NS:
            result.expired_sessions.append(session)
        else:
            result.live_sessions += 1
            in_use.add((session.proto, session.ext_port))
    # a binding younger than this may not have its first session yet
    grace_ns = min(timeouts.icmp, timeouts.udp) * NS
    for binding in bindings:
        if binding.flags & BINDING_STATIC:
            continue
        if binding.flags & BINDING_QUARANTINE:
            if now_ns - binding.last_seen_ns >= QUARANTINE_S * NS:
                result.release.append(binding)
        elif (binding.proto, binding.ext_port) not in in_use and (
            now_ns - binding.last_seen_ns >= grace_ns
        ):
            idle = result.unbind if binding.flags & BINDING_DMZ else result.quarantine
            idle.append(binding)
    return result
