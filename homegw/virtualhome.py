"""A virtual home in network namespaces: the test bed of `homegw demo` and of the tests.

Topology for a tag T (interface names fit IFNAMSIZ)::

    hgw-T-isp                     hgw-T-gw              hgw-T-sw          hgw-T-hN
    isp0 203.0.113.1/24 ── veth ── wan0    lan0 ── veth ── p-lan ┐
    inet0 198.51.100.53/32 (DNS)  (the appliance        br0 ────┼─ p-hN ── veth ── eth0
          198.51.100.80/32 (web)   addresses them)              └─ p-mgmt ── veth ── hgwTm
    dnsmasq DHCP on isp0, dnsmasq DNS on .53,         (optional, root ns, 192.168.1.254/24)
    http.server on .80

The ISP side is "the internet": a real DHCP server (dnsmasq) hands out the WAN
address from 203.0.113.10-50, a DNS server answers `www.example.test` (and
`example.test`) with 198.51.100.80 and NXDOMAIN for everything else, and a web
server serves `index.html` (known text) and `big.bin` (random bytes, known sha256).
The ISP has no route back to 192.168.1.0/24: the gateway must NAT.

Everything is created with iproute2; `teardown()` and `cleanup_leftovers(tag)`
remove all of it, processes included, even after a crash.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homegw import netns
from homegw.netns import NetnsError
from homegw.virtualhome6 import WEB6_SERVER

log = logging.getLogger(__name__)

LAN_NET = "192.168.1.0/24"
LAN_GATEWAY = "192.168.1.1"
LAN_PREFIX = 24
ISP_ADDRESS = "203.0.113.1"
ISP_PREFIX = 24
DHCP_POOL = ("203.0.113.10", "203.0.113.50")
DNS_SERVER = "198.51.100.53"
WEB_SERVER = "198.51.100.80"
MGMT_ADDRESS = "192.168.1.254"
DNS_RECORDS = {"www.example.test": WEB_SERVER, "example.test": WEB_SERVER}
PIN_ROOT = Path("/sys/fs/bpf")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_TAG_RE = re.compile(r"^[a-z0-9]{1,10}$")


def _check_tag(tag: str) -> None:
    if not _TAG_RE.match(tag):
        raise ValueError(f"virtual home tag must match {_TAG_RE.pattern}: {tag!r}")


def ns_name(tag: str, short: str) -> str:
    """Full namespace name for a short name ("isp", "gw", "sw", "h1"...)."""
    return f"hgw-{tag}-{short}"


def mgmt_dev_name(tag: str) -> str:
    """Root-namespace end of the management veth."""
    return f"hgw{tag}m"[:15]


def pin_dir_for(tag: str) -> Path:
    """bpffs directory the appliance of this home pins its maps under."""
    return PIN_ROOT / f"homegw-{tag}"


def _ns_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"^hgw-{re.escape(tag)}-(isp|gw|sw|h\d+)$")


def leftovers(tag: str) -> list[str]:
    """What of a home with this tag still exists (empty after a clean teardown)."""
    _check_tag(tag)
    found = [f"netns {n}" for n in netns.list_netns() if _ns_pattern(tag).match(n)]
    if netns.link_exists(mgmt_dev_name(tag)):
        found.append(f"link {mgmt_dev_name(tag)}")
    if pin_dir_for(tag).exists():
        found.append(f"pin dir {pin_dir_for(tag)}")
    found += [f"temp dir {d}" for d in Path(tempfile.gettempdir()).glob(f"hgw-{tag}-*")]
    return found


def cleanup_leftovers(tag: str) -> None:
    """Remove everything an earlier (possibly crashed) home with this tag left behind."""
    _check_tag(tag)
    for name in netns.list_netns():
        if _ns_pattern(tag).match(name):
            log.info("removing leftover namespace %s", name)
            netns.delete_netns(name)
    if netns.delete_link(mgmt_dev_name(tag)):
        log.info("removed leftover link %s", mgmt_dev_name(tag))
    for path in [pin_dir_for(tag), *Path(tempfile.gettempdir()).glob(f"hgw-{tag}-*")]:
        if path.exists():
            log.info("removing leftover %s", path)
            shutil.rmtree(path, ignore_errors=True)


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def root_route_overlap(net: str = LAN_NET) -> str | None:
    """A root-namespace route (other than default) overlapping `net`, or None."""
    return netns.route_overlap(net)


@dataclass(frozen=True)
class LanHost:
    """One LAN host: namespace `ns` with `eth0` on the home's switch."""

    name: str
    ns: str
    mac: str
    address: str | None  # "192.168.1.11/24" with static addressing, else None

    @property
    def ip(self) -> str | None:
        """The host's address without prefix length (None without static addressing)."""
        return self.address.split("/")[0] if self.address else None


class VirtualHome:
    """ISP, gateway, switch and LAN hosts in namespaces; see the module docstring."""

    def __init__(
        self,
        tag: str,
        *,
        n_hosts: int = 3,
        lan_hosts_static: bool = True,
        mgmt: bool = False,
        webui_port: int = 80,
        dhcp_lease_time: str = "10m",
        big_file_mib: int = 4,
        dns_records: dict[str, str] | None = None,
        ipv6: bool = False,
    ) -> None:
        _check_tag(tag)
        if not 1 <= n_hosts <= 9:
            raise ValueError("n_hosts must be between 1 and 9")
        self.tag = tag
        self.lan_hosts_static = lan_hosts_static
        self.want_mgmt = mgmt
        self.webui_port = webui_port
        self.dhcp_lease_time = dhcp_lease_time
        self.big_file_size = big_file_mib * 1024 * 1024
        self.hosts = [self._make_host(i) for i in range(1, n_hosts + 1)]
        self.pin_dir = pin_dir_for(tag)
        self.mgmt_dev: str | None = None  # set when the management link was created
        self.tmpdir: Path | None = None
        self.web_text = f"homegw virtual internet {tag}: hello from {WEB_SERVER}"
        self.web_file_sha256 = ""
        self.dns_records = {**DNS_RECORDS, **(dns_records or {})}
        self.isp_address = ISP_ADDRESS
        self.dns_server = DNS_SERVER
        self.web_server = WEB_SERVER
        self.dhcp_pool = DHCP_POOL
        self.lan_gateway = LAN_GATEWAY
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._built = False
        # IPv6 at the ISP (DHCPv6 with prefix delegation, RAs, a web server):
        # homegw/virtualhome6.py; without it the gateway's IPv6 is off
        self.want_ipv6 = ipv6
        self.isp6: Any = None  # a virtualhome6.IspIpv6 once built

    def _make_host(self, i: int) -> LanHost:
        address = f"192.168.1.{10 + i}/{LAN_PREFIX}" if self.lan_hosts_static else None
        return LanHost(f"h{i}", ns_name(self.tag, f"h{i}"), f"02:48:47:00:00:{i:02x}", address)

    # ---------------------------------------------------------------- names, paths

    @property
    def ns_shorts(self) -> list[str]:
        """Short names of all namespaces of this home."""
        return ["isp", "gw", "sw", *(h.name for h in self.hosts)]

    def ns(self, short: str) -> str:
        """Full namespace name for "isp", "gw", "sw", "h1"... (full names pass through)."""
        if short in (ns_name(self.tag, s) for s in self.ns_shorts):
            return short
        if short not in self.ns_shorts:
            raise KeyError(f"no namespace {short!r} in this home ({self.ns_shorts})")
        return ns_name(self.tag, short)

    def host(self, name: str) -> LanHost:
        """The LAN host called `name` ("h1"...)."""
        return next(h for h in self.hosts if h.name == name)

    def _path(self, name: str) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("virtual home not built")
        return self.tmpdir / name

    @property
    def state_dir(self) -> Path:
        """A fresh state_dir for the appliance under test."""
        return self._path("state")

    @property
    def dhcp_log(self) -> Path:
        """The ISP DHCP server's log (`--log-dhcp`)."""
        return self._path("dhcp.log")

    @property
    def dhcp_leases(self) -> Path:
        """The ISP DHCP server's lease file."""
        return self._path("dhcp.leases")

    @property
    def dns_log(self) -> Path:
        """The ISP DNS server's query log."""
        return self._path("dns.log")

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> VirtualHome:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> VirtualHome:
        """Create the whole home; on any failure tear down what exists and re-raise."""
        cleanup_leftovers(self.tag)
        self._built = True
        atexit.register(self.teardown)
        try:
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"hgw-{self.tag}-"))
            self.state_dir.mkdir()
            for short in self.ns_shorts:
                netns.add_netns(self.ns(short))
            self._wire_wan()
            self._wire_lan()
            self._setup_internet()
            if self.want_mgmt:
                self._setup_mgmt()
            self._start_services()
        except BaseException:
            self.teardown()
            raise
        log.info("virtual home %s built in %s", self.tag, self.tmpdir)
        return self

    def teardown(self) -> None:
        """Remove processes, namespaces, links, pins and temp files. Idempotent."""
        if not self._built:
            return
        self._built = False
        atexit.unregister(self.teardown)
        mgmt_dev, tmpdir = self.mgmt_dev, self.tmpdir
        self.mgmt_dev = None
        steps: list[tuple[str, Callable[[], None]]] = [("processes", self._stop_processes)]
        if mgmt_dev:
            steps.append((mgmt_dev, lambda: netns.delete_link(mgmt_dev)))
        for name in (self.ns(s) for s in self.ns_shorts):
            steps.append((name, lambda name=name: netns.delete_netns(name)))
        steps.append((str(self.pin_dir), lambda: netns.rmtree_if_exists(self.pin_dir)))
        if tmpdir:
            steps.append((str(tmpdir), lambda: netns.rmtree_if_exists(tmpdir)))
        steps.append(("leftovers", lambda: cleanup_leftovers(self.tag)))
        for what, step in steps:
            try:
                step()
            except Exception:  # keep going: the remaining steps must still run
                log.exception("virtual home %s: teardown of %s failed", self.tag, what)
        log.info("virtual home %s torn down", self.tag)

    # ---------------------------------------------------------------- wiring

    def _veth(self, a: str, a_ns: str | None, b: str, b_ns: str | None) -> None:
        netns.add_veth(a, a_ns, b, b_ns)
        for dev, ns in ((a, a_ns), (b, b_ns)):
            netns.tx_offload_off(dev, ns)
            netns.ip("link", "set", dev, "up", ns=ns)

    def _bridge_port(self, port: str) -> None:
        netns.ip("link", "set", port, "master", "br0", ns=self.ns("sw"))

    def _wire_wan(self) -> None:
        self._veth("isp0", self.ns("isp"), "wan0", self.ns("gw"))
        netns.xdp_pass_on("isp0", self.ns("isp"))
        netns.ip("addr", "add", f"{ISP_ADDRESS}/{ISP_PREFIX}", "dev", "isp0", ns=self.ns("isp"))

    def _wire_lan(self) -> None:
        sw = self.ns("sw")
        netns.ip("link", "add", "br0", "type", "bridge", "stp_state", "0", ns=sw)
        netns.ip("link", "set", "br0", "up", ns=sw)
        self._veth("lan0", self.ns("gw"), "p-lan", sw)
        netns.xdp_pass_on("p-lan", sw)
        self._bridge_port("p-lan")
        for host in self.hosts:
            self._veth("eth0", host.ns, f"p-{host.name}", sw)
            self._bridge_port(f"p-{host.name}")
            netns.ip("link", "set", "eth0", "address", host.mac, ns=host.ns)
            if host.address:
                netns.ip("addr", "add", host.address, "dev", "eth0", ns=host.ns)
                netns.ip("route", "add", "default", "via", LAN_GATEWAY, ns=host.ns)

    def _setup_internet(self) -> None:
        # The kernel here has no `dummy` driver: a veth pair whose far end stays
        # unused holds the internet's addresses just as well.
        isp = self.ns("isp")
        self._veth("inet0", isp, "inet1", isp)
        for addr in (DNS_SERVER, WEB_SERVER):
            netns.ip("addr", "add", f"{addr}/32", "dev", "inet0", ns=isp)

    def _setup_mgmt(self) -> None:
        overlap = root_route_overlap(LAN_NET)
        if overlap:
            log.warning("no management link: root namespace route %r overlaps %s", overlap, LAN_NET)
            return
        dev = mgmt_dev_name(self.tag)
        self._veth(dev, None, "p-mgmt", self.ns("sw"))
        self.mgmt_dev = dev
        self._bridge_port("p-mgmt")
        netns.ip("addr", "add", f"{MGMT_ADDRESS}/{LAN_PREFIX}", "dev", dev)

    def add_lan_route_on_isp(self, via: str, net: str = LAN_NET) -> None:
        """Give the ISP a route to the LAN (for router tests without NAT)."""
        netns.ip("route", "replace", net, "via", via, ns=self.ns("isp"))

    def mac_of(self, short: str, ifname: str) -> str:
        """The MAC address of an interface in namespace `short`."""
        out = self.run(short, ["cat", f"/sys/class/net/{ifname}/address"], check=True)
        return out.stdout.strip()

    def send_frames(self, short: str, ifname: str, frames: Sequence[bytes]) -> None:
        """Send raw Ethernet frames out of `ifname` in namespace `short` (an
        AF_PACKET socket): packets no socket would send, e.g. spoofed sources."""
        script = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            "s.bind((sys.argv[1], 0))\n"
            "for line in sys.stdin.read().split():\n"
            "    s.send(bytes.fromhex(line))\n"
        )
        hex_frames = "\n".join(frame.hex() for frame in frames)
        self.run(short, [sys.executable, "-c", script, ifname], input=hex_frames, check=True)

    # ---------------------------------------------------------------- services

    def _dnsmasq_common(self, name: str) -> list[str]:
        return [
            "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--user=root",
            "--group=root",
            "--bind-interfaces",
            f"--pid-file={self._path(name + '.pid')}",
            f"--log-facility={self._path(name + '.log')}",
        ]

    def _dhcp_argv(self, pool: tuple[str, str] = DHCP_POOL) -> list[str]:
        lo, hi = pool
        return [
            *self._dnsmasq_common("dhcp"),
            "--port=0",
            "--interface=isp0",
            f"--dhcp-range={lo},{hi},255.255.255.0,{self.dhcp_lease_time}",
            f"--dhcp-option=option:router,{ISP_ADDRESS}",
            f"--dhcp-option=option:dns-server,{DNS_SERVER}",
            f"--dhcp-leasefile={self.dhcp_leases}",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-dhcp",
        ]

    def _dns_argv(self) -> list[str]:
        # an IPv6 home's names have the IPv6 web server's AAAA too (virtualhome6)
        aaaa = f",{WEB6_SERVER}" if self.want_ipv6 else ""
        records = [f"--host-record={name},{addr}{aaaa}" for name, addr in self.dns_records.items()]
        return [
            *self._dnsmasq_common("dns"),
            "--port=53",
            f"--listen-address={DNS_SERVER}",
            "--address=/#/",  # NXDOMAIN for every name not in a host-record
            "--local-ttl=300",
            "--log-queries",
            *records,
        ]

    def _write_web_files(self) -> Path:
        www = self._path("www")
        www.mkdir()
        (www / "index.html").write_text(f"<!doctype html><title>web</title><p>{self.web_text}\n")
        data = os.urandom(self.big_file_size)
        (www / "big.bin").write_bytes(data)
        self.web_file_sha256 = hashlib.sha256(data).hexdigest()
        return www

    def _start_services(self) -> None:
        www = self._write_web_files()
        web = [sys.executable, "-m", "http.server", "--bind", WEB_SERVER, "80", "--directory"]
        self._spawn("dhcp", "isp", self._dhcp_argv())
        self._spawn("dns", "isp", self._dns_argv())
        self._spawn("web", "isp", [*web, str(www)])
        isp = self.ns("isp")
        self._wait_ready("dhcp", lambda: netns.listening(isp, "udp", "*", 67))
        self._wait_ready("dns", lambda: netns.listening(isp, "udp", DNS_SERVER, 53))
        self._wait_ready("dns", lambda: netns.listening(isp, "tcp", DNS_SERVER, 53))
        self._wait_ready("web", lambda: netns.listening(isp, "tcp", WEB_SERVER, 80))
        if self.want_ipv6:
            from homegw.virtualhome6 import IspIpv6

            self.isp6 = IspIpv6(self)
            self.isp6.start()

    def renumber_isp_dhcp(self, pool: tuple[str, str]) -> None:
        """Restart the ISP's DHCP server with another pool and no memory of
        its leases: the next renewal is NAKed and a new address handed out."""
        proc = self._procs["dhcp"]
        proc.terminate()
        proc.wait(STOP_TIMEOUT)
        self.dhcp_leases.unlink(missing_ok=True)
        self._spawn("dhcp", "isp", self._dhcp_argv(pool))
        isp = self.ns("isp")
        self._wait_ready("dhcp", lambda: netns.listening(isp, "udp", "*", 67))

    def _spawn(self, name: str, short: str, argv: Sequence[str]) -> None:
        with open(self._path(name + ".out"), "wb") as out:
            proc = self.popen(short, argv, track=False, stdout=out, stderr=subprocess.STDOUT)
        self._procs[name] = proc

    def _wait_ready(self, name: str, ready: Callable[[], bool]) -> None:
        proc = self._procs[name]
        done = netns.wait_for(lambda: proc.poll() is not None or ready(), READY_TIMEOUT)
        if done and proc.poll() is None:
            return
        output = self._path(name + ".out").read_text(errors="replace")[-2000:]
        state = f"exited with {proc.returncode}" if proc.poll() is not None else "not listening"
        raise NetnsError(f"{name} in {self.ns('isp')} {state} after start: {output}")

    def _stop_processes(self) -> None:
        procs = list(self._procs.values())
        self._procs.clear()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM, killing it", proc.pid)
                proc.kill()
                proc.wait(STOP_TIMEOUT)

    # ---------------------------------------------------------------- running things

    def _exec_argv(self, short: str, argv: Sequence[str], host_bpffs: bool | None) -> list[str]:
        keep_bpffs = short in ("gw", self.ns("gw")) if host_bpffs is None else host_bpffs
        return netns.exec_argv(self.ns(short), argv, keep_bpffs)

    def run(
        self, short: str, argv: Sequence[str], *, host_bpffs: bool | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv) inside namespace `short` (text, captured, 60 s by default).

        Like `ip netns exec`; but with `host_bpffs` (default: only in "gw") the
        machine's bpffs stays at /sys/fs/bpf, so pins made there are real and
        outlive the process (see netns.exec_argv).
        """
        kw.setdefault("text", True)
        if not {"stdout", "stderr", "capture_output"} & kw.keys():
            kw["capture_output"] = True
        kw.setdefault("timeout", 60)
        return subprocess.run(self._exec_argv(short, argv, host_bpffs), **kw)

    def popen(
        self,
        short: str,
        argv: Sequence[str],
        *,
        track: bool = True,
        host_bpffs: bool | None = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv) inside namespace `short`, in its own session.

        Tracked processes (the default) are terminated by teardown(). `host_bpffs`
        as for run().
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self._exec_argv(short, argv, host_bpffs), **kw)
        if track:
            self._procs[f"{short}:{proc.pid}"] = proc
        return proc

    def gateway_config(self, **overrides: Any) -> dict[str, Any]:
        """A homegw config for the gateway namespace; `overrides` are deep-merged."""
        base: dict[str, Any] = {
            "wan": {"interface": "wan0", "mode": "dhcp"},
            "lan": {"interface": "lan0", "address": f"{LAN_GATEWAY}/{LAN_PREFIX}"},
            "webui": {"listen": f"{LAN_GATEWAY}:{self.webui_port}"},
            "state_dir": str(self.state_dir),
            "dataplane": {"pin_dir": str(self.pin_dir)},
        }
        if not self.want_ipv6:  # an IPv4-only ISP and home
            base["wan"]["ipv6"] = {"mode": "off"}
            base["lan"]["ipv6"] = {"mode": "off"}
        return _deep_merge(base, overrides)
