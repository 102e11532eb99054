"""How fast the web UI's pages answer with a full home loaded: the real
appliance in the virtual home with 250 DHCP clients (real leases, each with
traffic through the datapath), 10,000 NAT sessions and a 10,000-entry DNS
query log.

    sudo PYTHONPATH=$PWD .venv/bin/python bench/webui_bench.py [--rounds N]

For every page of the navigation (found in the Overview's own HTML), a
device's page, a module table and a filtered query log, it prints the
server time (the Server-Timing header the app adds: from the request's
arrival in Flask to the answer) as median / p95 / max over N rounds, and
the client-side time; then everything the Overview page transfers (its
HTML and every stylesheet, script and image it links). Budgets (issue 11):
every page's HTML <= 100 ms server time; the Overview <= 300 KB in total.
There is no LuCI to compare with on Debian (it needs OpenWrt's ubus/rpcd
and uhttpd), so these are absolute numbers on this machine.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from homegw import netns  # noqa: E402
from homegw.netns import in_netns  # noqa: E402
from homegw.virtualhome import VirtualHome  # noqa: E402
from tests.conftest import new_tag  # noqa: E402
from tests.integration.appliance_proc import ApplianceProcess  # noqa: E402
from tests.integration.dhcp_helpers import CodecClient  # noqa: E402

DEVICES = 250
SESSIONS = 10_000
QUERIES = 10_000
LAN_IP = "192.168.1.1"
CLIENT_IP = "192.168.1.254"
BASE = f"http://{LAN_IP}"
STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
PAGE_BUDGET_MS = 100.0
OVERVIEW_BUDGET = 300 * 1024


def config(home: VirtualHome) -> dict:
    return home.gateway_config(
        wan=STATIC_WAN,
        dhcp={"range_start": "192.168.1.2", "range_end": "192.168.1.253"},
        dns={"query_log_size": QUERIES},
    )


def lease_devices(home: VirtualHome) -> list[tuple[str, str]]:
    """DEVICES real DHCP exchanges (distinct MACs, each with a hostname)."""
    client = CodecClient(home, "h1")
    devices = []
    try:
        for i in range(DEVICES):
            chaddr = bytes((0x02, 0x42, 0, 0, i >> 8, i & 0xFF))
            address = client.dora(chaddr, o12=f"device-{i:03d}".encode())
            devices.append((chaddr.hex(":"), socket.inet_ntoa(address.to_bytes(4, "big"))))
    finally:
        client.close()
    return devices


def make_sessions(home: VirtualHome, devices: list[tuple[str, str]]) -> None:
    """SESSIONS UDP flows to the web server, spread over the devices (so each
    device has traffic in the datapath's device table too)."""
    gw_mac = home.mac_of("gw", "lan0")
    per_device = SESSIONS // len(devices) + 1
    frames = []
    for i in range(SESSIONS):
        mac, address = devices[i % len(devices)]
        port = 20000 + i // len(devices)
        packet = Ether(src=mac, dst=gw_mac) / IP(src=address, dst=home.web_server, ttl=64)
        frames.append(bytes(packet / UDP(sport=port, dport=9) / b"homegw-bench"))
    assert per_device * len(devices) >= SESSIONS
    home.send_frames("h1", "eth0", frames)


def ask_dns(home: VirtualHome) -> int:
    """QUERIES queries from h1 (a few names repeat, as in a real home)."""
    with in_netns(home.ns("h1")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    answered = 0
    try:
        for i in range(QUERIES):
            name = f"host{i % 4000}.site{i % 97}.example.test"
            query = i.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
            labels = b"".join(bytes((len(x),)) + x.encode() for x in name.split("."))
            sock.sendto(query + labels + b"\x00\x00\x01\x00\x01", (LAN_IP, 53))
            try:
                sock.recvfrom(4096)
                answered += 1
            except TimeoutError:
                pass
    finally:
        sock.close()
    return answered


class Client:
    """GETs from h1 with the appliance's local bearer token."""

    def __init__(self, home: VirtualHome) -> None:
        self.home = home
        self.token = (Path(home.state_dir) / "api-token").read_text().strip()

    def get(self, path: str) -> tuple[bytes, float, float]:
        """(body, server ms, client ms)."""
        request = urllib.request.Request(BASE + path)
        request.add_header("Authorization", f"Bearer {self.token}")
        began = time.perf_counter()
        with in_netns(self.home.ns("h1")), urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
            timing = answer.headers.get("Server-Timing", "")
        client_ms = (time.perf_counter() - began) * 1e3
        match = re.search(r"dur=([0-9.]+)", timing)
        return body, float(match.group(1)) if match else float("nan"), client_ms

    def json(self, path: str) -> dict:
        return json.loads(self.get(path)[0])


def pages(client: Client, devices: list[tuple[str, str]]) -> list[str]:
    html = client.get("/")[0].decode()
    nav = re.search(r'<nav aria-label="Main"[^>]*>(.*?)</nav>', html, re.S)
    assert nav, "no main navigation in the Overview's HTML"
    links = re.findall(r'href="([^"]+)"', nav.group(1))
    return [
        *links,
        f"/devices/{devices[7][0]}",
        "/modules/tables/nat_sessions",
        "/modules/tables/nat_sessions?offset=9900",
        "/dns/?q=site13",
    ]


def overview_transfer(client: Client) -> dict[str, int]:
    html = client.get("/")[0]
    sizes = {"/ (HTML)": len(html)}
    assets = re.findall(rb'(?:href|src)="(/static/[^"]+)"', html)
    for asset in dict.fromkeys(a.decode() for a in assets):
        sizes[asset] = len(client.get(asset)[0])
    sizes["/api/v1/status (one poll)"] = len(client.get("/api/v1/status")[0])
    return sizes


def measure(client: Client, paths: list[str], rounds: int) -> list[tuple[str, list, list]]:
    for path in paths:  # warm: templates compiled, caches filled
        client.get(path)
    results = []
    for path in paths:
        server, wall = [], []
        for _ in range(rounds):
            _, s, c = client.get(path)
            server.append(s)
            wall.append(c)
        results.append((path, server, wall))
    return results


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def report(results: list[tuple[str, list, list]], sizes: dict[str, int]) -> bool:
    ok = True
    print(f"{'page':44} {'server ms: median':>18} {'p95':>7} {'max':>7} {'client median':>14}")
    for path, server, wall in results:
        over = max(server) > PAGE_BUDGET_MS
        ok &= not over
        print(
            f"{path:44} {statistics.median(server):18.1f} {p95(server):7.1f} {max(server):7.1f}"
            f" {statistics.median(wall):14.1f}{'  OVER BUDGET' if over else ''}"
        )
    total = sum(v for k, v in sizes.items() if not k.startswith("/api"))
    print("\nOverview transfer:")
    for name, size in sizes.items():
        print(f"  {name:40} {size / 1024:8.1f} KiB")
    print(f"  {'total (page load)':40} {total / 1024:8.1f} KiB (budget {OVERVIEW_BUDGET // 1024})")
    return ok and total <= OVERVIEW_BUDGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    home = VirtualHome(new_tag(), n_hosts=1, lan_hosts_static=False).build()
    # the client host sits outside the DHCP range, which the 250 devices fill
    netns.ip("addr", "add", f"{CLIENT_IP}/24", "dev", "eth0", ns=home.ns("h1"))
    app = None
    try:
        app = ApplianceProcess(home, config(home)).start()
        app.wait_healthy(timeout=120)
        client = Client(home)
        devices = lease_devices(home)
        make_sessions(home, devices)
        answered = ask_dns(home)
        sessions = client.json("/api/v1/tables/nat_sessions?limit=1")["total"]
        queries = client.json("/api/v1/tables/dns_queries?limit=1")["total"]
        leases = client.json("/api/v1/tables/dhcp_leases?limit=1")["total"]
        print(
            f"loaded: {leases} leases, {sessions} NAT sessions, {queries} logged queries "
            f"({answered} answered), {args.rounds} rounds per page\n"
        )
        results = measure(client, pages(client, devices), args.rounds)
        ok = report(results, overview_transfer(client))
    finally:
        if app is not None:
            app.stop()
        home.teardown()
    print("\nwithin budget" if ok else "\nOVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
