"""What the DPI datapath tests share: the DPI module in front of the router in
the LAN chain and behind it in the WAN chain, frames of a LAN host's flows,
and the exact RSTs a block answers with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.testrun import RunResult
from homegw.modules.dpi.maps import FlowKey, FlowRow
from homegw.modules.dpi.module import DpiModule
from homegw.modules.router.module import RouterModule
from tests.datapath.punts import PuntLog
from tests.datapath.router_kit import (
    HOST,
    HOST_MAC,
    ISP_MAC,
    LAN_MAC,
    NO_STATIC_ROUTES,
    WAN_MAC,
    load_router,
    run,
)

REMOTE = "198.51.100.80"
PUNT_PACKETS = 4  # DPI_PUNT_PACKETS
GIVE_UP_AFTER = 16  # DPI_GIVE_UP_AFTER
REASON_PAYLOAD = 1  # DPI_REASON_PAYLOAD
APP, CATEGORY = 17, 3  # numbers as AppIds and categories.py would give them
HTTP_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


class DpiGateway:
    """dpi + router on LAN, router + dpi on WAN, on one dataplane."""

    def __init__(self, dataplane: Dataplane, **limits: int) -> None:
        self.dp = dataplane
        self.router: RouterModule = load_router(dataplane, NO_STATIC_ROUTES)
        self.dpi = DpiModule(parse_config(NO_STATIC_ROUTES), limits, slow_path=False)
        dataplane.add_module(self.dpi)
        assert self.dpi.maps is not None
        self.maps = self.dpi.maps
        self.chains()

    def chains(self, lan: tuple[str, ...] = ("dpi", "router")) -> None:
        self.dp.set_order(Nic.LAN, list(lan))
        self.dp.set_order(Nic.WAN, ["router", "dpi"])

    @contextlib.contextmanager
    def dpi_alone(self) -> Iterator[None]:
        """The LAN chain with only DPI: what it passes on comes out as XDP_PASS."""
        self.chains(("dpi",))
        try:
            yield
        finally:
            self.chains()

    def lan(self, frame: bytes) -> RunResult:
        return run(self.dp, Nic.LAN, frame)

    def wan(self, frame: bytes) -> RunResult:
        return run(self.dp, Nic.WAN, frame)

    def punt_log(self) -> PuntLog:
        return PuntLog(self.dp, self.router, (DpiModule.module_id, REASON_PAYLOAD))

    def flow(self, key: FlowKey) -> FlowRow | None:
        return next((row for row in self.maps.flows() if row.key == key), None)

    def counters(self) -> dict[str, int]:
        return self.maps.counters()


def key(sport: int, dport: int = 443, proto: int = 6, remote: str = REMOTE) -> FlowKey:
    return FlowKey(HOST, remote, sport, dport, proto)


def tcp_up(
    sport: int,
    payload: bytes = b"",
    flags: str = "PA",
    seq: int = 1000,
    ack: int = 5000,
    dport: int = 443,
    dst: str = REMOTE,
) -> bytes:
    return bytes(
        Ether(src=HOST_MAC, dst=LAN_MAC)
        / IP(src=HOST, dst=dst, id=7)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        / payload
    )


def tcp_down(
    sport: int, payload: bytes = b"", flags: str = "PA", seq: int = 9000, ack: int = 1100
) -> bytes:
    """From the remote to the LAN host, as it arrives on the WAN (no NAT here:
    the router routes it to the host)."""
    return bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IP(src=REMOTE, dst=HOST, id=9, flags="DF", ttl=50)
        / TCP(sport=443, dport=sport, flags=flags, seq=seq, ack=ack, options=[("NOP", None)] * 4)
        / payload
    )


def udp_up(sport: int, payload: bytes = b"q" * 20, dport: int = 443) -> bytes:
    return bytes(
        Ether(src=HOST_MAC, dst=LAN_MAC)
        / IP(src=HOST, dst=REMOTE, id=7)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def udp_down(sport: int, payload: bytes = b"r" * 20) -> bytes:
    return bytes(
        Ether(src=ISP_MAC, dst=WAN_MAC)
        / IP(src=REMOTE, dst=HOST, id=9)
        / UDP(sport=443, dport=sport)
        / payload
    )


def forwarded_down(frame: bytes) -> bytes:
    """What the router makes of a down frame: to the host, from the LAN NIC."""
    packet = Ether(frame)
    packet.src, packet.dst = LAN_MAC, HOST_MAC
    packet[IP].ttl -= 1
    del packet[IP].chksum
    return bytes(packet)


def rst_answer(frame: bytes) -> bytes:
    """The RST the gateway answers a blocked client segment with."""
    sent = Ether(frame)
    tcp = sent[TCP]
    if tcp.flags.A:
        seq, ack, flags = tcp.ack, 0, "R"
    else:
        payload = sent[IP].len - sent[IP].ihl * 4 - tcp.dataofs * 4  # by the IP length
        length = payload + int(bool(tcp.flags.S)) + int(bool(tcp.flags.F))
        seq, ack, flags = 0, (tcp.seq + length) & 0xFFFFFFFF, "RA"
    return bytes(
        Ether(src=sent.dst, dst=sent.src)
        / IP(src=sent[IP].dst, dst=sent[IP].src, ttl=64, id=0, flags="DF", tos=0)
        / TCP(sport=tcp.dport, dport=tcp.sport, seq=seq, ack=ack, flags=flags, window=0)
    )


def rst_down(frame: bytes) -> bytes:
    """A blocked server segment, forwarded, as the RST it is turned into."""
    packet = Ether(forwarded_down(frame))
    tcp = packet[TCP]
    return bytes(
        Ether(src=packet.src, dst=packet.dst)
        / IP(
            src=packet[IP].src,
            dst=packet[IP].dst,
            ttl=packet[IP].ttl,
            id=packet[IP].id,
            flags=packet[IP].flags,
            tos=packet[IP].tos,
        )
        / TCP(sport=tcp.sport, dport=tcp.dport, seq=tcp.seq, ack=0, flags="R", window=0)
    )
