"""IPv6 end to end in the virtual home, the appliance in this process (its
threads in the gateway's namespace), against real peers: Kea (DHCPv6 with
prefix delegation) and radvd at the ISP, kernel SLAAC and rdisc6 on LAN
hosts, ping, curl, traceroute and dig through the gateway; the ISP
renumbers the delegated prefix; strangers on the ISP side try to get in."""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homegw import netns
from homegw.appliance import Appliance
from homegw.config import load_config
from homegw.management import Management
from homegw.virtualhome import VirtualHome
from homegw.virtualhome6 import ISP6_ADDRESS, PD_POOL_RENUMBERED, WEB6_SERVER
from homegw.virtualhome6 import PD_POOL as PD_POOL_TEXT

pytestmark = pytest.mark.netns

STATIC_WAN = {
    "mode": "static",
    "address": "203.0.113.2/24",
    "gateway": "203.0.113.1",
    "dns": ["198.51.100.53"],
}
WEB = "192.168.1.1:8080"
WEB6 = WEB6_SERVER
PD_POOL = ipaddress.IPv6Network(PD_POOL_TEXT)
RENUMBERED_POOL = ipaddress.IPv6Network(PD_POOL_RENUMBERED)
WAIT_S = 30.0
A = ipaddress.IPv6Address


class Home:
    def __init__(self, home: VirtualHome, app: Appliance, mgmt: Management) -> None:
        self.home, self.app, self.mgmt = home, app, mgmt

    @property
    def facts(self):
        assert self.app.ipv6 is not None
        return self.app.ipv6.facts

    def counters(self, module: str) -> dict[str, int]:
        assert self.app.dataplane is not None
        return self.app.dataplane.modules[module].module.counters()

    def global_lan(self, pool: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
        """The LAN /64 from the ISP's pool, once delegated."""
        found: list[ipaddress.IPv6Network] = []

        def delegated() -> bool:
            found[:] = [p for p in self.facts.lan_prefixes if p.subnet_of(pool)]
            return bool(found)

        assert netns.wait_for(delegated, WAIT_S), self.app.ipv6.status()
        return found[0]

    def host_addresses(self, host: str = "h1") -> list[dict[str, Any]]:
        out = self.home.run(host, ["ip", "-j", "-6", "addr", "show", "dev", "eth0"], check=True)
        return [a for link in json.loads(out.stdout) for a in link.get("addr_info", [])]

    def host_address(self, net: ipaddress.IPv6Network, host: str = "h1") -> dict[str, Any]:
        """The host's SLAAC address in net, once it has one."""
        found: list[dict[str, Any]] = []

        def configured() -> bool:
            found[:] = [
                a
                for a in self.host_addresses(host)
                if A(a["local"]) in net and "tentative" not in a
            ]
            return bool(found)

        assert netns.wait_for(configured, WAIT_S), self.host_addresses(host)
        return found[0]

    def diagnosis(self) -> dict[str, Any]:
        """What a failure message needs: the facts and the v6 counters that moved."""
        moved = {
            f"{module}.{name}": value
            for module in ("router", "firewall")
            for name, value in self.counters(module).items()
            if value and name.startswith("v6_")
        }
        routes = self.home.run("h1", ["ip", "-6", "route"]).stdout
        return {"facts": self.facts, "counters": moved, "h1 routes": routes}

    def wait_default_route(self, host: str = "h1") -> None:
        """Until the host took the gateway as its IPv6 default router (RA)."""

        def routed() -> bool:
            return "default via" in self.home.run(host, ["ip", "-6", "route"]).stdout

        assert netns.wait_for(routed, WAIT_S), self.diagnosis()

    def curl6(self, host: str, url: str) -> Any:
        return self.home.run(host, ["curl", "-6", "-sS", "--max-time", "5", url])


@pytest.fixture
def running(make_virtual_home: Callable[..., VirtualHome]) -> Iterator[Home]:
    home = make_virtual_home(ipv6=True)
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(home.gateway_config(wan=STATIC_WAN, webui={"listen": WEB})))
    with netns.in_netns(home.ns("gw")):
        app = Appliance(load_config(path))
        app.start()
        try:
            yield Home(home, app, Management(app, path))
        finally:
            app.stop()


def test_a_lan_host_gets_ipv6_from_the_delegated_prefix_and_reaches_the_internet(
    running: Home,
) -> None:
    home = running.home
    lan = running.global_lan(PD_POOL)
    ula_dns = running.app.ipv6.dns_addresses()[0]
    running.host_address(lan)
    running.host_address(ipaddress.IPv6Network(f"{ula_dns}/64", strict=False))
    ra = home.run("h1", ["rdisc6", "-1", "-w", "1000", "-r", "5", "eth0"])
    assert re.search(rf"Recursive DNS server\s*:\s*{ula_dns}\b", ra.stdout), ra.stdout
    assert re.search(r"DNS search list\s*:\s*lan\b", ra.stdout), ra.stdout
    running.wait_default_route()
    before = running.counters("router")
    ping = home.run("h1", ["ping", "-6", "-c", "2", "-W", "2", WEB6])
    assert ping.returncode == 0, (running.diagnosis(), ping.stdout)
    page = running.curl6("h1", f"http://[{WEB6}]/")
    assert page.returncode == 0 and home.web_text in page.stdout, page.stderr
    after = running.counters("router")
    assert after["v6_forwarded"] - before.get("v6_forwarded", 0) >= 4  # through XDP
    trace = home.run("h1", ["traceroute", "-6", "-n", "-q", "1", "-w", "2", "-m", "3", WEB6])
    hops = [line.split()[1] for line in trace.stdout.splitlines()[1:] if line.split()]
    assert hops[:2] == [str(running.facts.lan_address), WEB6], trace.stdout
    dig = home.run("h1", ["dig", "+short", "AAAA", f"@{ula_dns}", "www.example.test"])
    assert dig.stdout.split() == [WEB6], dig.stdout + dig.stderr


def test_the_isp_renumbers_and_the_lan_follows_without_a_restart(running: Home) -> None:
    home = running.home
    old_lan = running.global_lan(PD_POOL)
    old = running.host_address(old_lan)
    home.isp6.renumber()
    running.app.renew_wan_lease()
    new_lan = running.global_lan(RENUMBERED_POOL)
    running.host_address(new_lan)

    def old_deprecated() -> bool:
        return any(
            a["local"] == old["local"] and a.get("preferred_life_time") == 0
            for a in running.host_addresses()
        )

    assert netns.wait_for(old_deprecated, WAIT_S), running.host_addresses()
    # new connections leave from the new prefix
    served = running.curl6("h1", f"http://[{WEB6}]/")
    assert served.returncode == 0 and home.web_text in served.stdout, served.stderr


UDP_LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "s.bind(('::', int(sys.argv[1])))\n"
    "data, peer = s.recvfrom(100)\n"
    "print(peer[0], data.decode(), flush=True)\n"
)


def test_strangers_on_the_isp_side_get_nothing_but_what_a_rule_allows(running: Home) -> None:
    home = running.home
    lan = running.global_lan(PD_POOL)
    h1 = A(running.host_address(lan)["local"])
    web = home.popen("h1", [sys.executable, "-m", "http.server", "--bind", "::", "8080"])
    udp = home.popen("h1", [sys.executable, "-c", UDP_LISTENER, "9999"], stdout=-1, text=True)
    try:
        assert netns.wait_for(lambda: netns.listening(home.ns("h1"), "tcp", "*", 8080), 10)
        before = running.counters("firewall")
        refused = home.run("isp", ["curl", "-6", "-sS", "--max-time", "2", f"http://[{h1}]:8080/"])
        assert refused.returncode != 0
        sock = "socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)"
        send = f"import socket; {sock}.sendto(b'x', ('{h1}', 9999))"
        home.run("isp", [sys.executable, "-c", send], check=True)

        def dropped() -> bool:
            return running.counters("firewall")["v6_unsolicited"] - before["v6_unsolicited"] >= 2

        assert netns.wait_for(dropped, 5), running.counters("firewall")
        assert udp.poll() is None  # it received nothing
        # a pinhole for h1's interface id lets the web server in
        iid = str(ipaddress.IPv6Address(int(h1) & (2**64 - 1)))  # "::248:47ff:fe00:1"
        firewall = running.mgmt.config_get("firewall")
        pinhole = {"name": "h1-web", "protocol": "tcp", "port": 8080, "host": iid}
        running.mgmt.config_apply({**firewall, "ipv6_pinholes": [pinhole]}, section="firewall")
        allowed = home.run("isp", ["curl", "-6", "-sS", "--max-time", "5", f"http://[{h1}]:8080/"])
        assert allowed.returncode == 0, allowed.stderr
    finally:
        for proc in (web, udp):
            proc.kill()
            proc.wait(5)


def test_packet_too_big_about_a_live_flow_reaches_the_host(running: Home) -> None:
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether

    home = running.home
    lan = running.global_lan(PD_POOL)
    h1 = running.host_address(lan)["local"]
    # a connected UDP socket the error is about, open while the error arrives
    # (the kernel takes a packet too big to the socket of the quoted flow)
    hold = (
        "import socket, sys; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
        f"s.bind(('{h1}', 40000)); s.connect(('{WEB6}', 9)); s.send(b'x' * 1200); "
        "sys.stdin.read()"
    )
    before = running.counters("firewall")["v6_sessions_created"]
    flow = home.popen("h1", [sys.executable, "-c", hold], stdin=-1)
    created = lambda: running.counters("firewall")["v6_sessions_created"] > before  # noqa: E731
    assert netns.wait_for(created, 5), running.diagnosis()
    quoted = IPv6(src=h1, dst=WEB6, hlim=63) / UDP(sport=40000, dport=9) / (b"x" * 1100)
    isp_ip = ISP6_ADDRESS
    frame = Ether(src=home.mac_of("isp", "isp0"), dst=home.mac_of("gw", "wan0"))
    frame /= IPv6(src=isp_ip, dst=h1) / ICMPv6PacketTooBig(mtu=1280) / quoted
    home.send_frames("isp", "isp0", [bytes(frame)])

    def pmtu_learned() -> bool:
        route = home.run("h1", ["ip", "-6", "route", "get", WEB6]).stdout
        return "mtu 1280" in route

    try:
        assert netns.wait_for(pmtu_learned, 5), running.diagnosis()
        assert running.counters("firewall")["v6_wan_icmp_error"] >= 1
    finally:
        flow.kill()
        flow.wait(5)


def test_static_wan_ipv6_with_a_configured_prefix(
    make_virtual_home: Callable[..., VirtualHome],
) -> None:
    """wan.ipv6 static: the prefix the ISP routes to the gateway (here one of
    the pool it routes to the gateway's link-local), no DHCPv6 client."""
    home = make_virtual_home(ipv6=True)
    wan6 = {
        "mode": "static",
        "address": "2001:db8:ffff:1::2/64",
        "gateway": ISP6_ADDRESS,
        "prefix": "2001:db8:100:ff00::/56",
    }
    config = home.gateway_config(wan={**STATIC_WAN, "ipv6": wan6}, webui={"listen": WEB})
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    with netns.in_netns(home.ns("gw")):
        app = Appliance(load_config(path))
        app.start()
        try:
            running = Home(home, app, Management(app, path))
            lan = ipaddress.IPv6Network("2001:db8:100:ff00::/64")
            assert running.global_lan(lan) == lan
            assert app.ipv6.client is None
            running.host_address(lan)
            running.wait_default_route()
            page = running.curl6("h1", f"http://[{WEB6}]/")
            assert page.returncode == 0 and home.web_text in page.stdout, running.diagnosis()
            assert running.facts.wan_gateway == ipaddress.IPv6Address(ISP6_ADDRESS)
        finally:
            app.stop()
