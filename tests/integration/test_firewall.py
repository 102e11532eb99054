"""The firewall live in the virtual home. The ISP (any device on the WAN
segment could) routes the LAN subnet at the gateway's WAN address and probes:
ping, TCP and UDP to a LAN host and to the gateway's LAN address all fail,
and the drops are counted by reason in the pinned firewall_stats. Spoofed
sources are dropped, ping to the WAN address follows firewall.wan_ping, IPv6
from the WAN meets the kernel's table, and the home still works: a LAN host
browses and resolves, the WAN DHCP client gets and renews its lease, a port
forward's first datagram survives the LAN host's neighbour resolution. The
kernel fallback path (router disabled) keeps the LAN just as closed, and so
does the kernel's forward chain on its own."""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw import kernelpath
from homegw.dataplane.pinned import read_percpu_u64
from homegw.modules.firewall.maps import COUNTERS
from homegw.virtualhome import LAN_GATEWAY, VirtualHome
from tests.integration.appliance_proc import ApplianceProcess

WAIT_S = 10.0

# A TCP and a UDP service on a LAN host: prints one line per connection or
# datagram it gets, so the test can tell whether a probe arrived.
LISTENER = """
import selectors, socket, sys
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8000)); tcp.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 9000))
sel = selectors.DefaultSelector()
sel.register(tcp, selectors.EVENT_READ); sel.register(udp, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is tcp:
            conn, peer = tcp.accept(); conn.close(); print("tcp", peer[0], flush=True)
        else:
            _, peer = udp.recvfrom(100); print("udp", peer[0], flush=True)
"""

# Exit 0 when the TCP connect succeeds; always sends one UDP datagram first.
PROBE = """
import socket, sys
host = sys.argv[1]
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"probe", (host, int(sys.argv[3])))
s = socket.socket(); s.settimeout(2)
try:
    s.connect((host, int(sys.argv[2])))
except OSError:
    sys.exit(1)
"""


def counter(home: VirtualHome, name: str) -> int:
    return read_percpu_u64(f"{home.pin_dir}/firewall_stats", COUNTERS.index(name))


def wait_until(check: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """Poll state the datapath changes (a counter) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for_count(home: VirtualHome, name: str, at_least: int) -> int:
    wait_until(lambda: counter(home, name) >= at_least)
    return counter(home, name)


def ping(home: VirtualHome, ns: str, address: str, count: int = 1) -> bool:
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", address]
    return home.run(ns, argv).returncode == 0


def start_gateway(home: VirtualHome, name: str, **overrides) -> tuple[ApplianceProcess, str]:
    """The appliance with a WAN lease from the ISP; returns it and the WAN address."""
    app = ApplianceProcess(home, home.gateway_config(**overrides), name=name).start()
    app.wait_healthy()
    line = app.wait_for(r"firewall: WAN address now 203\.0\.113\.")
    wan = line.split("WAN address now ")[1].split("/")[0]
    home.add_lan_route_on_isp(wan)  # what any device on the WAN segment can do
    return app, wan


def stop_gateway(app: ApplianceProcess) -> None:
    assert app.stop() == 0
    assert "Traceback" not in app.log


@pytest.fixture(scope="module")
def home(virtual_home_module: VirtualHome) -> VirtualHome:
    return virtual_home_module


class Listener:
    """LISTENER on h1 (TCP 8000, UDP 9000); its lines as they come."""

    def __init__(self, home: VirtualHome) -> None:
        argv = [sys.executable, "-c", LISTENER]
        self.proc = home.popen("h1", argv, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next_line() == "listening"

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next_line(self, timeout: float = WAIT_S) -> str | None:
        """The next line it printed, or None if none came within timeout."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def listener(home: VirtualHome) -> Iterator[Listener]:
    h1_listener = Listener(home)
    yield h1_listener
    h1_listener.stop()


@pytest.fixture(scope="module")
def gateway(home: VirtualHome) -> Iterator[tuple[ApplianceProcess, str]]:
    app, wan = start_gateway(home, "fw")
    yield app, wan
    stop_gateway(app)


def probes_fail(home: VirtualHome, target: str) -> None:
    """Ping, TCP connect and a UDP datagram from the ISP to `target` (h1's
    listener, or the gateway's web UI and DNS): none gets through, each is
    counted as wan_to_lan."""
    before = counter(home, "wan_to_lan")
    assert not ping(home, "isp", target)
    ports = ("80", "53") if target == LAN_GATEWAY else ("8000", "9000")
    tcp = home.run("isp", [sys.executable, "-c", PROBE, target, *ports])
    assert tcp.returncode == 1, tcp.stderr
    # ping 1 + UDP 1 + at least one SYN
    assert wait_for_count(home, "wan_to_lan", before + 3) >= before + 3


def listener_heard_nothing(home: VirtualHome, listener: Listener) -> None:
    """h1's listener got nothing from the ISP: h2 (on the LAN) reaches it
    over TCP and UDP, and those are the next lines it prints."""
    h1, h2 = home.host("h1").ip, home.host("h2").ip
    assert home.run("h2", [sys.executable, "-c", PROBE, h1, "8000", "9000"]).returncode == 0
    heard = {listener.next_line(), listener.next_line()}
    assert heard == {f"udp {h2}", f"tcp {h2}"}


def test_wan_to_lan_host_and_gateway_lan_address_fail(
    home: VirtualHome,
    gateway,
    listener: Listener,
) -> None:
    _, wan = gateway
    lan_host = home.host("h1").ip
    assert home.run("isp", ["ip", "route", "get", lan_host]).stdout.find(f"via {wan}") > 0
    probes_fail(home, lan_host)
    probes_fail(home, LAN_GATEWAY)
    listener_heard_nothing(home, listener)
    web_ui = home.run("isp", ["curl", "-sS", "--max-time", "2", f"http://{LAN_GATEWAY}/healthz"])
    assert web_ui.returncode != 0


def spoofed(home: VirtualHome, wan: str, src: str) -> bytes:
    gw_mac, isp_mac = home.mac_of("gw", "wan0"), home.mac_of("isp", "isp0")
    packet = Ether(src=isp_mac, dst=gw_mac) / IP(src=src, dst=wan) / UDP(sport=53, dport=40000)
    return bytes(packet / b"spoofed")


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        ("192.168.1.12", "wan_spoofed_lan_source"),
        ("wan", "wan_spoofed_own_address"),
        ("127.0.0.1", "wan_martian_source"),
    ],
)
def test_spoofed_sources_from_the_isp_dropped(home: VirtualHome, gateway, src, reason) -> None:
    _, wan = gateway
    before = counter(home, reason)
    home.send_frames("isp", "isp0", [spoofed(home, wan, wan if src == "wan" else src)] * 3)
    assert wait_for_count(home, reason, before + 3) == before + 3


def test_ping_to_the_wan_address_answered(home: VirtualHome, gateway) -> None:
    _, wan = gateway
    before = counter(home, "wan_passed")
    assert ping(home, "isp", wan, count=3)
    assert counter(home, "wan_passed") >= before + 3


def test_lan_host_reaches_web_and_dns(home: VirtualHome, gateway) -> None:
    page = home.run("h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}/"])
    assert home.web_text in page.stdout, page.stderr
    dig = ["dig", "+short", "+time=2", "+tries=2"]
    # the gateway's own resolver asks the ISP's: its upstream replies get in
    answer = home.run("h1", [*dig, f"@{LAN_GATEWAY}", "www.example.test"]).stdout.split()
    assert answer == [home.web_server]
    direct = home.run("h1", [*dig, f"@{home.dns_server}", "example.test"]).stdout.split()
    assert direct == [home.web_server]


def test_wan_dhcp_lease_renews(home: VirtualHome, gateway) -> None:
    app, wan = gateway
    leases = sum(1 for line in app.lines if f"WAN lease {wan}/24 " in line)
    app.proc.send_signal(signal.SIGUSR1)  # renew: unicast REQUEST, ACK to the WAN address
    app.wait_for_count(rf"WAN lease {wan}/24 ", leases + 1)


def test_ipv6_from_the_wan_dropped_neighbour_discovery_kept(home: VirtualHome, gateway) -> None:
    link_local = json.loads(
        home.run("gw", ["ip", "-j", "-6", "addr", "show", "dev", "wan0"]).stdout
    )
    address = next(a["local"] for a in link_local[0]["addr_info"] if a["scope"] == "link")
    before = nft_counter(home, "input")
    assert not ping(home, "isp", f"{address}%isp0", count=2)
    neigh = home.run("isp", ["ip", "-6", "neigh", "show", address, "dev", "isp0"]).stdout
    assert home.mac_of("gw", "wan0") in neigh  # the gateway answered the solicitation
    assert nft_counter(home, "input") >= before + 2


def nft_counter(home: VirtualHome, chain: str) -> int:
    """Packets of the last counted drop rule of a chain of the kernel-path
    table (its default deny: the forward chain has others before it)."""
    argv = ["nft", "-j", "list", "chain", "inet", "homegw_kernelpath", chain]
    listing = json.loads(home.run("gw", argv, check=True).stdout)["nftables"]
    for item in reversed(listing):
        expr = item.get("rule", {}).get("expr", [])
        if any("drop" in e for e in expr) and "comment" in item["rule"]:
            return next(e["counter"]["packets"] for e in expr if "counter" in e)
    raise AssertionError(f"no counted drop rule in {chain}: {listing}")


def test_every_kernel_path_ruleset_is_accepted_by_nft(home: VirtualHome) -> None:
    for forwards, masquerade, ping, wan_to_lan in itertools.product((False, True), repeat=4):
        path = kernelpath.KernelPath("lan0", "wan0", forwards, masquerade, ping, wan_to_lan)
        check = home.run("gw", ["nft", "-c", "-f", "-"], input=kernelpath.ruleset(path))
        assert check.returncode == 0, (path, check.stderr)


# The last tests stop the module's gateway and run their own.


FORWARD_TO_H1 = {
    "nat": {
        "port_forwards": [
            {
                "protocol": "udp",
                "external_port": 7000,
                "internal_address": "192.168.1.11",
                "internal_port": 9000,
            }
        ]
    },
    "router": {"neighbour_timeout": "2s"},
}


def test_first_forwarded_packet_survives_neighbour_resolution(
    home: VirtualHome,
    gateway,
    listener: Listener,
) -> None:
    """A port-forwarded datagram to a LAN host whose neighbour entry aged
    out is held, resolved and re-injected after NAT translated it: the
    firewall must not take the re-injected frame for WAN -> LAN traffic."""
    app, _ = gateway
    stop_gateway(app)
    forwarding, wan = start_gateway(home, "forward", **FORWARD_TO_H1)
    try:
        h1 = home.host("h1").ip
        assert ping(home, "h1", home.web_server, count=3)  # the gateway learns h1
        forwarding.wait_for(rf"aged out neighbours .*{h1}\b", timeout=30)
        send = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'one', ('{wan}', 7000))"
        )
        assert home.run("isp", [sys.executable, "-c", send]).returncode == 0
        assert listener.next_line() == f"udp {home.isp_address}"
    finally:
        stop_gateway(forwarding)


def test_wan_ping_false_drops_echo(home: VirtualHome, gateway) -> None:
    app, _ = gateway
    stop_gateway(app)
    quiet, wan = start_gateway(home, "noping", firewall={"wan_ping": False})
    try:
        before = counter(home, "wan_ping_dropped")
        assert not ping(home, "isp", wan, count=2)
        assert wait_for_count(home, "wan_ping_dropped", before + 2) == before + 2
        probes_fail(home, home.host("h1").ip)
    finally:
        stop_gateway(quiet)


def test_kernel_fallback_path_keeps_the_lan_closed(
    home: VirtualHome,
    gateway,
    listener: Listener,
) -> None:
    app, _ = gateway
    stop_gateway(app)
    fallback, _ = start_gateway(home, "fallback", router={"enabled": False})
    try:
        assert "TEMPORARY KERNEL PATH active" in fallback.log
        probes_fail(home, home.host("h1").ip)
        probes_fail(home, LAN_GATEWAY)
        listener_heard_nothing(home, listener)
        page = home.run("h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}/"])
        assert home.web_text in page.stdout, page.stderr  # forwarded and masqueraded by Linux
    finally:
        stop_gateway(fallback)


KERNEL_PATH = """
import sys
from homegw import kernelpath
kernelpath.enable(kernelpath.KernelPath("lan0", "wan0", kernel_forwards=True, masquerade=False))
"""


def test_kernel_forward_chain_denies_wan_to_lan_by_itself(virtual_home: VirtualHome) -> None:
    """No XDP at all: the kernel path alone (router and NAT off) forwards
    LAN -> WAN and its replies, and drops and counts WAN -> LAN."""
    home = virtual_home
    for argv in (
        ["ip", "addr", "add", "203.0.113.2/24", "dev", "wan0"],
        ["ip", "link", "set", "wan0", "up"],
        ["ip", "route", "add", "default", "via", "203.0.113.1"],
        ["ip", "addr", "add", f"{LAN_GATEWAY}/24", "dev", "lan0"],
        ["ip", "link", "set", "lan0", "up"],
        [sys.executable, "-c", KERNEL_PATH],
    ):
        result = home.run("gw", argv)
        assert result.returncode == 0, (argv, result.stderr)
    home.add_lan_route_on_isp("203.0.113.2")
    assert ping(home, "h1", home.web_server, count=2)  # out, and the replies back
    before = nft_counter(home, "forward")
    assert not ping(home, "isp", home.host("h1").ip, count=2)
    assert nft_counter(home, "forward") == before + 2
