"""IPv6 router benchmark: LAN->WAN forwarding of the smallest IPv6/UDP frames
over 64 flows — homegw's XDP router and IPv6 firewall (sessions created and
refreshed per packet) against Linux IPv6 forwarding with an nftables stateful
ruleset (conntrack: what OpenWrt ships), and a bare XDP redirect (the
ceiling), on one topology in one run.

    .venv/bin/python -m bench.router6_bench [--seconds 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import subprocess

from bench.common import (
    GW_LAN_IP,
    GW_WAN_IP,
    GW_WAN_IP6,
    SINK_IP,
    SINK_IP6,
    Generator,
    Rate,
    Sink,
    Topology,
    XdpPass,
    measure,
    new_tag,
)
from bench.router_bench import Appliance, report, run_scenarios

FLOWS = 64
STATEFUL_RULESET = """
table inet bench6 {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "lan0" oifname "wan0" meta nfproto ipv6 accept
    }
}
"""


def appliance_config(topo: Topology) -> dict:
    return {
        "wan": {
            "interface": "wan0",
            "mode": "static",
            "address": f"{GW_WAN_IP}/24",
            "gateway": SINK_IP,
            "ipv6": {
                "mode": "static",
                "address": f"{GW_WAN_IP6}/64",
                "gateway": SINK_IP6,
                "prefix": "2001:db8:b1::/48",
            },
        },
        "lan": {"interface": "lan0", "address": f"{GW_LAN_IP}/24", "ipv6": {"ula": "fd00:b1::/48"}},
        "nat": {"enabled": False},
        "dhcp": {"enabled": False},
        "webui": {"listen": f"{GW_LAN_IP}:8080"},
        "state_dir": "",
        "dataplane": {"pin_dir": f"/sys/fs/bpf/homegw-{topo.tag}"},
        "log_level": "info",
    }


def _nft(topo: Topology, script: str) -> None:
    argv = ["ip", "netns", "exec", topo.ns("gw"), "nft", "-f", "-"]
    subprocess.run(argv, input=script, text=True, check=True)


def run_linux(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    napi = XdpPass(topo, "gw", "lan0")
    topo.linux_forwarding6(True)
    _nft(topo, STATEFUL_RULESET)
    try:
        return measure(gen, sink, seconds)
    finally:
        _nft(topo, "delete table inet bench6\n")
        topo.linux_forwarding6(False)
        napi.close()


def run_homegw(topo: Topology, gen: Generator, sink: Sink, seconds: float) -> Rate:
    app = Appliance(topo, appliance_config(topo))
    try:
        return measure(gen, sink, seconds)
    finally:
        app.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    topo = Topology(new_tag(), ipv6=True).build()
    sink = gen = None
    try:
        sink = Sink(topo)
        gen = Generator(topo, FLOWS, ipv6=True)
        paths = {"linux + nftables ct": run_linux, "homegw XDP v6": run_homegw}
        rates = run_scenarios(topo, gen, sink, args.seconds, paths)
    finally:
        if gen:
            gen.close()
        if sink:
            sink.close()
        topo.teardown()
    report(rates, {}, args.json, baseline="linux + nftables ct", what="IPv6/UDP (62 bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
