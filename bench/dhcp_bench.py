"""DHCP benchmark: perfdhcp 4-way exchanges per second against dnsmasq and
against homegw's LAN DHCP server, on one topology, in one run, with the same
perfdhcp parameters; then every lease is checked against the ACKs on the wire.

    .venv/bin/python -m bench.dhcp_bench [--clients 10000] [--rate 4000]

Topology (unique namespace names, removed on every exit path)::

    hgwb-T-srv: srv0 10.0.0.1/16 (the server) ── veth ── hgwb-T-cli: cli0 10.0.0.2/16 (perfdhcp)

perfdhcp simulates `--clients` distinct clients (sequential MACs, one new
client per exchange) as a relay (giaddr 10.0.0.2), offering `--rate`
exchanges/s, above what either server sustains: the reported rate is what
the server completed. Both servers: a /16 pool of 65,000 addresses, 12 h
leases, no ping / ARP probe before an offer (dnsmasq --no-ping, homegw
--probe-timeout 0), dnsmasq with --quiet-dhcp (no per-packet log) while homegw
keeps its INFO line per ACK. tcpdump records the server's replies; after the
run dnsmasq gets SIGTERM and homegw SIGKILL (kill -9), and each lease table
must hold exactly the (MAC, address) pairs of the distinct clients ACKed.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from homegw import netns
from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.leases import Lease, LeaseDb, State, client_key
from homegw.modules.dhcp.service import DB_NAME

SERVER_IP, CLIENT_IP, PREFIX = "10.0.0.1", "10.0.0.2", 16
POOL = ("10.0.0.10", "10.0.255.250")
LEASE_SECONDS = 12 * 3600
START_TIMEOUT = 20.0
QUIET_TIMEOUT = 60.0
CAPTURE_SETTLE = 1.5  # s without a new captured packet (> libpcap's 1 s block timeout)
SETTLE_POLLS = 5  # consecutive 50 ms polls that must find nothing left to do


@dataclass
class Result:
    server: str
    rate: float  # completed 4-way exchanges per second (perfdhcp)
    sent: int  # DISCOVERs sent
    acked: int  # distinct clients ACKed (from the capture)
    ack_rate: float  # ACKs per second on the wire, first reply to last ACK
    leases: int  # leases in the server's table after it stopped (preloaded ones included)
    lost: int  # ACKed (MAC, address) pairs missing from the table
    preload: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.leases == self.acked + self.preload


class Bed:
    """Two namespaces joined by a veth pair; `close()` removes them."""

    def __init__(self, workdir: Path) -> None:
        self.tag = "d" + secrets.token_hex(2)
        self.srv, self.cli = f"hgwb-{self.tag}-srv", f"hgwb-{self.tag}-cli"
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def build(self) -> Bed:
        for ns in (self.srv, self.cli):
            netns.add_netns(ns)
        netns.add_veth("srv0", self.srv, "cli0", self.cli)
        for dev, ns, address in (("srv0", self.srv, SERVER_IP), ("cli0", self.cli, CLIENT_IP)):
            netns.ip("addr", "add", f"{address}/{PREFIX}", "dev", dev, ns=ns)
            netns.ip("link", "set", dev, "up", ns=ns)
        return self

    def popen(self, ns: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(netns.exec_argv(ns, argv), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ns in (self.srv, self.cli):
            netns.delete_netns(ns)


# --- servers -------------------------------------------------------------------------


def preload_pairs(count: int) -> list[tuple[str, str]]:
    """(MAC, address) of `count` existing leases, from the top of the pool down."""
    top = int(IPv4Address(POOL[1]))
    return [
        (f"02:70:00:00:{i >> 8:02x}:{i & 255:02x}", str(IPv4Address(top - i))) for i in range(count)
    ]


def start_dnsmasq(bed: Bed, preload: int) -> tuple[subprocess.Popen, Path]:
    leases = bed.workdir / "dnsmasq.leases"
    expiry = int(time.time()) + LEASE_SECONDS
    leases.write_text("".join(f"{expiry} {mac} {ip} * *\n" for mac, ip in preload_pairs(preload)))
    argv = [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
        "--user=root", "--group=root", "--bind-interfaces", "--interface=srv0", "--port=0",
        f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,{LEASE_SECONDS}",
        f"--dhcp-leasefile={leases}", "--dhcp-authoritative", "--no-ping",
        "--dhcp-lease-max=70000", "--quiet-dhcp", f"--log-facility={bed.workdir / 'dnsmasq.log'}",
    ]  # fmt: skip
    return bed.popen(bed.srv, argv, bed.workdir / "dnsmasq.out"), leases


def start_homegw(bed: Bed, preload: int) -> tuple[subprocess.Popen, Path]:
    state = bed.workdir / "homegw-state"
    state.mkdir()
    db_path = state / DB_NAME
    db = LeaseDb(db_path)
    expiry = time.time() + LEASE_SECONDS
    for mac, ip in preload_pairs(preload):
        address = int(IPv4Address(ip))
        db.save(Lease(address, client_key(None, mac), mac, None, expiry, State.BOUND))
    db.close()
    config = {
        "wan": {"interface": "wan-unused"},
        "lan": {"interface": "srv0", "address": f"{SERVER_IP}/{PREFIX}"},
        "dhcp": {"range_start": POOL[0], "range_end": POOL[1], "lease_time": LEASE_SECONDS},
        "state_dir": str(state),
        "log_level": "info",
    }
    path = bed.workdir / "homegw.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "homegw.standalone", "dhcp", "--config", str(path)]
    argv += ["--probe-timeout", "0"]
    return bed.popen(bed.srv, argv, bed.workdir / "homegw.log"), db_path


def wait_listening(bed: Bed, proc: subprocess.Popen) -> None:
    ready = netns.wait_for(
        lambda: proc.poll() is not None or netns.listening(bed.srv, "udp", "*", 67), START_TIMEOUT
    )
    if not ready or proc.poll() is not None:
        raise RuntimeError(f"server did not start (exit {proc.poll()}); see {bed.workdir}")


def wait_quiet(bed: Bed) -> None:
    """Until the server's port-67 queue stays empty: every request has been answered."""
    polls = [0]

    def quiet() -> bool:
        queued = netns.run_cmd(netns.exec_argv(bed.srv, ["ss", "-Hlnu", "sport", "= :67"]))
        idle = all(line.split()[1] == "0" for line in queued.splitlines() if line.strip())
        polls[0] = polls[0] + 1 if idle else 0
        return polls[0] >= SETTLE_POLLS

    netns.wait_for(quiet, QUIET_TIMEOUT)


def stop_capture(dump: subprocess.Popen, pcap: Path, log: Path) -> None:
    """Let tcpdump write out what it has, stop it, and insist it lost nothing.

    libpcap hands packets over in ring blocks that retire after a 1 s timeout:
    the file must stay unchanged for longer than that before tcpdump is stopped."""
    last = [-1, time.monotonic()]

    def settled() -> bool:
        size = pcap.stat().st_size
        if size != last[0]:
            last[:] = [size, time.monotonic()]
        return time.monotonic() - last[1] >= CAPTURE_SETTLE

    netns.wait_for(settled, QUIET_TIMEOUT)
    dump.send_signal(signal.SIGINT)
    dump.wait(30)
    stats = log.read_text()
    captured = re.search(r"(\d+) packets captured", stats)
    received = re.search(r"(\d+) packets received by filter", stats)
    if not captured or not received or captured.group(1) != received.group(1):
        raise RuntimeError(f"the capture lost packets, ACK counts would be wrong:\n{stats}")


# --- measuring -----------------------------------------------------------------------


def capture(bed: Bed, name: str) -> tuple[subprocess.Popen, Path]:
    pcap = bed.workdir / f"{name}.pcap"
    log = bed.workdir / f"{name}.tcpdump"
    argv = ["tcpdump", "-i", "cli0", "-n", "-U", "-B", "65536", "-w", str(pcap)]
    argv += [f"udp and src host {SERVER_IP} and src port 67"]
    proc = bed.popen(bed.cli, argv, log)
    if not netns.wait_for(lambda: "listening on" in log.read_text(), START_TIMEOUT):
        raise RuntimeError(f"tcpdump did not start: {log.read_text()}")
    return proc, pcap


def perfdhcp(bed: Bed, clients: int, rate: int) -> tuple[float, int]:
    """(completed exchanges/s as perfdhcp reports it, DISCOVERs sent)."""
    argv = ["perfdhcp", "-4", "-l", "cli0", "-r", str(rate), "-R", str(clients)]
    argv += ["-n", str(clients), SERVER_IP]
    proc = subprocess.run(
        netns.exec_argv(bed.cli, argv), capture_output=True, text=True, timeout=300
    )
    if proc.returncode not in (0, 3):  # 3: some exchanges were not completed
        raise RuntimeError(f"perfdhcp failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    rate_match = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", proc.stdout)
    sent = re.search(r"DISCOVER-OFFER\*\*\*\s*\nsent packets: (\d+)", proc.stdout)
    if not rate_match or not sent:
        raise RuntimeError(f"cannot read perfdhcp's report:\n{proc.stdout}")
    return float(rate_match.group(1)), int(sent.group(1))


def read_acks(pcap: Path) -> tuple[dict[str, str], float]:
    """(MAC -> address of every DHCPACK, ACKs per second from the first reply to
    the last ACK) from a pcap with Ethernet link type."""
    data = pcap.read_bytes()
    acks: dict[str, str] = {}
    first = last = None
    offset = 24  # global header
    while offset + 16 <= len(data):
        sec, usec, caplen = struct.unpack_from("<III", data, offset)
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        ihl = (frame[14] & 0x0F) * 4
        try:
            msg = p.parse(frame[14 + ihl + 8 :], expect_op=p.BOOTREPLY)
        except p.MalformedPacket:
            continue
        stamp = sec + usec / 1e6
        first = stamp if first is None else first
        if msg.msg_type == p.ACK:
            acks[msg.mac] = p.ip_str(msg.yiaddr)
            last = stamp
    span = (last - first) if first is not None and last is not None else 0.0
    return acks, (len(acks) / span if span > 0 else 0.0)


def dnsmasq_table(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {f[1]: f[2] for f in (line.split() for line in lines) if len(f) >= 3}


def homegw_table(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT mac, address FROM leases WHERE state = 'bound'").fetchall()
    finally:
        db.close()
    return {mac: str(IPv4Address(address)) for mac, address in rows}


def run_one(bed: Bed, name: str, clients: int, rate: int, preload: int) -> Result:
    start = start_dnsmasq if name == "dnsmasq" else start_homegw
    server, table_path = start(bed, preload)
    wait_listening(bed, server)
    dump, pcap = capture(bed, name)
    completed, sent = perfdhcp(bed, clients, rate)
    wait_quiet(bed)
    # dnsmasq writes its file on every change (SIGTERM at the latest); homegw gets kill -9.
    server.send_signal(signal.SIGTERM if name == "dnsmasq" else signal.SIGKILL)
    server.wait(30)
    stop_capture(dump, pcap, bed.workdir / f"{name}.tcpdump")
    acks, ack_rate = read_acks(pcap)
    table = dnsmasq_table(table_path) if name == "dnsmasq" else homegw_table(table_path)
    lost = sum(1 for mac, ip in acks.items() if table.get(mac) != ip)
    return Result(name, completed, sent, len(acks), ack_rate, len(table), lost, preload)


def report(results: list[Result], clients: int, rate: int) -> str:
    preload = results[0].preload
    lines = [
        f"perfdhcp -R {clients} -n {clients} -r {rate} (relay mode, no ping/probe), "
        f"{preload} leases preloaded, one run:",
        "",
        "| server | exchanges/s (perfdhcp) | ACKs/s (wire) | DISCOVERs | clients ACKed "
        "| leases after stop | ACKed but lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.rate:.0f} | {r.ack_rate:.0f} | {r.sent} | {r.acked} "
            f"| {r.leases} | {r.lost} |"
        )
    base, ours = results[0], results[1]
    if base.rate and base.ack_rate:
        lines += [
            "",
            f"homegw / dnsmasq: {ours.rate / base.rate:.1f}x (perfdhcp rate), "
            f"{ours.ack_rate / base.ack_rate:.1f}x (ACKs/s on the wire)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000, help="distinct clients (-R, -n)")
    parser.add_argument("--rate", type=int, default=8000, help="offered exchanges/s (-r)")
    parser.add_argument("--preload", type=int, default=0, help="leases in each table at start")
    args = parser.parse_args(argv)
    for tool in ("perfdhcp", "dnsmasq", "tcpdump"):
        if shutil.which(tool) is None:
            print(f"dhcp_bench: {tool} not found (scripts/setup.sh installs it)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="hgwb-dhcp-"))
    bed = Bed(workdir).build()
    try:
        results = [
            run_one(bed, name, args.clients, args.rate, args.preload)
            for name in ("dnsmasq", "homegw")
        ]
    finally:
        bed.close()
    print(report(results, args.clients, args.rate))
    print(f"(files in {workdir})")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
