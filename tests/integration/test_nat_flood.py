"""A spoofed UDP flood of 100,000 remote endpoints to a port forward, from
the ISP, while a LAN host fetches a page from the ISP's web server: the
inbound budget keeps the sessions the home's own flows need."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from homegw.modules.nat.maps import COUNTERS
from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess

WAN_IP = "203.0.113.2"
FLOOD_PORT = 9999
ENDPOINTS = 100_000

# Prebuilt IPv4/UDP packets from ENDPOINTS random (address, port) pairs, sent
# on a raw socket (the kernel fills in the IP checksum); passes until stdin
# closes. Prints "flooding" after the first full pass.
FLOODER = """
import random, select, socket, struct, sys
target, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(6888)
dst = socket.inet_aton(target)
packets = []
for _ in range(count):
    src = struct.pack("!I", rng.randrange(0x14000000, 0x3C000000))  # 20.0.0.0-59.255.255.255
    udp = struct.pack("!HHHH", rng.randrange(1024, 65536), port, 8 + 4, 0) + b"kno!"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    packets.append(ip + udp)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
passes = 0
while True:
    for packet in packets:
        try:
            s.sendto(packet, (target, 0))
        except BlockingIOError:
            pass
    passes += 1
    if passes == 1:
        print("flooding", flush=True)
    if select.select([sys.stdin], [], [], 0)[0]:
        break
print("passes", passes, flush=True)
"""


@pytest.fixture(scope="module")
def gateway(virtual_home_module: VirtualHome) -> Iterator[ApplianceProcess]:
    home = virtual_home_module
    config = home.gateway_config(
        wan={"mode": "static", "address": f"{WAN_IP}/24", "gateway": "203.0.113.1"},
        webui={"listen": "192.168.1.1:8080"},
        nat={
            "port_forwards": [
                {"protocol": "udp", "external_port": FLOOD_PORT, "internal_address": "192.168.1.12"}
            ]
        },
    )
    app = ApplianceProcess(home, config).start()
    app.wait_healthy()
    yield app
    assert app.stop() == 0
    assert "Traceback" not in app.log


def nat_counter(home: VirtualHome, name: str) -> int:
    dump = subprocess.run(
        ["bpftool", "-j", "map", "dump", "pinned", f"{home.pin_dir}/nat_stats"],
        capture_output=True,
        text=True,
        check=True,
    )
    index = COUNTERS.index(name)
    (entry,) = [e["formatted"] for e in json.loads(dump.stdout) if e["formatted"]["key"] == index]
    return sum(v["value"] for v in entry["values"])


def test_lan_connects_out_during_a_spoofed_flood_to_a_forward(
    virtual_home_module: VirtualHome,
    gateway: ApplianceProcess,
) -> None:
    home = virtual_home_module
    flooder = home.popen(
        "isp",
        [sys.executable, "-c", FLOODER, WAN_IP, str(FLOOD_PORT), str(ENDPOINTS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flooder.stdout.readline().strip() == "flooding"  # 100,000 endpoints sent
        page = home.run(
            "h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}/index.html"]
        )
        refused_during = nat_counter(home, "refused_table_full")
        capped = nat_counter(home, "inbound_port_cap")
    finally:
        flooder.stdin.close()
        flooder.wait(60)
    assert page.returncode == 0, page.stderr
    assert page.stdout  # the ISP's page, fetched while the flood ran
    assert refused_during == 0
    # the flood reached NAT: all but the per-port share were refused
    assert capped >= ENDPOINTS // 2, capped
