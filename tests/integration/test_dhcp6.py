"""DHCPv6 against real peers in a virtual home with IPv6 (`VirtualHome(ipv6=True)`).

WAN: `WanDhcp6Client` (its thread in the gateway namespace, `netns=`) against
Kea's kea-dhcp6 at the ISP: an address and a /56, a renewal that Kea's lease
file records, a renumbering to the second PD pool, a restart that REBINDs the
persisted lease, a RELEASE. LAN: `LanDhcp6Server` on the gateway's lan0
answering ISC dhclient on a LAN host, stateless (DNS option) and stateful (an
address). Tests wait on state (the client's lease, files, processes), never
on fixed sleeps. Needs root, iproute2, kea-dhcp6-server, radvd, dhclient.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from homegw.modules.ipv6.dhcp6.client import Lease6
from homegw.modules.ipv6.dhcp6.wanclient import WanDhcp6Client, lease_path
from homegw.virtualhome import VirtualHome
from homegw.virtualhome6 import DNS6_SERVER, KEA, NA_POOL, PD_POOL, PD_POOL_RENUMBERED

LEASE_WAIT = 30.0

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(KEA), reason="needs kea-dhcp6-server"),
    pytest.mark.skipif(shutil.which("radvd") is None, reason="needs radvd"),
]


@contextmanager
def wan_client(
    home: VirtualHome, state_dir: Path | None = None
) -> Iterator[tuple[WanDhcp6Client, list[Lease6 | None]]]:
    calls: list[Lease6 | None] = []  # every on_lease call, in order
    client = WanDhcp6Client("wan0", calls.append, state_dir or home.state_dir, netns=home.ns("gw"))
    client.start()
    try:
        yield client, calls
    finally:
        client.stop()


def got(client: WanDhcp6Client, predicate: Callable[[Lease6], bool] = lambda lease: True) -> Lease6:
    lease = client.wait_for(lambda lease: lease is not None and predicate(lease), LEASE_WAIT)
    assert lease is not None and predicate(lease), f"no such lease; last {lease}, {client.stats()}"
    return lease


def in_pool(address: IPv6Address) -> bool:
    return IPv6Address(NA_POOL[0]) <= address <= IPv6Address(NA_POOL[1])


def test_address_and_prefix_from_kea_renewed_then_released(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1, ipv6=True)
    with wan_client(home) as (client, calls):
        lease = got(client)
        (address,) = lease.addresses
        (prefix,) = lease.prefixes
        assert in_pool(address.address)
        assert prefix.prefix.prefixlen == 56 and prefix.prefix.subnet_of(IPv6Network(PD_POOL))
        assert lease.dns == (IPv6Address(DNS6_SERVER),)
        assert prefix.valid_until - lease.obtained_at == 40
        first_expiry = home.isp6.lease_expiry(prefix.prefix)
        assert first_expiry == pytest.approx(prefix.valid_until, abs=2)

        renewed = got(client, lambda new: new.obtained_at > lease.obtained_at)  # T1 is 10 s
        assert [p.prefix for p in renewed.prefixes] == [prefix.prefix]
        assert client.stats()["sent_renew"] >= 1 and "sent_rebind" not in client.stats()
        assert home.isp6.lease_expiry(prefix.prefix) > first_expiry  # Kea wrote the renewal
        assert lease_path(home.state_dir, "wan0").exists()

        client.stop(release=True)
        assert calls[-1] is None and client.lease is None
        assert not lease_path(home.state_dir, "wan0").exists()
        log = home.isp6.kea_log.read_text()
        assert f"prefix {prefix.prefix} for iaid=" in log and "was released properly" in log
        assert f"binding for address {address.address} and iaid=" in log


def test_renumbering_moves_to_the_new_pool(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1, ipv6=True)
    with wan_client(home) as (client, calls):
        old = got(client).prefixes[0].prefix
        home.isp6.renumber()
        client.renew()
        new = got(
            client,
            lambda lease: any(
                p.prefix.subnet_of(IPv6Network(PD_POOL_RENUMBERED)) for p in lease.prefixes
            ),
        )
        assert [p.prefix for p in new.prefixes] == [new.prefixes[0].prefix]  # the old one is gone
        assert all(p.prefix != old for p in new.prefixes)
        assert any(
            lease is not None and old in [p.prefix for p in lease.prefixes] for lease in calls
        )


def test_restart_rebinds_the_persisted_lease(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1, ipv6=True)
    with wan_client(home) as (client, _):
        first = got(client)
    assert lease_path(home.state_dir, "wan0").exists()  # kept: no release on a plain stop
    with wan_client(home) as (client, calls):
        got(client)
        assert calls[0] == first  # the persisted lease, before any exchange
        again = got(client, lambda lease: lease.obtained_at > first.obtained_at)
        assert [p.prefix for p in again.prefixes] == [p.prefix for p in first.prefixes]
        stats = client.stats()
        assert stats["sent_rebind"] == 1 and "sent_solicit" not in stats
