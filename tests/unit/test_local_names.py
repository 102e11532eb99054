"""The local zone (dns.localnames.LocalNames) fed one device at a time, as the
DHCP server does: hostile names never corrupt it (invalid, overlong, the
gateway's or a reservation's name, discovery names, another device's name),
reservations resolve without a lease, and renames, releases and take-overs
show in A and PTR answers at once."""

from __future__ import annotations

import ipaddress

import pytest
from dnslib import DNSRecord

from homegw.modules.dns import wire
from homegw.modules.dns.localnames import LocalNames

LAN = ipaddress.IPv4Interface("192.168.1.1/24")
A, B, C = "02:48:47:00:00:01", "02:48:47:00:00:02", "02:48:47:00:00:03"


@pytest.fixture
def zone() -> LocalNames:
    local = LocalNames("lan", "homegw", LAN)
    local.set_reservations({"printer": "192.168.1.20"})
    return local


def ask(zone: LocalNames, name: str, qtype: str = "A") -> tuple[str, tuple[str, ...]]:
    """(rcode, answer section) of the zone's reply to one query."""
    template = zone.answer(wire.parse_query(DNSRecord.question(name, qtype).pack()))
    assert template is not None, f"{name} would go upstream"
    return {0: "NOERROR", 3: "NXDOMAIN"}[template.rcode], template.answer_text


def a(zone: LocalNames, name: str) -> str | None:
    rcode, answers = ask(zone, name)
    assert rcode in ("NOERROR", "NXDOMAIN")
    return answers[0].split()[-1] if answers else None


def ptr(zone: LocalNames, address: str) -> str | None:
    name = ipaddress.IPv4Address(address).reverse_pointer
    _, answers = ask(zone, name, "PTR")
    return answers[0].split()[-1] if answers else None


BASE = {"homegw.lan": "192.168.1.1", "printer.lan": "192.168.1.20"}


def test_a_device_name_resolves_follows_renames_and_goes(zone: LocalNames) -> None:
    zone.set_device(A, "Laptop", "192.168.1.100")
    assert a(zone, "laptop.lan") == a(zone, "LAPTOP") == "192.168.1.100"
    assert ptr(zone, "192.168.1.100") == "laptop.lan."
    zone.set_device(A, "work.lan", "192.168.1.100")  # an FQDN in our domain: its label
    assert ask(zone, "laptop.lan") == ("NXDOMAIN", ())
    assert a(zone, "work.lan") == "192.168.1.100" and ptr(zone, "192.168.1.100") == "work.lan."
    zone.set_device(A, "work", "192.168.1.101")  # same name, new address
    assert a(zone, "work.lan") == "192.168.1.101" and ptr(zone, "192.168.1.100") is None
    zone.set_device(A, None, None)
    assert ask(zone, "work.lan") == ("NXDOMAIN", ())
    assert ptr(zone, "192.168.1.101") is None
    assert zone.hosts() == BASE


def test_reservations_resolve_without_a_lease(zone: LocalNames) -> None:
    assert a(zone, "printer.lan") == "192.168.1.20" and ptr(zone, "192.168.1.20") == "printer.lan."
    zone.set_device(C, "printer", "192.168.1.20")  # the reserved device's own lease
    zone.set_device(C, None, None)
    assert a(zone, "printer.lan") == "192.168.1.20"
    assert zone.stats()["refused"] == {}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad name", "invalid"),
        ("a.b", "invalid"),  # two labels outside our domain
        ("-x", "invalid"),
        ("x-", "invalid"),
        ("", "invalid"),
        ("laptop\n", "invalid"),
        ("lap\x00top", "invalid"),
        ("évier", "invalid"),
        ("\u212aitchen", "invalid"),  # KELVIN SIGN lower-cases to an ASCII "k"
        ("x" * 64, "invalid"),  # over 63 characters
        ("homegw", "gateway_name"),
        ("HomeGW.lan.", "gateway_name"),
        ("wpad", "discovery_name"),
        ("isatap", "discovery_name"),
        ("localhost", "discovery_name"),
        ("printer", "reserved_name"),  # at another address than the reservation's
    ],
)
def test_hostile_names_are_refused_and_counted(zone: LocalNames, name: str, reason: str) -> None:
    zone.set_device(A, "laptop", "192.168.1.100")
    zone.set_device(A, name, "192.168.1.100")  # renamed to something unusable: no name
    assert zone.hosts() == BASE
    assert a(zone, "homegw.lan") == "192.168.1.1" and a(zone, "printer") == "192.168.1.20"
    assert ptr(zone, "192.168.1.100") is None
    assert zone.stats()["refused"] == {reason: 1}


def test_a_name_too_long_with_the_domain_is_refused() -> None:
    domain = ".".join(["d" * 63] * 3)  # 191 characters
    zone = LocalNames(domain, "homegw", LAN)
    zone.set_device(A, "x" * 61, "192.168.1.100")  # 61 + 1 + 191 = 253: fits
    zone.set_device(B, "y" * 62, "192.168.1.101")  # 254: does not
    assert zone.hosts() == {
        f"homegw.{domain}": "192.168.1.1",
        f"{'x' * 61}.{domain}": "192.168.1.100",
    }
    assert zone.stats()["refused"] == {"invalid": 1}


def test_an_address_that_is_not_ipv4_is_refused(zone: LocalNames) -> None:
    zone.set_device(A, "laptop", "not an address")
    zone.set_device(B, "tablet", "fe80::1")
    assert zone.hosts() == BASE


def test_the_first_device_keeps_a_name_and_the_next_takes_it_over(zone: LocalNames) -> None:
    zone.set_device(A, "laptop", "192.168.1.100")
    zone.set_device(B, "laptop", "192.168.1.101")  # a second device claims it: waits
    zone.set_device(C, "laptop", "192.168.1.102")
    zone.set_device(A, "laptop", "192.168.1.100")  # A renews: keeps it
    assert a(zone, "laptop.lan") == "192.168.1.100" and ptr(zone, "192.168.1.101") is None
    zone.set_device(A, None, None)  # A's lease ends: the oldest waiting claim wins
    assert a(zone, "laptop.lan") == "192.168.1.101"
    assert ptr(zone, "192.168.1.101") == "laptop.lan." and ptr(zone, "192.168.1.100") is None
    zone.set_device(B, "other", "192.168.1.101")
    assert a(zone, "laptop.lan") == "192.168.1.102" and a(zone, "other.lan") == "192.168.1.101"
    assert zone.stats()["refused"] == {"taken": 2}


def test_set_hosts_replaces_all_lease_names(zone: LocalNames) -> None:
    zone.set_device(A, "laptop", "192.168.1.100")
    zone.set_hosts({"tv": "192.168.1.30", "Phone.lan": "192.168.1.31", "bad name": "1.2.3.4"})
    assert zone.hosts() == {**BASE, "phone.lan": "192.168.1.31", "tv.lan": "192.168.1.30"}


def test_a_reservation_added_later_wins_over_a_lease(zone: LocalNames) -> None:
    zone.set_device(A, "nas", "192.168.1.100")
    zone.set_reservations({"nas": "192.168.1.5"})
    assert a(zone, "nas.lan") == "192.168.1.5" and ptr(zone, "192.168.1.100") is None
    zone.set_device(A, None, None)  # the old claim is gone, the reservation stays
    assert a(zone, "nas.lan") == "192.168.1.5"


def test_the_zone_answers_single_labels_and_never_sends_local_names_upstream(
    zone: LocalNames,
) -> None:
    zone.set_device(A, "laptop", "192.168.1.100")
    assert ask(zone, "laptop", "AAAA") == ("NOERROR", ())
    assert ask(zone, "ghost") == ("NXDOMAIN", ())
    assert zone.answer(wire.parse_query(DNSRecord.question("laptop.example").pack())) is None


def aaaa(zone: LocalNames, name: str) -> list[str]:
    rcode, answers = ask(zone, name, "AAAA")
    assert rcode == "NOERROR"
    return [answer.split()[-1] for answer in answers]


def test_aaaa_of_the_gateway_and_devices_from_the_ipv6_view(zone: LocalNames) -> None:
    from homegw.lan6 import Lan6Table

    table = Lan6Table()
    table.address(ipaddress.IPv6Address("fd12:3456:789a:1::1"), 64, 0, True)
    table.address(ipaddress.IPv6Address("2001:db8:100:1::1"), 64, 0, True)
    table.address(ipaddress.IPv6Address("fe80::1"), 64, 0, True)
    table.neighbour(ipaddress.IPv6Address("fd12:3456:789a:1::a"), A, 0x02, 1.0)
    table.neighbour(ipaddress.IPv6Address("fe80::a"), A, 0x02, 1.0)
    assert ask(zone, "laptop.lan", "AAAA")[0] == "NXDOMAIN"  # no such name yet
    zone.set_device(A.upper(), "laptop", "192.168.1.50")
    assert aaaa(zone, "laptop.lan") == []  # no IPv6 view yet: no AAAA, the name exists
    zone.set_ipv6(table)
    assert aaaa(zone, "laptop.lan") == ["fd12:3456:789a:1::a"]
    assert aaaa(zone, "homegw.lan") == ["fd12:3456:789a:1::1", "2001:db8:100:1::1"]
    assert a(zone, "laptop") == "192.168.1.50"  # A unchanged
    _, both = ask(zone, "laptop.lan", "ANY")
    assert both == ("A 192.168.1.50", "AAAA fd12:3456:789a:1::a")
    zone.set_reservations({"printer": "192.168.1.20"}, {"printer": B})
    table.neighbour(ipaddress.IPv6Address("2001:db8:100:1::20"), B, 0x04, 2.0)
    assert aaaa(zone, "printer.lan") == ["2001:db8:100:1::20"]
    zone.set_device(A, None, None)
    assert ask(zone, "laptop.lan", "AAAA")[0] == "NXDOMAIN"


def test_ptr_of_ipv6_lan_addresses(zone: LocalNames) -> None:
    from homegw.lan6 import Lan6Table

    def ptr6(address: str) -> tuple[str, tuple[str, ...]]:
        return ask(zone, ipaddress.IPv6Address(address).reverse_pointer, "PTR")

    table = Lan6Table()
    table.address(ipaddress.IPv6Address("fd12:3456:789a:1::1"), 64, 0, True)
    table.neighbour(ipaddress.IPv6Address("fd12:3456:789a:1::a"), A, 0x02, 1.0)
    table.neighbour(ipaddress.IPv6Address("2001:db8:100:1:aaaa::a"), A, 0x02, 1.0)
    zone.set_device(A, "laptop", "192.168.1.50")
    assert ptr6("fd12:3456:789a:1::a") == ("NXDOMAIN", ())  # no IPv6 view: private, unknown
    zone.set_ipv6(table)
    assert ptr6("fd12:3456:789a:1::a") == ("NOERROR", ("PTR laptop.lan.",))
    assert ptr6("2001:db8:100:1:aaaa::a") == ("NOERROR", ("PTR laptop.lan.",))
    assert ptr6("fd12:3456:789a:1::1") == ("NOERROR", ("PTR homegw.lan.",))
    assert ptr6("fd12:3456:789a:1::b") == ("NXDOMAIN", ())  # ULA nobody holds
    assert (
        zone.answer(
            wire.parse_query(
                DNSRecord.question(
                    ipaddress.IPv6Address("2001:db8:100:1::b").reverse_pointer, "PTR"
                ).pack()
            )
        )
        is None
    )
