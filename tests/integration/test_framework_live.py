"""The IO Module framework on live traffic in the virtual home: the roots are
attached to the gateway's NICs (XDP + TC), test modules run in configured
order, and toggling a module never loses a packet."""

from __future__ import annotations

import ctypes
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from homegw import interfaces
from homegw.dataplane import attach
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.netns import in_netns
from homegw.virtualhome import VirtualHome
from tests.fixtures.stamp import STAMP_PORT, StampModule

GW = "192.168.1.1"


@pytest.fixture
def live(virtual_home: VirtualHome) -> Iterator[tuple[VirtualHome, Dataplane, socket.socket]]:
    """Dataplane with stamps A and B attached in the gateway, and a UDP socket
    listening on the gateway's STAMP_PORT."""
    home = virtual_home
    dp = Dataplane(str(home.pin_dir), {Nic.LAN: "lan0", Nic.WAN: "wan0"})
    with in_netns(home.ns("gw")):
        interfaces.set_address("lan0", interfaces.ipaddress.IPv4Interface(f"{GW}/24"))
        dp.load()
        dp.add_module(StampModule("A", 16))
        dp.add_module(StampModule("B", 17))
        dp.set_order(Nic.LAN, ["stampA", "stampB"])
        dp.attach()
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind((GW, STAMP_PORT))
        receiver.settimeout(10)
    yield home, dp, receiver
    receiver.close()
    with in_netns(home.ns("gw")):
        dp.close()


def send_udp(home: VirtualHome, payload: str) -> None:
    script = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(sys.argv[1].encode(), ('{GW}', {STAMP_PORT}))"
    )
    home.run("h1", ["python3", "-c", script, payload], check=True)


def attached_prog_id(home: VirtualHome, ifname: str) -> int | None:
    with in_netns(home.ns("gw")):
        return attach.xdp_prog_id(ifname)


def test_roots_attached_on_both_nics(live) -> None:
    home, _, _ = live
    assert attached_prog_id(home, "lan0")
    assert attached_prog_id(home, "wan0")
    tc = home.run("gw", ["tc", "filter", "show", "dev", "lan0", "egress"]).stdout
    assert "homegw_root_lan" in tc and "direct-action" in tc


def test_live_packets_show_module_order(live) -> None:
    home, dp, receiver = live
    send_udp(home, "....")
    # The kernel accepted the datagram, so the modules' checksum updates are right.
    assert receiver.recv(64) == b"AB.."
    dp.set_order(Nic.LAN, ["stampB", "stampA"])
    send_udp(home, "....")
    assert receiver.recv(64) == b"BA.."
    dp.set_enabled("stampB", False)
    send_udp(home, "....")
    assert receiver.recv(64) == b"A..."


def _wait_for_packets(dp: Dataplane, after: int, proc: subprocess.Popen, deadline: float) -> int:
    """Poll the root's pinned counter until it passes `after` (or ping ended)."""
    while time.monotonic() < deadline:
        seen = dp.chain_stats(Nic.LAN, Hook.XDP).packets
        if seen > after or proc.poll() is not None:
            return seen
        time.sleep(0.001)
    raise TimeoutError("no traffic through the LAN chain")


def test_ping_flood_loses_nothing_while_a_module_toggles(live) -> None:
    home, dp, _ = live
    count = 20000
    ping = home.popen(
        "h1",
        ["ping", "-f", "-c", str(count), "-w", "120", GW],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    seen = dp.chain_stats(Nic.LAN, Hook.XDP).packets
    toggles = 0
    while toggles < 100:
        seen = _wait_for_packets(dp, seen + 5, ping, deadline)
        assert ping.poll() is None, f"ping ended after {toggles} toggles: raise the count"
        dp.set_enabled("stampA", toggles % 2 == 1)
        toggles += 1
    out, _ = ping.communicate(timeout=120)
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    assert (sent, received) == (count, count), out
    assert dp.chain_of(Nic.LAN, Hook.XDP) == ["stampA", "stampB"]


def test_attach_keeps_its_own_root_and_replaces_another_without_loss(live) -> None:
    """What a restart does: a root of the same build stays attached; any other
    program there (an older build's root) is replaced in one netlink call, so
    a ping flood through it loses nothing."""
    from bcc import BPF

    home, dp, _ = live
    ours = attached_prog_id(home, "lan0")
    with in_netns(home.ns("gw")):
        dp.attach()  # the same build: kept
    assert attached_prog_id(home, "lan0") == ours
    older = BPF(
        text="BPF_ARRAY(seen, u64, 1);\n"
        "int older_root(struct xdp_md *ctx) {\n"
        "    u32 k = 0; u64 *n = seen.lookup(&k);\n"
        "    if (n) __sync_fetch_and_add(n, 1);\n"
        "    return XDP_PASS;\n}"
    )
    try:
        with in_netns(home.ns("gw")):
            attach.attach_xdp("lan0", older.load_func("older_root", BPF.XDP).fd, "native")
        assert attached_prog_id(home, "lan0") not in (None, ours)
        count = 50_000  # seconds of flood at -f rates: it must outlast the attach
        ping = home.popen(
            "h1",
            ["ping", "-f", "-c", str(count), "-w", "60", GW],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while older["seen"][ctypes.c_int(0)].value < 100:  # the flood runs through the older
            assert ping.poll() is None and time.monotonic() < deadline, "no flood"
            time.sleep(0.001)
        with in_netns(home.ns("gw")):
            dp.attach()
        assert ping.poll() is None, "the flood ended before the replacement: raise the count"
        assert attached_prog_id(home, "lan0") == ours
        out, _ = ping.communicate(timeout=120)
    finally:
        older.cleanup()
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    assert (sent, received) == (count, count), out
