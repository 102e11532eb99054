"""Devices in the virtual home, with the appliance running in this process
(its threads in the gateway's namespace, as in test_live_config): pausing a
LAN host stops its running download from the ISP's web server within a few
seconds, established flow included, while the gateway itself still answers
it; resuming lets the download go on. And device() of a real DHCP client
(udhcpc) shows its hostname, address, vendor and traffic history."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from homegw import netns
from homegw.appliance import Appliance
from homegw.config import load_config
from homegw.management import Management
from homegw.virtualhome import VirtualHome
from tests.integration.dhcp_helpers import hook_script, wait_event

pytestmark = pytest.mark.netns

STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
WEB = "192.168.1.1:8080"
H1_MAC = "02:48:47:00:00:01"
GOOGLE_MAC = "00:1a:11:00:00:02"  # a registered OUI (Google), for the vendor
STALL_S = 1.0  # no byte arrived for this long: the download stands still
IN_FLIGHT = 256 * 1024  # bytes already past the gateway when it paused, at most
WAIT_S = 10.0
HOOK = """#!/bin/sh
echo "EVENT $1 ip=$ip" >> {events}
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
               ip route replace default via "$router" ;;
esac
exit 0
"""


class Running:
    def __init__(self, home: VirtualHome, app: Appliance, mgmt: Management) -> None:
        self.home, self.app, self.mgmt = home, app, mgmt

    def router_counter(self, name: str) -> int:
        assert self.app.dataplane is not None
        return self.app.dataplane.modules["router"].module.counters()[name]


@pytest.fixture(params=["xdp"])
def running(make_virtual_home: Callable[..., VirtualHome], request) -> Iterator[Running]:
    """The appliance; with the param "kernel" the router is disabled and
    Linux forwards (the kernel path's nftables table does the pausing)."""
    home = make_virtual_home(big_file_mib=16)
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"router": {"enabled": False}} if request.param == "kernel" else {}
    config = home.gateway_config(wan=STATIC_WAN, webui={"listen": WEB}, **extra)
    path.write_text(yaml.safe_dump(config))
    with netns.in_netns(home.ns("gw")):
        app = Appliance(load_config(path))
        app.start()
        try:
            yield Running(home, app, Management(app, path))
        finally:
            app.stop()


def nft_paused_drops(home: VirtualHome, direction: str) -> int:
    """Packets the kernel path's "device paused: from|to" rule dropped."""
    rules = home.run("gw", ["nft", "list", "chain", "inet", "homegw_kernelpath", "forward"])
    pattern = rf'counter packets (\d+) bytes \d+ drop comment "device paused: {direction}"'
    return sum(map(int, re.findall(pattern, rules.stdout)))


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wait_growing(path: Path, timeout: float = WAIT_S) -> int:
    """Wait until the download's file grows; its new size."""
    start = size(path)
    assert netns.wait_for(lambda: size(path) > start, timeout), f"stuck at {start} bytes"
    return size(path)


def wait_stalled(path: Path, timeout: float = WAIT_S) -> int:
    """Wait until the file has not grown for STALL_S; its size then."""
    deadline = time.monotonic() + timeout
    last, since = size(path), time.monotonic()
    while time.monotonic() < deadline:
        now_size = size(path)
        if now_size != last:
            last, since = now_size, time.monotonic()
        elif time.monotonic() - since >= STALL_S:
            return last
        time.sleep(0.05)  # polling the byte count, not a fixed wait
    raise AssertionError(f"the download kept going ({last} bytes) {timeout} s after the pause")


@pytest.mark.parametrize("running", ["xdp", "kernel"], indirect=True)
def test_pause_stops_a_running_download_and_resume_lets_it_go_on(
    running: Running, tmp_path: Path
) -> None:
    home, mgmt = running.home, running.mgmt
    # curl's --limit-rate paces its reads: with the default receive buffer
    # (MiBs) it would go on reading what arrived before the pause for seconds
    rmem = ["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 32768 65536"]
    home.run("h1", rmem, check=True)
    out = tmp_path / "big.bin"
    url = f"http://{home.web_server}/big.bin"
    argv = ["curl", "-sS", "--limit-rate", "1M", "--max-time", "120", "-o", str(out), url]
    download = home.popen("h1", argv, stderr=subprocess.PIPE)
    try:
        wait_growing(out)
        result = mgmt.device_set(H1_MAC, {"paused": True})
        at_pause = size(out)  # applied by now (the config apply took a while at 1 MB/s)
        assert (result.changed, result.applied.get("devices")) == (["devices"], "maps")
        assert mgmt.config_get()["devices"] == [{"mac": H1_MAC, "paused": True}]
        stalled = wait_stalled(out)
        assert stalled <= at_pause + IN_FLIGHT < home.big_file_size
        if running.app.kernel_path:  # Linux forwards: the nftables table drops
            assert nft_paused_drops(home, "from") > 0  # its ACKs
            assert nft_paused_drops(home, "to") > 0  # the server's retransmissions
        else:
            assert running.router_counter("device_paused") > 0
        # the gateway itself still answers the paused device (the web UI here)
        page = home.run("h1", ["curl", "-sS", "--max-time", "3", f"http://{WEB}/healthz"])
        assert page.returncode == 0, page.stderr
        # ... and the download stays stopped: what reaches the file after the
        # pause is at most what was already on its way (the receive window and
        # curl's buffer; on a machine this busy curl may write it late), far
        # from the 1 MB/s it would make otherwise
        assert not netns.wait_for(lambda: size(out) > at_pause + IN_FLIGHT, 3.0)
        assert mgmt.device(H1_MAC)["paused"] is True

        mgmt.device_set(H1_MAC, {"paused": False})
        assert mgmt.config_get().get("devices", []) == []  # neither a name nor paused
        wait_growing(out, timeout=30)  # TCP retransmits after its backed-off timeout
        assert download.poll() is None or download.returncode == 0
    finally:
        if download.poll() is None:
            download.kill()
        download.wait()


def test_device_of_a_real_dhcp_client(running: Running, tmp_path: Path) -> None:
    home, mgmt = running.home, running.mgmt
    home.run("h2", ["ip", "addr", "flush", "dev", "eth0"], check=True)
    home.run("h2", ["ip", "link", "set", "eth0", "address", GOOGLE_MAC], check=True)
    script, events = hook_script(home, "udhcpc-devices", HOOK)
    argv = ["udhcpc", "-i", "eth0", "-f", "-q", "-t", "5", "-T", "1", "-s", str(script)]
    hostname = "kitchen-tablet"
    client = home.run("h2", [*argv, "-x", f"hostname:{hostname}"], timeout=30)
    assert client.returncode == 0, client.stderr
    bound = wait_event(events, r"^EVENT bound ip=")
    address = bound.split("ip=")[1]
    page = home.run("h2", ["curl", "-sS", "--max-time", "5", f"http://{home.web_server}/"])
    assert page.returncode == 0, page.stderr

    device = mgmt.device(GOOGLE_MAC)
    assert (device["hostname"], device["name"], device["user_name"]) == (hostname, hostname, None)
    assert device["addresses"] == [address]
    assert (device["vendor"], device["random_mac"]) == ("Google, Inc.", False)
    assert device["online"] is True and device["lease_expires"] > time.time()
    # first seen: on every CPU's entry (the kernel makes the other CPUs' zeroed)
    assert device["first_seen"] <= device["last_seen"] <= time.time() + 2
    assert device["total"]["to_bytes"] >= len(page.stdout) and device["total"]["from_packets"]
    history = device["history"]
    assert len(history) == 24 and history[-1]["hour"] <= time.time() < history[-1]["hour"] + 3600
    assert history[-1]["to_bytes"] == device["total"]["to_bytes"]  # not folded yet: counted
    assert device["today"]["to_bytes"] == device["total"]["to_bytes"]
    assert [d["mac"] for d in mgmt.devices()].count(GOOGLE_MAC) == 1

    mgmt.device_set(GOOGLE_MAC, {"name": "Kitchen <tablet>"})
    assert mgmt.device(GOOGLE_MAC)["name"] == "Kitchen <tablet>"
    lan = mgmt.traffic_history(3)
    assert len(lan) == 3 and lan[-1]["to_bytes"] >= device["total"]["to_bytes"]
    assert os.path.exists(Path(home.state_dir) / "traffic.sqlite")
