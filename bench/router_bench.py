"""Router benchmark: LAN->WAN forwarding of 64-byte UDP over 64 flows, homegw's
XDP router against Linux forwarding and a bare XDP redirect, on one topology in
one run; plus ns/packet of the router program through BPF_PROG_TEST_RUN.

    .venv/bin/python -m bench.router_bench [--seconds 4]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.common import (
    GW_LAN_IP,
    GW_WAN_IP,
    SINK_IP,
    Generator,
    Rate,
    Sink,
    Topology,
    XdpPass,
    in_netns,
    measure,
    new_tag,
)
from homegw import netns
from homegw.config import parse_config
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.attach import attach_xdp, detach_xdp
from homegw.dataplane.dataplane import Dataplane, purge_pins
from homegw.dataplane.testrun import prog_test_run
from homegw.modules.router.maps import IfaceInfo
from homegw.modules.router.module import RouterModule

FLOWS = 64


def appliance_config(topo: Topology, state_dir: str) -> dict:
    return {
        "wan": {
            "interface": "wan0",
            "mode": "static",
            "address": f"{GW_WAN_IP}/24",
            "gateway": SINK_IP,
        },
        "lan": {"interface": "lan0", "address": f"{GW_LAN_IP}/24"},
        "nat": {"enabled": False},
        "dhcp": {"enabled": False},
        "webui": {"listen": f"{GW_LAN_IP}:8080"},
        "state_dir": state_dir,
        "dataplane": {"pin_dir": f"/sys/fs/bpf/homegw-{topo.tag}"},
        "log_level": "info",
    }


class Appliance:
    """`homegw run` in the gateway namespace, until stop()."""

    def __init__(self, topo: Topology, config: dict) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"hgwb-{topo.tag}-")
        path = Path(self.dir) / "homegw.yaml"
        path.write_text(yaml.safe_dump({**config, "state_dir": self.dir}))
        argv = netns.exec_argv(
            topo.ns("gw"), [sys.executable, "-m", "homegw", "run", "-c", str(path)], host_bpffs=True
        )
        self.log = Path(self.dir) / "log"
        self.proc = subprocess.Popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.pin_dir = config["dataplane"]["pin_dir"]
        url = f"http://{GW_LAN_IP}:8080/healthz"
        ready = netns.wait_for(
            lambda: self.proc.poll() is not None or topo_curl(topo, url) == 0, 60
        )
        if not ready or self.proc.poll() is not None:
            raise RuntimeError(f"appliance did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        purge_pins(self.pin_dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def topo_curl(topo: Topology, url: str) -> int:
    argv = netns.exec_argv(
        topo.ns("gen"), ["curl", "-sf", "--max-time", "1", "-o", "/dev/null", url]
    )
    return subprocess.run(argv, capture_output=True).returncode


def run_linux(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    napi = XdpPass(topo, "gw", "lan0")
    topo.linux_forwarding(True)
    try:
        return measure(gen, sink, seconds)
    finally:
        topo.linux_forwarding(False)
        napi.close()


def run_homegw(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    app = Appliance(topo, appliance_config(topo, ""))
    try:
        return measure(gen, sink, seconds)
    finally:
        app.stop()


def run_generator_alone(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    """The gateway drops every frame in XDP at once: what is left is the
    generator's own cost per frame on the shared CPUs."""
    drop = XdpPass(topo, "gw", "lan0", verdict="XDP_DROP")
    try:
        return measure(gen, sink, seconds)
    finally:
        drop.close()


def run_bare_redirect(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    from bcc import BPF

    def mac(value: str) -> str:
        return ",".join(f"0x{b}" for b in value.split(":"))

    bpf = BPF(
        src_file=str(Path(__file__).parent / "xdp_redirect.bpf.c"),
        cflags=[
            f"-DSRC_MAC={mac(topo.wan_mac)}",
            f"-DDST_MAC={mac(topo.sink_mac)}",
            f"-DOUT_IFINDEX={topo.wan_ifindex}",
        ],
    )
    fd = bpf.load_func("xdp_redirect_bare", BPF.XDP).fd
    with in_netns(topo.ns("gw")):
        attach_xdp("lan0", fd, "native")
    try:
        return measure(gen, sink, seconds)
    finally:
        with in_netns(topo.ns("gw")):
            detach_xdp("lan0", "native")
        bpf.cleanup()


def ns_per_packet(calls: int = 20_000) -> dict[str, float]:
    """Median ns/packet of the LAN XDP chain through TEST_RUN: root alone, and
    root + router forwarding. One run per call on a fresh frame: with repeat,
    re-runs would see the frame the router rewrote (no longer for our MAC)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pin_dir = f"/sys/fs/bpf/homegw-bench-{new_tag()}"
    config = parse_config(
        {
            "wan": {
                "interface": "wan0",
                "mode": "static",
                "address": "203.0.113.2/24",
                "gateway": "203.0.113.1",
            },
            "lan": {"interface": "lan0"},
            "nat": {"enabled": False},
        }
    )
    macs = {"lan0": "02:00:00:00:01:01", "wan0": "02:00:00:00:02:01"}

    def nic(name: str, address: ipaddress.IPv4Address | None) -> IfaceInfo:
        return IfaceInfo(11 if name == "lan0" else 12, macs[name], 1500, True, address)

    dp = Dataplane(pin_dir, {})
    try:
        dp.load()
        frame = bytes(
            Ether(src="02:48:47:00:00:01", dst=macs["lan0"])
            / IP(src="192.168.1.11", dst="198.18.0.1", ttl=255)
            / UDP(dport=9)
            / bytes(18)
        )

        def mean() -> float:
            fd = dp.root_fd(Nic.LAN, Hook.XDP)
            return statistics.median(prog_test_run(fd, frame).duration_ns for _ in range(calls))

        results = {"root, empty chain": mean()}
        router = RouterModule(config, iface_info=nic, watch_kernel=False)
        dp.add_module(router)
        dp.set_order(Nic.LAN, ["router"])
        router.set_neighbour(ipaddress.IPv4Address("203.0.113.1"), "02:00:00:00:02:99", Nic.WAN)
        assert prog_test_run(dp.root_fd(Nic.LAN, Hook.XDP), frame).verdict == "XDP_REDIRECT"
        results["root + router (forward)"] = mean()
        return results
    finally:
        dp.close()
        purge_pins(pin_dir)


Scenario = Callable[[Topology, Generator, Sink, float], Rate]


def run_scenarios(
    topo: Topology, gen: Generator, sink: Sink, seconds: float, paths: dict[str, Scenario]
) -> dict[str, Rate]:
    """`paths` in order, then the bare XDP redirect and the generator alone."""
    rates = {}
    scenarios = {
        **paths,
        "bare XDP redirect": run_bare_redirect,
        "generator alone": run_generator_alone,
    }
    for name, run in scenarios.items():
        rates[name] = run(topo, gen, sink, seconds)
        time.sleep(0.5)  # let the last frames drain before the next scenario
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    topo = Topology(new_tag()).build()
    sink = gen = None
    try:
        sink = Sink(topo)
        gen = Generator(topo, FLOWS)
        rates = run_scenarios(
            topo,
            gen,
            sink,
            args.seconds,
            {"linux forwarding": run_linux, "homegw XDP router": run_homegw},
        )
    finally:
        if gen:
            gen.close()
        if sink:
            sink.close()
        topo.teardown()
    timings = ns_per_packet()
    report(rates, timings, args.json)
    return 0


def report(
    rates: dict[str, Rate],
    timings: dict[str, float],
    json_path: str | None,
    baseline: str = "linux forwarding",
    what: str = "64-byte UDP",
) -> None:
    base = rates[baseline].received_pps
    gen_ns = 1e9 / rates["generator alone"].offered_pps
    paths = {k: v for k, v in rates.items() if k != "generator alone"}
    print(
        f"\nLAN->WAN forwarding, {what}, {FLOWS} flows, saturation, 2 vCPU shared "
        "with the generator; veth GRO off, tx checksum offload off; counted at an XDP sink"
    )
    print(
        f"{'path':<22}{'offered kpps':>14}{'forwarded kpps':>16}{'vs base':>10}"
        f"{'gateway ns/pkt':>16}"
    )
    costs = {}
    for name, rate in paths.items():
        costs[name] = 1e9 / rate.received_pps - gen_ns if rate.received_pps else float("inf")
        print(
            f"{name:<22}{rate.offered_pps / 1e3:>14.0f}{rate.received_pps / 1e3:>16.0f}"
            f"{rate.received_pps / base:>9.2f}x{costs[name]:>16.0f}"
        )
    print(
        f"(generator alone: {rates['generator alone'].offered_pps / 1e3:.0f} kpps, "
        f"{gen_ns:.0f} ns/frame; gateway ns/pkt = 1/forwarded rate - generator's share)"
    )
    if timings:
        print("\nns/packet through BPF_PROG_TEST_RUN (LAN XDP chain)")
    for name, ns in timings.items():
        print(f"{name:<28}{ns:>8.1f}")
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {
                    "pps": {
                        k: {"offered": v.offered_pps, "received": v.received_pps}
                        for k, v in rates.items()
                    },
                    "gateway_ns_per_packet": costs,
                    "ns_per_packet": timings,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    raise SystemExit(main())
