"""DPI in the virtual home, the appliance in this process (its threads in the
gateway's namespace): real curl over TLS to a TLS server in the ISP
namespace classified by its SNI (one segment, a ClientHello across several
segments, segments reordered on the way), HTTP by its Host, a flow to an
address our DNS forwarder answered classified at its first packet, a QUIC
Initial from aioquic by its decrypted SNI; a block cuts a running download
and refuses new flows (whose first request waits for the verdict) and DNS
answers; pause and resume."""

from __future__ import annotations

import subprocess
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
from homegw.modules.dpi.service import DpiService
from homegw.virtualhome import VirtualHome
from tests.integration.dpi_peers import write_self_signed

pytestmark = pytest.mark.netns

STATIC_WAN = {
    "mode": "static",
    "address": "203.0.113.2/24",
    "gateway": "203.0.113.1",
    "dns": ["198.51.100.53"],
}
WEB = "192.168.1.1:8080"
H1_MAC = "02:48:47:00:00:01"
TLS_PORT = 443
SPLIT_PORT = 8443  # the same server with MSS 200: a ClientHello crosses segments
WAIT_S = 10.0
DNS_NAMES = {"www.tiktok.com": "198.51.100.80", "www.twitch.tv": "198.51.100.80"}


class Home:
    def __init__(self, home: VirtualHome, app: Appliance, mgmt: Management) -> None:
        self.home, self.app, self.mgmt = home, app, mgmt

    @property
    def dpi(self) -> DpiService:
        service = self.app.dpi
        assert service is not None
        return service

    def counters(self) -> dict[str, int]:
        """The DPI datapath's counters."""
        assert self.app.dataplane is not None
        return self.app.dataplane.modules["dpi"].module.counters()

    def curl(self, *args: str, host: str = "h1") -> subprocess.CompletedProcess[str]:
        argv = ["curl", "-sS", "-k", "--max-time", "5", *args]
        return self.home.run(host, argv)

    def flow(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first flow of the DPI table that matches, once classified."""
        found: list[dict[str, Any]] = []

        def classified() -> bool:
            rows = [r for r in self.dpi.flow_rows() if match(r) and r["source"] != "none"]
            found[:] = rows
            return bool(rows)

        assert netns.wait_for(classified, WAIT_S), (
            self.dpi.flow_rows(),
            self.counters(),
            dict(self.dpi.classifier.counters),
        )
        return found[0]

    def apply_dpi(self, **section: Any) -> None:
        current = self.mgmt.config_get("dpi")
        self.mgmt.config_apply({**current, **section}, section="dpi")


def _remote_port(port: int) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row["remote"].endswith(f":{port}")


@pytest.fixture
def running(make_virtual_home: Callable[..., VirtualHome], tmp_path: Path) -> Iterator[Home]:
    home = make_virtual_home(dns_records=DNS_NAMES)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key)
    peers = []
    for port, mss in ((TLS_PORT, None), (SPLIT_PORT, 200)):
        argv = [sys.executable, "-m", "tests.integration.dpi_peers", "tls"]
        argv += ["--bind", home.web_server, "--port", str(port), "--cert", str(cert)]
        argv += ["--key", str(key)] + (["--mss", str(mss)] if mss else [])
        peers.append(home.popen("isp", argv))
    for port in (TLS_PORT, SPLIT_PORT):
        listening = lambda p=port: netns.listening(home.ns("isp"), "tcp", home.web_server, p)  # noqa: E731
        assert netns.wait_for(listening, WAIT_S)
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = home.gateway_config(wan=STATIC_WAN, webui={"listen": WEB}, dpi={"enabled": True})
    path.write_text(yaml.safe_dump(config))
    try:
        with netns.in_netns(home.ns("gw")):
            app = Appliance(load_config(path))
            app.start()
            try:
                yield Home(home, app, Management(app, path))
            finally:
                app.stop()
    finally:
        for peer in peers:
            peer.kill()
            peer.wait(5)


def resolve(name: str, port: int, home: VirtualHome) -> list[str]:
    return ["--resolve", f"{name}:{port}:{home.web_server}", f"https://{name}:{port}/"]


def test_tls_sni_in_one_segment_and_across_segments(running: Home) -> None:
    home = running.home
    assert running.curl(*resolve("www.youtube.com", TLS_PORT, home)).returncode == 0
    flow = running.flow(_remote_port(TLS_PORT))
    assert (flow["app"], flow["category"], flow["source"]) == ("youtube", "video", "sni")
    assert flow["device"] == H1_MAC
    punted = running.counters()["punted"]
    assert running.curl(*resolve("www.netflix.com", SPLIT_PORT, home)).returncode == 0
    flow = running.flow(_remote_port(SPLIT_PORT))
    assert (flow["app"], flow["source"]) == ("netflix", "sni")
    assert running.counters()["punted"] - punted >= 2  # the hello took several segments


def test_tls_sni_with_segments_reordered_on_the_way(running: Home) -> None:
    """A ClientHello in three segments sent last first (by hand: this kernel
    has no netem), which the TLS server reassembles and answers."""
    home = running.home
    drop_rst = "add table ip t; add chain ip t out { type filter hook output priority 0; }; "
    drop_rst += "add rule ip t out tcp flags rst drop"
    home.run("h1", ["nft", drop_rst], check=True)
    argv = [sys.executable, "-m", "tests.integration.dpi_peers", "reorder"]
    argv += ["--to", f"{home.web_server}:{TLS_PORT}", "--server-name", "discord.com"]
    result = home.run("h1", argv)
    assert "server hello" in result.stdout, result.stdout + result.stderr
    flow = running.flow(_remote_port(TLS_PORT))
    assert (flow["app"], flow["source"]) == ("discord", "sni")


def test_http_host_and_dns_attribution_at_the_first_packet(running: Home) -> None:
    home = running.home
    page = running.curl("-H", "Host: www.roblox.com", f"http://{home.web_server}/")
    assert page.returncode == 0, page.stderr
    flow = running.flow(_remote_port(80))
    assert (flow["app"], flow["source"]) == ("roblox", "host")
    dig = home.run("h1", ["dig", "+short", "@192.168.1.1", "www.tiktok.com"])
    assert dig.stdout.split() == [home.web_server]
    # a flow to the address just answered: classified by DNS, before any payload
    assert running.curl(*resolve("anything.test", TLS_PORT, home)).returncode == 0
    flow = running.flow(lambda r: r["remote"].endswith(":443") and r["source"] == "dns")
    assert (flow["app"], flow["category"]) == ("tiktok", "social")


def test_quic_initial_classified_by_its_decrypted_sni(running: Home) -> None:
    home = running.home
    argv = [sys.executable, "-m", "tests.integration.dpi_peers", "quic"]
    argv += ["--to", f"{home.web_server}:443", "--server-name", "www.instagram.com"]
    assert home.run("h1", argv).returncode == 0
    flow = running.flow(lambda r: r["proto"] == "udp" and r["remote"].endswith(":443"))
    assert (flow["app"], flow["source"]) == ("instagram", "quic")


def test_a_block_cuts_a_running_download_and_refuses_new_flows(running: Home) -> None:
    home = running.home
    argv = ["curl", "-sS", "-k", "--max-time", "60", "-o", "/dev/null"]
    argv += ["--resolve", f"www.youtube.com:443:{home.web_server}", "https://www.youtube.com/slow"]
    download = home.popen("h1", argv, stderr=subprocess.PIPE, text=True)
    try:
        flow_down = lambda: any(  # noqa: E731
            r["app"] == "youtube" and r["down_bytes"] > 100_000 for r in running.dpi.flow_rows()
        )
        assert netns.wait_for(flow_down, WAIT_S), running.dpi.flow_rows()
        rule = {"name": "no-video", "who": [H1_MAC], "block_categories": ["video"]}
        running.apply_dpi(rules=[rule])
        assert download.wait(WAIT_S) != 0  # reset by the gateway
        assert "reset" in download.stderr.read().lower()
    finally:
        if download.poll() is None:
            download.kill()
            download.wait()
    counters = running.counters()
    assert counters["blocked_tcp_up"] + counters["blocked_tcp_down"] >= 1
    # a new flow to the app fails, however late the verdict (its ClientHello
    # was held until then), another app still works
    held = running.counters()["held"]
    assert running.curl(*resolve("www.youtube.com", TLS_PORT, home)).returncode != 0
    assert running.counters()["held"] == held + 1
    assert running.curl(*resolve("www.wikipedia.org", TLS_PORT, home)).returncode == 0
    # and its names are answered as blocked by the gateway's DNS
    running.apply_dpi(rules=[{"name": "no-social", "who": [H1_MAC], "block_apps": ["tiktok"]}])
    dig = home.run("h1", ["dig", "+short", "@192.168.1.1", "www.tiktok.com"])
    assert dig.stdout.split() == ["0.0.0.0"]


def test_pause_and_resume(running: Home) -> None:
    home = running.home
    page = f"http://{home.web_server}/"
    assert running.curl(page).returncode == 0
    running.mgmt.pause(H1_MAC, 30)
    assert running.curl(page).returncode != 0
    assert running.curl(page, host="h2").returncode == 0  # another device is not paused
    state = {d["mac"]: d for d in running.mgmt.parental()["devices"]}
    assert state[H1_MAC]["paused_until"] is not None
    running.mgmt.pause(H1_MAC, 0)
    assert running.curl(page).returncode == 0
