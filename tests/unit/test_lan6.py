"""The LAN's IPv6 view (homegw.lan6.Lan6Table) fed kernel-like events: the
gateway's own addresses (tentative and deprecated ones left out), devices'
addresses by MAC newest first and bounded, the addresses a local name
answers with (EUI-64 first, one per preferred prefix, never link-local)."""

from __future__ import annotations

import ipaddress

from homegw.lan6 import (
    IFA_F_DEPRECATED,
    IFA_F_TENTATIVE,
    MAX_DEVICES,
    MAX_PER_DEVICE,
    Lan6Table,
    eui64,
)

IP = ipaddress.IPv6Address
MAC = "02:48:47:00:00:0b"
ULA = ipaddress.IPv6Network("fd12:3456:789a:1::/64")
GLOBAL = ipaddress.IPv6Network("2001:db8:100:1::/64")
REACHABLE, STALE, FAILED = 0x02, 0x04, 0x20


def table_with_prefixes() -> Lan6Table:
    table = Lan6Table()
    for net in (GLOBAL, ULA):
        assert table.address(net.network_address + 1, 64, 0x80, True)
    return table


def test_eui64_of_a_mac() -> None:
    assert eui64("52:54:00:12:34:56", ULA) == IP("fd12:3456:789a:1:5054:ff:fe12:3456")


def test_own_addresses_preferred_only_ula_first() -> None:
    table = table_with_prefixes()
    assert table.own_addresses() == [IP("fd12:3456:789a:1::1"), IP("2001:db8:100:1::1")]
    assert not table.address(IP("fe80::1"), 64, 0, True)  # link-local: never
    assert table.address(IP("2001:db8:200:1::1"), 64, IFA_F_TENTATIVE, True) is False
    assert table.address(IP("2001:db8:100:1::1"), 64, IFA_F_DEPRECATED, True)  # renumbered
    assert table.own_addresses() == [IP("fd12:3456:789a:1::1")]
    assert table.address(IP("fd12:3456:789a:1::1"), 64, 0, False)  # removed
    assert table.own_addresses() == []


def test_device_addresses_newest_first_link_local_left_out() -> None:
    table = Lan6Table()
    table.neighbour(IP("fe80::1"), MAC, REACHABLE, 1.0)
    table.neighbour(IP("2001:db8:100:1::a"), MAC, REACHABLE, 2.0)
    table.neighbour(IP("fd12:3456:789a:1::a"), MAC.upper(), STALE, 3.0)
    table.neighbour(IP("2001:db8:100:1::a"), MAC, REACHABLE, 4.0)  # used again
    assert table.device_addresses(MAC) == [IP("2001:db8:100:1::a"), IP("fd12:3456:789a:1::a")]


def test_device_addresses_bounded_per_device_and_in_devices() -> None:
    table = Lan6Table()
    for i in range(MAX_PER_DEVICE + 5):
        table.neighbour(IP(f"2001:db8:100:1::{i + 1:x}"), MAC, STALE, float(i))
    kept = table.device_addresses(MAC)
    assert len(kept) == MAX_PER_DEVICE and kept[0] == IP(f"2001:db8:100:1::{MAX_PER_DEVICE + 5:x}")
    for i in range(MAX_DEVICES + 3):
        mac = f"02:00:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
        table.neighbour(IP("2001:db8:100:1::ffff"), mac, STALE, 100.0 + i)
    assert len(table.all_devices()) == MAX_DEVICES
    assert table.device_addresses(MAC) == []  # the stalest device went first


def test_name_addresses_eui64_preferred_one_per_prefix() -> None:
    table = table_with_prefixes()
    stable = eui64(MAC, GLOBAL)
    table.neighbour(stable, MAC, STALE, 1.0)
    table.neighbour(IP("2001:db8:100:1:aaaa::1"), MAC, REACHABLE, 2.0)  # a privacy address
    table.neighbour(IP("fd12:3456:789a:1::b1"), MAC, REACHABLE, 3.0)
    table.neighbour(IP("fd12:3456:789a:1::b2"), MAC, REACHABLE, 4.0)
    table.neighbour(IP("fe80::b"), MAC, REACHABLE, 5.0)
    assert table.name_addresses(MAC) == [IP("fd12:3456:789a:1::b2"), stable]


def test_name_addresses_drop_failed_moved_and_deprecated() -> None:
    table = table_with_prefixes()
    table.neighbour(IP("fd12:3456:789a:1::b1"), MAC, REACHABLE, 1.0)
    table.neighbour(IP("2001:db8:100:1::b1"), MAC, REACHABLE, 1.0)
    assert table.neighbour(IP("fd12:3456:789a:1::b1"), None, 0, 2.0)  # entry deleted
    assert table.name_addresses(MAC) == [IP("2001:db8:100:1::b1")]
    table.neighbour(IP("2001:db8:100:1::b1"), "02:00:00:00:00:99", REACHABLE, 3.0)  # moved
    assert table.name_addresses(MAC) == []
    assert table.name_addresses("02:00:00:00:00:99") == [IP("2001:db8:100:1::b1")]
    table.address(IP("2001:db8:100:1::1"), 64, IFA_F_DEPRECATED, True)  # old prefix
    assert table.name_addresses("02:00:00:00:00:99") == []
    table.neighbour(IP("fd12:3456:789a:1::c"), MAC, FAILED, 4.0)
    assert table.name_addresses(MAC) == []
    # still listed for the device, though no name answers with them
    assert IP("fd12:3456:789a:1::b1") in table.device_addresses(MAC)


def test_mac_of_an_address_follows_moves_and_deletions() -> None:
    table = Lan6Table()
    address = IP("2001:db8:100:1::b1")
    assert table.mac_of(address) is None
    table.neighbour(address, MAC, REACHABLE, 1.0)
    assert table.mac_of(address) == MAC
    table.neighbour(address, "02:00:00:00:00:99", STALE, 2.0)
    assert table.mac_of(address) == "02:00:00:00:00:99"
    table.neighbour(address, "02:00:00:00:00:99", FAILED, 3.0)
    assert table.mac_of(address) is None
    table.neighbour(address, MAC, REACHABLE, 4.0)
    table.neighbour(address, None, 0, 5.0)
    assert table.mac_of(address) is None


def test_the_dns_service_aliases_an_ipv6_client_to_its_ipv4_by_mac(tmp_path) -> None:
    from homegw.config import parse_config
    from homegw.modules.dns.service import DnsService

    config = parse_config(
        {
            "wan": {"interface": "wan0"},
            "lan": {"interface": "lan0"},
            "state_dir": str(tmp_path),
            "dhcp": {"reservations": [{"mac": "02:00:00:00:00:99", "address": "192.168.1.20"}]},
        }
    )
    service = DnsService(config, lambda: [])
    table = Lan6Table()
    service.set_ipv6(table)
    alias = service.resolver.client_alias
    assert alias is not None
    table.neighbour(IP("2001:db8:100:1::b1"), MAC, REACHABLE, 1.0)
    table.neighbour(IP("2001:db8:100:1::99"), "02:00:00:00:00:99", REACHABLE, 1.0)
    assert alias("2001:db8:100:1::b1") is None  # no lease known yet
    service.lease_name_changed(MAC, "laptop", "192.168.1.50")
    assert alias("2001:db8:100:1::b1") == "192.168.1.50"
    assert alias("2001:db8:100:1::99") == "192.168.1.20"  # the reservation's
    assert alias("fe80::1%lan0") is None and alias("not an address") is None
