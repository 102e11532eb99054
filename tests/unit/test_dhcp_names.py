"""Lease names as events from the DHCP service (DhcpService.subscribe_names),
with a fake clock and the server driven without sockets: granted (before the
ACK is sent), renamed, released, declined, expired at the lease's end, and
replayed to a late subscriber and after a restart."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from homegw.config import parse_config
from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.server import DhcpServer
from homegw.modules.dhcp.service import DhcpService

T0 = 1_700_000_000.0
LEASE = 60
MAC, MAC2, NAS_MAC = "02:48:47:00:00:01", "02:48:47:00:00:02", "02:48:47:00:00:09"
NAS = {"mac": NAS_MAC, "address": "192.168.1.50", "hostname": "nas"}
FIRST = IPv4Address("192.168.1.100")
SERVER_ID = IPv4Address("192.168.1.1").packed


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A DhcpService whose server runs in the test's thread; what it would
    send and what name listeners hear go to one ordered log."""

    def __init__(self, tmp_path: Path, clock: Clock) -> None:
        config = parse_config(
            {
                "wan": {"interface": "wan0"},
                "lan": {"interface": "lan0"},
                "state_dir": str(tmp_path),
                "dhcp": {
                    "lease_time": f"{LEASE}s",
                    "reservations": [
                        {"mac": NAS_MAC, "address": "192.168.1.50", "hostname": "nas"}
                    ],
                },
            }
        )
        self.clock = clock
        self.service = DhcpService(config, probe_timeout=0, clock=clock)
        self.log: list[tuple] = []
        self.server: DhcpServer = self.service.load()
        self.server._send = self._sent  # type: ignore[method-assign]  # no sockets here
        self._xid = 0

    def _sent(self, outcome, msg: p.DhcpMessage) -> None:
        self.log.append(("sent", p.TYPE_NAMES[outcome.kind]))

    def listen(self) -> None:
        def heard(mac: str, name: str | None, address: IPv4Address | None) -> None:
            self.log.append((mac, name, address, dict(self.server.counters.values)))

        self.service.subscribe_names(heard)

    def names(self) -> list[tuple]:
        """What listeners heard, without the counters."""
        return [entry[:3] for entry in self.log if entry[0] != "sent"]

    def send(self, kind: int, mac: str, ciaddr: int = 0, **options: bytes) -> None:
        """One message from `mac`; options as o<code>=value."""
        self._xid += 1
        opts = {p.OPT_MESSAGE_TYPE: bytes((kind,))}
        opts.update({int(k[1:]): v for k, v in options.items()})
        chaddr = bytes.fromhex(mac.replace(":", ""))
        msg = p.DhcpMessage(p.BOOTREQUEST, self._xid, chaddr, opts, ciaddr=ciaddr)
        self.server.handle_datagram(p.encode(msg), ("0.0.0.0", 68))

    def request(self, mac: str, address: IPv4Address = FIRST, **options: bytes) -> None:
        """A SELECTING REQUEST (after an OFFER) for `address`."""
        self.send(p.REQUEST, mac, o54=SERVER_ID, o50=address.packed, **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def h(tmp_path: Path, clock: Clock) -> Harness:
    harness = Harness(tmp_path, clock)
    harness.listen()
    return harness


def test_a_granted_name_is_told_before_the_ack_leaves(h: Harness) -> None:
    h.send(p.DISCOVER, MAC)
    h.request(MAC, o12=b"laptop")
    assert h.log == [
        ("sent", "DHCPOFFER"),
        (MAC, "laptop", FIRST, {"received": 2, "offers": 1}),  # the ACK not counted yet
        ("sent", "DHCPACK"),
    ]


def test_renewals_tell_only_a_new_name(h: Harness, clock: Clock) -> None:
    h.request(MAC, o12=b"laptop")
    clock.now += 10
    h.request(MAC, o12=b"laptop")  # same name: nothing to tell
    h.request(MAC)  # no name sent: the lease keeps its name
    h.request(MAC, o12=b"Work Laptop")  # sanitised by the server
    assert h.names() == [(MAC, "laptop", FIRST), (MAC, "work-laptop", FIRST)]


def test_release_and_decline_take_the_name_away(h: Harness) -> None:
    h.request(MAC, o12=b"laptop")
    h.send(p.RELEASE, MAC, int(FIRST), o54=SERVER_ID)
    assert h.log[-1] == (MAC, None, None, {"received": 2, "acks": 1})  # before it is counted
    h.request(MAC, o12=b"laptop")
    h.send(p.DECLINE, MAC, o54=SERVER_ID, o50=FIRST.packed)
    assert h.names() == [
        (MAC, "laptop", FIRST),
        (MAC, None, None),
        (MAC, "laptop", FIRST),
        (MAC, None, None),
    ]


def test_expiry_is_told_by_the_lease_tables_own_timer(h: Harness, clock: Clock) -> None:
    h.request(MAC, o12=b"laptop")
    h.server._run_timers(T0 + LEASE - 4)
    assert h.server._next_deadline() == T0 + LEASE  # the timer is set to the lease's end
    h.server._run_timers(T0 + LEASE - 0.001)
    assert h.names() == [(MAC, "laptop", FIRST)]
    h.server._run_timers(T0 + LEASE)
    assert h.names() == [(MAC, "laptop", FIRST), (MAC, None, None)]
    assert h.server.counters.values["expired"] == 1


def test_a_name_follows_its_device_to_a_new_address(h: Harness) -> None:
    h.request(MAC, o12=b"laptop")
    h.request(MAC, IPv4Address("192.168.1.101"), o12=b"laptop")
    h.send(p.RELEASE, MAC, int(FIRST), o54=SERVER_ID)  # for ciaddr .100, no longer its lease
    second = IPv4Address("192.168.1.101")
    assert h.names() == [(MAC, "laptop", FIRST), (MAC, "laptop", second)]


def test_late_subscribers_and_restarts_get_the_current_names(tmp_path: Path, clock: Clock) -> None:
    first = Harness(tmp_path, clock)
    first.request(MAC, o12=b"laptop")
    first.request(MAC2, IPv4Address("192.168.1.101"))  # no name: nothing to tell
    first.request(NAS_MAC, IPv4Address("192.168.1.50"), o12=b"whatever")
    first.listen()
    expected = [(MAC, "laptop", FIRST), (NAS_MAC, "nas", IPv4Address("192.168.1.50"))]
    assert first.names() == expected  # the reservation's name wins over the client's
    first.service.stop()
    clock.now += 1
    again = Harness(tmp_path, clock)
    again.listen()
    assert sorted(again.names()) == sorted(expected)


def test_a_failing_listener_costs_no_lease(h: Harness) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("dns is gone")

    h.service.subscribe_names(broken)
    h.request(MAC, o12=b"laptop")
    assert h.log[-1] == ("sent", "DHCPACK")
    assert h.server.counters.values["errors"] == 0
