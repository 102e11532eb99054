"""The kernel path's IPv6 rules live, without XDP: three namespaces (an ISP
host, the gateway, a LAN host) joined by veths, the gateway forwarding IPv6
with the nftables table homegw installs (router disabled: Linux forwards).
The gateway's services are closed on the WAN over IPv6, its DHCPv6 client's
replies get in; LAN -> WAN connects and its replies come back, WAN -> LAN only
through a pinhole (by interface id) or as an echo request."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from homegw import kernelpath, netns

ISP, GW_WAN, GW_LAN, HOST = (
    "2001:db8:ffff:1::1",
    "2001:db8:ffff:1::2",
    "2001:db8:100:1::1",
    "2001:db8:100:1::1234",
)

LISTEN = """
import socket, sys
family, kind = socket.AF_INET6, socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(family, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[2])))
if kind == socket.SOCK_STREAM:
    s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"hello"); c.close()
else:
    data, peer = s.recvfrom(100)
    print(data.decode(), flush=True)
"""

CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(10).decode())
except OSError as exc:
    print("failed:", exc)
"""

SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[3])))
s.sendto(b"reply", (sys.argv[1], int(sys.argv[2])))
"""


@dataclass
class Home6:
    isp: str
    gw: str
    lan: str
    listeners: list[subprocess.Popen]

    def run(self, ns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            netns.exec_argv(ns, argv), capture_output=True, text=True, timeout=timeout
        )

    def listen(self, ns: str, proto: str, port: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            netns.exec_argv(ns, [sys.executable, "-c", LISTEN, proto, str(port)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.listeners.append(proc)
        assert netns.wait_for(lambda: netns.listening(ns, proto, "*", port), 10)
        return proc

    def connect(self, ns: str, address: str, port: int, timeout: float = 2) -> str:
        argv = [sys.executable, "-c", CONNECT, address, str(port), str(timeout)]
        return self.run(ns, argv).stdout.strip()

    def ping(self, ns: str, address: str) -> bool:
        return self.run(ns, ["ping", "-6", "-c", "1", "-W", "2", address]).returncode == 0


def build(home: Home6) -> None:
    for name in (home.isp, home.gw, home.lan):
        netns.add_netns(name)
    netns.add_veth("isp0", home.isp, "wan0", home.gw)
    netns.add_veth("lan0", home.gw, "h0", home.lan)
    for ns, dev, address in (
        (home.isp, "isp0", f"{ISP}/64"),
        (home.gw, "wan0", f"{GW_WAN}/64"),
        (home.gw, "lan0", f"{GW_LAN}/64"),
        (home.lan, "h0", f"{HOST}/64"),
    ):
        netns.ip("-6", "addr", "add", address, "dev", dev, "nodad", ns=ns)
        netns.ip("link", "set", dev, "up", ns=ns)
    netns.ip("-6", "route", "add", "2001:db8:100::/56", "via", GW_WAN, ns=home.isp)
    netns.ip("-6", "route", "add", "default", "via", GW_LAN, ns=home.lan)
    home.run(home.gw, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    path = kernelpath.KernelPath(
        "lan0",
        "wan0",
        kernel_forwards=True,
        masquerade=False,
        ipv6_pinholes=(kernelpath.Pinhole6("tcp", "8080", "::1234", True),),
    )
    loaded = subprocess.run(
        netns.exec_argv(home.gw, ["nft", "-f", "-"]),
        input=kernelpath.ruleset(path),
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr


@pytest.fixture(scope="module")
def home() -> Iterator[Home6]:
    tag = secrets.token_hex(2)
    made = Home6(f"k6isp{tag}", f"k6gw{tag}", f"k6lan{tag}", [])
    try:
        build(made)
        yield made
    finally:
        for proc in made.listeners:
            proc.kill()
            proc.wait()
        for name in (made.isp, made.gw, made.lan):
            netns.delete_netns(name)


def test_gateway_services_closed_on_the_wan_over_ipv6(home: Home6) -> None:
    home.listen(home.gw, "tcp", 8443)  # a stand-in for the web UI, SSH, ...
    assert home.connect(home.lan, GW_LAN, 8443) == "hello"
    for address in (GW_WAN, GW_LAN):
        assert home.connect(home.isp, address, 8443).startswith("failed"), address


def test_dhcpv6_client_replies_get_in(home: Home6) -> None:
    client = home.listen(home.gw, "udp", 546)
    sent = home.run(home.isp, [sys.executable, "-c", SEND_UDP, GW_WAN, "546", "547"])
    assert sent.returncode == 0, sent.stderr
    out, _ = client.communicate(timeout=10)  # the listener exits with the first datagram
    assert out.strip() == "reply"


def test_lan_to_wan_and_back_wan_to_lan_only_by_pinhole(home: Home6) -> None:
    home.listen(home.isp, "tcp", 9000)
    assert home.connect(home.lan, ISP, 9000) == "hello"  # out, and its replies in
    home.listen(home.lan, "tcp", 22)
    home.listen(home.lan, "tcp", 8080)
    assert home.connect(home.isp, HOST, 22).startswith("failed")  # unsolicited
    assert home.connect(home.isp, HOST, 8080) == "hello"  # the pinhole ::1234
    assert home.ping(home.isp, HOST)  # ipv6_ping_lan
