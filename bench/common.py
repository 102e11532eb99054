"""Shared pieces of the benchmarks: a generator -> gateway -> sink topology in
namespaces, an XDP live-frames traffic generator and an XDP counting sink.

Traps avoided: the sink drops ARP too, so the gateway gets a
permanent neighbour entry for it; programs are detached on every exit path;
packets are counted at an XDP sink, not as skbs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bcc import BPF
from pyroute2 import IPRoute

from homegw import netns
from homegw.dataplane.attach import attach_xdp, detach_xdp
from homegw.dataplane.testrun import inject_xdp
from homegw.netns import in_netns

HERE = Path(__file__).parent
GEN_IP, GW_LAN_IP, GW_WAN_IP, SINK_IP = "10.10.1.2", "10.10.1.1", "10.10.2.1", "10.10.2.2"
TARGET_IP = "198.18.0.1"  # RFC 2544 benchmarking range, routed to the sink
FRAME_LEN = 60  # a 64-byte Ethernet frame without its FCS
# IPv6 (Topology(ipv6=True)): the LAN /64 and the gateway's WAN link
GEN_IP6, GW_LAN_IP6 = "2001:db8:b1::2", "2001:db8:b1::1"
GW_WAN_IP6, SINK_IP6 = "2001:db8:b2::1", "2001:db8:b2::2"
TARGET_IP6 = "2001:2::1"  # RFC 5180 benchmarking range, routed to the sink
FRAME_LEN6 = 62  # the smallest IPv6/UDP frame (66 bytes on the wire)


def link(name: str) -> tuple[int, str]:
    """(ifindex, MAC) of an interface in the current namespace."""
    with IPRoute() as ipr:
        msg = ipr.link("get", index=ipr.link_lookup(ifname=name)[0])[0]
    return msg["index"], msg.get_attr("IFLA_ADDRESS")


@dataclass
class Topology:
    """gen (eth0) -- (lan0) gw (wan0) -- (eth0) sink"""

    tag: str
    ipv6: bool = False  # IPv6 addresses too (GEN_IP6 ... SINK_IP6)

    def ns(self, short: str) -> str:
        return f"hgwb-{self.tag}-{short}"

    def build(self) -> Topology:
        for short in ("gen", "gw", "sink"):
            netns.ip("netns", "add", self.ns(short))
            netns.ip("link", "set", "lo", "up", ns=self.ns(short))
        netns.add_veth("eth0", self.ns("gen"), "lan0", self.ns("gw"))
        netns.add_veth("wan0", self.ns("gw"), "eth0", self.ns("sink"))
        for dev, short, address in (
            ("eth0", "gen", f"{GEN_IP}/24"),
            ("lan0", "gw", f"{GW_LAN_IP}/24"),
            ("wan0", "gw", f"{GW_WAN_IP}/24"),
            ("eth0", "sink", f"{SINK_IP}/24"),
        ):
            netns.tx_offload_off(dev, self.ns(short))
            netns.ip("addr", "add", address, "dev", dev, ns=self.ns(short))
            netns.ip("link", "set", dev, "up", ns=self.ns(short))
        with in_netns(self.ns("sink")):
            self.sink_mac = link("eth0")[1]
        with in_netns(self.ns("gw")):
            self.lan_mac, self.wan_mac = link("lan0")[1], link("wan0")[1]
            self.wan_ifindex = link("wan0")[0]
        # The sink drops ARP: the gateway must know it for good.
        netns.ip(
            "neigh",
            "replace",
            SINK_IP,
            "lladdr",
            self.sink_mac,
            "nud",
            "permanent",
            "dev",
            "wan0",
            ns=self.ns("gw"),
        )
        if self.ipv6:
            self._add_ipv6()
        return self

    def _add_ipv6(self) -> None:
        for dev, short, address in (
            ("eth0", "gen", f"{GEN_IP6}/64"),
            ("wan0", "gw", f"{GW_WAN_IP6}/64"),
            ("eth0", "sink", f"{SINK_IP6}/64"),
        ):
            netns.ip("-6", "addr", "add", address, "dev", dev, "nodad", ns=self.ns(short))
        gw = self.ns("gw")
        neigh = ("-6", "neigh", "replace", SINK_IP6, "lladdr", self.sink_mac, "nud", "permanent")
        netns.ip(*neigh, "dev", "wan0", ns=gw)

    def teardown(self) -> None:
        for short in ("gen", "gw", "sink"):
            subprocess.run(["ip", "netns", "del", self.ns(short)], capture_output=True)

    def run(self, short: str, *argv: str) -> str:
        return netns.run_cmd(netns.exec_argv(self.ns(short), list(argv)))

    def linux_forwarding(self, on: bool) -> None:
        self.run("gw", "sysctl", "-qw", f"net.ipv4.ip_forward={int(on)}")
        if on:
            netns.ip("route", "replace", "default", "via", SINK_IP, ns=self.ns("gw"))

    def linux_forwarding6(self, on: bool) -> None:
        """Linux's own IPv6 forwarding (the LAN address is the gateway's then)."""
        gw = self.ns("gw")
        self.run("gw", "sysctl", "-qw", f"net.ipv6.conf.all.forwarding={int(on)}")
        if on:
            netns.ip("-6", "addr", "replace", f"{GW_LAN_IP6}/64", "dev", "lan0", "nodad", ns=gw)
            netns.ip("-6", "route", "replace", "default", "via", SINK_IP6, ns=gw)
        else:
            netns.ip("-6", "addr", "del", f"{GW_LAN_IP6}/64", "dev", "lan0", ns=gw)


def new_tag() -> str:
    return "b" + secrets.token_hex(2)


class XdpPass:
    """An XDP_PASS program: gives a veth NAPI (needed to take frames sent to it
    with XDP) without GRO, which would merge forwarded UDP into fewer skbs.
    With verdict="XDP_DROP" it measures what the generator alone costs."""

    def __init__(self, topo: Topology, short: str, dev: str, verdict: str = "XDP_PASS") -> None:
        self.topo, self.short, self.dev = topo, short, dev
        self.bpf = BPF(text=f"int xdp_fixed(struct xdp_md *ctx) {{ return {verdict}; }}")
        fd = self.bpf.load_func("xdp_fixed", BPF.XDP).fd
        with in_netns(topo.ns(short)):
            attach_xdp(dev, fd, "native")

    def close(self) -> None:
        with in_netns(self.topo.ns(self.short)):
            detach_xdp(self.dev, "native")
        self.bpf.cleanup()


class Sink:
    """XDP program on the sink's eth0 that counts and drops."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.bpf = BPF(src_file=str(HERE / "xdp_sink.bpf.c"))
        fd = self.bpf.load_func("xdp_sink", BPF.XDP).fd
        with in_netns(topo.ns("sink")):
            attach_xdp("eth0", fd, "native")

    def count(self) -> int:
        return int(self.bpf["sink_count"].sum(ctypes.c_int(0)).value)

    def close(self) -> None:
        with in_netns(self.topo.ns("sink")):
            detach_xdp("eth0", "native")
        self.bpf.cleanup()


class Generator:
    """Live-frames XDP generator sending from gen's eth0 to the gateway.

    cpu: the CPU its sending thread runs on (the gateway's XDP work runs on
    the sender's CPU with veth), as a real NIC's receive queue is bound to
    one CPU and RSS keeps a flow there; None: wherever the scheduler puts it
    (it moves the whole datapath's work to another CPU's cold caches now and
    then)."""

    def __init__(
        self,
        topo: Topology,
        flows: int,
        pace: int = 1,
        ipv6: bool = False,
        cpu: int | None = None,
    ) -> None:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether

        self.topo = topo
        cflags = [f"-DFLOWS={flows}", f"-DPACE={pace}", f"-DL3_LEN={40 if ipv6 else 20}"]
        self.bpf = BPF(src_file=str(HERE / "xdp_gen.bpf.c"), cflags=cflags)
        self.fd = self.bpf.load_func("xdp_gen", BPF.XDP).fd
        with in_netns(topo.ns("gen")):
            self.ifindex, mac = link("eth0")
        if ipv6:  # UDP's checksum is mandatory in IPv6: the generator updates it
            l3 = IPv6(src=GEN_IP6, dst=TARGET_IP6, hlim=64) / UDP(sport=10000, dport=9)
        else:
            l3 = IP(src=GEN_IP, dst=TARGET_IP, ttl=64) / UDP(sport=10000, dport=9, chksum=0)
        raw = bytes(Ether(src=mac, dst=topo.lan_mac) / l3)
        self.frame = raw + bytes(max(0, (FRAME_LEN6 if ipv6 else FRAME_LEN) - len(raw)))
        template = self.bpf["gen_template"]
        template[ctypes.c_int(0)] = template.Leaf.from_buffer_copy(raw)
        self.pace = pace
        self.cpu = cpu

    def send(self, runs: int) -> None:
        """`runs` live-frame runs (runs / pace frames sent), as fast as the CPU allows."""
        with in_netns(self.topo.ns("gen")), on_cpu(self.cpu):
            inject_xdp(self.fd, self.frame, self.ifindex, repeat=runs, batch_size=64)

    def close(self) -> None:
        self.bpf.cleanup()


@contextlib.contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """The calling thread bound to `cpu` meanwhile (None: unchanged)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass(frozen=True)
class Rate:
    offered_pps: float
    received_pps: float

    @property
    def loss(self) -> float:
        return max(0.0, 1 - self.received_pps / self.offered_pps) if self.offered_pps else 0.0


def measure(gen: Generator, sink: Sink, seconds: float) -> Rate:
    """Saturated rate from one live-frames call of about `seconds`: each call
    also costs a fixed ~20 ms on this kernel, so many short calls would
    understate fast paths by 10-20 %."""
    gen.send(20_000)  # warm-up: neighbours, flow state, caches
    start = time.perf_counter()
    gen.send(200_000)
    estimate = 200_000 / (time.perf_counter() - start)  # low: includes the fixed cost
    runs = max(200_000, int(estimate * seconds))
    before = sink.count()
    start = time.perf_counter()
    gen.send(runs)
    elapsed = time.perf_counter() - start
    time.sleep(0.05)  # frames still in veth rings reach the sink within microseconds
    return Rate(runs / gen.pace / elapsed, (sink.count() - before) / elapsed)
