"""NAT saturation with the DPI module on against off, side by side in one
run: LAN->WAN 64-byte UDP through `homegw run` (router + NAT in XDP, DPI
first in the LAN chain when on) over 64 and 10,000 flows, on nat_bench's
topology, generator and sink. The two settings alternate over --rounds
rounds (the order flips every round) so that drift on a shared VM hits both
alike; the figure is the median of the rounds, the ratio on/off of medians.

    .venv/bin/python -m bench.dpi_nat_bench [--seconds 3] [--rounds 3] [--json FILE]

Each flow's first packets are classified (punted to the slow path, which
finds nothing in the generator's payload and gives up after
DPI_PUNT_PACKETS); traffic runs before each figure until DPI punts no more
(every flow classified, the slow path idle), so that what is measured is
the steady state.

The generator's thread is bound to one CPU (Generator's cpu): with veth the
gateway's XDP work runs on the sender's CPU, and a real NIC's receive queue
is bound to one CPU with RSS keeping a flow there. Left to the scheduler,
the thread moves between this VM's two vCPUs now and then, and each move
sends the datapath's work to cold caches (rounds of either setting swung by
25 %). --any-cpu leaves it to the scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import GW_LAN_IP, Generator, Topology, measure, new_tag
from bench.nat_bench import FLOW_COUNTS, TranslatedSink, check_clean, gw_cmd, pinned, xdp_on
from bench.router_bench import Appliance, appliance_config
from homegw import netns
from homegw.dataplane.dataplane import purge_pins
from homegw.dataplane.pinned import read_percpu_u64
from homegw.modules.dpi.maps import COUNTERS as DPI_COUNTERS

MAX_SETTLE_CALLS = 30


def run_appliance(
    topo: Topology, sink: TranslatedSink, gens: dict[int, Generator], seconds: float, dpi: bool
) -> dict[int, float]:
    """Saturated translated packets/s per flow count with DPI on or off."""
    check_clean(topo)
    config = appliance_config(topo, "")
    config["nat"] = {"enabled": True}
    config["dpi"] = {"enabled": dpi}
    app = Appliance(topo, config)
    try:
        url = f"http://{GW_LAN_IP}:8080/healthz"
        health = json.loads(topo.run("gen", "curl", "-s", "--max-time", "2", url))
        if not pinned(app.pin_dir, "nat_sessions") or pinned(app.pin_dir, "dpi_flows") != dpi:
            raise RuntimeError(f"the appliance's modules are not as asked (dpi={dpi}): {health}")
        if not xdp_on(topo, "gw", "lan0"):
            raise RuntimeError("the appliance has no XDP program on lan0")
        rates = {}
        for flows, gen in gens.items():
            settle(gen, sink, app.pin_dir if dpi else None)
            rates[flows] = measure(gen, sink, seconds).received_pps
        return rates
    finally:
        app.stop()
        shutil.rmtree(app.dir, ignore_errors=True)
        for dev in ("lan0", "wan0"):  # the next round's appliance starts from bare NICs
            gw_cmd(topo, "ip", "link", "set", "dev", dev, "xdp", "off")
            gw_cmd(topo, "tc", "qdisc", "del", "dev", dev, "clsact", check=False)


def punts(pin_dir: str) -> int:
    return read_percpu_u64(f"{pin_dir}/dpi_stats", DPI_COUNTERS.index("punted"))


def settle(gen: Generator, sink: TranslatedSink, pin_dir: str | None) -> None:
    """Traffic until every flow is classified (DPI punts no more: the slow
    path is idle again), so that what follows measures the steady state."""
    measure(gen, sink, 1.0)
    if pin_dir is None:
        return
    for _ in range(MAX_SETTLE_CALLS):
        before = punts(pin_dir)
        measure(gen, sink, 1.0)
        if punts(pin_dir) == before:
            return
    raise RuntimeError(f"DPI still punting after {MAX_SETTLE_CALLS} s of traffic")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--any-cpu", action="store_true", help="the generator's thread not bound to one CPU"
    )
    args = parser.parse_args()
    cpu = None if args.any_cpu else max(os.sched_getaffinity(0))
    topo = Topology(new_tag())
    sink = None
    gens: dict[int, Generator] = {}
    runs: dict[str, list[dict[int, float]]] = {"off": [], "on": []}
    try:
        topo.build()
        sink = TranslatedSink(topo)
        gens = {flows: Generator(topo, flows, cpu=cpu) for flows in FLOW_COUNTS}
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            for dpi in order:
                rates = run_appliance(topo, sink, gens, args.seconds, dpi)
                runs["on" if dpi else "off"].append(rates)
                time.sleep(0.3)
    finally:
        for gen in gens.values():
            gen.close()
        if sink:
            with contextlib.suppress(Exception):
                sink.close()
        for short in ("gen", "gw", "sink"):
            netns.delete_netns(topo.ns(short))
        purge_pins(f"/sys/fs/bpf/homegw-{topo.tag}")
        for leftover in Path(tempfile.gettempdir()).glob(f"hgwb-{topo.tag}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    report(runs, args)
    return 0


def report(runs: dict[str, list[dict[int, float]]], args: argparse.Namespace) -> None:
    result: dict[str, dict] = {}
    where = "any CPU" if args.any_cpu else "the generator on one CPU"
    print(
        f"NAT saturation, DPI off vs on, {args.rounds} alternating rounds of {args.seconds} s"
        f" ({where})"
    )
    print(f"{'flows':>8} {'DPI off kpps':>14} {'DPI on kpps':>13} {'on/off':>7}   rounds (kpps)")
    for flows in FLOW_COUNTS:
        off = [r[flows] for r in runs["off"]]
        on = [r[flows] for r in runs["on"]]
        ratio = statistics.median(on) / statistics.median(off)
        rounds = ", ".join(f"{a / 1e3:.0f}/{b / 1e3:.0f}" for a, b in zip(off, on, strict=True))
        print(
            f"{flows:>8} {statistics.median(off) / 1e3:>14.1f} "
            f"{statistics.median(on) / 1e3:>13.1f} {ratio:>6.2f}x   {rounds}"
        )
        result[str(flows)] = {"off_pps": off, "on_pps": on, "ratio_of_medians": ratio}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
