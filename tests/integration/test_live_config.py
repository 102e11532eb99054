"""Live reconfiguration of a running appliance (homegw.management over
Appliance.reconfigure) in the virtual home: bad configs change nothing (file,
history, the dataplane's maps); good ones change only what they name while a
download through the NAT goes on, intact.

The appliance runs in this process, its threads in the gateway's namespace
(netns.in_netns), so that the tests read its maps through the modules' own
bcc tables.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homegw import netns
from homegw.appliance import Appliance
from homegw.auth import read_local_token
from homegw.config import config_to_dict, load_config
from homegw.control import ConfigRejected
from homegw.dataplane.abi import Hook, Nic
from homegw.management import Management
from homegw.virtualhome import VirtualHome
from tests.integration.dhcp_helpers import CodecClient, mac_bytes

STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
WAN_IP = "203.0.113.2"
WEB = "192.168.1.1:8080"
# tables whose contents only the config decides (no traffic writes them)
CONFIG_MAPS = {
    "nat": ("nat_settings", "nat_bindings"),
    "router": ("router_routes", "router_ifaces", "router_settings"),
    "firewall": ("firewall_settings", "firewall_inside"),
    "dhcp": ("dhcp_guard_config",),
}


class Running:
    def __init__(self, home: VirtualHome, app: Appliance, mgmt: Management, path: Path) -> None:
        self.home, self.app, self.mgmt, self.path = home, app, mgmt, path

    def document(self) -> dict[str, Any]:
        return copy.deepcopy(self.mgmt.config_get())

    def maps(self) -> dict[str, dict[bytes, bytes]]:
        """Every config-only map of every loaded module, as raw bytes."""
        assert self.app.dataplane is not None
        out = {}
        for module, names in CONFIG_MAPS.items():
            loaded = self.app.dataplane.modules.get(module)
            if loaded is None:
                continue
            for name in names:
                table = loaded.bpf[name]  # type: ignore[index]
                out[name] = {bytes(k): bytes(v) for k, v in table.items()}
        return out

    def chains(self) -> dict[str, list[str]]:
        assert self.app.dataplane is not None
        return {nic.name: self.app.dataplane.chain_of(nic, Hook.XDP) for nic in (Nic.LAN, Nic.WAN)}

    def snapshot(self) -> tuple:
        dhcp = self.app.dhcp.settings if self.app.dhcp else None
        return (
            self.path.read_bytes(),
            self.mgmt.config_history(),
            self.maps(),
            self.chains(),
            (dhcp.range_start, dhcp.range_end) if dhcp else None,
        )


@pytest.fixture
def running(make_virtual_home) -> Iterator[Running]:
    home: VirtualHome = make_virtual_home(big_file_mib=48)
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(home.gateway_config(wan=STATIC_WAN, webui={"listen": WEB})))
    with netns.in_netns(home.ns("gw")):
        app = Appliance(load_config(path))
        app.start()
        try:
            yield Running(home, app, Management(app, path), path)
        finally:
            app.stop()


def _set(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] |= value  # a partial section
    else:
        node[last] = value
    return doc


FORWARD = {"protocol": "tcp", "external_port": 8081, "internal_address": "192.168.1.11"}
# (what to set, value, the key path the refusal must name)
BAD = [
    ("nat.port_forwards", [{**FORWARD, "external_port": 0}], "nat.port_forwards.0.external_port"),
    ("nat.port_forwards", [{**FORWARD, "internal_address": "10.9.9.9"}], "nat.port_forwards.0"),
    (
        "nat.port_forwards",
        [{**FORWARD, "external_port": 68, "protocol": "udp"}],
        "nat.port_forwards.0",
    ),
    ("nat.port_forwards", [FORWARD, FORWARD], "nat.port_forwards.1"),
    ("nat.port_range", "30000-20000", "nat.port_range"),
    ("nat.dmz_host", "8.8.8.8", "nat.dmz_host"),
    ("nat.max_sessions", 10, "nat.max_sessions"),
    ("nat.unknown_key", 1, "nat.unknown_key"),
    ("nat.timeouts.udp", 5, "nat.timeouts.udp"),
    ("dhcp", {"range_start": "10.0.0.5", "range_end": "192.168.1.60"}, "dhcp.range_start"),
    ("dhcp.lease_time", "forever", "dhcp.lease_time"),
    ("dhcp.reservations", [{"mac": "zz:zz", "address": "192.168.1.50"}], "dhcp.reservations.0.mac"),
    ("dns.cache_size", -1, "dns.cache_size"),
    ("dns.deny", ["not a domain!"], "dns.deny.0"),
    ("dns.enabled", "yes", "dns.enabled"),
    ("router.routes", [{"destination": "10.5.0.0/16", "via": "8.8.8.8"}], "router.routes.0.via"),
    ("firewall.forward_wan_to_lan", True, "firewall.forward_wan_to_lan"),
    ("dataplane.order.lan", ["dhcp", "firewall", "nat", "router"], "dataplane.order.lan.2"),
    ("dataplane.order.wan", ["firewall", "qos", "router"], "dataplane.order.wan.1"),
    ("dataplane.pin_dir", "/tmp/pins", "dataplane.pin_dir"),
    ("wan.mode", "pppoe", "wan.mode"),
    ("wan.mtu", 100, "wan.mtu"),
    ("lan.address", "300.1.1.1/24", "lan.address"),
    ("lan.interface", "wan0", "lan.interface"),
    ("webui.listen", f"{WAN_IP}:8080", "webui.listen"),
    ("log_level", "verbose", "log_level"),
    ("state_dir", "relative/dir", "state_dir"),
]


def api(running: Running, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """A call to the appliance's own API server, as a script would make it."""
    token = read_local_token(Path(running.app.config.state_dir))
    request = urllib.request.Request(
        f"http://{WEB}/api/v1{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_bad_configs_are_refused_with_their_key_paths_and_change_nothing(running: Running) -> None:
    before = running.snapshot()
    assert before[2]["nat_settings"] and before[2]["router_routes"]  # the maps are read
    for dotted, value, where in BAD:
        doc = _set(running.document(), dotted, value)
        status, answer = api(running, "PUT", "/config", doc)
        locs = [p["loc"] for p in answer.get("problems", [])]
        assert status == 400, (dotted, status, answer)
        assert any(loc == where or loc.startswith(where + ".") for loc in locs), (dotted, locs)
        with pytest.raises(ConfigRejected):  # a dry run says the same
            running.mgmt.config_apply(doc, dry_run=True)
    # several problems at once: every one is named
    doc = _set(_set(running.document(), "wan.mtu", 100), "dns.cache_size", -1)
    with pytest.raises(ConfigRejected) as refused:
        running.mgmt.config_apply(_set(doc, "nat.max_sessions", 10))
    assert {"wan.mtu", "dns.cache_size", "nat.max_sessions"} <= {
        p.loc for p in refused.value.problems
    }
    # one section replaced with a bad value, and a section that is not a mapping
    status, answer = api(running, "PUT", "/config/nat", {"port_forwards": [{"external_port": 0}]})
    assert status == 400 and answer["problems"], answer
    assert api(running, "PUT", "/config", {**running.document(), "nat": 5})[0] == 400
    assert running.snapshot() == before


# answers every connection on 192.168.1.12:8000 with one short HTTP page
# (http.server would stall on a reverse lookup of its address first)
PAGE_SERVER = """
import socket
s = socket.create_server(("192.168.1.12", 8000))
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 15\\r\\n\\r\\nforwarded to h2")
    c.close()
"""


def _start_download(home: VirtualHome, out: Path) -> subprocess.Popen[bytes]:
    """A download through the NAT slow enough to outlast the changes."""
    url = f"http://{home.web_server}/big.bin"
    argv = ["curl", "-sS", "--limit-rate", "2M", "--max-time", "120", "-o", str(out), url]
    return home.popen("h1", argv, stderr=subprocess.PIPE)


def _curl(home: VirtualHome, ns: str, url: str) -> subprocess.CompletedProcess:
    return home.run(ns, ["curl", "-sS", "--max-time", "3", url])


def test_live_changes_leave_a_download_through_the_nat_intact(
    running: Running, tmp_path: Path
) -> None:
    home, mgmt = running.home, running.mgmt
    out = tmp_path / "big.bin"
    download = _start_download(home, out)
    server = home.popen("h2", ["/usr/bin/python3", "-c", PAGE_SERVER])
    try:
        h2 = home.ns("h2")
        up = netns.wait_for(lambda: netns.listening(h2, "tcp", "192.168.1.12", 8000), 10)
        assert up, server.poll()
        # a port forward: added, used from the WAN, removed
        forward = {**FORWARD, "internal_address": "192.168.1.12", "internal_port": 8000}
        result = mgmt.config_apply({"port_forwards": [forward]}, section="nat")
        assert result.applied == {"nat": "maps"} and result.changed == ["nat.port_forwards"]
        page = _curl(home, "isp", f"http://{WAN_IP}:8081/")
        assert page.returncode == 0 and page.stdout == "forwarded to h2", page.stderr
        mgmt.config_apply({"port_forwards": []}, section="nat")
        assert _curl(home, "isp", f"http://{WAN_IP}:8081/").returncode != 0

        # the DHCP range: a real exchange leases from the new one
        doc = running.document()
        doc["dhcp"] |= {"range_start": "192.168.1.200", "range_end": "192.168.1.210"}
        assert mgmt.config_apply(doc).applied["dhcp.server"] == "restart"
        client = CodecClient(home, "h3")
        try:
            leased = ipaddress.IPv4Address(client.dora(mac_bytes("02:00:00:00:77:01")))
        finally:
            client.close()
        assert (
            ipaddress.IPv4Address("192.168.1.200")
            <= leased
            <= ipaddress.IPv4Address("192.168.1.210")
        )

        # the DNS block list: a denied name answers 0.0.0.0 at once
        mgmt.config_apply(
            {**running.document()["dns"], "deny": ["www.example.test"]}, section="dns"
        )
        answer = home.run("h1", ["dig", "+short", "+time=2", "@192.168.1.1", "www.example.test"])
        assert answer.stdout.strip() == "0.0.0.0", answer

        # a module out of the chain and back (the XDP DNS cache)
        off = mgmt.config_apply({**running.document()["dns"], "fast_path": False}, section="dns")
        assert off.applied["dns"] == "unload" and "dns" not in running.chains()["LAN"]
        on = mgmt.config_apply({**running.document()["dns"], "fast_path": True}, section="dns")
        assert on.applied["dns"] == "load" and "dns" in running.chains()["LAN"]

        # the module order
        order = ["dpi", "dns", "dhcp", "firewall", "router", "nat"]
        mgmt.module_set_order("lan", order)
        assert running.chains()["LAN"] == [n for n in order if n in running.chains()["LAN"]]
        assert running.chains()["LAN"].index("dns") < running.chains()["LAN"].index("dhcp")

        assert download.poll() is None, "the download ended before the changes did"
        assert download.wait(120) == 0, download.stderr.read() if download.stderr else ""
    finally:
        server.kill()
        server.wait()
        if download.poll() is None:
            download.kill()
            download.wait()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == home.web_file_sha256
    history = mgmt.config_history()
    assert history[0]["current"] and len(history) >= 8
    assert load_config(running.path) == running.app.config  # the file is what runs


def test_rollback_restores_an_earlier_version(running: Running) -> None:
    mgmt = running.mgmt
    first = mgmt.config_history()[0]["version"]
    maps_before = running.maps()
    mgmt.config_apply({"port_forwards": [FORWARD]}, section="nat")
    assert running.maps()["nat_bindings"] != maps_before["nat_bindings"]
    result = mgmt.config_rollback(first)
    assert result.changed == ["nat.port_forwards"]
    assert running.maps() == maps_before
    assert config_to_dict(running.app.config) == config_to_dict(load_config(running.path))


def test_metric_samples_cover_every_loaded_module(running: Running) -> None:
    samples = list(running.mgmt.samples())
    assert running.app.dataplane is not None
    by_module = {s.labels.get("module") for s in samples if s.name == "module_packets_total"}
    assert by_module == set(running.app.dataplane.modules)
    names = {s.name: s.value for s in samples if not s.labels}
    assert names["nat_sessions"] >= 0 and names["router_neighbours"] >= 1  # the ISP's router
    dhcp = running.app.config.dhcp
    assert names["dhcp_pool_size"] == int(dhcp.range_end) - int(dhcp.range_start) + 1
    chain = {(s.name, s.labels["nic"]) for s in samples if s.name.startswith("chain_")}
    assert ("chain_rx_packets_total", "lan") in chain and ("chain_tx_bytes_total", "wan") in chain
