"""NAT benchmark: LAN->WAN 64-byte UDP through homegw's XDP router + NAT
against Linux forwarding + nftables masquerade, on one topology in one run:
saturated packets per second over 64 and 10,000 flows, new connections per
second (every packet a new flow, empty state), and ns/packet of the NAT
chains through BPF_PROG_TEST_RUN.

    .venv/bin/python -m bench.nat_bench [--seconds 4] [--json FILE]

What is counted: the sink counts only frames whose IPv4 source is the WAN
address (translated); anything else it sees is reported as untranslated.

Saturation: one live-frames call of about --seconds per figure
(common.measure: each call costs a fixed ~20-25 ms on this kernel besides its
frames, so many short calls would understate fast paths).

New connections: a generator whose UDP source port runs over a range once
(one frame per port, one live-frames call), into a gateway whose NAT state
was emptied just before (conntrack -F; homegw's pinned nat_mappings,
nat_bindings and nat_sessions cleared: what a restart does, without its 10 s).
The rate is timed at the sink, first to last translated arrival. Two port
ranges of 10,000 flows, because homegw allocates differently: 10000-19999
are outside the kernel's ephemeral range and kept (one binding insert),
40000-49999 are inside it (what real clients use) and get a random port of
nat.port_range (10000-32767: 22,768 ports, so the round ends with the pool
44 % full, up to 16 random tries per flow).

TEST_RUN: repeat re-runs the program on the packet it just modified. For NAT
that is wrong as such (the second run sees a packet from the WAN address and
maps it as a new internal endpoint; a translated reply is no longer for the
WAN address), and for the router too (the rewritten destination MAC is no
longer the gateway's: re-runs take the to-kernel branch; router_bench's
"root + router" figure is mostly that branch). See ns_per_packet for the
"cold" (repeat=1) and "warm" (repeat=200 on a fixed-point frame) figures.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bcc import BPF

from bench.common import (
    GW_LAN_IP,
    GW_WAN_IP,
    Generator,
    Rate,
    Sink,
    Topology,
    XdpPass,
    in_netns,
    measure,
    new_tag,
)
from bench.nat_testrun import ns_per_packet
from bench.router_bench import Appliance, appliance_config
from homegw import netns
from homegw.dataplane.attach import attach_xdp
from homegw.dataplane.dataplane import purge_pins
from homegw.dataplane.pinned import PinnedMap, read_percpu_u64
from homegw.modules.nat.maps import COUNTERS as NAT_COUNTERS

FLOW_COUNTS = (64, 10_000)
GEN_SPORT = 10000  # xdp_gen.bpf.c: source port = 10000 + run % FLOWS
# (first source port, flows): kept ports, then ports of the kernel's range
NEW_CONN_RANGES = ((10000, 10_000), (40000, 10_000))
NEW_CONN_ROUNDS = 9
NFT_TABLE = "hgwbench"
NFT_RULESET = f"""table ip {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "lan0" oifname "wan0" accept
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" masquerade
    }}
}}
"""
LINUX, HOMEGW = "linux + nft masquerade", "homegw router+nat"


def le32(address: str) -> int:
    """An IPv4 address as a u32 load of its network-order bytes reads on this host."""
    return int.from_bytes(socket.inet_aton(address), "little")


class TranslatedSink(Sink):
    """Counts and drops at the sink's XDP: [0] UDP from the WAN address (what
    NAT produced), [1] anything else."""

    SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

struct stamp {
	u64 first;
	u64 last;
};

// <0 translated, 1 anything else; frames on this CPU>
BPF_PERCPU_ARRAY(sink_count, u64, 2);
// <0, first and last arrival of a translated frame on this CPU (when on)>
BPF_PERCPU_ARRAY(sink_time, struct stamp, 1);
// <0, stamp arrivals: 0 or 1>
BPF_ARRAY(sink_ctl, u32, 1);

int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	u32 idx = 1, zero = 0;

	if ((void *)(ip + 1) <= end && eth->h_proto == htons(ETH_P_IP) &&
		ip->saddr == WAN_ADDR && ip->protocol == IPPROTO_UDP)
		idx = 0;
	u64 *count = sink_count.lookup(&idx);
	if (count)
		*count += 1;
	u32 *on = sink_ctl.lookup(&zero);
	if (idx == 0 && on && *on) {
		struct stamp *s = sink_time.lookup(&zero);
		if (s) {
			u64 now = bpf_ktime_get_ns();
			if (!s->first)
				s->first = now;
			s->last = now;
		}
	}
	return XDP_DROP;
}
"""

    def __init__(self, topo: Topology) -> None:  # replaces Sink's program
        self.topo = topo
        self.bpf = BPF(text=self.SOURCE, cflags=[f"-DWAN_ADDR={le32(GW_WAN_IP)}u"])
        fd = self.bpf.load_func("xdp_sink", BPF.XDP).fd
        with in_netns(topo.ns("sink")):
            attach_xdp("eth0", fd, "native")

    def count(self) -> int:
        return int(self.bpf["sink_count"].sum(ctypes.c_int(0)).value)

    def untranslated(self) -> int:
        return int(self.bpf["sink_count"].sum(ctypes.c_int(1)).value)

    def stamping(self, on: bool) -> None:
        """Record first/last arrival times from now on (cleared first), or stop."""
        if on:
            times = self.bpf["sink_time"]
            times[ctypes.c_int(0)] = times.Leaf()
        ctl = self.bpf["sink_ctl"]
        ctl[ctypes.c_int(0)] = ctypes.c_uint32(int(on))

    def window(self) -> float:
        """Seconds from the first to the last translated arrival while stamping."""
        stamps = [s for s in self.bpf["sink_time"].getvalue(ctypes.c_int(0)) if s.first]
        if not stamps:
            return 0.0
        return (max(s.last for s in stamps) - min(s.first for s in stamps)) / 1e9


# -- pinned maps of the running appliance, from outside ----------------------------


class NatState:
    """homegw's NAT state in the pinned maps: emptied between new-connection rounds."""

    # the fast path's flows too: they hold translations of the removed state
    DYNAMIC = ("nat_sessions", "nat_mappings", "nat_bindings", "fastpath_flows")

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        names = (*self.DYNAMIC, "nat_ports_bound")
        self.maps = {name: PinnedMap(f"{pin_dir}/{name}") for name in names}

    def flush(self) -> None:
        for name in self.DYNAMIC:
            self.maps[name].clear()
        # the allocator's per-block count of the bindings just removed, as a
        # restart starts it (homegw/modules/nat/maps.py resync_ports)
        bound = self.maps["nat_ports_bound"]
        bound.update(bytes(4), bytes(bound.value_size))

    def mappings(self) -> int:
        return len(self.maps["nat_mappings"].keys())

    def counters(self) -> dict[str, int]:
        stats = f"{self.pin_dir}/nat_stats"
        return {name: read_percpu_u64(stats, i) for i, name in enumerate(NAT_COUNTERS)}

    def close(self) -> None:
        for m in self.maps.values():
            m.close()


# -- scenarios ------------------------------------------------------------------------


def pinned(pin_dir: str, name: str) -> bool:
    """Whether the appliance pinned a map of this name (its module is loaded:
    the bench's appliance removes its pins when it stops)."""
    return (Path(pin_dir) / name).exists()


def xdp_on(topo: Topology, short: str, dev: str) -> bool:
    out = topo.run(short, "ip", "-d", "-j", "link", "show", "dev", dev)
    return any("xdp" in entry for entry in json.loads(out))


def check_clean(topo: Topology) -> None:
    """No XDP program left on the gateway's NICs by an earlier scenario."""
    for dev in ("lan0", "wan0"):
        if xdp_on(topo, "gw", dev):
            raise RuntimeError(f"an XDP program is still attached to gw/{dev}")


def start_at(gen: Generator, run: int) -> None:
    """Set the generator's run counter on every CPU: the next frame's source
    port is GEN_SPORT + run (as long as run < FLOWS)."""
    table = gen.bpf["gen_runs"]
    value = table.Leaf()
    for i in range(len(value)):
        value[i] = run
    table[ctypes.c_int(0)] = value


def new_connections(
    gen: Generator,
    sink: TranslatedSink,
    reset: Callable[[], None],
    created: Callable[[], int],
    first_port: int,
    flows: int,
) -> list[dict[str, float]]:
    """Rounds of `flows` new flows each, sent once, into an emptied gateway.
    The rate is timed at the sink (first to last translated arrival): a
    live-frames call costs a fixed ~20 ms here besides its frames, which
    would swamp rounds this short."""
    rounds = []
    for _ in range(NEW_CONN_ROUNDS):
        reset()
        time.sleep(0.1)
        start_at(gen, first_port - GEN_SPORT)
        before, other = sink.count(), sink.untranslated()
        sink.stamping(True)
        start = time.perf_counter()
        gen.send(flows)  # one call, one CPU: ports first_port .. first_port+flows-1
        elapsed = time.perf_counter() - start
        time.sleep(0.05)  # the last frames drain (a veth ring holds 256)
        sink.stamping(False)
        received, window = sink.count() - before, sink.window()
        rounds.append(
            {
                "sent": flows,
                "received": received,
                "untranslated": sink.untranslated() - other,
                "sink_window_s": window,
                "call_s": elapsed,
                "per_second": (received - 1) / window if window else 0.0,
                "state_entries": created(),
            }
        )
    return rounds


def _measure_with_time(gen: Generator, sink: Sink, seconds: float) -> tuple[Rate, float]:
    start = time.perf_counter()
    rate = measure(gen, sink, seconds)
    return rate, time.perf_counter() - start


def gw_cmd(topo: Topology, *argv: str, check: bool = True) -> str:
    """A command in the gateway namespace (stdin-less); its stdout."""
    return netns.run_cmd(netns.exec_argv(topo.ns("gw"), list(argv)), check=check)


@dataclass
class Scenario:
    """What one gateway gave: saturated rates per flow count, the same with
    common.measure for comparison, new-connection rounds per port range."""

    rates: dict[int, Rate] = field(default_factory=dict)
    chunked: dict[int, Rate] = field(default_factory=dict)
    new_connections: dict[str, list[dict]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def run_scenario(
    sink: TranslatedSink,
    gens: dict[int, Generator],
    newgen: Generator,
    seconds: float,
    reset: Callable[[], None],
    entries: Callable[[], int],
    result: Scenario,
) -> None:
    """Saturation at each flow count, then new connections, on one gateway."""
    untranslated = {}
    for flows, gen in gens.items():
        reset()
        other = sink.untranslated()
        result.rates[flows], elapsed = _measure_with_time(gen, sink, seconds)
        result.info[f"call_seconds_{flows}_flows"] = round(elapsed, 2)
        untranslated[flows] = sink.untranslated() - other
        result.info[f"state_entries_{flows}_flows"] = entries()
        if flows == FLOW_COUNTS[0]:
            result.chunked[flows] = measure(gen, sink, seconds / 2)
        time.sleep(0.3)
    result.info["untranslated_at_sink"] = untranslated
    for port, n in NEW_CONN_RANGES:
        result.new_connections[f"{port}-{port + n - 1}"] = new_connections(
            newgen, sink, reset, entries, port, n
        )


def run_linux(
    topo: Topology,
    sink: TranslatedSink,
    gens: dict[int, Generator],
    newgen: Generator,
    seconds: float,
) -> Scenario:
    """Linux forwarding + nftables masquerade; veth NAPI on lan0 by an XDP_PASS."""
    check_clean(topo)
    result = Scenario()
    sysctl = "net.netfilter.nf_conntrack_max"
    ct_max = int(gw_cmd(topo, "sysctl", "-n", sysctl))
    need = max(*FLOW_COUNTS, *(n for _, n in NEW_CONN_RANGES)) + 1000
    if ct_max < need:  # (fails if above the global value: a namespace cannot exceed it)
        gw_cmd(topo, "sysctl", "-qw", f"{sysctl}={need}")
        result.info["nf_conntrack_max_raised_from"] = ct_max
    result.info["nf_conntrack_max"] = int(gw_cmd(topo, "sysctl", "-n", sysctl))
    result.info["nf_conntrack_buckets"] = int(
        gw_cmd(topo, "sysctl", "-n", "net.netfilter.nf_conntrack_buckets")
    )
    napi = XdpPass(topo, "gw", "lan0")
    try:
        proc = subprocess.run(
            netns.exec_argv(topo.ns("gw"), ["nft", "-f", "-"]),
            input=NFT_RULESET,
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"nft refused the bench ruleset: {proc.stderr.strip()}")
        topo.linux_forwarding(True)
        run_scenario(
            sink,
            gens,
            newgen,
            seconds,
            lambda: gw_cmd(topo, "conntrack", "-F", check=False),
            lambda: int(gw_cmd(topo, "conntrack", "-C").strip() or 0),
            result,
        )
    finally:
        gw_cmd(topo, "nft", "delete", "table", "ip", NFT_TABLE, check=False)
        topo.linux_forwarding(False)
        gw_cmd(topo, "conntrack", "-F", check=False)
        napi.close()
    return result


def run_homegw(
    topo: Topology,
    sink: TranslatedSink,
    gens: dict[int, Generator],
    newgen: Generator,
    seconds: float,
) -> Scenario:
    """`homegw run` (router_bench's Appliance) with NAT on; its NAT state is
    emptied through the pinned maps where conntrack would be flushed."""
    check_clean(topo)
    result = Scenario()
    config = appliance_config(topo, "")
    config["nat"] = {"enabled": True}  # defaults: max_sessions 65536, pool 10000-32767
    app = Appliance(topo, config)
    state = None
    try:
        url = f"http://{GW_LAN_IP}:8080/healthz"
        health = json.loads(topo.run("gen", "curl", "-s", "--max-time", "2", url))
        result.info["appliance"] = {"kernel_path": health.get("kernel_path")}
        if health.get("kernel_path") or not pinned(app.pin_dir, "nat_sessions"):
            raise RuntimeError(f"the appliance does not translate in XDP: {health}")
        for dev in ("lan0", "wan0"):
            if not xdp_on(topo, "gw", dev):
                raise RuntimeError(f"the appliance has no XDP program on {dev}")
        state = NatState(app.pin_dir)
        before = state.counters()
        run_scenario(sink, gens, newgen, seconds, state.flush, state.mappings, result)
        after = state.counters()
        result.info["nat_counters"] = {
            k: after[k] - before[k] for k in after if after[k] > before[k]
        }
    finally:
        if state:
            state.close()
        app.stop()
        shutil.rmtree(app.dir, ignore_errors=True)
    return result


def run_generator_alone(
    topo: Topology, gen: Generator, sink: TranslatedSink, seconds: float
) -> tuple[Rate, Rate]:
    """The gateway drops every frame in XDP at once: the generator's own cost
    (measured twice)."""
    check_clean(topo)
    drop = XdpPass(topo, "gw", "lan0", verdict="XDP_DROP")
    try:
        return _measure_with_time(gen, sink, seconds)[0], measure(gen, sink, seconds / 2)
    finally:
        drop.close()


# -- BPF_PROG_TEST_RUN ----------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    started = time.monotonic()
    topo = Topology(new_tag())
    sink = newgen = None
    gens: dict[int, Generator] = {}
    try:
        topo.build()
        sink = TranslatedSink(topo)
        for flows in FLOW_COUNTS:
            gens[flows] = Generator(topo, flows)
        newgen = Generator(topo, 65536 - GEN_SPORT)  # source port = 10000 + run counter
        linux = run_linux(topo, sink, gens, newgen, args.seconds)
        time.sleep(0.3)
        alone, alone_chunked = run_generator_alone(topo, gens[FLOW_COUNTS[0]], sink, args.seconds)
        time.sleep(0.3)
        homegw = run_homegw(topo, sink, gens, newgen, args.seconds)
    finally:
        for gen in [*gens.values(), newgen]:
            if gen:
                gen.close()
        if sink:
            with contextlib.suppress(Exception):
                sink.close()
        for short in ("gen", "gw", "sink"):
            netns.delete_netns(topo.ns(short))  # and what the bench started in them
        purge_pins(f"/sys/fs/bpf/homegw-{topo.tag}")
        for leftover in Path(tempfile.gettempdir()).glob(f"hgwb-{topo.tag}-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # an appliance that failed to start
    timings = ns_per_packet(topo.tag)
    report(
        {LINUX: linux, HOMEGW: homegw},
        alone,
        alone_chunked,
        timings,
        args,
        time.monotonic() - started,
    )
    return 0


def report(
    scenarios: dict[str, Scenario],
    alone: Rate,
    alone_chunked: Rate,
    timings: dict[str, dict],
    args: argparse.Namespace,
    wall: float,
) -> None:
    gen_ns = 1e9 / alone.offered_pps
    out: dict = {"seconds": args.seconds, "pps": {}, "new_connections": {}}
    print(
        "\nNAT LAN->WAN, 64-byte UDP (checksum 0), saturation, one live-frames call of "
        f"~{args.seconds:g} s; 2 vCPU shared with the generator; veth GRO off (XDP on lan0), "
        f"tx offload off; counted at an XDP sink: only frames from {GW_WAN_IP}"
    )
    print(
        f"{'path':<24}{'flows':>7}{'offered kpps':>14}{'translated kpps':>17}{'vs nft':>8}"
        f"{'gateway ns/pkt':>16}"
    )
    for flows in FLOW_COUNTS:
        base = scenarios[LINUX].rates[flows].received_pps
        for name, sc in scenarios.items():
            rate = sc.rates[flows]
            cost = 1e9 / rate.received_pps - gen_ns if rate.received_pps else float("inf")
            print(
                f"{name:<24}{flows:>7}{rate.offered_pps / 1e3:>14.0f}"
                f"{rate.received_pps / 1e3:>17.0f}{rate.received_pps / base:>7.2f}x{cost:>16.0f}"
            )
            out["pps"].setdefault(name, {})[flows] = {
                "offered": rate.offered_pps,
                "received": rate.received_pps,
                "vs_nft": rate.received_pps / base,
                "gateway_ns_per_packet": cost,
            }
    print(
        f"(generator alone: {alone.offered_pps / 1e3:.0f} kpps, {gen_ns:.0f} ns/frame; "
        "gateway ns/pkt = 1/translated rate - generator's share)"
    )
    flows = FLOW_COUNTS[0]
    chunked = {name: sc.chunked[flows].received_pps for name, sc in scenarios.items()}
    print(
        f"(a second, shorter measurement, {flows} flows: "
        + ", ".join(f"{name} {pps / 1e3:.0f} kpps" for name, pps in chunked.items())
        + f" = {chunked[HOMEGW] / chunked[LINUX]:.2f}x; generator alone "
        f"{alone_chunked.offered_pps / 1e3:.0f} kpps)"
    )
    out["second_measurement"] = {**chunked, "generator alone": alone_chunked.offered_pps}
    out["generator_alone"] = {"offered": alone.offered_pps, "ns_per_frame": gen_ns}

    print(
        f"\nNew connections: every frame a new UDP flow, sent once into emptied NAT state, "
        f"rate timed at the sink; median of {NEW_CONN_ROUNDS} rounds"
    )
    print(
        f"{'path':<24}{'src ports':>13}{'new conn/s (k)':>16}{'vs nft':>8}{'ns/conn':>9}"
        f"{'recv/sent':>11}{'state':>8}{'  min-max k/s':<14}"
    )
    for ports in scenarios[LINUX].new_connections:
        rates = {
            name: statistics.median(x["per_second"] for x in sc.new_connections[ports])
            for name, sc in scenarios.items()
        }
        for name, sc in scenarios.items():
            rounds = sc.new_connections[ports]
            med = rates[name]
            recv = statistics.median(x["received"] / x["sent"] for x in rounds)
            state = statistics.median(x["state_entries"] for x in rounds)
            cost = 1e9 / med - gen_ns if med else float("inf")
            lo, hi = min(x["per_second"] for x in rounds), max(x["per_second"] for x in rounds)
            print(
                f"{name:<24}{ports:>13}{med / 1e3:>16.0f}{med / rates[LINUX]:>7.2f}x{cost:>9.0f}"
                f"{recv:>10.1%}{state:>8.0f}  {lo / 1e3:.0f}-{hi / 1e3:.0f}"
            )
            out["new_connections"].setdefault(name, {})[ports] = {
                "median_per_second": med,
                "vs_nft": med / rates[LINUX],
                "gateway_ns_per_connection": cost,
                "rounds": rounds,
            }
    print(
        "(state = conntrack entries / homegw nat_mappings after a round; recv/sent = "
        "translated frames at the sink per frame sent)"
    )

    print("\nns/packet through BPF_PROG_TEST_RUN (see ns_per_packet's doc for warm/cold)")
    print(f"{'chain':<50}{'median':>8}{'mean':>8}{'runs':>9}")
    for name, s in timings.items():
        print(f"{name:<50}{s['median']:>8.0f}{s['mean']:>8.0f}{s['runs']:>9}")

    def med(name: str) -> float:
        return timings[name]["median"]

    established = med("LAN router + nat, established, chain (cold)")
    fast = med("LAN router + nat, established, fast path (cold)")
    print(
        f"(an established flow: {established:.0f} ns through the chain, {fast:.0f} ns on the "
        f"fast path, cold)"
    )
    print(
        "(nat, established, adds "
        f"{med('LAN router + nat, established (warm)') - med('LAN router (warm)'):.0f} ns warm, "
        f"{established - med('LAN router (cold)'):.0f} ns cold; a new session "
        f"{med('LAN router + nat, new session only (cold)') - established:.0f} ns, a new flow "
        f"{med('LAN router + nat, new flow, port kept (cold)') - established:.0f} ns (port kept) / "
        f"{med('LAN router + nat, new flow, pool port (cold)') - established:.0f} ns (pool port) "
        "more than an established one, cold)"
    )
    out["ns_per_packet"] = timings
    for name, sc in scenarios.items():
        print(f"{name}: {json.dumps(sc.info)}")
        out.setdefault("info", {})[name] = sc.info
    print(f"wall time {wall:.0f} s")
    out["wall_seconds"] = wall
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
