"""ns/packet of the NAT chains through BPF_PROG_TEST_RUN, for bench.nat_bench.

repeat re-runs a program on the packet it just modified: "cold" figures use
repeat=1 and a fresh frame per call; "warm" ones repeat=200 on a frame that
comes out unchanged but for its TTL (see ns_per_packet).
"""

from __future__ import annotations

import ipaddress
import socket
import statistics
import struct

from bench.common import GEN_IP, GW_LAN_IP, GW_WAN_IP, SINK_IP, TARGET_IP
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.nat.module import NatModule
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import RouterModule

GEN_SPORT = 10000  # xdp_gen.bpf.c: source port = 10000 + run % FLOWS
LAN_MAC, WAN_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
HOST_MAC, SINK_MAC = "02:48:47:00:00:02", "02:00:00:00:02:99"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_sport(frame: bytes, sport: int, checksum: bool = True) -> bytes:
    """The frame (Ether/IPv4 IHL 5/UDP) with another source port and its UDP
    checksum recomputed (or 0: none, as the live generator sends)."""
    buf = bytearray(frame)
    buf[34:36] = sport.to_bytes(2, "big")
    buf[40:42] = b"\0\0"
    if checksum:
        length = int.from_bytes(buf[38:40], "big")
        pseudo = bytes(buf[26:34]) + bytes([0, 17]) + length.to_bytes(2, "big")
        value = _csum(pseudo + bytes(buf[34 : 34 + length])) or 0xFFFF
        buf[40:42] = value.to_bytes(2, "big")
    return bytes(buf)


def with_dport(frame: bytes, dport: int) -> bytes:
    """The frame with another UDP destination port (checksum recomputed)."""
    buf = bytearray(frame)
    buf[36:38] = dport.to_bytes(2, "big")
    return with_sport(bytes(buf), int.from_bytes(buf[34:36], "big"))


def cold_durations(fd: int, frames: list[bytes], want: str) -> list[int]:
    """TEST_RUN once per frame (repeat 1): each run's ns, checking its verdict."""
    durations = []
    for frame in frames:
        result = prog_test_run(fd, frame)
        if result.verdict != want:
            raise RuntimeError(f"TEST_RUN gave {result.verdict}, wanted {want}")
        durations.append(result.duration_ns)
    return durations


def ns_per_packet(tag: str, calls: int = 20_000, new_flows: int = 5_000) -> dict[str, dict]:
    """ns/packet of the LAN and WAN XDP chains with router + nat, two ways:

    cold: repeat=1, a fresh copy of the frame per call (Python runs between
          calls, so caches are partly cold; includes the timer's own cost, see
          the empty chain);
    warm: repeat=200 on a frame that the chain leaves as it found it (but for
          the TTL): the sink's neighbour MAC is set to the gateway's LAN MAC,
          so the rewritten frame is again for the gateway, and for NAT the
          translated endpoint (WAN address, port 10000) is mapped to itself
          (a static binding), so every re-run is an established translation.
          Counters check that all runs took the path named.
    """
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pin_dir = f"/sys/fs/bpf/homegw-{tag}-tr"
    config = parse_config(
        {
            "wan": {
                "interface": "wan0",
                "mode": "static",
                "address": f"{GW_WAN_IP}/24",
                "gateway": SINK_IP,
            },
            "lan": {"interface": "lan0", "address": f"{GW_LAN_IP}/24"},
            "nat": {"enabled": True},
        }
    )

    def nic(name: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
        lan = name == "lan0"
        return IfaceInfo(11 if lan else 12, LAN_MAC if lan else WAN_MAC, 1500, True, address)

    out = bytes(
        Ether(src=HOST_MAC, dst=LAN_MAC)
        / IP(src=GEN_IP, dst=TARGET_IP, ttl=255)
        / UDP(sport=GEN_SPORT, dport=9)
        / bytes(18)
    )
    out_no_csum = with_sport(out, GEN_SPORT, checksum=False)
    reply = bytes(
        Ether(src=SINK_MAC, dst=WAN_MAC)
        / IP(src=TARGET_IP, dst=GW_WAN_IP, ttl=64)
        / UDP(sport=9, dport=GEN_SPORT)  # the kept port: 10000 is outside the kernel's range
        / bytes(18)
    )
    results: dict[str, dict] = {}
    dp = Dataplane(pin_dir, {})
    try:
        dp.load()
        lan, wan = dp.root_fd(Nic.LAN, Hook.XDP), dp.root_fd(Nic.WAN, Hook.XDP)

        def cold(fd: int, frames: list[bytes], want: str = "XDP_REDIRECT") -> dict:
            durations = cold_durations(fd, frames, want)
            return {
                "method": "cold",
                "median": float(statistics.median(durations)),
                "mean": statistics.fmean(durations),
                "runs": len(durations),
            }

        def warm(fd: int, frame: bytes, want: str = "XDP_REDIRECT", n: int = 200) -> dict:
            durations = []
            for _ in range(n):
                result = prog_test_run(fd, frame, repeat=200)
                if result.verdict != want:
                    raise RuntimeError(f"TEST_RUN gave {result.verdict}, wanted {want}")
                durations.append(result.duration_ns)
            return {
                "method": "warm",
                "median": float(statistics.median(durations)),
                "mean": statistics.fmean(durations),
                "runs": n * 200,
            }

        results["LAN root, empty chain (warm)"] = warm(lan, out, "XDP_PASS")
        results["LAN root, empty chain (cold)"] = cold(lan, [out] * calls, "XDP_PASS")
        results["WAN root, empty chain (cold)"] = cold(wan, [reply] * calls, "XDP_PASS")

        router = RouterModule(config, iface_info=nic, watch_kernel=False)
        dp.add_module(router)
        dp.set_order(Nic.LAN, ["router"])
        # the "sink" has the gateway's LAN MAC: a forwarded frame is again for us
        router.set_neighbour(ipaddress.IPv4Address(SINK_IP), LAN_MAC, Nic.WAN)
        router.set_neighbour(ipaddress.IPv4Address(GEN_IP), HOST_MAC, Nic.LAN)
        to_kernel = router.stats()["counters"]["to_kernel"]
        results["LAN router (warm)"] = warm(lan, out)
        results["LAN router (cold)"] = cold(lan, [out] * calls)
        if router.stats()["counters"]["to_kernel"] != to_kernel:
            raise RuntimeError("router runs went to the kernel: the warm method is broken")

        nat = NatModule(config, run_gc=False)
        dp.add_module(nat)
        dp.set_order(Nic.LAN, ["router", "nat"])
        dp.set_order(Nic.WAN, ["nat", "router"])
        assert nat.maps is not None
        first = IP(prog_test_run(lan, out).data[14:])  # maps 10.10.1.2:10000 to port 10000
        if (first.src, first[UDP].sport) != (GW_WAN_IP, GEN_SPORT):
            raise RuntimeError(f"unexpected translation: {first.summary()}")
        counters = nat.maps.counters()
        assert dp.fastpath is not None
        dp.set_fastpath(False)
        results["LAN router + nat, established, chain (cold)"] = cold(lan, [out] * calls)
        results["WAN nat + router, reply, chain (cold)"] = cold(wan, [reply] * calls)
        dp.set_fastpath(True)
        fast = dp.fastpath.counters()
        results["LAN router + nat, established, fast path (cold)"] = cold(lan, [out] * calls)
        results["WAN nat + router, reply, fast path (cold)"] = cold(wan, [reply] * calls)
        fast_in = dp.fastpath.counters()["wan_to_lan"][0] - fast["wan_to_lan"][0]
        if fast_in < calls - 2:  # the first reply teaches it the flow
            raise RuntimeError(f"replies not on the fast path: {fast_in} of {calls}")
        dp.set_fastpath(False)  # below: the chain's cost of new flows and of the warm runs
        sessions = [with_dport(out, p) for p in range(1000, 1000 + new_flows)]
        results["LAN router + nat, new session only (cold)"] = cold(lan, sessions)
        kept = [with_sport(out, p) for p in range(11000, 11000 + new_flows)]
        results["LAN router + nat, new flow, port kept (cold)"] = cold(lan, kept)
        pool = [with_sport(out, p) for p in range(40000, 40000 + new_flows)]
        results["LAN router + nat, new flow, pool port (cold)"] = cold(lan, pool)
        after = nat.maps.counters()
        if (
            after["new_mappings"] - counters["new_mappings"],
            after["new_sessions"] - counters["new_sessions"],
        ) != (2 * new_flows, 3 * new_flows):
            raise RuntimeError(f"new flows not all mapped: {after}")
        if after["translated_in"] - counters["translated_in"] + fast_in != 2 * calls:
            raise RuntimeError(f"replies not all translated: {after}")

        # warm: (WAN address, 10000) maps to 10000, so a translated frame is a
        # fixed point; the reply direction cannot be made one (cold only)
        nat.maps.bind_static(
            socket.IPPROTO_UDP, GEN_SPORT, ipaddress.IPv4Address(GW_WAN_IP), GEN_SPORT
        )
        counters = nat.maps.counters()
        results["LAN router + nat, established (warm)"] = warm(lan, out)
        results["LAN router + nat, established, UDP csum 0 (warm)"] = warm(lan, out_no_csum)
        after = nat.maps.counters()
        delta = {k: after[k] - counters[k] for k in after if after[k] != counters[k]}
        if delta != {"translated_out": 2 * 200 * 200}:
            raise RuntimeError(f"warm NAT runs did not all take the established path: {delta}")
        if router.stats()["counters"]["to_kernel"] != to_kernel:
            raise RuntimeError("router runs went to the kernel: the warm method is broken")
        return results
    finally:
        dp.close()
        purge_pins(pin_dir)


# -- main and report ------------------------------------------------------------------
