"""`homegw run` in the virtual home: start, serve, stop, refuse bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.pinned import read_chain_stats
from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess

STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
WEB = "192.168.1.1:8080"


def static_config(home: VirtualHome) -> dict:
    return home.gateway_config(wan=STATIC_WAN, webui={"listen": WEB})


@pytest.fixture
def appliance(virtual_home: VirtualHome) -> Iterator[ApplianceProcess]:
    app = ApplianceProcess(virtual_home, static_config(virtual_home)).start()
    yield app
    app.stop()


def xdp_attached(home: VirtualHome, ifname: str) -> bool:
    out = home.run("gw", ["ip", "-d", "link", "show", "dev", ifname], check=True).stdout
    return "prog/xdp" in out


def curl(home: VirtualHome, ns: str, url: str, timeout: int = 5) -> subprocess.CompletedProcess:
    return home.run(ns, ["curl", "-sS", "--max-time", str(timeout), url])


def test_ready_healthz_stop_keeps_the_datapath_cleanup_removes_it(
    appliance: ApplianceProcess,
) -> None:
    home = appliance.home
    appliance.wait_healthy()
    assert xdp_attached(home, "lan0") and xdp_attached(home, "wan0")
    health = curl(home, "h1", f"http://{WEB}/healthz")
    assert health.returncode == 0, health.stderr
    assert '"ready":true' in health.stdout.replace(" ", "")
    assert appliance.stop() == 0
    # a stop is a restart's first half: roots, pins and the kernel-path table stay
    assert xdp_attached(home, "lan0") and xdp_attached(home, "wan0")
    assert "homegw" in home.run("gw", ["nft", "list", "tables"]).stdout
    assert "Traceback" not in appliance.log
    argv = [sys.executable, "-m", "homegw", "cleanup", "-c", str(appliance.config_path)]
    cleanup = home.run("gw", argv)
    assert cleanup.returncode == 0, cleanup.stderr
    assert not xdp_attached(home, "lan0") and not xdp_attached(home, "wan0")
    assert "homegw" not in home.run("gw", ["nft", "list", "tables"]).stdout
    assert not home.pin_dir.exists()


def test_lan_host_reaches_isp_web_server(appliance: ApplianceProcess) -> None:
    home = appliance.home
    appliance.wait_healthy()
    assert "loaded module nat" in appliance.log and "loaded module router" in appliance.log
    page = curl(home, "h1", f"http://{home.web_server}/")
    assert page.returncode == 0, page.stderr
    assert home.web_text in page.stdout


def test_admin_surface_not_reachable_from_wan(appliance: ApplianceProcess) -> None:
    home = appliance.home
    appliance.wait_healthy()
    home.add_lan_route_on_isp("203.0.113.2")
    assert curl(home, "h1", f"http://{WEB}/healthz").returncode == 0
    from_wan = curl(home, "isp", f"http://{WEB}/healthz", timeout=3)
    assert from_wan.returncode != 0
    assert "ready" not in from_wan.stdout


def test_pinned_counter_survives_restart(virtual_home: VirtualHome) -> None:
    home = virtual_home
    pin_dir = str(home.pin_dir)
    first = ApplianceProcess(home, static_config(home)).start()
    first.wait_healthy()
    home.run("h1", ["ping", "-c", "5", "-i", "0.01", "192.168.1.1"], check=True)
    assert first.stop() == 0
    before = read_chain_stats(pin_dir, Nic.LAN, Hook.XDP)[0]
    assert before >= 5

    second = ApplianceProcess(home, static_config(home), name="again").start()
    second.wait_healthy()
    home.run("h1", ["ping", "-c", "5", "-i", "0.01", "192.168.1.1"], check=True)
    assert second.stop() == 0
    after = read_chain_stats(pin_dir, Nic.LAN, Hook.XDP)[0]
    assert after >= before + 5


def run_cli(home: VirtualHome, config: dict) -> subprocess.CompletedProcess:
    path = home.state_dir / "bad.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return home.run("gw", [sys.executable, "-m", "homegw", "run", "-c", str(path)], timeout=120)


def test_missing_interface_exits_and_changes_nothing(virtual_home: VirtualHome) -> None:
    home = virtual_home
    result = run_cli(home, home.gateway_config(wan={**STATIC_WAN, "interface": "nosuch0"}))
    assert result.returncode == 1
    assert "nosuch0" in result.stderr and "not found" in result.stderr
    addresses = home.run("gw", ["ip", "-4", "-br", "addr", "show", "dev", "lan0"]).stdout
    assert "192.168.1.1" not in addresses
    assert not xdp_attached(home, "lan0")


def test_invalid_config_exits_with_paths(virtual_home: VirtualHome) -> None:
    home = virtual_home
    config = home.gateway_config(wan={"address": "198.51.100.300/24", "mode": "static"})
    config["lan"]["colour"] = "blue"
    result = run_cli(home, config)
    assert result.returncode == 1
    assert "lan.colour" in result.stderr and "wan.address" in result.stderr
    assert not xdp_attached(home, "lan0")
