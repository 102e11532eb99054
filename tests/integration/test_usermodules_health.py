"""The trial's health probes against a running appliance in the virtual home:
every check passes; a drop-all program at the head of the LAN XDP chain
fails dhcp and admin (and taking it out heals them); the ISP's router address
gone fails wan. The probe leaves no lease and no device behind."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import yaml

from homegw import netns
from homegw.appliance import Appliance
from homegw.config import load_config
from homegw.dataplane import attach, testrun
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.module import IOModule
from homegw.management import Management
from homegw.modules.dhcp.l2 import ipv4_udp
from homegw.usermodules import health
from homegw.usermodules.health import CheckResult, HealthTargets
from homegw.virtualhome import VirtualHome

pytestmark = pytest.mark.netns

STATIC_WAN = {"mode": "static", "address": "203.0.113.2/24", "gateway": "203.0.113.1"}
LAN = IPv4Interface("192.168.1.1/24")
WAIT_S = 15.0
PROBE_MAC = health.PROBE_MAC.hex(":")
DROP_ALL_C = """/* "dropall": drops every frame of the chain it is in (XDP), counted. */
#include "homegw.h"

// <0, frames dropped>
BPF_ARRAY(dropall_dropped, u64, 1);

int dropall_xdp(struct xdp_md *ctx)
{
	u32 zero = 0;
	u64 *count = dropall_dropped.lookup(&zero);

	if (count)
		__sync_fetch_and_add(count, 1);
	return XDP_DROP;
}
"""


class Running:
    def __init__(self, home: VirtualHome, app: Appliance, mgmt: Management) -> None:
        self.home, self.app, self.mgmt = home, app, mgmt

    def targets(self, admin: str | None) -> HealthTargets:
        assert self.app.dataplane is not None
        with netns.in_netns(self.home.ns("gw")):
            lan_ifindex = attach.ifindex("lan0")
        return HealthTargets(
            wan_ifname="wan0",
            wan_gateway=IPv4Address(STATIC_WAN["gateway"]),
            lan_ifname="lan0",
            lan_address=LAN,
            dhcp_on=True,
            admin=IPv4Address(admin) if admin else None,
            lan_xdp_root_fd=self.app.dataplane.root_fd(Nic.LAN, Hook.XDP),
            lan_ifindex=lan_ifindex,
        )

    def probe(self, admin: str | None, timeout_s: float = 1.0) -> dict[str, CheckResult]:
        targets = self.targets(admin)
        with netns.in_netns(self.home.ns("gw")):
            return {r.name: r for r in health.probe(targets, timeout_s)}

    def wait_probe(self, admin: str | None, want: dict[str, bool | None]) -> dict:
        """Probe until the checks named in `want` have those outcomes (state,
        not time: each probe is bounded by its own timeout)."""
        seen: dict[str, CheckResult] = {}

        def matches() -> bool:
            seen.update(self.probe(admin))
            return all(seen[name].ok is ok for name, ok in want.items())

        assert netns.wait_for(matches, WAIT_S), seen
        return seen


@pytest.fixture
def running(make_virtual_home: Callable[..., VirtualHome]) -> Iterator[Running]:
    home = make_virtual_home(n_hosts=2)
    path = Path(home.state_dir) / "homegw.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(home.gateway_config(wan=STATIC_WAN)))
    with netns.in_netns(home.ns("gw")):
        app = Appliance(load_config(path))
        app.start()
        try:
            yield Running(home, app, Management(app, path))
        finally:
            app.stop()


def drop_all_module(tmp_path: Path) -> IOModule:
    source = tmp_path / "dropall.bpf.c"
    source.write_text(DROP_ALL_C)
    attrs = {"name": "dropall", "module_id": 240, "source": source, "xdp_function": "dropall_xdp"}
    return type("DropAll", (IOModule,), attrs)()


def admin_of(home: VirtualHome) -> str:
    address = home.host("h1").ip
    assert address is not None
    return address


def test_every_check_passes_and_the_probe_leaves_nothing_behind(running: Running) -> None:
    admin = admin_of(running.home)
    results = running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})
    assert "203.0.113.1 answered" in results["wan"].detail
    assert f"{admin} answered" in results["admin"].detail
    again = running.probe(admin)
    assert all(r.ok for r in again.values()), again

    dhcp = running.app.dhcp
    assert dhcp is not None and dhcp.server is not None
    if testrun.live_frames_refused():  # the chain's verdict is all the check has
        assert "the LAN chain passes a DHCPDISCOVER" in results["dhcp"].detail
    else:
        assert "DHCPOFFER sent on lan0" in results["dhcp"].detail
        assert dhcp.server.counters.values["offers"] >= 2  # the server answered both probes
    assert PROBE_MAC not in [lease.mac for lease in dhcp.leases()]
    with dhcp.server.lock:
        pool = dhcp.server.protocol.pool
        assert pool.lease_of("hw:" + PROBE_MAC, running.app.dhcp.clock()) is None
        assert not [r for r in pool._records.values() if r.mac == PROBE_MAC]  # nothing stored
    assert PROBE_MAC not in [d["mac"] for d in running.mgmt.devices()]


def test_checks_that_do_not_apply_answer_none(running: Running) -> None:
    results = running.probe("203.0.113.1")  # an admin outside the LAN
    assert results["admin"].ok is None and "not on the LAN" in results["admin"].detail
    assert running.probe(None)["admin"].ok is None
    no_wan = health.probe(
        HealthTargets("wan0", None, "lan0", LAN, False, None, -1, running.targets(None).lan_ifindex)
    )
    assert [r.ok for r in no_wan] == [None, None, None]


def test_a_drop_all_lan_module_fails_dhcp_and_admin(running: Running, tmp_path: Path) -> None:
    admin = admin_of(running.home)
    running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})
    dp = running.app.dataplane
    assert dp is not None
    lan_order = list(dp.order[Nic.LAN])

    def put_in() -> None:
        dp.add_module(drop_all_module(tmp_path))
        dp.set_order(Nic.LAN, ["dropall", *lan_order])

    running.app.submit(put_in).result(timeout=120)
    assert dp.chain_of(Nic.LAN, Hook.XDP)[0] == "dropall"
    results = running.probe(admin)
    assert results["dhcp"].ok is False, results
    refused = testrun.live_frames_refused()
    dropped = "answers a DHCPDISCOVER with XDP_DROP" if refused else "no DHCPOFFER left lan0"
    assert dropped in results["dhcp"].detail
    assert results["admin"].ok is False, results
    assert f"no answer from {admin}" in results["admin"].detail
    assert results["wan"].ok is True, results  # the WAN chain is untouched
    dropped = dp.modules["dropall"].bpf["dropall_dropped"]
    assert sum(v.value for v in dropped.values()) >= 2  # the DISCOVER and the echo reply

    running.app.submit(dp.remove_module, "dropall").result(timeout=30)
    running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})


def test_the_isp_router_gone_fails_wan(running: Running) -> None:
    admin = admin_of(running.home)
    running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})
    running.home.run("isp", ["ip", "addr", "del", "203.0.113.1/24", "dev", "isp0"], check=True)
    results = running.probe(admin)
    assert results["wan"].ok is False, results
    assert results["wan"].detail == "no answer from 203.0.113.1 in 1 s"
    assert results["dhcp"].ok is True and results["admin"].ok is True, results


USER_DROP_ALL = """#include "homegw_user.h"

int drop_all(struct xdp_md *ctx)
{
	hgw_count(0);
	return XDP_DROP;
}
"""


def test_an_uploaded_drop_all_module_is_reverted_by_the_checks_before_its_window(
    running: Running,
) -> None:
    admin = admin_of(running.home)
    running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})
    upload = {"name": "drop_all", "source": USER_DROP_ALL, "nic": "lan", "counters": ["dropped"]}
    uploaded = time.monotonic()
    module = running.mgmt.module_upload(upload, admin)  # the default window: 60 s
    assert module["state"] == "trial", module
    assert [c["ok"] for c in module["trial"]["checks"]] == [True, True, True], module
    gone = netns.wait_for(lambda: not running.mgmt.user_modules(), 30)
    assert gone, running.mgmt.user_modules()
    assert time.monotonic() - uploaded < 30  # the checks, not the 60 s window
    revert = running.mgmt.module_audit(5)[0]
    assert (revert["action"], revert["module"]) == ("revert", "drop_all"), revert
    assert "failed 3 times in a row" in revert["detail"], revert
    running.wait_probe(admin, {"wan": True, "dhcp": True, "admin": True})


def test_the_offer_socket_lets_only_outgoing_dhcp_server_frames_in(unique_tag: str) -> None:
    """The DHCP check's kernel filter, on a veth pair: of an incoming OFFER,
    an outgoing client message, an outgoing ARP frame and an outgoing OFFER,
    only the last reaches the check's socket."""
    ns = f"hgw-{unique_tag}-x"
    netns.add_netns(ns)
    try:
        netns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb", ns=ns)
        for dev in ("va", "vb"):
            netns.ip("link", "set", dev, "up", ns=ns)
        with netns.in_netns(ns):
            seen, witnessed = filtered_and_witnessed(
                [("vb", 67, 68, b"in"), ("va", 68, 67, b"client"), ("va", 0, 0, b"arp")]
                + [("va", 67, 68, b"out")]
            )
    finally:
        netns.delete_netns(ns)
    assert witnessed == {b"in", b"client", b"arp", b"out"}
    assert seen == [b"out"]


def filtered_and_witnessed(sends: list[tuple[str, int, int, bytes]]) -> tuple[list, set]:
    """Send each (device, sport, dport, marker) frame (ports 0: an ARP frame
    carrying the marker), wait until an unfiltered socket on va saw every
    marker, then read what the check's socket holds."""
    targets = HealthTargets("wan0", None, "va", LAN, True, None, -1, 0)
    check = health._DhcpCheck(targets)
    witness = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(health.ETH_P_ALL))
    witness.bind(("va", health.ETH_P_ALL))
    witness.settimeout(5)
    markers = {marker for *_rest, marker in sends}
    try:
        for dev, sport, dport, marker in sends:
            send_marked(dev, sport, dport, marker)
        witnessed: set[bytes] = set()
        while witnessed != markers:
            data = witness.recv(2048)
            witnessed |= {m for m in markers if data.endswith(b"MARK" + m)}
        seen = []
        with contextlib.suppress(BlockingIOError):
            while True:
                data = check.sock.recv(2048)
                seen += [m for m in markers if data.endswith(b"MARK" + m)]
        return seen, witnessed
    finally:
        check.close()
        witness.close()


def send_marked(dev: str, sport: int, dport: int, marker: bytes) -> None:
    payload = b"MARK" + marker
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0) as sender:
        if sport == 0:
            sender.sendto(payload, (dev, 0x0806, 0, 0, b"\xff" * 6))
            return
        packet = ipv4_udp(0xC0A80101, 0xC0A80164, sport, dport, payload)
        sender.sendto(packet, (dev, 0x0800, 0, 0, b"\xff" * 6))
