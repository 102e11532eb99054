"""WanDhcpClient against a real dnsmasq, across a veth pair between two namespaces.

    hgwc-XXXX-isp: isp0 203.0.113.1/24, dnsmasq DHCP  <-- veth -->  hgwc-XXXX-gw: wan0

The client runs in this process; only its thread enters the gw namespace
(`WanDhcpClient(netns=...)`). Tests wait on events (on_change, wait_for_lease,
dnsmasq log lines), never on fixed sleeps. Needs root, iproute2 and dnsmasq.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from homegw.modules.dhcp.wan_client import WanDhcpClient, WanLease, lease_path

DNSMASQ = "/usr/sbin/dnsmasq"
ROUTER = IPv4Address("203.0.113.1")
DNS = IPv4Address("198.51.100.53")
FIRST_RANGE = (IPv4Address("203.0.113.10"), IPv4Address("203.0.113.50"))
SECOND_RANGE = (IPv4Address("203.0.113.100"), IPv4Address("203.0.113.150"))
LEASE_WAIT = 30.0

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="needs dnsmasq"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]


def run(*argv: str) -> str:
    """Run a command, return stdout, fail with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Dnsmasq:
    """One dnsmasq run: its process and its log, read line by line by a thread."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None

    def start_reader(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(text in ln for ln in self.lines), timeout)

    def count(self, text: str) -> int:
        with self.cond:
            return sum(text in ln for ln in self.lines)

    def wait_count(self, text: str, n: int, timeout: float = 10.0) -> bool:
        """Wait until `text` was logged `n` times; all earlier lines are read by then."""
        with self.cond:
            return self.cond.wait_for(lambda: sum(text in ln for ln in self.lines) >= n, timeout)

    def stop(self) -> None:
        """Terminate by PID (Popen), reap, join the reader."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)


@dataclass
class IspLink:
    """The two namespaces, the veth pair and the dnsmasq serving isp0."""

    tag: str
    workdir: Path
    dnsmasq: Dnsmasq | None = None
    created: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def isp_ns(self) -> str:
        return f"hgwc-{self.tag}-isp"

    @property
    def gw_ns(self) -> str:
        return f"hgwc-{self.tag}-gw"

    @property
    def leasefile(self) -> Path:
        return self.workdir / "dnsmasq.leases"

    def setup(self) -> None:
        for ns in (self.isp_ns, self.gw_ns):
            run("ip", "netns", "add", ns)
            self.created.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", self.isp_ns, "link", "add", "isp0", "type", "veth",
            "peer", "name", "wan0", "netns", self.gw_ns)  # fmt: skip
        run("ip", "-n", self.isp_ns, "addr", "add", f"{ROUTER}/24", "dev", "isp0")
        run("ip", "-n", self.isp_ns, "link", "set", "isp0", "up")
        run("ip", "-n", self.gw_ns, "link", "set", "wan0", "up")

    def start_dnsmasq(self, first: IPv4Address, last: IPv4Address, lease: str = "2m") -> Dnsmasq:
        argv = [
            "ip", "netns", "exec", self.isp_ns, DNSMASQ,
            "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--port=0", "--interface=isp0", "--bind-interfaces",
            f"--dhcp-range={first},{last},255.255.255.0,{lease}",
            f"--dhcp-option=option:router,{ROUTER}",
            f"--dhcp-option=option:dns-server,{DNS}",
            f"--dhcp-leasefile={self.leasefile}",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            "--log-dhcp", "--log-facility=-",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.dnsmasq = Dnsmasq(proc)
        self.dnsmasq.start_reader()
        # logged once its DHCP socket is bound
        if not self.dnsmasq.wait_log("DHCP, IP range"):
            raise RuntimeError("dnsmasq did not start:\n" + "\n".join(self.dnsmasq.lines))
        return self.dnsmasq

    def stop_dnsmasq(self) -> None:
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
            self.logs.extend(self.dnsmasq.lines)
            self.dnsmasq = None

    def teardown(self) -> None:
        self.stop_dnsmasq()
        print("\n".join(self.logs))  # pytest shows it when the test failed
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def wan_addresses(self) -> list[IPv4Interface]:
        out = json.loads(run("ip", "-n", self.gw_ns, "-j", "-4", "addr", "show", "dev", "wan0"))
        return [
            IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in out
            for a in link["addr_info"]
        ]

    def default_gateway(self) -> IPv4Address | None:
        out = json.loads(run("ip", "-n", self.gw_ns, "-j", "-4", "route", "show", "default"))
        return IPv4Address(out[0]["gateway"]) if out else None


def _unique_tag() -> str:
    existing = run("ip", "netns", "list")
    while True:
        tag = secrets.token_hex(2)
        if f"hgwc-{tag}-" not in existing:
            return tag


@pytest.fixture
def isp(request: pytest.FixtureRequest, tmp_path: Path) -> IspLink:
    link = IspLink(tag=_unique_tag(), workdir=tmp_path)
    request.addfinalizer(link.teardown)  # before anything exists: runs even if setup fails
    link.setup()
    link.start_dnsmasq(*FIRST_RANGE)
    return link


class Recorder:
    """on_change target: records every report, lets the test wait for one."""

    def __init__(self) -> None:
        self.reports: list[WanLease | None] = []
        self.cond = threading.Condition()

    def __call__(self, lease: WanLease | None) -> None:
        with self.cond:
            self.reports.append(lease)
            self.cond.notify_all()

    def wait_for(
        self, pred: Callable[[WanLease | None], bool], timeout: float = LEASE_WAIT
    ) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(pred(r) for r in self.reports), timeout)


ClientFactory = Callable[..., WanDhcpClient]


@pytest.fixture
def make_client(isp: IspLink, tmp_path: Path) -> Iterator[ClientFactory]:
    """Build clients in the gw namespace; all are stopped before the namespaces go."""
    clients: list[WanDhcpClient] = []

    def make(on_change: Callable[[WanLease | None], None]) -> WanDhcpClient:
        client = WanDhcpClient("wan0", on_change, tmp_path / "state", netns=isp.gw_ns)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop(timeout=10)


def in_range(lease: WanLease | None, bounds: tuple[IPv4Address, IPv4Address]) -> bool:
    return lease is not None and bounds[0] <= lease.address.ip <= bounds[1]


def start_and_wait(client: WanDhcpClient) -> WanLease:
    client.start()
    lease = client.wait_for_lease(LEASE_WAIT)
    assert lease is not None, "no WAN lease"
    return lease


def persisted_ip(client: WanDhcpClient) -> str:
    """The address in the lease file a restart would INIT-REBOOT with."""
    return json.loads(lease_path(client.state_dir, "wan0").read_text())["ack"]["yiaddr"]


SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def test_obtains_lease_and_configures_wan(isp: IspLink, make_client: ClientFactory) -> None:
    handlers_before = {s: signal.getsignal(s) for s in SIGNALS}
    recorder = Recorder()
    client = make_client(recorder)
    lease = start_and_wait(client)

    assert in_range(lease, FIRST_RANGE)
    assert lease.address.network.prefixlen == 24
    assert lease.router == ROUTER
    assert lease.dns == (DNS,)
    assert lease.server_id == ROUTER
    assert lease.lease_time == 120
    assert recorder.reports == [lease]
    assert client.lease == lease
    # on_change runs after the interface is configured: no waiting needed
    assert isp.wan_addresses() == [lease.address]
    assert isp.default_gateway() == ROUTER
    assert persisted_ip(client) == str(lease.address.ip)
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers_before

    client.stop()
    assert not client.running
    # a gateway keeps its lease across a restart: nothing is unconfigured
    assert isp.wan_addresses() == [lease.address]
    assert recorder.reports == [lease]


def test_restart_reboots_into_same_address(isp: IspLink, make_client: ClientFactory) -> None:
    assert isp.dnsmasq is not None
    first_client = make_client(Recorder())
    first = start_and_wait(first_client)
    first_client.stop()
    assert not first_client.running
    assert isp.dnsmasq.wait_count(f"DHCPACK(isp0) {first.address.ip}", 1)
    discovers = isp.dnsmasq.count("DHCPDISCOVER(")

    recorder = Recorder()
    second_client = make_client(recorder)  # a new client, same state_dir
    second = start_and_wait(second_client)

    assert second.address == first.address
    assert recorder.reports == [second]
    assert isp.wan_addresses() == [first.address]
    assert isp.default_gateway() == ROUTER
    # INIT-REBOOT from the persisted lease: a REQUEST straight away, no new DISCOVER
    assert isp.dnsmasq.wait_count(f"DHCPACK(isp0) {first.address.ip}", 2)
    assert isp.dnsmasq.count("DHCPDISCOVER(") == discovers


def test_server_renumbering_moves_wan_address(isp: IspLink, make_client: ClientFactory) -> None:
    recorder = Recorder()
    client = make_client(recorder)
    old = start_and_wait(client)

    # the ISP renumbers: new range, lease database lost
    isp.stop_dnsmasq()
    isp.leasefile.unlink()
    isp.start_dnsmasq(*SECOND_RANGE, lease="2m")
    # unicast REQUEST for a lease this server does not know -> NAK -> DISCOVER
    client.renew()

    assert recorder.wait_for(lambda r: in_range(r, SECOND_RANGE)), recorder.reports
    new = recorder.reports[-1]
    assert new is not None
    assert recorder.reports == [old, None, new]
    assert client.lease == new
    assert new.router == ROUTER and new.dns == (DNS,)
    assert isp.wan_addresses() == [new.address]
    assert isp.default_gateway() == ROUTER
    assert persisted_ip(client) == str(new.address.ip)
    client.stop()
    assert not client.running


def test_stop_with_release_unconfigures(isp: IspLink, make_client: ClientFactory) -> None:
    recorder = Recorder()
    client = make_client(recorder)
    lease = start_and_wait(client)

    client.stop(release=True)

    assert not client.running
    assert recorder.reports == [lease, None]
    assert client.lease is None
    assert isp.wan_addresses() == []
    assert isp.default_gateway() is None
    assert not lease_path(client.state_dir, "wan0").exists()
    assert isp.dnsmasq is not None and isp.dnsmasq.wait_log(f"DHCPRELEASE(isp0) {lease.address.ip}")


class LogEvent(logging.Handler):
    """Sets an event when a record containing `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@contextmanager
def log_event(text: str) -> Iterator[threading.Event]:
    """An event set when the client's logger logs a message containing `text`."""
    handler = LogEvent(text)
    logger = logging.getLogger("homegw.modules.dhcp.wan_client")
    logger.addHandler(handler)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)


def test_failing_callback_does_not_stop_client(isp: IspLink, make_client: ClientFactory) -> None:
    def broken(lease: WanLease | None) -> None:
        raise RuntimeError("appliance bug")

    client = make_client(broken)
    with log_event("on_change callback failed") as failed:
        lease = start_and_wait(client)
        assert failed.wait(10)

    assert client.running
    assert isp.wan_addresses() == [lease.address]


def test_missing_interface_retries_and_stops(isp: IspLink, tmp_path: Path) -> None:
    client = WanDhcpClient("nosuch0", Recorder(), tmp_path / "state", netns=isp.gw_ns)
    with log_event("WAN DHCP client on nosuch0 failed") as failed:
        try:
            client.start()
            assert failed.wait(10)
            assert client.running  # waiting to retry, not dead
        finally:
            client.stop(timeout=10)
    assert not client.running
    assert client.lease is None
