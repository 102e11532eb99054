"""The device inventory: one row per MAC merged from leases, reservations,
the device table, neighbours and the devices config; vendors from the OUI
registry (random MACs have none); hostile hostnames never break it; and the
devices config section (key paths of its errors, device_set's edits)."""

from __future__ import annotations

import json

import pytest

from homegw.config import ConfigError, parse_config
from homegw.control import ConfigRejected
from homegw.dataplane.devices import DeviceTraffic
from homegw.inventory import (
    Inventory,
    LeaseInfo,
    ReservationInfo,
    Sources,
    device_rows,
    edited_devices,
    random_mac,
    vendor,
)
from homegw.traffichistory import Bytes

GOOGLE = "00:1a:11:00:00:01"  # OUI 00:1A:11 is Google's in the IEEE registry
RANDOM = "da:a1:19:00:00:02"  # locally administered bit set: randomised
NOW, MONO = 1_780_000_000.0, 5000.0
BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0"}}


def traffic(last_seen: float, first_seen: float = 1000.0) -> DeviceTraffic:
    return DeviceTraffic(3, 300, 4, 4000, 1, first_seen, last_seen)


def test_vendor_from_the_oui_registry_and_random_macs() -> None:
    assert vendor(GOOGLE) == "Google, Inc."
    assert vendor("00:00:00:00:00:01") == "XEROX CORPORATION"
    assert (vendor(RANDOM), random_mac(RANDOM)) == (None, True)
    assert (random_mac(GOOGLE), vendor("01:00:5e:00:00:01")) == (False, None)  # group address


def test_one_row_per_mac_merged_from_every_source() -> None:
    sources = Sources(
        leases=[LeaseInfo(GOOGLE, "192.168.1.100", "pixel", NOW + 600, "Pixel 8")],
        reservations=[ReservationInfo(GOOGLE, "192.168.1.50", "reserved-name")],
        traffic={GOOGLE: traffic(MONO - 10), RANDOM: traffic(MONO - 400)},
        neighbours={"192.168.1.100": GOOGLE},
        names={RANDOM: "Anna's phone"},
        paused=frozenset({RANDOM}),
        today={GOOGLE: Bytes(10, 20)},
        ipv6={GOOGLE: ["2001:db8:100:1:aaaa::1", "fd12:3456:789a:1::64"]},
    )
    rows = device_rows(sources, NOW, MONO)
    assert [r["mac"] for r in rows] == [RANDOM, GOOGLE]  # by name: "Anna's phone" < "Pixel 8"
    phone, pixel = rows
    assert pixel == {
        "mac": GOOGLE,
        "name": "Pixel 8",  # as the device sent it; its DNS label is the hostname
        "user_name": None,
        "sent_name": "Pixel 8",
        "hostname": "pixel",
        "vendor": "Google, Inc.",
        "random_mac": False,
        "addresses": ["192.168.1.50", "192.168.1.100"],
        "ipv6": ["2001:db8:100:1:aaaa::1", "fd12:3456:789a:1::64"],  # newest first, as given
        "online": True,
        "first_seen": NOW - (MONO - 1000.0),
        "last_seen": NOW - 10,
        "paused": False,
        "reserved_address": "192.168.1.50",
        "lease_expires": NOW + 600,
        "today": {"from_bytes": 10, "to_bytes": 20},
        "total": {
            "from_bytes": 300,
            "to_bytes": 4000,
            "from_packets": 3,
            "to_packets": 4,
            "dropped": 1,
        },
    }
    assert (phone["name"], phone["user_name"], phone["hostname"]) == ("Anna's phone",) * 2 + (None,)
    assert (phone["online"], phone["paused"], phone["vendor"], phone["random_mac"]) == (
        False,  # last traffic 400 s ago, no neighbour entry
        True,
        None,
        True,
    )
    assert phone["today"] == {"from_bytes": 0, "to_bytes": 0}


def test_a_device_only_in_the_config_or_a_reservation_is_listed_offline() -> None:
    sources = Sources(
        reservations=[ReservationInfo("02:00:00:00:00:0c", "192.168.1.60", None)],
        names={"02:00:00:00:00:0d": "printer"},
    )
    rows = {r["mac"]: r for r in device_rows(sources, NOW, MONO)}
    assert set(rows) == {"02:00:00:00:00:0c", "02:00:00:00:00:0d"}
    assert not any(r["online"] or r["first_seen"] or r["last_seen"] for r in rows.values())
    assert rows["02:00:00:00:00:0c"]["name"] is None


@pytest.mark.parametrize(
    "hostname",
    [
        "h" * 255,
        b"\xff\xfe\x00caf\xe9",  # not UTF-8, a NUL
        "a\x00b\x1b[31mred\r\n",  # control characters
        "<script>alert(1)</script>",
        "\u202eevil\u202c",  # bidi override
        "",
    ],
)
def test_hostile_hostnames_never_break_the_inventory(hostname: str | bytes) -> None:
    sources = Sources(
        leases=[LeaseInfo(GOOGLE, "192.168.1.100", hostname, NOW + 60)],
        traffic={GOOGLE: traffic(MONO - 1)},
    )
    [row] = device_rows(sources, NOW, MONO)
    json.dumps(row)  # the API serialises it
    if isinstance(hostname, str):
        assert row["hostname"] == (hostname or None)  # kept as given: the UI escapes
    else:
        assert row["hostname"] == hostname.decode("utf-8", errors="replace")


def test_many_devices_sort_with_unnamed_last() -> None:
    macs = [f"02:00:00:00:01:{i:02x}" for i in range(250)]
    sources = Sources(
        traffic={m: traffic(MONO) for m in macs},
        names={macs[5]: "zebra", macs[9]: "Alpha"},
    )
    rows = device_rows(sources, NOW, MONO)
    assert [r["name"] for r in rows[:2]] == ["Alpha", "zebra"]
    assert [r["mac"] for r in rows[2:]] == sorted(set(macs) - {macs[5], macs[9]})


# -- the devices config section and device_set's edits -------------------------


def problems(devices: list) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, "devices": devices})
    return error.value.lines()


def test_devices_config_errors_name_their_key_path() -> None:
    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    assert problems([{"mac": a}, {"mac": b, "paused": True}, {"mac": "02-00-00-00-00-0A"}]) == [
        "devices.2.mac: duplicate mac 02:00:00:00:00:0a"
    ]
    assert problems([{"mac": a, "name": "x" * 65}]) == [
        "devices.0.name: 65 characters: a device name has 1 to 64"
    ]
    [control] = problems([{"mac": b}, {"mac": a, "name": "tv\x1b[2J"}])
    assert control.startswith("devices.1.name: ") and "control" in control
    assert problems([{"mac": a, "paused": "yes"}])[0].startswith("devices.0.paused: ")
    assert problems([{"mac": "not-a-mac"}])[0].startswith("devices.0.mac: ")
    assert problems([{"mac": a, "colour": "red"}])[0].startswith("devices.0.colour: ")


def test_devices_config_keeps_names_as_given() -> None:
    config = parse_config({**BASE, "devices": [{"mac": "02:00:00:00:00:0A", "name": "<Ö> 📺"}]})
    assert (config.devices[0].mac, config.devices[0].name, config.devices[0].paused) == (
        "02:00:00:00:00:0a",
        "<Ö> 📺",
        False,
    )


def test_device_set_edits_makes_and_removes_entries() -> None:
    a = "02:00:00:00:00:0a"
    made = edited_devices([], "02:00:00:00:00:0A", {"paused": True})
    assert made == [{"mac": a, "paused": True}]
    named = edited_devices(made, a, {"name": "tv"})
    assert named == [{"mac": a, "paused": True, "name": "tv"}]
    unpaused = edited_devices(named, a, {"paused": False})
    assert unpaused == [{"mac": a, "paused": False, "name": "tv"}]
    assert edited_devices(unpaused, a, {"name": None}) == []  # neither a name nor paused
    kept_for_the_config = edited_devices([], a, {"paused": "yes"})
    assert kept_for_the_config == [{"mac": a, "paused": "yes"}]
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, "devices": [{"mac": "02:00:00:00:00:0b"}, *kept_for_the_config]})
    assert error.value.lines()[0].startswith("devices.1.paused: ")


def test_device_set_cannot_change_the_mac() -> None:
    with pytest.raises(ConfigRejected) as error:
        Inventory(None).config_with(
            {"devices": []}, "02:00:00:00:00:0a", {"mac": "02:00:00:00:00:0b"}
        )
    assert [p.loc for p in error.value.problems] == ["devices.mac"]


def test_a_device_seen_only_over_ipv6_has_a_row_and_ipv4_rows_an_empty_list() -> None:
    v6_only = "02:00:00:00:00:66"
    sources = Sources(
        leases=[LeaseInfo(GOOGLE, "192.168.1.100", "pixel", NOW + 600)],
        ipv6={v6_only: ["2001:db8:100:1::66"]},
    )
    rows = {r["mac"]: r for r in device_rows(sources, NOW, MONO)}
    assert (rows[v6_only]["ipv6"], rows[v6_only]["addresses"]) == (["2001:db8:100:1::66"], [])
    assert rows[GOOGLE]["ipv6"] == []


def test_the_inventory_reads_ipv6_from_the_appliances_lan6_view(tmp_path) -> None:
    import ipaddress
    from types import SimpleNamespace

    from homegw.lan6 import Lan6Table

    table = Lan6Table()
    table.neighbour(ipaddress.IPv6Address("fd12:3456:789a:1::64"), GOOGLE, 0x04, 1.0)
    table.neighbour(ipaddress.IPv6Address("2001:db8:100:1:aaaa::1"), GOOGLE, 0x02, 2.0)
    table.neighbour(ipaddress.IPv6Address("fe80::64"), GOOGLE, 0x02, 3.0)
    config = parse_config({**BASE, "state_dir": str(tmp_path)})
    appliance = SimpleNamespace(config=config, dataplane=None, dhcp=None, lan6=None)
    inventory = Inventory(appliance)
    assert inventory.devices() == []
    appliance.lan6 = SimpleNamespace(table=table)
    (row,) = inventory.devices()
    assert (row["mac"], row["ipv6"]) == (GOOGLE, ["2001:db8:100:1:aaaa::1", "fd12:3456:789a:1::64"])
