"""ns/packet of the DPI module through BPF_PROG_TEST_RUN, side by side in one
run: the LAN chain router + nat with and without dpi in front, for a flow's
first packets (new flow; classifying, its payload punted) and for
steady-state packets (a classified flow); the WAN reply path nat + router
with and without dpi behind; and dpi alone on a classified flow (warm).

    .venv/bin/python -m bench.dpi_bench [--calls 20000] [--json]

Cold figures: one run per call, a fresh copy of the frame each time, median
of --calls calls (Python runs between calls; the timer's own cost is in the
empty chain's figure). Chains with NAT have no fixed point for DPI (the
translated frame is no longer a LAN host's), so they are cold only. dpi alone
passes a classified flow's frame unchanged, so it is also run warm (200
re-runs per call). Counters check that every run took the path named.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from bench import nat_testrun as t
from bench.chain_cost import _median, _nic
from bench.nat_testrun import cold_durations
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.dpi.maps import FlowKey
from homegw.modules.dpi.module import DpiModule
from homegw.modules.nat.module import NatModule
from homegw.modules.router.module import RouterModule

PIN_DIR = "/sys/fs/bpf/homegw-dpibench"
APP, CATEGORY = 17, 3
NEW_FLOWS = 5000
ROUNDS = 10


def _cold_each(fd: int, frames: list[bytes], want: str) -> float:
    return float(statistics.median(cold_durations(fd, frames, want)))


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


class Bench:
    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.config = parse_config(
            {
                "wan": {"interface": "wan0", "mode": "static", "address": f"{t.GW_WAN_IP}/24"}
                | {"gateway": t.SINK_IP},
                "lan": {"interface": "lan0", "address": f"{t.GW_LAN_IP}/24"},
                "nat": {"enabled": True},
                "dataplane": {"pin_dir": PIN_DIR},
            }
        )
        self.out = bytes(
            Ether(src=t.HOST_MAC, dst=t.LAN_MAC)
            / IP(src=t.GEN_IP, dst=t.TARGET_IP, ttl=255)
            / UDP(sport=t.GEN_SPORT, dport=9)
            / bytes(18)
        )
        self.reply = bytes(
            Ether(src=t.SINK_MAC, dst=t.WAN_MAC)
            / IP(src=t.TARGET_IP, dst=t.GW_WAN_IP, ttl=64)
            / UDP(sport=9, dport=t.GEN_SPORT)
            / bytes(18)
        )
        self.dp = Dataplane(PIN_DIR, {})
        self.results: dict[str, float] = {}

    def run(self) -> dict[str, float]:
        try:
            self.dp.load()
            self._load()
            self._measure()
            return self.results
        finally:
            self.dp.close()
            purge_pins(PIN_DIR)

    def _load(self) -> None:
        assert self.dp.slowpath is not None  # punts go to real perf rings, read and dropped
        self.dp.slowpath.register(DpiModule.module_id, 1, lambda _punt: None)
        self.dp.slowpath.start()
        self.router = RouterModule(self.config, iface_info=_nic, watch_kernel=False)
        self.nat = NatModule(self.config, run_gc=False)
        # every punt measured as sent: no per-tick budget in the way
        self.dpi = DpiModule(self.config, {"DPI_PUNTS_PER_TICK": 4 * NEW_FLOWS}, slow_path=False)
        for module in (self.router, self.nat, self.dpi):
            self.dp.add_module(module)
        self.router.set_neighbour(ipaddress.IPv4Address(t.SINK_IP), t.SINK_MAC, Nic.WAN)
        self.router.set_neighbour(ipaddress.IPv4Address(t.GEN_IP), t.HOST_MAC, Nic.LAN)
        assert self.dpi.maps is not None
        self.maps = self.dpi.maps
        self.lan = self.dp.root_fd(Nic.LAN, Hook.XDP)
        self.wan = self.dp.root_fd(Nic.WAN, Hook.XDP)
        self.dp.set_order(Nic.LAN, ["router", "nat"])
        self.dp.set_order(Nic.WAN, ["nat", "router"])
        first = IP(prog_test_run(self.lan, self.out).data[14:])  # maps the flow, port kept
        if (first.src, first[UDP].sport) != (t.GW_WAN_IP, t.GEN_SPORT):
            raise RuntimeError(f"unexpected translation: {first.summary()}")

    def _with_dpi(self, on: bool) -> None:
        self.dp.set_order(Nic.LAN, ["dpi", "router", "nat"] if on else ["router", "nat"])
        self.dp.set_order(Nic.WAN, ["nat", "router", "dpi"] if on else ["nat", "router"])

    def _cold(self, name: str, fd: int, frames: list[bytes], want: str = "XDP_REDIRECT") -> None:
        self.results[name] = _cold_each(fd, frames, want)

    def _checked(self, name: str, fd: int, frames: list[bytes], expect: dict[str, int]) -> None:
        before = self.maps.counters()
        self._cold(name, fd, frames)
        got = _delta(before, self.maps.counters())
        # a punt that found the ring full (the reader behind) cost the same call
        got["punted"] = got.get("punted", 0) + got.get("punt_failed", 0)
        if any(got.get(k, 0) != v for k, v in expect.items()):
            raise RuntimeError(f"{name}: counters {got}, wanted {expect}")
        self.results[f"{name}: punts that failed (ring full)"] = got.get("punt_failed", 0)

    def _steady_state(self) -> None:
        """Established flows with and without DPI, interleaved in ROUNDS rounds
        (the best round's median each: a 20 ns difference drowns in another
        process's burst otherwise)."""
        per_round = max(1, self.calls // ROUNDS)
        pairs = {
            "LAN router + nat, established": (False, self.lan, self.out),
            "LAN dpi + router + nat, established, classified": (True, self.lan, self.out),
            "WAN nat + router, reply": (False, self.wan, self.reply),
            "WAN nat + router + dpi, reply, classified": (True, self.wan, self.reply),
        }
        rounds: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(ROUNDS):
            for name, (dpi, fd, frame) in pairs.items():
                self._with_dpi(dpi)
                rounds[name].append(_cold_each(fd, [frame] * per_round, "XDP_REDIRECT"))
        for name, medians in rounds.items():
            self.results[name] = min(medians)

    def _measure(self) -> None:
        calls = self.calls
        self.dp.set_order(Nic.LAN, [])
        self._cold("LAN root, empty chain", self.lan, [self.out] * calls, "XDP_PASS")
        self._with_dpi(False)
        new = [t.with_dport(self.out, p) for p in range(1000, 1000 + NEW_FLOWS)]
        self._cold("LAN router + nat, new session", self.lan, new)
        self._cold("LAN router + nat, established, one of 5000", self.lan, new)

        self._with_dpi(True)
        new = [t.with_dport(self.out, p) for p in range(20000, 20000 + NEW_FLOWS)]
        expect = {"new_flows": NEW_FLOWS, "punted": NEW_FLOWS}
        self._checked(
            "LAN dpi + router + nat, new session (new flow, punted)", self.lan, new, expect
        )
        self._checked(  # their second packets: classifying, punted again
            "LAN dpi + router + nat, classifying, one of 5000 (punted)",
            self.lan,
            new,
            {"new_flows": 0, "punted": NEW_FLOWS},
        )
        for flow in range(20000, 20000 + NEW_FLOWS):
            self.maps.classify(
                FlowKey(t.GEN_IP, t.TARGET_IP, t.GEN_SPORT, flow, 17), APP, CATEGORY, "sni"
            )
        self._checked(  # they find their verdict: DONE
            "LAN dpi + router + nat, verdict found, one of 5000",
            self.lan,
            new,
            {"classified": NEW_FLOWS},
        )
        key = FlowKey(t.GEN_IP, t.TARGET_IP, t.GEN_SPORT, 9, 17)
        self.maps.classify(key, APP, CATEGORY, "sni")
        steady = self.out
        before = self.maps.counters()
        self._steady_state()
        got = _delta(before, self.maps.counters())
        if set(got) - {"new_flows", "classified", "evaluated", "classified_sni"}:
            raise RuntimeError(f"steady-state runs left the steady path: {got}")
        row = next(r for r in self.maps.flows() if r.key == key)
        sent = calls // ROUNDS * ROUNDS
        if (row.state, row.up_packets, row.down_packets) != ("done", sent, sent):
            raise RuntimeError(f"steady-state flow not counted as expected: {row}")

        self.dp.set_order(Nic.LAN, ["dpi"])
        self._cold("LAN dpi alone, classified", self.lan, [steady] * calls, "XDP_PASS")
        self._warm_alone(steady)

    def _warm_alone(self, steady: bytes) -> None:
        """dpi alone, warm, against the empty chain: interleaved, best of 5."""
        icmp = bytes(
            Ether(src=t.HOST_MAC, dst=t.LAN_MAC) / IP(src=t.GEN_IP, dst=t.TARGET_IP) / ICMP()
        )
        runs = {
            "LAN root, empty chain (warm)": ([], steady),
            "LAN dpi alone, classified (warm)": (["dpi"], steady),
            "LAN dpi alone, not a flow: ICMP (warm)": (["dpi"], icmp),
        }
        best: dict[str, float] = {}
        for _ in range(5):
            for name, (chain, frame) in runs.items():
                self.dp.set_order(Nic.LAN, chain)
                ns = _median(self.lan, frame, "XDP_PASS", 100, 200)
                best[name] = min(best.get(name, ns), ns)
        self.results.update(best)


def report(results: dict[str, float]) -> str:
    lines = [
        f"{name:<64}{value:>8.0f}" + (" ns" if "punts" not in name else "")
        for name, value in results.items()
    ]
    r = results

    def diff(a: str, b: str) -> str:
        return f"{r[a] - r[b]:+.0f} ns ({r[a] / r[b]:.2f}x)"

    lines += [
        "",
        "steady state, LAN: "
        + diff("LAN dpi + router + nat, established, classified", "LAN router + nat, established"),
        "steady state, WAN: "
        + diff("WAN nat + router + dpi, reply, classified", "WAN nat + router, reply"),
        "dpi alone, warm, over the empty chain: "
        + diff("LAN dpi alone, classified (warm)", "LAN root, empty chain (warm)"),
        "first packet (new flow): "
        + diff(
            "LAN dpi + router + nat, new session (new flow, punted)",
            "LAN router + nat, new session",
        ),
        "classifying packet: "
        + diff(
            "LAN dpi + router + nat, classifying, one of 5000 (punted)",
            "LAN router + nat, established, one of 5000",
        ),
        "verdict found: "
        + diff(
            "LAN dpi + router + nat, verdict found, one of 5000",
            "LAN router + nat, established, one of 5000",
        ),
        "dpi alone, warm, a frame it passes by (ICMP), over the empty chain: "
        + diff("LAN dpi alone, not a flow: ICMP (warm)", "LAN root, empty chain (warm)"),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = Bench(args.calls).run()
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
