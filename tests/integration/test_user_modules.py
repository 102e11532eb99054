"""User IO modules end to end, through the management API over HTTP (curl
from h1, the admin's laptop, with a bearer token), against `homegw run` in
the virtual home: the MAC blocklist example cuts one host while another's
download goes on intact; a verifier error changes nothing in the kernel; a
drop-everything module on trial reverts by itself and a ping flood shows the
outage ended; a confirmed module comes back after a restart where it was; a
punt reaches an SSE client and a frame sent back through the API reaches a
LAN host."""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane import libbpf
from homegw.dataplane.abi import MAX_MODULES, Hook, Nic, chain_slot, generation_key
from homegw.dataplane.table import ARRAY, PROG_ARRAY, open_table
from homegw.virtualhome import WEB_SERVER, VirtualHome
from tests.conftest import new_tag
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.test_management_api import BASE, bearer, config, http, wait_healthy

pytestmark = pytest.mark.netns

API = f"{BASE}/api/v1"
POLL_S = 0.05
BIG_MIB = 12
RATE = "400K"  # bytes/s: h1's download lasts through the blocklist steps

VERIFIER_ERROR = """#include "homegw_user.h"

int bad_read(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	__u32 word = *(__u32 *)(data + 64); /* no bounds check */
	return word ? XDP_DROP : hgw_next_xdp(ctx);
}
"""
COMPILE_ERROR = """#include "homegw_user.h"
int f(struct xdp_md *ctx)
{
	return nope;
}
"""
SNEAKY = "int f(struct xdp_md *ctx) { return homegw_next_xdp(ctx); }\n"
DROP_ALL = """#include "homegw_user.h"

int drop_all(struct xdp_md *ctx)
{
	hgw_count(0);
	return XDP_DROP;
}
"""
COUNT_ALL = """#include "homegw_user.h"

int count_all(struct xdp_md *ctx)
{
	hgw_count(0);
	return hgw_next_xdp(ctx);
}
"""
PUNTER = """#include "homegw_user.h"

#define PUNT_PORT 9999

int punter(struct xdp_md *ctx)
{
	struct hgw_packet p;

	if (hgw_parse_xdp(ctx, &p) == 0 && p.l4proto == IPPROTO_UDP && p.dport == PUNT_PORT) {
		hgw_punt_xdp(ctx, 7, p.sport, p.dport);
		return XDP_DROP;
	}
	return hgw_next_xdp(ctx);
}
"""


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling a state (an API answer, a file), not a fixed wait
    return result


class Gateway:
    def __init__(self, home: VirtualHome, app: ApplianceProcess) -> None:
        self.home = home
        self.app = app

    def api(self, method: str, path: str, body: Any = None, ns: str = "h1") -> tuple[int, Any]:
        return http(self.home, method, f"{API}{path}", body, (bearer(self.home),), ns=ns)

    def upload(self, name: str, source: str, **fields: Any) -> tuple[int, Any]:
        return self.api(
            "POST", "/modules", {"name": name, "source": source, "nic": "lan", **fields}
        )

    def module(self, name: str) -> dict[str, Any] | None:
        status, answer = self.api("GET", f"/modules/user/{name}")
        return answer if status == 200 else None

    def example(self, name: str) -> dict[str, Any]:
        status, answer = self.api("GET", "/modules/examples")
        assert status == 200, answer
        return next(e["upload"] for e in answer["examples"] if e["name"] == name)

    def reaches_web(self, host: str) -> bool:
        argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", "2", f"http://{WEB_SERVER}/"]
        return self.home.run(host, argv).returncode == 0

    def chain_ids(self) -> dict[tuple[int, int], int]:
        """Program id at each (NIC, position) of the active generation of the
        pinned XDP chains: what packets run now."""
        pins = Path(self.home.pin_dir)
        u32 = ctypes.c_uint32
        chains = open_table("chain_xdp", libbpf.obj_get(pins / "chain_xdp"), PROG_ARRAY, u32, u32)
        generations = open_table(
            "chain_generation", libbpf.obj_get(pins / "chain_generation"), ARRAY, u32, u32
        )
        try:
            slots = {int(k.value): int(v.value) for k, v in chains.items()}
            out = {}
            for nic in Nic:
                active = int(generations[u32(generation_key(nic, Hook.XDP))].value) & 1
                for position in range(MAX_MODULES):
                    prog = slots.get(chain_slot(nic, active, position))
                    if prog is not None:
                        out[(int(nic), position)] = prog
            return out
        finally:
            chains.close()
            generations.close()

    def chains(self) -> list[tuple[str, bool, Any]]:
        """Every module as the API lists it: loaded, in which chains where."""
        _, answer = self.api("GET", "/modules")
        every = answer["modules"] + answer["user_modules"]
        return [(m["name"], m["loaded"], m["chains"]) for m in every]

    def pinned(self) -> set[str]:
        """Every pin of the datapath (shared maps, builds and their objects)."""
        root = Path(self.home.pin_dir)
        return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    home = VirtualHome(new_tag(), big_file_mib=BIG_MIB).build()
    app = ApplianceProcess(home, config(home)).start()
    try:
        wait_healthy(home)
        yield Gateway(home, app)
        assert app.stop() == 0
        assert "Traceback" not in app.log, app.log
    finally:
        if not app.exited():
            app.kill()
        home.teardown()


def mac_key(mac: str) -> str:
    return mac.replace(":", "") + "0000"


def test_the_mac_blocklist_cuts_one_host_while_another_downloads(gateway: Gateway) -> None:
    home = gateway.home
    h2 = home.host("h2")
    target = Path(home.state_dir) / "download.bin"
    download = home.popen(
        "h1",
        ["curl", "-sS", "--limit-rate", RATE, "-o", str(target), f"http://{WEB_SERVER}/big.bin"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: target.exists() and target.stat().st_size > 0, 30, "the download")
        status, module = gateway.upload(**gateway.example("mac_blocklist"))
        assert status == 201, module
        assert module["state"] == "trial" and module["chains"][0]["position"] == 0
        assert gateway.api("POST", "/modules/user/mac_blocklist/confirm")[0] == 200
        entry = {"key": mac_key(h2.mac), "value": "01"}
        status, answer = gateway.api("PUT", "/modules/user/mac_blocklist/maps/blocked", entry)
        assert status == 204, answer
        assert not gateway.reaches_web("h2")
        assert gateway.reaches_web("h3")
        status, rows = gateway.api("GET", "/modules/user/mac_blocklist/maps/blocked")
        assert rows["entries"] == [{"key": mac_key(h2.mac), "value": "01"}]
        assert gateway.module("mac_blocklist")["counters"]["blocked"] > 0
        assert download.poll() is None, "the download ended before the block was in place"
        assert download.wait(timeout=120) == 0, download.stderr.read()
    finally:
        if download.poll() is None:
            download.kill()
            download.wait()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == home.web_file_sha256
    path = f"/modules/user/mac_blocklist/maps/blocked/{mac_key(h2.mac)}"
    assert gateway.api("DELETE", path)[0] == 204
    assert gateway.reaches_web("h2")
    assert gateway.api("DELETE", "/modules/user/mac_blocklist")[0] == 204


def test_a_verifier_error_answers_400_and_changes_nothing(gateway: Gateway) -> None:
    chains, pins = gateway.chain_ids(), gateway.pinned()
    modules = gateway.chains()
    status, answer = gateway.upload("bad_read", VERIFIER_ERROR)
    assert status == 400, answer
    assert answer["stage"] == "verifier"
    assert "invalid access to packet" in answer["message"]
    assert answer["line"] in (6, 7)  # the read, or the return the compiler folded it into
    assert gateway.chain_ids() == chains
    assert gateway.pinned() == pins
    assert gateway.chains() == modules
    assert gateway.module("bad_read") is None
    status, answer = gateway.upload("bad_c", COMPILE_ERROR)
    assert status == 400 and answer["stage"] == "compile" and answer["line"] == 4, answer
    assert "nope" in answer["message"]
    status, answer = gateway.upload("sneaky", SNEAKY)
    assert status == 400 and answer["stage"] == "check" and answer["line"] == 1, answer
    _, audit = gateway.api("GET", "/modules/audit?limit=3")
    assert [e["action"] for e in audit["entries"]] == ["refused"] * 3
    assert gateway.chain_ids() == chains


def ping_flood(home: VirtualHome, host: str, seconds: float) -> subprocess.Popen[str]:
    """Timestamped echo replies every 20 ms from `host` to the web server."""
    count = str(int(seconds / 0.02))
    argv = ["ping", "-n", "-D", "-i", "0.02", "-W", "1", "-c", count, WEB_SERVER]
    return home.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def reply_times(output: str) -> list[float]:
    return [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", output, re.M)]


def test_a_drop_all_module_on_trial_reverts_by_itself(gateway: Gateway) -> None:
    home = gateway.home
    flood = ping_flood(home, "h2", 25)
    wait_until(lambda: gateway.reaches_web("h2"), 10, "h2 online")
    uploaded = time.time()
    status, module = gateway.upload("drop_all", DROP_ALL, trial_s=10, counters=["dropped"])
    assert status == 201, module
    assert module["state"] == "trial"
    wait_until(lambda: gateway.module("drop_all") is None, 10 + 5, "the revert")
    reverted = time.time()
    out, _ = flood.communicate(timeout=60)
    replies = reply_times(out)
    gaps = [(a, b) for a, b in zip(replies, replies[1:], strict=False) if b - a > 0.5]
    assert gaps, f"no outage in the flood:\n{out[-2000:]}"
    start, end = max(gaps, key=lambda gap: gap[1] - gap[0])
    assert uploaded - 5 < start < reverted, (uploaded, start, reverted)
    assert end <= uploaded + 10 + 5, f"the outage ended {end - uploaded:.1f} s after the upload"
    assert replies[-1] > end  # replies again after it
    _, audit = gateway.api("GET", "/modules/audit?limit=5")
    revert = next(e for e in audit["entries"] if e["module"] == "drop_all")
    assert revert["action"] == "revert", audit


def test_an_unconfirmed_module_goes_when_its_window_ends(gateway: Gateway) -> None:
    status, module = gateway.upload("count_all", COUNT_ALL, trial_s=10, counters=["seen"])
    assert status == 201, module
    begun = time.time()
    wait_until(lambda: gateway.module("count_all") is None, 10 + 5, "the end of the window")
    assert time.time() - begun >= 10 - 1  # not before its window (the API answer's clock)
    _, audit = gateway.api("GET", "/modules/audit?limit=1")
    assert audit["entries"][0]["action"] == "revert"
    assert "confirm" in audit["entries"][0]["detail"]


def test_a_punt_reaches_an_sse_client_and_a_frame_goes_back_out(gateway: Gateway) -> None:
    home = gateway.home
    status, module = gateway.upload("punter", PUNTER, position="first")
    assert status == 201, module
    assert gateway.api("POST", "/modules/user/punter/confirm")[0] == 200
    events = Path(home.state_dir) / "punts.sse"
    argv = ["curl", "-sS", "-N", "-H", bearer(home), f"{API}/modules/user/punter/punts"]
    stream = home.popen("h1", argv, stdout=events.open("w"), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: gateway.module("punter")["punts"]["subscribers"] == 1, 10, "the SSE")
        home.run("h2", ["python3", "-c", SEND_UDP])
        data = wait_until(lambda: _first_event(events), 10, "the punt event")
        frame = base64.b64decode(data["frame"])
        assert data["nic"] == "lan" and data["reason"] == 7 and data["meta"][1] == 9999
        assert Ether(frame)[UDP].load == b"up to you"
        assert Ether(frame).src == home.host("h2").mac
    finally:
        stream.kill()
        stream.wait()
    h3 = home.host("h3")
    out = Ether(dst=h3.mac, src=home.mac_of("gw", "lan0")) / IP(src="192.168.1.1", dst=h3.ip)
    out = out / UDP(sport=7777, dport=7777) / b"from the controller"
    capture = home.popen(
        "h3",
        ["tcpdump", "-i", "eth0", "-n", "-c", "1", "-l", "udp port 7777"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        body = {"nic": "lan", "frame": base64.b64encode(bytes(out)).decode()}

        def seen() -> bool:  # sent again until tcpdump (starting up) sees one
            assert gateway.api("POST", "/modules/user/punter/packets", body)[0] == 204
            return capture.poll() is not None

        wait_until(seen, 20, "tcpdump on h3 to see the frame")
        assert "192.168.1.1.7777 > " in capture.stdout.read()
    finally:
        if capture.poll() is None:
            capture.kill()
        capture.wait()
    assert gateway.api("DELETE", "/modules/user/punter")[0] == 204


SEND_UDP = (
    "import socket; "
    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'up to you', ('203.0.113.1', 9999))"
)


def _first_event(path: Path) -> dict[str, Any] | None:
    found = re.search(r"^event: punt\ndata: (.*)$", path.read_text(), re.M)
    return json.loads(found.group(1)) if found else None


def test_a_confirmed_module_comes_back_after_a_restart_in_its_place(gateway: Gateway) -> None:
    example = gateway.example("mac_blocklist")
    status, module = gateway.upload(**{**example, "position": "before:router"})
    assert status == 201, module
    assert gateway.api("POST", "/modules/user/mac_blocklist/confirm")[0] == 200
    h2 = gateway.home.host("h2")
    entry = {"key": mac_key(h2.mac), "value": "01"}
    assert gateway.api("PUT", "/modules/user/mac_blocklist/maps/blocked", entry)[0] == 204
    before = gateway.module("mac_blocklist")["chains"]
    chains = gateway.chain_ids()
    assert gateway.app.stop() == 0
    gateway.app.start()
    wait_healthy(gateway.home)
    after = gateway.module("mac_blocklist")
    assert after["state"] == "confirmed" and after["chains"] == before
    assert gateway.chain_ids() == chains  # the same programs in the same slots
    assert not gateway.reaches_web("h2")  # its map too
    assert gateway.reaches_web("h3")
    assert gateway.api("DELETE", "/modules/user/mac_blocklist")[0] == 204
    assert gateway.reaches_web("h2")
