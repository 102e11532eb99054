"""The virtual home test bed itself: topology, ISP services, teardown and crash cleanup."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from homegw import netns
from homegw.demo import run_demo
from homegw.netns import NetnsError
from homegw.virtualhome import (
    DHCP_POOL,
    DNS_SERVER,
    LAN_NET,
    WEB_SERVER,
    VirtualHome,
    cleanup_leftovers,
    leftovers,
    mgmt_dev_name,
    pin_dir_for,
    root_route_overlap,
)

WAN_STATIC = "203.0.113.2"


def ok(home: VirtualHome, short: str, argv: list[str]) -> str:
    """Run argv in a namespace of the home; fail the test with its output if it fails."""
    proc = home.run(short, argv)
    assert proc.returncode == 0, f"{argv} in {short}: rc={proc.returncode} {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wan_home(virtual_home_module: VirtualHome) -> Iterator[VirtualHome]:
    """The module's home with wan0 statically on the ISP link, as a gateway would be."""
    home = virtual_home_module
    ok(home, "gw", ["ip", "addr", "add", f"{WAN_STATIC}/24", "dev", "wan0"])
    ok(home, "gw", ["ip", "route", "add", "default", "via", home.isp_address])
    yield home


def test_build_then_teardown_leaves_nothing(unique_tag: str) -> None:
    home = VirtualHome(unique_tag).build()
    try:
        names = set(netns.list_netns())
        for short in ("isp", "gw", "sw", "h1", "h2", "h3"):
            assert f"hgw-{unique_tag}-{short}" in names
        pids = [pid for short in home.ns_shorts for pid in netns.netns_pids(home.ns(short))]
        assert len(pids) == 3, f"expected dnsmasq x2 + http.server, got {pids}"
        home.pin_dir.mkdir()  # what the appliance would create
        assert home.state_dir.is_dir()
    finally:
        home.teardown()
    assert leftovers(unique_tag) == []
    assert not any(netns.pid_alive(pid) for pid in pids)
    home.teardown()  # idempotent


def test_gateway_namespace_is_unaddressed(virtual_home: VirtualHome) -> None:
    for dev in ("wan0", "lan0"):
        info = json.loads(ok(virtual_home, "gw", ["ip", "-j", "addr", "show", "dev", dev]))
        assert "UP" in info[0]["flags"]
        assert [a for a in info[0]["addr_info"] if a["family"] == "inet"] == []


def test_tx_checksum_offload_is_off(virtual_home_module: VirtualHome) -> None:
    home = virtual_home_module
    for short, dev in (
        ("isp", "isp0"),
        ("gw", "wan0"),
        ("gw", "lan0"),
        ("sw", "p-lan"),
        ("sw", "p-h1"),
        ("h1", "eth0"),
    ):
        features = ok(home, short, ["ethtool", "-k", dev])
        assert re.search(r"^tx-checksumming: off", features, re.M), f"{short}/{dev}"


def test_lan_hosts_reach_each_other_across_the_bridge(virtual_home_module: VirtualHome) -> None:
    home = virtual_home_module
    h1, h2, h3 = home.hosts
    for peer in (h2, h3):
        ok(home, "h1", ["ping", "-c", "1", "-W", "2", str(peer.ip)])
    neigh = ok(home, "h1", ["ip", "neigh", "show", str(h2.ip)])
    assert h2.mac in neigh
    absent = home.run("h1", ["ping", "-c", "1", "-W", "1", "192.168.1.99"])
    assert absent.returncode != 0, "a ping to an address nobody has must fail"


@pytest.mark.parametrize("virtual_home", [{"lan_hosts_static": False}], indirect=True)
def test_lan_hosts_without_static_addresses(virtual_home: VirtualHome) -> None:
    info = json.loads(ok(virtual_home, "h1", ["ip", "-j", "addr", "show", "dev", "eth0"]))[0]
    assert "UP" in info["flags"]
    assert [a for a in info["addr_info"] if a["family"] == "inet"] == []


def test_isp_dhcp_server_offers_wan_address(virtual_home: VirtualHome) -> None:
    home = virtual_home
    proc = home.run("gw", ["udhcpc", "-i", "wan0", "-n", "-q", "-f", "-t", "5", "-s", "/bin/true"])
    match = re.search(r"lease of ([\d.]+) obtained from ([\d.]+)", proc.stderr + proc.stdout)
    assert proc.returncode == 0 and match, proc.stderr
    lo, hi = (ipaddress.ip_address(a) for a in DHCP_POOL)
    assert lo <= ipaddress.ip_address(match[1]) <= hi
    assert match[2] == home.isp_address
    wan = json.loads(ok(home, "gw", ["ip", "-j", "link", "show", "dev", "wan0"]))[0]
    lease = home.dhcp_leases.read_text()
    assert f" {wan['address']} {match[1]} " in lease
    assert "DHCPACK(isp0)" in home.dhcp_log.read_text()


def test_isp_web_server_from_wan(wan_home: VirtualHome) -> None:
    home = wan_home
    page = ok(home, "gw", ["curl", "-sS", "--max-time", "10", f"http://{WEB_SERVER}/"])
    assert home.web_text in page
    big = home.run(
        "gw", ["curl", "-sS", "--max-time", "30", f"http://{WEB_SERVER}/big.bin"], text=False
    )
    assert big.returncode == 0
    assert len(big.stdout) == home.big_file_size
    assert hashlib.sha256(big.stdout).hexdigest() == home.web_file_sha256
    code = ok(
        home,
        "gw",
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{WEB_SERVER}/missing"],
    )
    assert code == "404"


def test_isp_dns_server_from_wan(wan_home: VirtualHome) -> None:
    home = wan_home
    dig = ["dig", f"@{DNS_SERVER}", "+time=2", "+tries=2"]
    assert ok(home, "gw", [*dig, "+short", "www.example.test"]).split() == [WEB_SERVER]
    full = ok(home, "gw", [*dig, "www.example.test"])
    assert re.search(r"flags: qr aa", full), "answer must be authoritative"
    assert "status: NXDOMAIN" in ok(home, "gw", [*dig, "nothing.example.org"])
    assert ok(home, "gw", [*dig, "+tcp", "+short", "example.test"]).split() == [WEB_SERVER]
    assert "query[A] www.example.test" in home.dns_log.read_text()


def test_isp_has_no_route_to_lan_until_added(virtual_home: VirtualHome) -> None:
    home = virtual_home
    lan_host = str(home.hosts[0].ip)
    assert home.run("isp", ["ip", "route", "get", lan_host]).returncode != 0
    home.add_lan_route_on_isp(WAN_STATIC)
    assert f"via {WAN_STATIC} dev isp0" in ok(home, "isp", ["ip", "route", "get", lan_host])


def test_host_bpffs_gives_namespace_sysfs_and_machine_bpffs(
    virtual_home_module: VirtualHome,
) -> None:
    home = virtual_home_module
    script = f"stat -f -c %T /sys/fs/bpf; ls /sys/class/net; mkdir {home.pin_dir}"
    out = home.run("gw", ["sh", "-c", script])  # host_bpffs is the default in "gw"
    assert out.returncode == 0, out.stderr
    fs_type, *devs = out.stdout.split()
    assert fs_type == "bpf_fs"
    assert sorted(devs) == ["lan0", "lo", "wan0"]
    assert home.pin_dir.is_dir()
    home.pin_dir.rmdir()
    # Plain `ip netns exec` hides the machine's bpffs: the reason host_bpffs exists.
    plain = home.run("gw", ["stat", "-f", "-c", "%T", "/sys/fs/bpf"], host_bpffs=False)
    assert plain.stdout.strip() != "bpf_fs"


def test_gateway_config_merges_overrides(virtual_home_module: VirtualHome) -> None:
    home = virtual_home_module
    cfg = home.gateway_config(webui={"listen": "192.168.1.1:8080"}, wan={"mode": "static"})
    assert cfg["webui"] == {"listen": "192.168.1.1:8080"}
    # an IPv4-only home (no ipv6=True): the gateway's IPv6 is off
    off = {"mode": "off"}
    assert cfg["wan"] == {"interface": "wan0", "mode": "static", "ipv6": off}
    assert cfg["lan"] == {"interface": "lan0", "address": "192.168.1.1/24", "ipv6": off}
    assert cfg["dataplane"]["pin_dir"] == f"/sys/fs/bpf/homegw-{home.tag}"
    assert cfg["state_dir"] == str(home.state_dir)
    assert home.gateway_config()["webui"] == {"listen": "192.168.1.1:80"}


def test_failed_build_cleans_up(unique_tag: str) -> None:
    home = VirtualHome(unique_tag)
    bad = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-such-option"]
    home._dns_argv = lambda: bad  # type: ignore[method-assign]
    with pytest.raises(NetnsError, match="dns"):
        home.build()
    assert leftovers(unique_tag) == []


def test_mgmt_link_reaches_gateway_from_root(make_virtual_home: Callable[..., VirtualHome]) -> None:
    if (overlap := root_route_overlap(LAN_NET)) is not None:
        pytest.skip(f"root namespace already routes {LAN_NET}: {overlap}")
    home = make_virtual_home(mgmt=True)
    assert home.mgmt_dev == mgmt_dev_name(home.tag)
    ok(home, "gw", ["ip", "addr", "add", "192.168.1.1/24", "dev", "lan0"])
    ping = subprocess.run(
        ["ping", "-c", "1", "-W", "2", "-I", home.mgmt_dev, "192.168.1.1"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    home.teardown()
    assert not netns.link_exists(mgmt_dev_name(home.tag))
    assert root_route_overlap(LAN_NET) is None


CRASHING_BUILD = """
import json, os, sys
from homegw import netns
from homegw.demo import run_demo
from homegw.virtualhome import VirtualHome, root_route_overlap
home = VirtualHome(sys.argv[1], mgmt=root_route_overlap() is None).build()
home.pin_dir.mkdir()
pids = [p for s in home.ns_shorts for p in netns.netns_pids(home.ns(s))]
print(json.dumps({"pids": pids, "mgmt": home.mgmt_dev}), flush=True)
os._exit(0)  # a crash: no teardown, no atexit
"""


def test_cleanup_leftovers_after_crash(unique_tag: str) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASHING_BUILD), unique_tag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 0, crashed.stderr
    state = json.loads(crashed.stdout)
    try:
        left = leftovers(unique_tag)
        assert sum(item.startswith("netns") for item in left) == 6, left
        assert any(item.startswith("pin dir") for item in left), left
        assert len(state["pids"]) == 3 and all(netns.pid_alive(p) for p in state["pids"])
        if state["mgmt"]:
            assert netns.link_exists(state["mgmt"])
    finally:
        cleanup_leftovers(unique_tag)
    assert leftovers(unique_tag) == []
    assert not any(netns.pid_alive(p) for p in state["pids"])


# ---------------------------------------------------------------- homegw demo
# The real appliance (`homegw run`) is tested elsewhere; here a stand-in checks
# what the demo hands it (namespace, config) and plays the ready/exit protocol.

FAKE_APPLIANCE = """
import os, sys, time, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
print("has wan0:", os.path.exists("/sys/class/net/wan0"), flush=True)
print("webui", cfg["webui"]["listen"], "pin_dir", cfg["dataplane"]["pin_dir"], flush=True)
os.mkdir(cfg["dataplane"]["pin_dir"])  # on the machine's bpffs, as the appliance pins
if os.environ.get("FAKE_FAIL"):
    print("cannot start: FAKE_FAIL", flush=True)
    sys.exit(3)
print("homegw: appliance ready", flush=True)
time.sleep(600)
"""


def _start_demo(tag: str, keep_going: threading.Event, result: list[int]) -> threading.Thread:
    argv = [sys.executable, "-c", FAKE_APPLIANCE]

    def main() -> None:
        result.append(run_demo(keep_going, tag=tag, appliance_argv=argv))

    demo = threading.Thread(target=main, daemon=True)
    demo.start()
    return demo


def test_demo_runs_appliance_then_cleans_up(
    unique_tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keep_going, result, seen = threading.Event(), [], []
    keep_going.set()
    demo = _start_demo(unique_tag, keep_going, result)

    def hints_printed() -> bool:
        seen.append(capsys.readouterr().out)
        return "press Ctrl-C" in "".join(seen) or not demo.is_alive()

    try:
        assert netns.wait_for(hints_printed, 60), "demo printed no hints within 60 s"
        assert demo.is_alive(), "".join(seen)
        pids = netns.netns_pids(f"hgw-{unique_tag}-gw")
        assert len(pids) == 1, "the appliance must run in the gateway namespace"
        assert pin_dir_for(unique_tag).is_dir(), "the appliance must see the machine's bpffs"
    finally:
        keep_going.clear()
        demo.join(60)
    out = "".join(seen) + capsys.readouterr().out
    assert result == [0], out
    assert "gw | has wan0: True" in out
    assert f"gw | webui 192.168.1.1:80 pin_dir /sys/fs/bpf/homegw-{unique_tag}" in out
    assert "forwarded and NATed in XDP" in out
    assert "stopping the appliance (SIGTERM)" in out
    assert leftovers(unique_tag) == []
    assert not netns.pid_alive(pids[0])


def test_demo_fails_when_appliance_exits_before_ready(
    unique_tag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    argv = [sys.executable, "-c", FAKE_APPLIANCE]
    assert run_demo(tag=unique_tag, appliance_argv=argv) == 1
    out = capsys.readouterr().out
    assert "exited with code 3 before it was ready" in out
    assert "  cannot start: FAKE_FAIL" in out
    assert leftovers(unique_tag) == []
