"""The first-boot probe: which Ethernet ports have a link, which hear a DHCP server.

Candidates are the physical Ethernet NICs of this network namespace
(`/sys/class/net/X/device` exists, type 1 = ARPHRD_ETHER, not wireless, not a
bridge/bond or a member of one); `include_virtual` also admits veths (tests).
Every candidate is brought up; carrier comes as rtnetlink link events (one
socket subscribed before the links are touched), and as soon as a port has a
link a DHCPDISCOVER (the DHCP module's codec) goes out of it from an
AF_PACKET socket, again every second until an answer (the first can be lost
while the link settles). OFFERs are collected in the same select() loop. Links
are waited for 3 s; a port with a link has 6 s from it for an OFFER (dnsmasq,
inside many ISP boxes, holds its first OFFER 3 s for a ping check). The probe
ends when every linked port has answered or had its time: about 6 s when one
port has a link but no server (the home switch's port), at most 9 s. Links
that were down are put down again.

Everything received is hostile: a frame that is not a well-formed OFFER to
our DISCOVER (its xid, our MAC) is ignored and counted in `ProbeResult.ignored`.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from homegw.firstboot import PortFacts
from homegw.modules.dhcp import packet as dhcp
from homegw.modules.dhcp.l2 import BROADCAST_MAC, ETH_P_IP, PACKET_OUTGOING, interface_mac, ipv4_udp

log = logging.getLogger(__name__)

SYS_NET = Path("/sys/class/net")
ARPHRD_ETHER = 1
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
RTMGRP_LINK = 1
RTM_NEWLINK = 16
NLMSG_HEADER = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
LINK_WAIT = 3.0  # seconds for links to come up (autonegotiation takes 1-3 s)
# seconds a port with a link waits for an OFFER: dnsmasq (in many ISP boxes)
# ping-checks an address for 3 s before it offers it
ANSWER_WAIT = 6.0
RESEND_EVERY = 1.0  # seconds between DISCOVERs of a port that has no answer yet
CLIENT_PORT, SERVER_PORT = 68, 67


@dataclass
class ProbeResult:
    ports: list[PortFacts] = field(default_factory=list)
    ignored: int = 0  # frames that were not an OFFER to us


# -- candidates -------------------------------------------------------------------


def _is_candidate(path: Path, include_virtual: bool, kinds: dict[str, str]) -> bool:
    name = path.name
    try:
        if int((path / "type").read_text()) != ARPHRD_ETHER:
            return False
    except (OSError, ValueError):
        return False
    if any((path / part).exists() for part in ("wireless", "phy80211", "bridge", "bonding")):
        return False
    if (path / "master").exists():  # a bridge or bond member
        return False
    if (path / "device").exists():
        return True
    return include_virtual and kinds.get(name) == "veth"


def _link_kinds() -> dict[str, str]:
    kinds = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            kinds[link.get_attr("IFLA_IFNAME")] = kind or ""
    return kinds


def candidate_ports(include_virtual: bool = False, sys_net: Path = SYS_NET) -> list[str]:
    kinds = _link_kinds() if include_virtual else {}
    if not sys_net.is_dir():
        return []
    names = [p.name for p in sys_net.iterdir() if _is_candidate(p, include_virtual, kinds)]
    return sorted(names)


# -- links and carrier ------------------------------------------------------------


def _link_flags(ipr: IPRoute, name: str) -> tuple[int, int]:
    link = ipr.link("get", ifname=name)[0]
    return link["index"], link["flags"]


def _has_carrier(ipr: IPRoute, name: str) -> bool:
    return bool(_link_flags(ipr, name)[1] & IFF_LOWER_UP)


class LinkEvents:
    """Link events from rtnetlink (RTMGRP_LINK), subscribed before the links
    are touched so that no carrier change is missed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def carriers(self) -> set[int]:
        """Indexes that have a carrier in the next datagram of events."""
        return {i for i, flags in _parse_links(self.sock.recv(65536)) if flags & IFF_LOWER_UP}

    def close(self) -> None:
        self.sock.close()


def _parse_links(data: bytes) -> list[tuple[int, int]]:
    """(ifindex, flags) of each RTM_NEWLINK message in a netlink datagram."""
    out = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            break
        body = offset + NLMSG_HEADER.size
        if kind == RTM_NEWLINK and length >= NLMSG_HEADER.size + IFINFOMSG.size:
            _family, _type, index, flags, _change = IFINFOMSG.unpack_from(data, body)
            out.append((index, flags))
        offset += (length + 3) & ~3
    return out


# -- DHCP -------------------------------------------------------------------------


@dataclass
class _Asker:
    """One port's DHCP exchange: its socket, its xid, when to send again."""

    name: str
    sock: socket.socket
    mac: bytes
    xid: int
    next_send: float = 0.0
    give_up_at: float = 0.0

    def send(self, now: float) -> None:
        """(Re)send the DISCOVER: the first can be lost while a link settles."""
        self.sock.sendto(_discover(self.mac, self.xid), (self.name, ETH_P_IP, 0, 0, BROADCAST_MAC))
        self.next_send = now + RESEND_EVERY


def _discover(mac: bytes, xid: int) -> bytes:
    message = dhcp.DhcpMessage(
        dhcp.BOOTREQUEST,
        xid,
        mac,
        {
            dhcp.OPT_MESSAGE_TYPE: bytes([dhcp.DISCOVER]),
            dhcp.OPT_PARAM_LIST: bytes([dhcp.OPT_SUBNET_MASK, dhcp.OPT_ROUTER, dhcp.OPT_DNS]),
        },
        flags=dhcp.BROADCAST_FLAG,
    )
    return ipv4_udp(0, 0xFFFFFFFF, CLIENT_PORT, SERVER_PORT, dhcp.encode(message))


def _open_asker(name: str, answer_wait: float) -> _Asker:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        sock.bind((name, ETH_P_IP))
        now = time.monotonic()
        asker = _Asker(name, sock, interface_mac(sock, name), secrets.randbits(32))
        asker.give_up_at = now + answer_wait
        asker.send(now)
    except OSError:
        sock.close()
        raise
    return asker


def offer_in(frame: bytes, asker: _Asker) -> tuple[str, str] | None:
    """(server, offered address) when `frame` (an IPv4 packet) is a DHCPOFFER
    answering this asker's DISCOVER; None for anything else."""
    if len(frame) < 28 or frame[0] >> 4 != 4 or frame[9] != socket.IPPROTO_UDP:
        return None
    ihl = (frame[0] & 0x0F) * 4
    if ihl < 20 or len(frame) < ihl + 8:
        return None
    _sport, dport, udp_len, _ = struct.unpack_from("!HHHH", frame, ihl)
    if dport != CLIENT_PORT or udp_len < 8:
        return None
    try:
        msg = dhcp.parse(frame[ihl + 8 : ihl + udp_len], expect_op=dhcp.BOOTREPLY)
        kind = msg.msg_type
    except (dhcp.MalformedPacket, KeyError, IndexError):
        return None
    if kind != dhcp.OFFER or msg.xid != asker.xid or msg.chaddr != asker.mac:
        return None
    server = msg.server_id or int.from_bytes(frame[12:16], "big")
    return dhcp.ip_str(server), dhcp.ip_str(msg.yiaddr)


def _read_offer(asker: _Asker, offers: dict[str, tuple[str, str]], result: ProbeResult) -> None:
    frame, address = asker.sock.recvfrom(2048)
    if address[2] == PACKET_OUTGOING:  # our own DISCOVER
        return
    found = offer_in(frame, asker)
    if found is None:
        result.ignored += 1
    elif asker.name not in offers:
        offers[asker.name] = found
        log.info("%s: DHCPOFFER of %s from %s", asker.name, found[1], found[0])


# -- the probe --------------------------------------------------------------------


class _Session:
    """One probe: a DISCOVER goes out of each port as soon as it has a
    carrier (links that come after `link_deadline` are not waited for), and
    each port then has `answer_wait` seconds for an OFFER; one select() loop
    over the link events and the DHCP sockets until every port has an answer
    or has had its time."""

    def __init__(self, names: list[str], result: ProbeResult, answer_wait: float) -> None:
        self.names = names
        self.result = result
        self.answer_wait = answer_wait
        self.events = LinkEvents()
        self.index_of: dict[int, str] = {}
        self.carrier: set[str] = set()
        self.askers: dict[int, _Asker] = {}
        self.offers: dict[str, tuple[str, str]] = {}

    def run(self, ipr: IPRoute, link_deadline: float, brought_up: list[int]) -> None:
        for name in self.names:
            index, flags = _link_flags(ipr, name)
            self.index_of[index] = name
            if not flags & IFF_UP:
                ipr.link("set", index=index, state="up")
                brought_up.append(index)
        for index, name in self.index_of.items():  # links that were up before
            if _has_carrier(ipr, name):
                self._linked(index)
        while (wake := self._next_wake(link_deadline)) is not None:
            now = time.monotonic()
            self._resend(now)
            sources = [*self.askers] + ([self.events] if now < link_deadline else [])
            ready, _, _ = select.select(sources, [], [], max(0.0, wake - now))
            for source in ready:
                if source is self.events:
                    self._link_events(ipr)
                else:
                    self._answer(source)

    def _waiting(self, now: float) -> list[_Asker]:
        """The ports still waiting for an answer, within their time."""
        return [a for a in self.askers.values() if a.name not in self.offers and now < a.give_up_at]

    def _next_wake(self, link_deadline: float) -> float | None:
        """When the loop must look again; None when the probe is over."""
        now = time.monotonic()
        times = [t for a in self._waiting(now) for t in (a.next_send, a.give_up_at)]
        if now < link_deadline and len(self.carrier) < len(self.names):
            times.append(link_deadline)
        return min(times) if times else None

    def _resend(self, now: float) -> None:
        for asker in self._waiting(now):
            if now >= asker.next_send:
                try:
                    asker.send(now)
                except OSError as exc:
                    log.warning("%s: cannot send a DHCPDISCOVER: %s", asker.name, exc)
                    asker.give_up_at = now

    def _link_events(self, ipr: IPRoute) -> None:
        try:
            carriers = self.events.carriers()
        except OSError as exc:  # ENOBUFS: events were lost, ask for the state
            log.info("link events lost (%s): reading the links' state", exc)
            carriers = {i for i, name in self.index_of.items() if _has_carrier(ipr, name)}
        for index in carriers:
            self._linked(index)

    def _answer(self, fd: int) -> None:
        asker = self.askers[fd]
        try:
            _read_offer(asker, self.offers, self.result)
        except OSError as exc:  # the link went away (ENETDOWN...): no answer from it
            log.warning("%s: reading DHCP answers failed: %s", asker.name, exc)
            asker.sock.close()
            del self.askers[fd]

    def _linked(self, index: int) -> None:
        name = self.index_of.get(index)
        if name is None or name in self.carrier:
            return
        self.carrier.add(name)
        try:
            asker = _open_asker(name, self.answer_wait)
        except OSError as exc:
            log.warning("%s: cannot send a DHCPDISCOVER: %s", name, exc)
            return
        self.askers[asker.sock.fileno()] = asker

    def close(self) -> None:
        for asker in self.askers.values():
            asker.sock.close()
        self.events.close()

    def facts(self) -> list[PortFacts]:
        out = []
        for name in self.names:
            server, offered = self.offers.get(name, (None, None))
            out.append(PortFacts(name, name in self.carrier, server, offered))
        return out


def probe(
    include_virtual: bool = False, link_wait: float = LINK_WAIT, answer_wait: float = ANSWER_WAIT
) -> ProbeResult:
    """Bring the candidate ports up, see which get a link within `link_wait`
    seconds and a DHCPOFFER within `answer_wait` seconds of their link, put
    them back as found."""
    link_deadline = time.monotonic() + link_wait
    result = ProbeResult()
    names = candidate_ports(include_virtual)
    if not names:
        return result
    session = _Session(names, result, answer_wait)
    brought_up: list[int] = []
    try:
        with IPRoute() as ipr:
            try:
                session.run(ipr, link_deadline, brought_up)
            finally:
                for index in brought_up:  # as found
                    ipr.link("set", index=index, state="down")
    finally:
        session.close()
    result.ports = session.facts()
    return result
