"""The LAN DHCP server in the virtual home, against real clients (udhcpc,
dhclient, dhcpcd) and crafted packets.

The server runs in this process with its sockets in the gateway namespace
(`in_netns`), or as `python -m homegw.standalone dhcp` for the restart
and kill -9 tests. LAN hosts have no addresses until a client gets one.
Waits are on hook-script events, log lines, counters and replies, each
bounded; nothing sleeps.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Any

import pytest

from homegw import netns
from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.leases import State
from homegw.modules.dhcp.module import DhcpModule
from homegw.modules.dhcp.service import BINDING_LEASED, Binding, DhcpService
from homegw.virtualhome import VirtualHome
from tests.integration.dhcp_helpers import (
    DHCLIENT_HOOK,
    DHCPCD_HOOK,
    SERVER_IP,
    UDHCPC_HOOK,
    WAIT,
    CodecClient,
    ServerProcess,
    hook_script,
    in_netns,
    lease_rows,
    mac_bytes,
    wait_event,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not all(shutil.which(c) for c in ("udhcpc", "dhclient", "dhcpcd")),
        reason="needs udhcpc, dhclient and dhcpcd (scripts/setup.sh)",
    ),
]

OPTIONS = r"router=192\.168\.1\.1 dns=192\.168\.1\.1 domain=lan"


@pytest.fixture
def home(make_virtual_home: Callable[..., VirtualHome]) -> VirtualHome:
    home = make_virtual_home(lan_hosts_static=False)
    netns.ip("addr", "add", f"{SERVER_IP}/24", "dev", "lan0", ns=home.ns("gw"))
    return home


@pytest.fixture
def serve(home: VirtualHome) -> Iterator[Callable[..., DhcpService]]:
    """serve(**dhcp_section) starts a DhcpService in the gateway namespace."""
    services: list[DhcpService] = []

    def start(probe_timeout: float = 0.2, **dhcp: Any) -> DhcpService:
        config = parse_config(home.gateway_config(dhcp=dhcp))
        service = DhcpService(config, probe_timeout=probe_timeout)
        with in_netns(home.ns("gw")):
            service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        service.stop()


@pytest.fixture
def client(home: VirtualHome) -> Iterator[CodecClient]:
    c = CodecClient(home, "h1")
    yield c
    c.close()


@pytest.fixture(autouse=True)
def dhcp_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="homegw.modules.dhcp")
    return caplog


def wait_counter(service: DhcpService, name: str, value: int) -> None:
    assert netns.wait_for(lambda: service.stats()[name] == value, WAIT), service.stats()


def udhcpc(home: VirtualHome, host: str, *extra: str, name: str = "udhcpc"):
    script, events = hook_script(home, f"{name}-{host}", UDHCPC_HOOK)
    argv = ["udhcpc", "-i", "eth0", "-f", "-t", "3", "-T", "1", "-s", str(script), *extra]
    return argv, events


def test_udhcpc_gets_renews_and_releases_a_lease(home: VirtualHome, serve) -> None:
    service = serve()
    argv, events = udhcpc(home, "h1", "-x", "hostname:h1")
    proc = home.popen("h1", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_event(events, rf"^EVENT bound ip=192\.168\.1\.100 {OPTIONS}$")
    [lease] = service.leases()
    assert (lease.mac, lease.hostname, lease.ip) == ("02:48:47:00:00:01", "h1", lease.ip)
    first_expiry = lease.expires
    # udhcpc retransmits a REQUEST it thinks unanswered (-T 1 on a busy machine):
    # count the renewal's ACK from here, not from zero
    acks_before = service.stats()["acks"]

    proc.send_signal(signal.SIGUSR1)  # renew: a unicast REQUEST from ciaddr
    wait_event(events, rf"^EVENT renew ip=192\.168\.1\.100 {OPTIONS}$")
    assert service.leases()[0].expires > first_expiry
    assert service.stats()["acks"] >= acks_before + 1

    proc.send_signal(signal.SIGUSR2)  # release
    wait_counter(service, "releases", 1)
    assert service.leases() == []
    proc.terminate()
    proc.wait(WAIT)


def test_dhclient_gets_reboots_into_and_releases_a_lease(home: VirtualHome, serve) -> None:
    service = serve()
    script, events = hook_script(home, "dhclient", DHCLIENT_HOOK)
    conf = home.tmpdir / "dhclient.conf"
    conf.write_text(
        'send host-name "h2";\nrequest subnet-mask, routers, domain-name-servers, domain-name;\n'
    )
    files = ["-sf", str(script), "-cf", str(conf), "-lf", str(home.tmpdir / "dhclient.leases")]
    files += ["-pf", str(home.tmpdir / "dhclient.pid")]
    got = home.run("h2", ["dhclient", "-1", "-v", *files, "eth0"], timeout=WAIT)
    assert got.returncode == 0, got.stderr
    wait_event(events, rf"^EVENT BOUND ip=192\.168\.1\.100 {OPTIONS}$")
    assert [(x.mac, x.hostname) for x in service.leases()] == [("02:48:47:00:00:02", "h2")]

    # Kill the daemon (no release) and start again: INIT-REBOOT for the same address.
    home.run("h2", ["dhclient", "-x", *files, "eth0"], timeout=WAIT)
    got = home.run("h2", ["dhclient", "-1", "-v", *files, "eth0"], timeout=WAIT)
    assert got.returncode == 0, got.stderr
    wait_event(events, rf"^EVENT REBOOT ip=192\.168\.1\.100 {OPTIONS}$")

    got = home.run("h2", ["dhclient", "-r", "-v", *files, "eth0"], timeout=WAIT)
    assert got.returncode == 0, got.stderr
    wait_counter(service, "releases", 1)
    assert service.leases() == []
    assert service.stats()["naks"] == 0


def test_dhcpcd_gets_renews_and_releases_a_lease(home: VirtualHome, serve) -> None:
    service = serve()
    script, events = hook_script(home, "dhcpcd", DHCPCD_HOOK)
    conf = home.tmpdir / "dhcpcd.conf"
    conf.write_text(
        "hostname h3\nnodelay\nduid\noption domain_name_servers, domain_name, routers\n"
    )
    # A private /run/dhcpcd and /var/lib/dhcpcd (ip netns exec gives a mount namespace).
    isolate = (
        "mkdir -p /run/dhcpcd && mount -t tmpfs t /run/dhcpcd && mount -t tmpfs t /var/lib/dhcpcd"
    )
    run = f"{isolate} && exec dhcpcd -B -4 -A -f {conf} -c {script} eth0"
    proc = home.popen("h3", ["sh", "-c", run], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_event(events, rf"^EVENT BOUND ip=192\.168\.1\.100 {OPTIONS}$")
    [lease] = service.leases()
    assert (lease.mac, lease.hostname) == ("02:48:47:00:00:03", "h3")
    assert lease.client.startswith("id:ff")  # dhcpcd's RFC 4361 client id, not the MAC

    proc.send_signal(signal.SIGUSR1)  # renew
    wait_event(events, rf"^EVENT RENEW ip=192\.168\.1\.100 {OPTIONS}$")
    proc.send_signal(signal.SIGALRM)  # release and exit
    assert proc.wait(WAIT) == 0
    # dhcpcd exits once its RELEASE is sent, not once the server has read it
    wait_counter(service, "releases", 1)
    assert service.leases() == []


def test_static_reservation_is_honoured(home: VirtualHome, serve) -> None:
    reservation = {"mac": "02:48:47:00:00:02", "address": "192.168.1.50", "hostname": "nas"}
    service = serve(reservations=[reservation])
    argv, events = udhcpc(home, "h2", "-q", "-n", "-x", "hostname:whatever")
    assert home.run("h2", argv, timeout=WAIT).returncode == 0
    wait_event(events, rf"^EVENT bound ip=192\.168\.1\.50 {OPTIONS}$")
    argv, events = udhcpc(home, "h1", "-q", "-n")
    assert home.run("h1", argv, timeout=WAIT).returncode == 0
    wait_event(events, r"^EVENT bound ip=192\.168\.1\.100 ")
    assert [(str(x.ip), x.hostname) for x in service.leases()] == [
        ("192.168.1.50", "nas"),
        ("192.168.1.100", None),
    ]
    assert service.local_names() == {"nas": IPv4Address("192.168.1.50")}


def test_pool_exhaustion_gives_no_offer_and_a_clear_log_line(
    home: VirtualHome,
    serve,
    dhcp_logs: pytest.LogCaptureFixture,
) -> None:
    service = serve(range_start="192.168.1.100", range_end="192.168.1.101")
    for host in ("h1", "h2"):
        argv, _ = udhcpc(home, host, "-q", "-n")
        assert home.run(host, argv, timeout=WAIT).returncode == 0
    argv, events = udhcpc(home, "h3", "-q", "-n")
    assert home.run("h3", argv, timeout=WAIT).returncode == 1  # no lease
    assert "bound" not in events.read_text()
    assert "DHCP pool exhausted: no address to offer to 02:48:47:00:00:03" in dhcp_logs.messages
    # A slow machine may retransmit a DISCOVER and get a second offer for the
    # same address, so the offer count is not exact; the leases are.
    assert sorted(str(x.mac) for x in service.leases()) == [
        "02:48:47:00:00:01",
        "02:48:47:00:00:02",
    ]
    assert service.stats()["exhausted"] >= 1


def test_arp_probe_finds_a_squatter_and_offers_another_address(
    home: VirtualHome,
    serve,
    dhcp_logs: pytest.LogCaptureFixture,
) -> None:
    netns.ip("addr", "add", "192.168.1.100/24", "dev", "eth0", ns=home.ns("h2"))  # no lease
    service = serve()
    argv, events = udhcpc(home, "h1", "-q", "-n")
    assert home.run("h1", argv, timeout=WAIT).returncode == 0
    wait_event(events, r"^EVENT bound ip=192\.168\.1\.101 ")
    assert (service.stats()["probes"], service.stats()["conflicts"]) == (2, 1)
    assert any(
        m.startswith("DHCP address 192.168.1.100 is in use by 02:48:47:00:00:02")
        for m in dhcp_logs.messages
    )
    record = service.server.protocol.pool.record(p.ip_int("192.168.1.100"))
    assert record.state is State.DECLINED and record.mac == "02:48:47:00:00:02"


def test_a_pending_probe_does_not_stall_other_clients(serve, client: CodecClient) -> None:
    service = serve(probe_timeout=3.0)
    discover = client.message(p.DISCOVER, mac_bytes("02:aa:00:00:00:01"))
    client.send_raw(p.encode(discover))  # its OFFER waits for the 3 s probe
    wait_counter(service, "probes", 1)
    reboot = client.message(p.REQUEST, mac_bytes("02:aa:00:00:00:02"))
    reboot.options[p.OPT_REQUESTED_IP] = socket.inet_aton("192.168.1.150")
    ack = client.exchange(reboot)  # INIT-REBOOT: no probe, answered at once
    assert ack is not None and ack.msg_type == p.ACK
    assert client.stray == []  # the OFFER has not come yet
    offer = client.receive(discover.xid, timeout=WAIT)
    assert offer is not None and offer.msg_type == p.OFFER
    assert offer.yiaddr == p.ip_int("192.168.1.100")


def test_decline_quarantines_the_address(
    serve,
    client: CodecClient,
    dhcp_logs: pytest.LogCaptureFixture,
) -> None:
    service = serve()
    first = client.dora(mac_bytes("02:aa:00:00:00:01"))
    decline = client.message(p.DECLINE, mac_bytes("02:aa:00:00:00:01"), flags=0)
    decline.options[p.OPT_REQUESTED_IP] = first.to_bytes(4, "big")
    decline.options[p.OPT_SERVER_ID] = socket.inet_aton(SERVER_IP)
    client.send_raw(p.encode(decline))
    wait_counter(service, "declines", 1)
    assert "DHCPDECLINE 192.168.1.100 from 02:aa:00:00:00:01: quarantined for 600 s" in (
        dhcp_logs.messages
    )
    assert client.dora(mac_bytes("02:aa:00:00:00:02")) == first + 1
    assert client.dora(mac_bytes("02:aa:00:00:00:01")) == first + 2  # not its old one either


def test_wrong_subnet_init_reboot_gets_a_nak(serve, client: CodecClient) -> None:
    service = serve()
    request = client.message(p.REQUEST, mac_bytes("02:aa:00:00:00:01"), flags=0)
    request.options[p.OPT_REQUESTED_IP] = socket.inet_aton("10.9.9.9")
    nak = client.exchange(request)  # NAKs are broadcast: no flag needed
    assert nak is not None and nak.msg_type == p.NAK
    assert nak.options[p.OPT_MESSAGE] == b"wrong subnet"
    assert nak.options[p.OPT_SERVER_ID] == socket.inet_aton(SERVER_IP)
    assert service.stats()["naks"] == 1


def test_malformed_packets_are_dropped_counted_and_serving_goes_on(
    serve,
    client: CodecClient,
) -> None:
    service = serve()
    good = p.encode(client.message(p.DISCOVER, mac_bytes("02:aa:00:00:00:01")))
    reply = client.message(p.OFFER, mac_bytes("02:aa:00:00:00:01"))
    reply.op = p.BOOTREPLY
    huge_name = bytes((12, 255)) + b"a" * 255 + bytes((12, 45)) + b"a" * 45
    bad = [
        good[:120],  # truncated
        good[:236] + b"\x00\x00\x00\x00" + good[240:],  # bad magic cookie
        good[:240] + bytes((53, 1, 1, 61, 200)) + b"short",  # option length past the end
        p.encode(reply),  # wrong op
        good[:240] + bytes((53, 1, 1)) + huge_name + b"\xff",  # 300-byte host name
    ]
    for data in bad:
        client.send_raw(data)
    wait_counter(service, "malformed_total", 5)
    assert service.stats()["malformed"] == {
        "truncated": 1,
        "bad_cookie": 1,
        "option_overrun": 1,
        "wrong_op": 1,
        "hostname_too_long": 1,
    }
    assert client.dora(mac_bytes("02:aa:00:00:00:01")) == p.ip_int("192.168.1.100")
    assert service.stats()["errors"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_leases_survive_a_restart(home: VirtualHome, client: CodecClient, sig: int) -> None:
    server = ServerProcess(home, home.gateway_config()).start()
    macs = [home.host("h1").mac] + [f"02:aa:00:00:00:{i:02x}" for i in range(1, 40)]
    leased = {mac: str(IPv4Address(client.dora(mac_bytes(mac)))) for mac in macs}
    server.stop(sig)  # right after the last ACK
    assert lease_rows(home) == {mac: (ip, "bound") for mac, ip in leased.items()}

    server.start()
    server.wait_for(r"DHCP leases loaded from .*: 40 active, 0 expired")
    # h1 renews (RENEWING: unicast from its address, ciaddr set, no server id).
    h1_ip = leased[home.host("h1").mac]
    netns.ip("addr", "add", f"{h1_ip}/24", "dev", "eth0", ns=home.ns("h1"))
    renew = client.message(p.REQUEST, mac_bytes(home.host("h1").mac), flags=0)
    renew.ciaddr = p.ip_int(h1_ip)
    ack = client.exchange(renew, dest=SERVER_IP)
    assert ack is not None and ack.msg_type == p.ACK and ack.yiaddr == p.ip_int(h1_ip)
    server.wait_for(rf"DHCPACK {h1_ip} to {home.host('h1').mac} lease 43200 s")
    assert server.stop(signal.SIGTERM) == 0
    assert lease_rows(home) == {mac: (ip, "bound") for mac, ip in leased.items()}


# --- the lease-aware datapath, live ---------------------------------------------------


@pytest.fixture
def guarded(home: VirtualHome) -> Iterator[tuple[DhcpService, DhcpModule]]:
    """The DHCP module attached to lan0 with the source guard on, fed by the service."""
    config = parse_config(home.gateway_config(dhcp={"source_guard": True}))
    dp = Dataplane(str(home.pin_dir), {Nic.LAN: "lan0", Nic.WAN: "wan0"})
    module = DhcpModule(config)
    service = DhcpService(config, module, probe_timeout=0.3)
    with in_netns(home.ns("gw")):
        dp.load()
        dp.add_module(module)
        dp.set_order(Nic.LAN, ["dhcp"])
        dp.attach()
        assert dp.slowpath is not None
        dp.slowpath.start()
        service.start()
    yield service, module
    service.stop()
    with in_netns(home.ns("gw")):
        dp.close()


def ping_gateway(home: VirtualHome, host: str) -> bool:
    return home.run(host, ["ping", "-c", "1", "-W", "2", SERVER_IP]).returncode == 0


def test_guard_follows_the_leases(home: VirtualHome, guarded) -> None:
    service, module = guarded
    h1, h2 = home.host("h1").mac, home.host("h2").mac
    argv, events = udhcpc(home, "h1")
    proc = home.popen("h1", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_event(events, r"^EVENT bound ip=192\.168\.1\.100 ")
    assert module.bindings() == {h1: Binding(IPv4Address("192.168.1.100"), BINDING_LEASED)}
    assert ping_gateway(home, "h1")

    # h2 helps itself to an address: the guard drops its ARP, it cannot talk.
    netns.ip("addr", "add", "192.168.1.200/24", "dev", "eth0", ns=home.ns("h2"))
    assert not ping_gateway(home, "h2")
    assert module.guard_stats()["dropped_arp"] >= 1

    proc.send_signal(signal.SIGUSR2)  # release: the binding goes at once
    wait_counter(service, "releases", 1)
    assert module.bindings() == {}
    proc.terminate()
    proc.wait(WAIT)
    # Keeping the address after the release does not help: it is not h1's any more.
    netns.ip("addr", "replace", "192.168.1.100/24", "dev", "eth0", ns=home.ns("h1"))
    dropped = module.guard_stats()["dropped_ipv4"] + module.guard_stats()["dropped_arp"]
    assert not ping_gateway(home, "h1")
    assert module.guard_stats()["dropped_ipv4"] + module.guard_stats()["dropped_arp"] > dropped
    assert h2 not in module.device_traffic()  # no binding: its drops make no device entry


def test_probe_answer_dropped_by_the_guard_still_reaches_the_server(
    home: VirtualHome,
    guarded,
) -> None:
    service, module = guarded
    netns.ip("addr", "add", "192.168.1.100/24", "dev", "eth0", ns=home.ns("h3"))  # a squatter
    argv, events = udhcpc(home, "h1", "-q", "-n")
    assert home.run("h1", argv, timeout=WAIT).returncode == 0
    wait_event(events, r"^EVENT bound ip=192\.168\.1\.101 ")
    assert service.stats()["conflicts"] == 1
    assert module.guard_stats()["dropped_arp"] >= 1  # the answer itself, punted then dropped
