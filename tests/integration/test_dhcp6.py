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
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from homegw import netns
from homegw.modules.ipv6.dhcp6.client import Lease6
from homegw.modules.ipv6.dhcp6.lanserver import LanDhcp6Server
from homegw.modules.ipv6.dhcp6.server import ServerOptions
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


# ------------------------------------------------------------------ the LAN server

LAN_DNS = (IPv6Address("fd00:1::1"),)
LAN_POOL = (IPv6Address("fd00:1::1000"), IPv6Address("fd00:1::1fff"))
DHCLIENT = shutil.which("dhclient") or "/usr/sbin/dhclient"


def usable_link_local(home: VirtualHome, short: str, dev: str) -> bool:
    argv = ["-6", "-o", "addr", "show", "dev", dev, "scope", "link", "-tentative"]
    return bool(netns.ip(*argv, ns=home.ns(short)).strip())


@contextmanager
def lan_server(home: VirtualHome, options: ServerOptions) -> Iterator[LanDhcp6Server]:
    server = LanDhcp6Server("lan0", lambda: options, home.state_dir, netns=home.ns("gw"))
    server.start()
    try:
        assert server.wait_ready(10), server.stats()
        for short, dev in (("gw", "lan0"), ("h1", "eth0")):  # DAD over: sources usable
            assert netns.wait_for(lambda s=short, d=dev: usable_link_local(home, s, d), 10)
        yield server
    finally:
        server.stop()


def dhclient(home: VirtualHome, *flags: str, conf_lines: str = "") -> dict[str, str]:
    """Run ISC dhclient -6 on h1 until its script reports DHCPv6 options; the
    script's environment (dhclient's view of the server's answer)."""
    tmp = home.tmpdir
    assert tmp is not None
    conf = tmp / "dhclient6.conf"
    conf.write_text(
        'send fqdn.fqdn "Laptop_One.home.arpa.";\n'
        "request dhcp6.name-servers, dhcp6.domain-search;\n" + conf_lines
    )
    report = tmp / "dhclient6.env"
    script = tmp / "dhclient6.sh"
    script.write_text(  # only a report with the DNS option counts, written whole
        '#!/bin/sh\ncase "$new_dhcp6_name_servers" in ?*)\n'
        f"  env > {report}.tmp && mv {report}.tmp {report};;\nesac\n"
    )
    script.chmod(0o755)
    argv = [DHCLIENT, "-6", "-d", "-v", *flags, "-D", "LL", "-cf", str(conf)]
    argv += [
        "-lf",
        str(tmp / "dhclient6.leases"),
        "-pf",
        str(tmp / "dhclient6.pid"),
        "-sf",
        str(script),
        "eth0",
    ]
    with open(tmp / "dhclient6.out", "wb") as out:
        proc = home.popen("h1", argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not netns.wait_for(report.exists, LEASE_WAIT):
            pytest.fail("dhclient got no answer: " + (tmp / "dhclient6.out").read_text()[-2000:])
    finally:
        proc.terminate()
        proc.wait(10)
    return dict(line.split("=", 1) for line in report.read_text().splitlines() if "=" in line)


@pytest.mark.skipif(not os.path.exists(DHCLIENT), reason="needs ISC dhclient")
def test_stateless_answer_to_dhclient(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1)
    with lan_server(home, ServerOptions(LAN_DNS, ("home.arpa",))) as server:
        env = dhclient(home, "-S")
        assert env["new_dhcp6_name_servers"] == "fd00:1::1"
        assert env["new_dhcp6_domain_search"] == "home.arpa."
        assert env["new_dhcp6_info_refresh_time"] == "3600"
        assert "new_ip6_address" not in env and server.leases() == []
        assert server.stats()["rx_information_request"] >= 1


@pytest.mark.skipif(not os.path.exists(DHCLIENT), reason="needs ISC dhclient")
def test_rapid_commit_for_dhclient(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1)
    options = ServerOptions(LAN_DNS, ("home.arpa",), pools=(LAN_POOL,))
    with lan_server(home, options) as server:
        env = dhclient(home, conf_lines="send dhcp6.rapid-commit;\n")
        (lease,) = server.leases()
        assert lease["address"] == env["new_ip6_address"]
        stats = server.stats()
        assert stats["rx_solicit"] >= 1 and stats["tx_reply"] >= 1
        assert "tx_advertise" not in stats and "rx_request" not in stats  # two messages


@pytest.mark.skipif(not os.path.exists(DHCLIENT), reason="needs ISC dhclient")
def test_stateful_address_for_dhclient_kept_across_restart(make_virtual_home) -> None:
    home = make_virtual_home(n_hosts=1)
    options = ServerOptions(LAN_DNS, ("home.arpa",), pools=(LAN_POOL,))
    with lan_server(home, options) as server:
        env = dhclient(home)
        address = IPv6Address(env["new_ip6_address"])
        assert LAN_POOL[0] <= address <= LAN_POOL[1]
        assert env["new_dhcp6_name_servers"] == "fd00:1::1"
        (lease,) = server.leases()
        assert lease["address"] == str(address)
        assert lease["mac"] == home.host("h1").mac and lease["hostname"] == "laptop-one"
        stats = server.stats()
        assert stats["rx_solicit"] >= 1 and stats["rx_request"] >= 1
    with lan_server(home, options) as again:  # from the SQLite store
        assert [lease["address"] for lease in again.leases()] == [str(address)]


def test_isp_ipv6_services(make_virtual_home) -> None:
    """What the other IPv6 tests lean on: RAs with M and O, the web and DNS servers."""
    home = make_virtual_home(n_hosts=1, ipv6=True)
    assert netns.wait_for(lambda: usable_link_local(home, "gw", "wan0"), 10)  # DAD over
    ra = home.run("gw", ["rdisc6", "-1", "-w", "3000", "wan0"], check=True).stdout
    ra = " ".join(ra.split())  # rdisc6 aligns its columns
    assert "Stateful address conf. : Yes" in ra and "Stateful other conf. : Yes" in ra
    assert "Prefix : 2001:db8:ffff:1::/64" in ra
    web = home.run(
        "isp", ["curl", "-sf", f"http://[{home.isp6.web_server}]/index.html"], check=True
    )
    assert home.web_text in web.stdout
    dig = ["dig", "+short", f"@{home.isp6.dns_server}"]
    assert home.run("isp", [*dig, "AAAA", "www.example.test"]).stdout.split() == [
        home.isp6.web_server
    ]
    assert home.run("isp", [*dig, "A", "www.example.test"]).stdout.split() == [home.web_server]


SEND_AND_WAIT = """
import socket, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
sock.bind(("::", 546))
server = ("ff02::1:2", 547, 0, socket.if_nametoindex("eth0"))
hostile, probe = sys.stdin.read().split("/")
for line in hostile.split():
    sock.sendto(bytes.fromhex(line), server)
sock.settimeout(0.5)
deadline = time.monotonic() + 10
probe = bytes.fromhex(probe)
answer = b""
while not answer and time.monotonic() < deadline:  # until answered: the bucket refills
    sock.sendto(probe, server)
    try:
        while not answer:  # the flood's replies first
            data = sock.recv(4096)
            answer = data if data[1:4] == probe[1:4] else b""
    except TimeoutError:
        continue
print(answer.hex())
"""


def test_hostile_datagrams_are_counted_and_the_server_keeps_answering(make_virtual_home) -> None:
    from homegw.modules.ipv6.dhcp6 import wire

    home = make_virtual_home(n_hosts=1)
    big_duid = b"\x00\x02\x00\x00\x00\x09" + b"x" * 200
    solicit = wire.encode(wire.Message(wire.MsgType.SOLICIT, 1, client_id=big_duid[:120]))
    hostile = [
        b"\x01\x00",  # short
        solicit.replace(big_duid[:120], big_duid).replace(b"\x00\x01\x00\x78", b"\x00\x01\x00\xce"),
        solicit[:-5],  # truncated inside the DUID
        *[wire.encode(wire.Message(wire.MsgType.INFORMATION_REQUEST, i)) for i in range(40)],
    ]
    probe = wire.encode(wire.Message(wire.MsgType.INFORMATION_REQUEST, 0xABCDEF))
    with lan_server(home, ServerOptions(LAN_DNS, ("home.arpa",))) as server:
        text = " ".join(h.hex() for h in hostile) + "/" + probe.hex()
        out = home.run("h1", [sys.executable, "-c", SEND_AND_WAIT], input=text, check=True)
        reply = wire.decode(bytes.fromhex(out.stdout.strip()))
        assert reply.transaction_id == 0xABCDEF and reply.dns_servers == LAN_DNS
        stats = server.stats()
        assert stats["malformed_short_message"] == 1
        assert stats["malformed_bad_duid"] == 1 and stats["malformed_option_overflow"] == 1
        assert stats["drop_rate_limited"] >= 40 + 1 - 20  # a burst of 20 is allowed
