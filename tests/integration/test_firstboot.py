"""`homegw firstboot` in a namespace with three veth ports, run as the image runs it.

    hgw-TAG-gw:  eth0 <-> dn0   (peer down: no carrier)
                 eth1 <-> sw0   (peer up: carrier, nobody answers DHCP)
                 eth2 <-> isp0  (hgw-TAG-isp: dnsmasq offering DHCP)

The names put the DHCP port last, so "first by name" and "the only link"
cannot pass for "a DHCP server answered". The command is the real CLI in a
subprocess inside the namespace (`ip netns exec` gives it the namespace's
/sys/class/net); the config it writes must pass `homegw check-config`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from homegw import netns
from homegw.virtualhome import leftovers
from tests.integration.test_wan_client import DNSMASQ, Dnsmasq

REPO = Path(__file__).resolve().parents[2]
ROUTER = "203.0.113.1"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the subprocesses import this checkout

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="needs dnsmasq"),
]


@dataclass
class Ports:
    tag: str
    workdir: Path
    dnsmasq: Dnsmasq | None = None
    made: list[str] = field(default_factory=list)

    @property
    def gw(self) -> str:
        return f"hgw-{self.tag}-gw"

    @property
    def isp(self) -> str:
        return f"hgw-{self.tag}-isp"

    @property
    def peers(self) -> str:
        return f"hgw-{self.tag}-sw"

    def build(self) -> None:
        for ns in (self.gw, self.isp, self.peers):
            netns.add_netns(ns)
            self.made.append(ns)
        netns.add_veth("eth0", self.gw, "dn0", self.peers)
        netns.add_veth("eth1", self.gw, "sw0", self.peers)
        netns.add_veth("eth2", self.gw, "isp0", self.isp)
        netns.ip("link", "set", "sw0", "up", ns=self.peers)
        netns.ip("addr", "add", f"{ROUTER}/24", "dev", "isp0", ns=self.isp)
        netns.ip("link", "set", "isp0", "up", ns=self.isp)

    def start_dnsmasq(self, *options: str) -> None:
        argv = netns.exec_argv(self.isp, [
            DNSMASQ, *options, "--keep-in-foreground", "--no-resolv", "--no-hosts",
            "--conf-file=/dev/null", "--port=0", "--interface=isp0", "--bind-interfaces",
            "--dhcp-range=203.0.113.10,203.0.113.50,255.255.255.0,2m",
            f"--dhcp-leasefile={self.workdir / 'leases'}",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}", "--log-dhcp", "--log-facility=-",
        ])  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.dnsmasq = Dnsmasq(proc)
        self.dnsmasq.start_reader()
        assert self.dnsmasq.wait_log("DHCP, IP range"), "\n".join(self.dnsmasq.lines)

    @property
    def default_config(self) -> Path:
        """The example config, its state_dir (the setup code) under workdir."""
        path = self.workdir / "default.yaml"
        if not path.exists():
            text = (REPO / "homegw.example.yaml").read_text()
            state = f"state_dir: {self.workdir / 'state'}"
            path.write_text(text.replace("state_dir: /var/lib/homegw", state, 1))
        return path

    def firstboot_argv(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "homegw", "firstboot", "--include-virtual"]
        argv += ["--issue-file", str(self.workdir / "issue")]
        argv += ["--default-config", str(self.default_config), *args]
        return netns.exec_argv(self.gw, argv)

    def firstboot(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self.firstboot_argv(*args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)

    def admin_up(self, dev: str) -> bool:
        link = json.loads(netns.ip("-j", "link", "show", "dev", dev, ns=self.gw))[0]
        return "UP" in link["flags"]

    def teardown(self) -> None:
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
            print("\n".join(self.dnsmasq.lines))
        for ns in reversed(self.made):
            netns.delete_netns(ns)


@pytest.fixture
def ports(unique_tag: str, tmp_path: Path) -> Iterator[Ports]:
    bed = Ports(unique_tag, tmp_path)
    try:
        bed.build()
        yield bed
    finally:
        bed.teardown()
    assert not leftovers(unique_tag)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "homegw", "check-config", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)


def config_values(path: Path) -> tuple[str, str, str]:
    import yaml

    data = yaml.safe_load(path.read_text())
    return data["wan"]["interface"], data["lan"]["interface"], data["dataplane"]["xdp_mode"]


def test_the_port_with_a_dhcp_server_becomes_wan(ports: Ports) -> None:
    ports.start_dnsmasq()
    config = ports.workdir / "etc" / "homegw.yaml"
    done = ports.firstboot("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert config_values(config) == ("eth2", "eth0", "auto")
    assert config.stat().st_mode & 0o777 == 0o600
    checked = check_config(config)
    assert checked.returncode == 0, checked.stderr
    assert ports.dnsmasq is not None and ports.dnsmasq.count("DHCPDISCOVER(isp0)") >= 1
    issue = (ports.workdir / "issue").read_text()
    assert issue == done.stdout
    assert "WAN (internet): eth2  (a DHCP server (203.0.113.1) answered on eth2" in issue
    assert "Plug the modem into eth2, the home switch/computer into eth0," in issue
    code = (ports.workdir / "state" / "setup-token").read_text().strip()
    assert f"then open http://192.168.1.1/ to set the admin password; setup code: {code}" in issue
    assert "Ethernet ports found: eth0 eth1 eth2" in issue
    # the links are put back as found: all were down
    assert not any(ports.admin_up(dev) for dev in ("eth0", "eth1", "eth2"))


def first_discover(sock: socket.socket) -> bytes:
    """The next DHCPDISCOVER seen on the ISP's side (timeout: the socket's)."""
    while True:
        frame = sock.recv(2048)
        ihl = (frame[0] & 0x0F) * 4
        if frame[9] == socket.IPPROTO_UDP and frame[ihl + 2 : ihl + 4] == b"\x00\x43":
            return frame


def test_a_lost_first_discover_is_sent_again(ports: Ports) -> None:
    """The ISP's server comes up only after the first DISCOVER went by (as a
    modem still settling would miss it): a DISCOVER sent again gets the OFFER."""
    with netns.in_netns(ports.isp):
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sniffer.bind(("isp0", 0x0800))
    sniffer.settimeout(20)
    config = ports.workdir / "homegw.yaml"
    argv = ports.firstboot_argv("--config", str(config))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(argv, text=True, env=ENV, **pipes)
    try:
        first_discover(sniffer)
        ports.start_dnsmasq("--no-ping")  # its answer at once: only a resend can get it
        out, err = proc.communicate(timeout=30)
    finally:
        sniffer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert config_values(config) == ("eth2", "eth0", "auto")
    assert "a DHCP server (203.0.113.1) answered on eth2" in out


def test_without_dhcp_the_only_port_with_a_link_is_wan(ports: Ports) -> None:
    netns.ip("link", "set", "isp0", "down", ns=ports.isp)  # the modem is off
    netns.ip("link", "set", "eth0", "up", ns=ports.gw)  # up already: stays up
    config = ports.workdir / "homegw.yaml"
    done = ports.firstboot("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert config_values(config) == ("eth1", "eth0", "auto")
    assert "eth1 is the only port with a link" in done.stdout
    assert ports.admin_up("eth0") and not ports.admin_up("eth1")


def test_a_present_config_gets_the_banner_only(ports: Ports) -> None:
    config = ports.workdir / "homegw.yaml"
    text = ports.default_config.read_text()
    config.write_text(text)
    done = ports.firstboot("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert config.read_text() == text
    assert f"WAN (internet): eth0  (from {config})" in done.stdout
    assert "Ethernet ports found" not in done.stdout  # no probe ran


def test_console_override_rewrites_only_the_two_interface_lines(ports: Ports) -> None:
    config = ports.workdir / "homegw.yaml"
    assert ports.firstboot("--config", str(config)).returncode == 0
    assert config_values(config) == ("eth0", "eth1", "auto")  # two links: the first by name
    before = config.read_text().splitlines()
    done = ports.firstboot("--config", str(config), "--wan", "eth1", "--lan", "eth2")
    assert done.returncode == 0, done.stderr
    assert "systemctl restart homegw" in done.stderr
    after = config.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["interface: eth1", "interface: eth2"]
    assert config_values(config) == ("eth1", "eth2", "auto")
    assert check_config(config).returncode == 0
    refused = ports.firstboot("--config", str(config), "--wan", "eth9", "--lan", "eth2")
    assert refused.returncode == 1
    assert "no such port: eth9 (Ethernet ports: eth0 eth1 eth2)" in refused.stderr
    assert config.read_text().splitlines() == after


def test_one_port_is_refused_and_said_on_the_console(ports: Ports) -> None:
    netns.ip("link", "del", "eth1", ns=ports.gw)
    netns.ip("link", "del", "eth2", ns=ports.gw)
    config = ports.workdir / "homegw.yaml"
    done = ports.firstboot("--config", str(config))
    assert done.returncode == 1
    assert "needs two Ethernet ports (WAN and LAN); found 1: eth0" in done.stderr
    assert not config.exists()
    assert "not configured" in (ports.workdir / "issue").read_text()
