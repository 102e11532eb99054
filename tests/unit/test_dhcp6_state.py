"""What the DHCPv6 client and server keep in state_dir: the DUIDs, the WAN
lease (atomic JSON) and the LAN bindings (the leases6 table next to the IPv4
leases in the same SQLite file)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from homegw import netns, supervise
from homegw.modules.dhcp.leases import Lease, LeaseDb
from homegw.modules.dhcp.leases import State as State4
from homegw.modules.dhcp.service import DB_NAME
from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.client import IaPrefix, Lease6
from homegw.modules.ipv6.dhcp6.lanserver import LanDhcp6Server, LeaseStore6
from homegw.modules.ipv6.dhcp6.server import Binding, BindingTable, ServerOptions, State
from homegw.modules.ipv6.dhcp6.wanclient import (
    WanDhcp6Client,
    lease_path,
    load_duid,
    load_lease,
)

MAC = bytes.fromhex("020000000001")


def test_duid_made_once_and_kept(tmp_path: Path) -> None:
    first = load_duid(tmp_path, MAC)
    assert first == wire.duid_ll(MAC)
    assert load_duid(tmp_path, bytes.fromhex("02000000ffff")) == first  # a new NIC: same DUID
    assert load_duid(tmp_path, MAC, "dhcp6-server-duid") == first  # its own file
    assert (tmp_path / "dhcp6-duid").stat().st_mode & 0o777 == 0o600


def test_unreadable_duid_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "dhcp6-duid").write_text("00zz\n")
    assert load_duid(tmp_path, MAC) == wire.duid_ll(MAC)
    (tmp_path / "dhcp6-duid").write_text("0003\n")  # too short for a DUID
    assert load_duid(tmp_path, MAC) == wire.duid_ll(MAC)


def test_lease_file(tmp_path: Path) -> None:
    assert load_lease(tmp_path, "wan0") is None
    lease = Lease6(
        (), (IaPrefix(IPv6Network("2001:db8:100::/56"), 5.0, 9.0),), (), (), b"\x00\x01", 1.0
    )
    lease_path(tmp_path, "wan0").write_text(lease.to_json())
    assert load_lease(tmp_path, "wan0") == lease
    lease_path(tmp_path, "wan0").write_text('{"addresses": [')
    assert load_lease(tmp_path, "wan0") is None
    lease_path(tmp_path, "wan0").write_text('{"addresses": []}')
    assert load_lease(tmp_path, "wan0") is None


def test_bindings_survive_reopening_next_to_the_ipv4_leases(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    v4 = LeaseDb(path)
    v4.save(Lease(0xC0A8010B, "hw:x", "02:00:00:00:00:01", "pc", 10.0, State4.BOUND))
    store = LeaseStore6(path)
    table = BindingTable(on_change=store.save, on_delete=store.delete)
    kept = Binding(
        IPv6Address("fd00::1000"),
        "0003",
        1,
        "02:00:00:00:00:01",
        "pc",
        "fe80::1",
        50.0,
        State.BOUND,
    )
    gone = Binding(IPv6Address("fd00::1001"), "0003", 2, None, None, "fe80::1", 20.0, State.BOUND)
    table.bind(kept)
    table.bind(gone)
    table.reclaim(30.0)
    store.close()
    again = LeaseStore6(path)
    assert again.load() == [kept]
    assert [lease.address for lease in v4.load()] == [0xC0A8010B]  # untouched
    again.close()
    v4.close()


def test_runners_wait_for_a_missing_nic_and_stop_cleanly(tmp_path: Path) -> None:
    client = WanDhcp6Client("hgwnonic0", lambda lease: None, tmp_path)
    server = LanDhcp6Server("hgwnonic0", lambda: ServerOptions((), ()), tmp_path)
    client.start()
    server.start()
    try:
        assert netns.wait_for(lambda: client.stats().get("nic_missing", 0) >= 1, 5)
        assert netns.wait_for(lambda: server.stats().get("listen_errors", 0) >= 1, 5)
        assert not server.wait_ready(0.0)
    finally:
        client.stop(timeout=5)
        server.stop(timeout=5)
    assert client._thread is None and server._thread is None  # stopped, not crashed
    assert not supervise.failures["wan-dhcp6-hgwnonic0"]
    assert not supervise.failures["lan-dhcp6-hgwnonic0"]
