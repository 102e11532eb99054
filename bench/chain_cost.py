"""ns/packet of the LAN chain's pieces through BPF_PROG_TEST_RUN: the root
alone, each module alone, router + NAT on an established flow, and the whole
LAN chain, to see where a change of the saturation figure comes from.

    .venv/bin/python -m bench.chain_cost [--runs 300]

Warm figures re-run one frame 200 times per call (median of --runs calls);
the router's and NAT's warm frames are fixed points (see nat_testrun). The
whole chain with the firewall cannot be run warm (its re-runs see a LAN frame
from the WAN address, a spoof), so it and router + NAT are also given cold
(one run per call, median of 20,000). Written to run on older trees too (a
module that does not exist there is left out), for old-vs-new runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import statistics

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bench import nat_testrun as t
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.dns.module import DnsModule
from homegw.modules.nat.module import NatModule
from homegw.modules.router.module import RouterModule

try:
    from homegw.modules.firewall.module import FirewallModule
except ImportError:  # a tree from before the firewall
    FirewallModule = None

PIN_DIR = "/sys/fs/bpf/homegw-chaincost"


def _nic(name: str, address: ipaddress.IPv4Address | None) -> t.IfaceInfo:
    lan = name == "lan0"
    return t.IfaceInfo(11 if lan else 12, t.LAN_MAC if lan else t.WAN_MAC, 1500, True, address)


def _median(fd: int, frame: bytes, want: str, calls: int, repeat: int) -> float:
    durations = []
    for _ in range(calls):
        result = prog_test_run(fd, frame, repeat=repeat)
        if result.verdict != want:
            raise RuntimeError(f"TEST_RUN gave {result.verdict}, wanted {want}")
        durations.append(result.duration_ns)
    return float(statistics.median(durations))


def measure(runs: int) -> dict[str, float]:
    config = parse_config(
        {
            "wan": {"interface": "wan0", "mode": "static", "address": f"{t.GW_WAN_IP}/24"}
            | {"gateway": t.SINK_IP},
            "lan": {"interface": "lan0", "address": f"{t.GW_LAN_IP}/24"},
            "dataplane": {"pin_dir": PIN_DIR},
        }
    )
    frame = bytes(
        Ether(src=t.HOST_MAC, dst=t.LAN_MAC)
        / IP(src=t.GEN_IP, dst=t.TARGET_IP, ttl=255)
        / UDP(sport=t.GEN_SPORT, dport=9)
        / bytes(18)
    )
    dp = Dataplane(PIN_DIR, {})
    out: dict[str, float] = {}
    try:
        dp.load()
        lan = dp.root_fd(Nic.LAN, Hook.XDP)

        def warm(names: list[str], want: str) -> float:
            dp.set_order(Nic.LAN, names)
            return _median(lan, frame, want, runs, 200)

        def cold(names: list[str]) -> float:
            dp.set_order(Nic.LAN, names)
            return _median(lan, frame, "XDP_REDIRECT", 20_000, 1)

        out["root, empty chain (warm)"] = warm([], "XDP_PASS")
        router = RouterModule(config, iface_info=_nic, watch_kernel=False)
        nat = NatModule(config, run_gc=False)
        extra = [DnsModule(config)] + ([FirewallModule(config)] if FirewallModule else [])
        for module in [router, nat, *extra]:
            dp.add_module(module)
        router.set_neighbour(ipaddress.IPv4Address(t.SINK_IP), t.LAN_MAC, Nic.WAN)
        router.set_neighbour(ipaddress.IPv4Address(t.GEN_IP), t.HOST_MAC, Nic.LAN)
        for module in extra:
            out[f"{module.name} alone (warm)"] = warm([module.name], "XDP_PASS")
        out["router alone (warm)"] = warm(["router"], "XDP_REDIRECT")
        dp.set_order(Nic.LAN, ["router", "nat"])
        prog_test_run(lan, frame)  # maps the flow
        wan = ipaddress.IPv4Address(t.GW_WAN_IP)
        nat.maps.bind_static(socket.IPPROTO_UDP, t.GEN_SPORT, wan, t.GEN_SPORT)  # a fixed point
        out["router + nat, established (warm)"] = warm(["router", "nat"], "XDP_REDIRECT")
        out["router + nat, established (cold)"] = cold(["router", "nat"])
        whole = [m.name for m in extra] + ["router", "nat"]
        out[f"{' + '.join(whole)}, established (cold)"] = cold(whole)
        return out
    finally:
        dp.close()
        purge_pins(PIN_DIR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    for name, ns in measure(args.runs).items():
        print(f"{name:<60}{ns:>8.0f} ns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
