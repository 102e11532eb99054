"""Health checks of a user module's trial: is the home still working?

`probe(targets, timeout_s)` runs three checks at once, in one selector loop
over their sockets (no thread per check), each bounded by `timeout_s`:

- wan: an ICMP echo from the gateway to the WAN gateway (the ISP's router),
  sent on the WAN NIC; the reply comes back through the WAN XDP chain.
- dhcp: a DHCPDISCOVER from PROBE_MAC is injected into the LAN NIC's XDP
  chain (`testrun.inject_xdp`, as if it came from the wire); the check
  passes when the server's OFFER for PROBE_MAC with the probe's xid leaves
  the LAN NIC, seen by an AF_PACKET socket on it (after TC egress). Where
  the kernel refuses live frames the chain runs once on the DISCOVER: it
  passes when the chain hands it to the stack, fails when it drops it.
- admin: an ICMP echo to the address the admin is connected from, when it is
  on the LAN subnet (else ok=None, "not on the LAN"): the LAN host the admin
  uses still reaches the gateway and back.

A check that cannot run (no WAN gateway yet, DHCP server off, no LAN XDP
root) answers ok=None: nothing to hold against a module.

What the DHCP probe leaves behind: an OFFER is not a lease. homegw's server
keeps an offer as an in-memory hold on one address for its client
(leases.OFFER_HOLD, 30 s), never written to the lease database; a DISCOVER
from the same client takes the same held address again, so however many
probes run, PROBE_MAC holds at most one address, for 30 s after the last
probe. The server ARP-probes that address before each OFFER (its
probe_timeout, 0.5 s by default): `timeout_s` must be longer. PROBE_MAC
never gets a row in the device inventory: it has no lease, the router
forwards nothing from or to it (the DISCOVER goes to the gateway itself, the
OFFER is sent by AF_PACKET to the MAC, bypassing the neighbour table), so
neither the device table nor the neighbour mirror learns it. It is locally
administered (02:...), so it cannot belong to a real NIC's vendor range.

Replies are matched strictly: ICMP by source address, identifier and
sequence number (raw sockets, root only, with an ICMP_FILTER letting only
echo replies in); DHCP by direction (outgoing), UDP ports 67 -> 68
(a classic BPF filter on the socket), message type OFFER, xid and chaddr.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Literal

from homegw.dataplane import testrun
from homegw.modules.dhcp import packet as dhcp
from homegw.modules.dhcp.l2 import BROADCAST_MAC, ETH_P_IP, internet_checksum, ipv4_udp

log = logging.getLogger(__name__)

CheckName = Literal["wan", "dhcp", "admin"]
PROBE_MAC = bytes.fromhex("026867770001")  # locally administered: "hgw" + 1
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMP_FILTER = 1  # SOL_RAW option: a bit per ICMP type to drop
SOL_RAW = 255
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
ECHO_PAYLOAD = b"homegw trial health check"
RECV_LIMIT = 64  # datagrams read per wake-up per socket


@dataclass(frozen=True)
class HealthTargets:
    """What the checks aim at, as the appliance knows it now."""

    wan_ifname: str
    wan_gateway: IPv4Address | None
    lan_ifname: str
    lan_address: IPv4Interface
    dhcp_on: bool
    admin: IPv4Address | None
    lan_xdp_root_fd: int  # -1 if none
    lan_ifindex: int


@dataclass(frozen=True)
class CheckResult:
    name: CheckName
    ok: bool | None  # None: the check could not apply (not held against a module)
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


# -- identifiers ----------------------------------------------------------------------

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _next_id() -> int:
    """A fresh 16-bit number: ICMP sequence / part of the DHCP xid."""
    with _ids_lock:
        return next(_ids) & 0xFFFF


def _echo_identifier() -> int:
    return os.getpid() & 0xFFFF


# -- wire helpers ---------------------------------------------------------------------


def echo_request(identifier: int, sequence: int) -> bytes:
    """An ICMP echo request (header and payload, checksum filled in)."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    check = internet_checksum(header + ECHO_PAYLOAD)
    return header[:2] + check + header[4:] + ECHO_PAYLOAD


def echo_reply_of(packet: bytes, source: IPv4Address) -> tuple[int, int] | None:
    """(identifier, sequence) of an IPv4 packet that is an echo reply from
    `source`, else None (whatever the bytes)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    if header_len < 20 or len(packet) < header_len + 8 or packet[9] != socket.IPPROTO_ICMP:
        return None
    if IPv4Address(packet[12:16]) != source:
        return None
    kind, _code, _check, identifier, sequence = struct.unpack_from("!BBHHH", packet, header_len)
    return (identifier, sequence) if kind == ICMP_ECHO_REPLY else None


def discover_frame(xid: int) -> bytes:
    """The probe's DHCPDISCOVER as an Ethernet frame from PROBE_MAC."""
    msg = dhcp.DhcpMessage(
        dhcp.BOOTREQUEST,
        xid,
        PROBE_MAC,
        {dhcp.OPT_MESSAGE_TYPE: bytes((dhcp.DISCOVER,))},
    )
    payload = dhcp.encode(msg)
    ip = ipv4_udp(0, 0xFFFFFFFF, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, payload)
    return BROADCAST_MAC + PROBE_MAC + struct.pack("!H", ETH_P_IP) + ip


def offer_for(packet: bytes, xid: int) -> bool:
    """Whether an IPv4 packet is a DHCPOFFER for the probe with this xid."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return False
    header_len = (packet[0] & 0x0F) * 4
    if len(packet) < header_len + 8:
        return False
    sport, dport = struct.unpack_from("!HH", packet, header_len)
    if (sport, dport) != (DHCP_SERVER_PORT, DHCP_CLIENT_PORT):
        return False
    try:
        msg = dhcp.parse(packet[header_len + 8 :], expect_op=dhcp.BOOTREPLY)
        kind = msg.msg_type
    except (dhcp.MalformedPacket, KeyError, IndexError):
        return False
    return msg.xid == xid and msg.chaddr == PROBE_MAC and kind == dhcp.OFFER


def _offer_filter() -> bytes:
    """Classic BPF for an AF_PACKET SOCK_DGRAM socket (data at the IP
    header): outgoing, IPv4 UDP, first fragment, source port 67."""
    skf_ad = 0xFFFFF000  # SKF_AD_OFF: the ancillary data of the packet
    skf_ad_protocol, skf_ad_pkttype = skf_ad + 0, skf_ad + 4
    code = [
        (0x20, 0, 0, skf_ad_pkttype),  # ld pkttype
        (0x15, 0, 10, PACKET_OUTGOING),  # jeq outgoing, else drop
        (0x20, 0, 0, skf_ad_protocol),  # ld ethertype
        (0x15, 0, 8, ETH_P_IP),
        (0x30, 0, 0, 9),  # ldb [9]: the IP protocol
        (0x15, 0, 6, socket.IPPROTO_UDP),
        (0x28, 0, 0, 6),  # ldh [6]: flags and fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset offset: a later fragment, drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): the IP header length
        (0x48, 0, 0, 0),  # ldh [x+0]: the UDP source port
        (0x15, 0, 1, DHCP_SERVER_PORT),
        (0x06, 0, 0, 0xFFFF),  # accept (the rest is checked in Python)
        (0x06, 0, 0, 0),  # drop
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in code)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    import ctypes

    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# -- the checks -----------------------------------------------------------------------


class _Check:
    """One check in flight: its socket, what it sent, how it ends."""

    name: CheckName
    sock: socket.socket
    result: CheckResult | None = None

    def start(self) -> None:
        raise NotImplementedError

    def on_readable(self) -> None:
        raise NotImplementedError

    def timed_out(self, timeout_s: float) -> CheckResult:
        raise NotImplementedError

    def finish(self, ok: bool, detail: str) -> None:
        self.result = CheckResult(self.name, ok, detail)

    def close(self) -> None:
        self.sock.close()


class _EchoCheck(_Check):
    def __init__(self, name: CheckName, ifname: str, target: IPv4Address) -> None:
        self.name, self.target = name, target
        self.identifier, self.sequence = _echo_identifier(), _next_id()
        self.started = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            blocked = ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF  # a set bit drops that type
            self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", blocked))
        except OSError:
            self.sock.close()
            raise

    def start(self) -> None:
        self.started = time.monotonic()
        try:
            self.sock.sendto(echo_request(self.identifier, self.sequence), (str(self.target), 0))
        except OSError as exc:
            self.finish(False, f"cannot ping {self.target}: {exc.strerror or exc}")

    def on_readable(self) -> None:
        for _ in range(RECV_LIMIT):
            try:
                packet = self.sock.recv(2048)
            except BlockingIOError:
                return
            if echo_reply_of(packet, self.target) == (self.identifier, self.sequence):
                ms = (time.monotonic() - self.started) * 1000
                self.finish(True, f"{self.target} answered in {ms:.1f} ms")
                return

    def timed_out(self, timeout_s: float) -> CheckResult:
        return CheckResult(self.name, False, f"no answer from {self.target} in {timeout_s:g} s")


class _DhcpCheck(_Check):
    name: CheckName = "dhcp"

    def __init__(self, targets: HealthTargets) -> None:
        self.targets = targets
        self.xid = (0x68670000 | _next_id()) & 0xFFFFFFFF
        self.started = 0.0
        # ETH_P_ALL: a protocol-bound packet socket never sees outgoing frames
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            _attach_filter(self.sock, _offer_filter())
            self.sock.bind((targets.lan_ifname, ETH_P_ALL))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def start(self) -> None:
        self.started = time.monotonic()
        frame = discover_frame(self.xid)
        try:
            verdict = testrun.inject_xdp(
                self.targets.lan_xdp_root_fd, frame, self.targets.lan_ifindex
            )
        except OSError as exc:
            self.finish(False, f"cannot inject the DHCPDISCOVER: {exc.strerror or exc}")
            return
        # no live frames here: the chain ran once, the server cannot be reached
        if verdict == "XDP_PASS":
            self.finish(True, "the LAN chain passes a DHCPDISCOVER to the server (no live frames)")
        elif verdict is not None and verdict not in ("XDP_TX", "XDP_REDIRECT"):
            self.finish(False, f"the LAN chain answers a DHCPDISCOVER with {verdict}")

    def on_readable(self) -> None:
        for _ in range(RECV_LIMIT):
            try:
                packet, (_ifname, protocol, kind, *_rest) = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if protocol == ETH_P_IP and kind == PACKET_OUTGOING and offer_for(packet, self.xid):
                ms = (time.monotonic() - self.started) * 1000
                self.finish(True, f"DHCPOFFER sent on {self.targets.lan_ifname} in {ms:.1f} ms")
                return

    def timed_out(self, timeout_s: float) -> CheckResult:
        where = self.targets.lan_ifname
        return CheckResult("dhcp", False, f"no DHCPOFFER left {where} within {timeout_s:g} s")


def _admin_on_lan(targets: HealthTargets) -> bool:
    admin, net = targets.admin, targets.lan_address.network
    special = (targets.lan_address.ip, net.network_address, net.broadcast_address)
    return admin is not None and admin in net and admin not in special


def _not_applicable(targets: HealthTargets) -> list[CheckResult]:
    out = []
    if targets.wan_gateway is None:
        out.append(CheckResult("wan", None, "no WAN gateway (no WAN lease yet)"))
    if not targets.dhcp_on:
        out.append(CheckResult("dhcp", None, "the DHCP server is off"))
    elif targets.lan_xdp_root_fd < 0:
        out.append(CheckResult("dhcp", None, "no XDP chain on the LAN NIC"))
    if targets.admin is None:
        out.append(CheckResult("admin", None, "no admin address"))
    elif not _admin_on_lan(targets):
        out.append(CheckResult("admin", None, f"{targets.admin} is not on the LAN"))
    return out


def _make_checks(targets: HealthTargets, skipped: set[str]) -> tuple[list[_Check], list]:
    """The checks that apply, opened; a check whose socket cannot be made
    is a failed result (returned second)."""
    makers = {
        "wan": lambda: _EchoCheck("wan", targets.wan_ifname, targets.wan_gateway),
        "dhcp": lambda: _DhcpCheck(targets),
        "admin": lambda: _EchoCheck("admin", targets.lan_ifname, targets.admin),
    }
    checks, failed = [], []
    for name, make in makers.items():
        if name in skipped:
            continue
        try:
            checks.append(make())
        except OSError as exc:
            failed.append(CheckResult(name, False, f"cannot open the check: {exc}"))  # type: ignore[arg-type]
    return checks, failed


def _run(checks: list[_Check], timeout_s: float) -> None:
    """Start every check and serve their sockets until each has a result or
    the time is up."""
    with selectors.DefaultSelector() as selector:
        for check in checks:
            selector.register(check.sock, selectors.EVENT_READ, check)
        for check in checks:
            check.start()
        deadline = time.monotonic() + timeout_s
        while any(c.result is None for c in checks):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                check = key.data
                if check.result is None:
                    check.on_readable()


def probe(targets: HealthTargets, timeout_s: float = 1.0) -> list[CheckResult]:
    """The three checks, run at once; results in the order wan, dhcp, admin."""
    results = {r.name: r for r in _not_applicable(targets)}
    checks, failed = _make_checks(targets, set(results))
    results.update({r.name: r for r in failed})
    try:
        _run(checks, timeout_s)
    finally:
        for check in checks:
            check.close()
    for check in checks:
        results[check.name] = check.result or check.timed_out(timeout_s)
    return [results[name] for name in ("wan", "dhcp", "admin")]


def admin_address(remote_addr: str | None) -> IPv4Address | None:
    """The admin's IPv4 address from a request's remote address (an
    IPv4-mapped IPv6 address too), None for anything else."""
    if not remote_addr:
        return None
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped
    return address
