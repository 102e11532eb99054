"""NAT expiry plan: DMZ bindings go at once, quarantined ones are released."""

from __future__ import annotations

import ipaddress
import socket

from homegw.modules.nat.gc import NS, QUARANTINE_S, Timeouts, plan
from homegw.modules.nat.maps import (
    BINDING_DMZ,
    BINDING_QUARANTINE,
    BINDING_STATIC,
    BindingEntry,
    SessionEntry,
)

TIMEOUTS = Timeouts(7440, 240, 300, 60)
HOST = ipaddress.IPv4Address("192.168.1.16")
UDP = socket.IPPROTO_UDP


def binding(port: int, flags: int, last_seen: int = 0) -> BindingEntry:
    return BindingEntry(UDP, port, HOST, port, flags, last_seen)


def test_idle_dmz_bindings_are_unbound_not_quarantined() -> None:
    bindings = [binding(4000, BINDING_DMZ), binding(5000, 0), binding(7000, BINDING_STATIC)]
    result = plan([], bindings, 120 * NS, TIMEOUTS)
    assert [b.ext_port for b in result.unbind] == [4000]
    assert [b.ext_port for b in result.quarantine] == [5000]
    assert result.release == []


def test_a_dmz_binding_in_use_stays() -> None:
    remote = ipaddress.IPv4Address("198.51.100.7")
    session = SessionEntry(UDP, 4000, remote, 1111, 100 * NS, 0, 1, 17)
    result = plan([session], [binding(4000, BINDING_DMZ)], 120 * NS, TIMEOUTS)
    assert (result.unbind, result.live_sessions) == ([], 1)


def test_quarantine_ends_after_120_s() -> None:
    held = binding(5000, BINDING_QUARANTINE, 10 * NS)
    assert plan([], [held], (10 + QUARANTINE_S) * NS - 1, TIMEOUTS).release == []
    assert plan([], [held], (10 + QUARANTINE_S) * NS, TIMEOUTS).release == [held]
