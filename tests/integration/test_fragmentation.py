"""Fragmentation live, NAT on: a LAN host's 3000-byte UDP datagram without DF
over a WAN whose MTU is 1492 reaches the ISP translated (source = the WAN
address) and whole. The host sends it in 1500-byte fragments; the gateway's
router marks each for fragmenting, NAT translates it, the chain's end punts
it and the dataplane's fragmenter sends 1492-byte fragments out of the WAN.
Nothing goes through the kernel's forwarding, which would skip NAT."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.test_nat import WAN_IP, nat_config

WAN_MTU = 1492
PORT = 9998

# Receives one datagram and prints who sent it and what it got.
RECEIVER = f"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], {PORT}))
print("listening", flush=True)
data, peer = s.recvfrom(65535)
print(peer[0], len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""

# Sends one 3000-byte datagram with DF off (IP_MTU_DISCOVER = IP_PMTUDISC_DONT;
# Python's socket module lacks the names: linux/in.h's 10 and 0).
SENDER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)
s.sendto(bytes(i % 253 for i in range(3000)), (sys.argv[1], {PORT}))
"""


@pytest.fixture(scope="module")
def gateway(virtual_home_module: VirtualHome) -> Iterator[tuple[VirtualHome, ApplianceProcess]]:
    home = virtual_home_module
    home.run("gw", ["ip", "link", "set", "wan0", "mtu", str(WAN_MTU)], check=True)
    home.run("isp", ["ip", "link", "set", "isp0", "mtu", str(WAN_MTU)], check=True)
    app = ApplianceProcess(home, home.gateway_config(**nat_config())).start()
    app.wait_healthy()
    yield home, app
    assert app.stop() == 0
    assert "Traceback" not in app.log


def test_oversized_datagram_fragmented_after_nat(gateway) -> None:
    home, _ = gateway
    receiver = home.popen(
        "isp", [sys.executable, "-c", RECEIVER, home.web_server], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout.readline().strip() == "listening"
        home.run("h1", [sys.executable, "-c", SENDER, home.web_server], check=True)
        source, length, digest = receiver.communicate(timeout=10)[0].split()
    finally:
        receiver.kill()
        receiver.wait(10)
    expected = hashlib.sha256(bytes(i % 253 for i in range(3000))).hexdigest()
    assert (source, int(length), digest) == (WAN_IP, 3000, expected)
