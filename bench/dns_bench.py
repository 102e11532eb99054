"""DNS benchmark: dnsperf against dnsmasq and homegw's forwarder (Python path,
then XDP fast path), on one topology, in one run, with the same dnsperf
parameters. Cached: 1,000 names asked over and over after one warm-up pass;
uncached: every query a new name the upstream answers.

    .venv/bin/python -m bench.dns_bench [--seconds 8]

Topology (unique namespace names, removed on every exit path)::

    hgwb-T-cli: eth0 10.53.1.2/24 ── veth ── hgwb-T-gw: lan0 10.53.1.1 (homegw)
                (dnsperf)                               10.53.1.3 (dnsmasq)
                                             wan0 10.53.2.1 ── veth ── hgwb-T-up: eth0 10.53.2.2
                                            (dnsmasq: *.bench.test -> 198.51.100.1, TTL 3600)

Both forwarders cache 10,000 answers and forward to 10.53.2.2. dnsmasq is
measured first, before any XDP program is on lan0; homegw runs as
`python -m homegw.standalone dns` (the Python path), then again with
`--xdp` (the DNS IO module on lan0 answers cache hits in XDP, redirected
back to lan0). The client's veth runs an XDP_PASS program, as it did when
the answers went out with XDP_TX (which veth delivers late to a peer
without XDP); kept so runs stay comparable.
Also printed: the XDP program's cost per answered query (BPF_PROG_TEST_RUN).
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from homegw import netns
from homegw.dataplane.attach import attach_xdp, detach_xdp
from homegw.netns import in_netns

CLI, HOMEGW, DNSMASQ, GW_WAN, UPSTREAM = (
    "10.53.1.2",
    "10.53.1.1",
    "10.53.1.3",
    "10.53.2.1",
    "10.53.2.2",
)
CACHED_NAMES = 1000
UNCACHED_NAMES = 600_000
FIXED_RATE = 5000  # queries/s offered for the latency-at-load line


@dataclass
class Perf:
    qps: float
    avg_ms: float
    lost_pct: float
    completed: int


def parse_dnsperf(out: str) -> Perf:
    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if not match:
            raise RuntimeError(f"dnsperf output lacks /{pattern}/:\n{out}")
        return float(match.group(1))

    return Perf(
        qps=number(r"Queries per second:\s+([\d.]+)"),
        avg_ms=number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        lost_pct=number(r"Queries lost:\s+\d+ \(([\d.]+)%\)"),
        completed=int(number(r"Queries completed:\s+(\d+)")),
    )


class XdpPass:
    """XDP_PASS on the client's veth (see the module docstring: a peer without
    XDP gets XDP_TX frames late; homegw now redirects, kept for comparability)."""

    def __init__(self, ns: str, dev: str) -> None:
        from bcc import BPF

        self.ns, self.dev = ns, dev
        self.bpf = BPF(text="int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
        fd = self.bpf.load_func("xdp_pass", BPF.XDP).fd
        with in_netns(ns):
            attach_xdp(dev, fd, "native")

    def close(self) -> None:
        with in_netns(self.ns):
            detach_xdp(self.dev, "native")
        self.bpf.cleanup()


class Bed:
    def __init__(self, workdir: Path) -> None:
        self.tag = "d" + secrets.token_hex(2)
        self.dir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.xdp_pass: XdpPass | None = None

    def ns(self, short: str) -> str:
        return f"hgwb-{self.tag}-{short}"

    def build(self) -> None:
        for short in ("cli", "gw", "up"):
            netns.add_netns(self.ns(short))
        netns.add_veth("eth0", self.ns("cli"), "lan0", self.ns("gw"))
        netns.add_veth("wan0", self.ns("gw"), "eth0", self.ns("up"))
        for dev, short, addresses in (
            ("eth0", "cli", [CLI]),
            ("lan0", "gw", [HOMEGW, DNSMASQ]),
            ("wan0", "gw", [GW_WAN]),
            ("eth0", "up", [UPSTREAM]),
        ):
            netns.tx_offload_off(dev, self.ns(short))
            for address in addresses:
                netns.ip("addr", "add", f"{address}/24", "dev", dev, ns=self.ns(short))
            netns.ip("link", "set", dev, "up", ns=self.ns(short))
        self.xdp_pass = XdpPass(self.ns("cli"), "eth0")

    def run(self, short: str, *argv: str) -> str:
        return netns.run_cmd(netns.exec_argv(self.ns(short), list(argv)), timeout=120)

    def spawn(self, short: str, argv: list[str], log: str, host_bpffs: bool = False):
        with open(self.dir / log, "wb") as out:
            proc = subprocess.Popen(
                netns.exec_argv(self.ns(short), argv, host_bpffs),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def wait_listening(self, proc: subprocess.Popen[bytes], address: str, log: str) -> None:
        ready = netns.wait_for(
            lambda: (
                proc.poll() is not None
                or netns.listening(self.ns("gw"), "udp", address, 53)
                and netns.listening(self.ns("gw"), "tcp", address, 53)
            ),
            60,
        )
        if not ready or proc.poll() is not None:
            raise RuntimeError(f"{log} did not start:\n{(self.dir / log).read_text()[-3000:]}")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def teardown(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        if self.xdp_pass is not None:
            self.xdp_pass.close()
        for short in ("cli", "gw", "up"):
            netns.delete_netns(self.ns(short))


def dnsmasq(bed: Bed, name: str, extra: list[str]) -> list[str]:
    return [
        "/usr/sbin/dnsmasq",
        "--keep-in-foreground",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--user=root",
        "--group=root",
        "--bind-interfaces",
        "--port=53",
        f"--pid-file={bed.dir / (name + '.pid')}",
        f"--log-facility={bed.dir / (name + '.log')}",
        "--no-resolv",
        *extra,
    ]


def write_names(path: Path, prefix: str, count: int) -> Path:
    path.write_text("".join(f"{prefix}{i}.bench.test A\n" for i in range(count)))
    return path


def dnsperf(bed: Bed, server: str, names: Path, *args: str) -> Perf:
    return parse_dnsperf(bed.run("cli", "dnsperf", "-s", server, "-d", str(names), *args))


def measure(bed: Bed, server: str, label: str, seconds: int, cached: Path) -> dict[str, Perf]:
    """Uncached (fresh names), then cached (after a warm-up pass), then latency at a fixed rate."""
    results: dict[str, Perf] = {}
    if label != "homegw (XDP)":
        fresh = write_names(
            bed.dir / f"u-{label[:6]}.txt", f"u{secrets.token_hex(3)}-", UNCACHED_NAMES
        )
        results["uncached"] = dnsperf(bed, server, fresh, "-n", "1", "-l", str(seconds))
    warm = dnsperf(bed, server, cached, "-n", "1")
    if warm.completed != CACHED_NAMES:
        raise RuntimeError(f"{label}: warm-up answered {warm.completed} of {CACHED_NAMES}")
    results["cached"] = dnsperf(bed, server, cached, "-l", str(seconds))
    results["cached @5k/s"] = dnsperf(bed, server, cached, "-l", "3", "-Q", str(FIXED_RATE))
    return results


def homegw_config(bed: Bed) -> Path:
    config = {
        "wan": {
            "interface": "wan0",
            "mode": "static",
            "address": f"{GW_WAN}/24",
            "gateway": UPSTREAM,
            "dns": [UPSTREAM],
        },
        "lan": {"interface": "lan0", "address": f"{HOMEGW}/24"},
        "state_dir": str(bed.dir / "state"),
        "log_level": "info",
        "dns": {"cache_size": 10000, "query_log_size": 1000},
        "dataplane": {"pin_dir": f"/sys/fs/bpf/homegw-{bed.tag}", "xdp_mode": "native"},
    }
    path = bed.dir / "homegw.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def xdp_cost_ns() -> tuple[float, float]:
    """Mean ns per answered query through the LAN root with the DNS module, and
    through the root alone (an empty chain), by BPF_PROG_TEST_RUN."""
    from dnslib import DNSRecord
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from homegw.config import parse_config
    from homegw.dataplane.abi import Hook, Nic
    from homegw.dataplane.dataplane import Dataplane, purge_pins
    from homegw.dataplane.testrun import prog_test_run
    from homegw.modules.dns.module import DnsModule
    from homegw.modules.dns.wire import text_to_wire

    pin_dir = f"/sys/fs/bpf/homegw-bench-{secrets.token_hex(3)}"
    config = parse_config(
        {
            "wan": {"interface": "wan0"},
            "lan": {"interface": "lan0"},
            "dataplane": {"pin_dir": pin_dir},
        }
    )
    query = DNSRecord.question("www.example.test").pack()
    data = bytes(
        Ether()
        / IP(src="192.168.1.11", dst=str(config.lan.ip))
        / UDP(sport=40000, dport=53)
        / query
    )
    dp = Dataplane(pin_dir, {})

    def mean_ns(verdict: str) -> float:
        runs = [prog_test_run(dp.root_fd(Nic.LAN, Hook.XDP), data) for _ in range(3000)]
        if any(r.verdict != verdict for r in runs):
            raise RuntimeError(f"expected {verdict} from every run")
        return sum(r.duration_ns for r in runs[500:]) / len(runs[500:])

    try:
        dp.load()
        root_only = mean_ns("XDP_PASS")
        module = DnsModule(config)
        dp.add_module(module)
        dp.set_order(Nic.LAN, ["dns"])
        fast_path = module.fast_path()
        fast_path.put(
            text_to_wire("www.example.test"), ["198.51.100.80"], time.monotonic_ns() + 600 * 10**9
        )
        with_dns = mean_ns("XDP_REDIRECT")  # the reply, back to its ingress
        fast_path.close()
        return with_dns, root_only
    finally:
        dp.close()
        purge_pins(pin_dir)


def start_dnsmasq(bed: Bed, short: str, name: str, extra: list[str]) -> subprocess.Popen[bytes]:
    return bed.spawn(short, dnsmasq(bed, name, extra), f"{name}.out")


def xdp_hits(log: Path) -> int:
    """Queries the XDP program answered, from the service's exit line."""
    match = re.search(r"'fast_path': \{'hits': (\d+)", log.read_text())
    if not match:
        raise RuntimeError(f"no fast-path statistics in {log}:\n{log.read_text()[-2000:]}")
    return int(match.group(1))


def run_all(bed: Bed, seconds: int) -> dict[str, dict[str, Perf]]:
    cached = write_names(bed.dir / "cached.txt", "c", CACHED_NAMES)
    upstream = [
        f"--listen-address={UPSTREAM}",
        "--address=/bench.test/198.51.100.1",
        "--local-ttl=3600",
        "--cache-size=0",
    ]
    start_dnsmasq(bed, "up", "upstream", upstream)
    results: dict[str, dict[str, Perf]] = {}
    forwarder = start_dnsmasq(
        bed,
        "gw",
        "forwarder",
        [
            f"--listen-address={DNSMASQ}",
            f"--server={UPSTREAM}",
            "--cache-size=10000",
            "--dns-forward-max=1000",
        ],
    )
    bed.wait_listening(forwarder, DNSMASQ, "forwarder.out")
    results["dnsmasq"] = measure(bed, DNSMASQ, "dnsmasq", seconds, cached)
    bed.stop(forwarder)
    argv = [sys.executable, "-m", "homegw.standalone", "dns", "-c", str(homegw_config(bed))]
    for label, extra, log in (
        ("homegw (Python)", [], "python.log"),
        ("homegw (XDP)", ["--xdp"], "xdp.log"),
    ):
        proc = bed.spawn("gw", argv + extra, log, host_bpffs=True)
        bed.wait_listening(proc, HOMEGW, log)
        results[label] = measure(bed, HOMEGW, label, seconds, cached)
        bed.stop(proc)
    answered = xdp_hits(bed.dir / "xdp.log")
    total = sum(p.completed for p in results["homegw (XDP)"].values())
    if answered < 0.9 * total:
        raise RuntimeError(f"XDP answered only {answered} of {total} queries: not measured")
    return results


def report(results: dict[str, dict[str, Perf]], xdp_ns: tuple[float, float]) -> None:
    print(f"\n{'forwarder':<17} {'test':<13} {'queries/s':>10} {'avg latency':>12} {'lost':>7}")
    for name, tests in results.items():
        for test, perf in tests.items():
            print(
                f"{name:<17} {test:<13} {perf.qps:>10,.0f} {perf.avg_ms:>9.3f} ms "
                f"{perf.lost_pct:>6.2f}%"
            )
    base = results["dnsmasq"]
    py, xdp = results["homegw (Python)"], results["homegw (XDP)"]
    print("\nratios to dnsmasq (queries/s):")
    print(f"  homegw Python path, cached:   {py['cached'].qps / base['cached'].qps:.2f}")
    print(f"  homegw XDP fast path, cached: {xdp['cached'].qps / base['cached'].qps:.2f}")
    print(f"  homegw uncached:              {py['uncached'].qps / base['uncached'].qps:.2f}")
    with_dns, root_only = xdp_ns
    print(
        f"\nBPF_PROG_TEST_RUN per cached query: LAN root + dns module {with_dns:.0f} ns, "
        f"root alone {root_only:.0f} ns: the dns module {with_dns - root_only:.0f} ns"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each saturated run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hgwb-dns-") as tmp:
        bed = Bed(Path(tmp))
        try:
            bed.build()
            results = run_all(bed, args.seconds)
        finally:
            bed.teardown()
            netns.rmtree_if_exists(Path(f"/sys/fs/bpf/homegw-{bed.tag}"))
    report(results, xdp_cost_ns())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
