"""IPv6 firewall state as Python sees it (pure: the clock comes in as
`now_ns`): what the datapath's IPv6 maps must hold for the config and the
home's addressing, and which sessions have expired.

Sessions expire by protocol and TCP state as NAT's do (RFC 5382: TCP
established 2 h 4 min, transitory 4 min; RFC 4787: UDP 5 min; RFC 5508:
ICMP 1 min); other protocols (ESP, ...) as UDP. The datapath applies the same
timeouts (firewall6.h fw6_timeout) so an expired session admits nothing even
before it is removed here.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from homegw.modules.firewall.config import FirewallConfig
from homegw.netfacts import Ipv6Facts

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_INSIDE, MAX_OWN = 64, 256  # firewall.bpf.c FW6_MAX_PREFIXES, FW6_MAX_OWN
# firewall6.h
FW6_PING_LAN = 1
FW6_PINHOLE_IID = 1
TCP_REPLY, TCP_FIN_OUT, TCP_FIN_IN, TCP_RST = 1, 2, 4, 8
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTOCOL_NAMES = {
    socket.IPPROTO_TCP: "tcp",
    socket.IPPROTO_UDP: "udp",
    socket.IPPROTO_ICMPV6: "icmpv6",
    socket.IPPROTO_ESP: "esp",
}


@dataclass(frozen=True)
class Timeouts6:
    """Seconds; the order of firewall6.h's FW6_T_* indices."""

    udp: int = 300
    tcp_established: int = 7440
    tcp_transitory: int = 240
    icmp: int = 60
    other: int = 300

    def as_ns(self) -> tuple[int, ...]:
        seconds = (self.udp, self.tcp_established, self.tcp_transitory, self.icmp, self.other)
        return tuple(s * NS for s in seconds)


@dataclass(frozen=True)
class PinholeRule:
    """struct fw6_pinhole: one protocol, a port range, a host."""

    proto: int
    port_low: int
    port_high: int
    host: ipaddress.IPv6Address
    by_interface_id: bool


@dataclass(frozen=True)
class Settings6:
    ping_lan: bool
    pinholes: tuple[PinholeRule, ...]
    inside: tuple[ipaddress.IPv6Network, ...]
    own: tuple[ipaddress.IPv6Address, ...]
    timeouts: Timeouts6 = Timeouts6()

    @property
    def flags(self) -> int:
        return FW6_PING_LAN if self.ping_lan else 0


def pinhole_rules(config: FirewallConfig) -> tuple[PinholeRule, ...]:
    return tuple(
        PinholeRule(PROTOCOLS[proto], p.port.low, p.port.high, p.host, p.by_interface_id)
        for p in config.ipv6_pinholes
        for proto in p.protocols
    )


def settings6(config: FirewallConfig, facts: Ipv6Facts) -> Settings6:
    """What the IPv6 rules need: the home's space is the inside prefixes and
    the LAN's /64s (a static prefix may not be in inside)."""
    inside = sorted(set(facts.inside) | set(facts.lan_prefixes))
    own = sorted(set(facts.own))
    if len(inside) > MAX_INSIDE or len(own) > MAX_OWN:
        log.warning(
            "firewall: %d inside prefixes and %d own addresses, keeping the first %d and %d",
            len(inside),
            len(own),
            MAX_INSIDE,
            MAX_OWN,
        )
    return Settings6(
        ping_lan=config.ipv6_ping_lan,
        pinholes=pinhole_rules(config),
        inside=tuple(inside[:MAX_INSIDE]),
        own=tuple(own[:MAX_OWN]),
    )


@dataclass(frozen=True)
class Session6:
    """One entry of firewall6_sessions."""

    lan: ipaddress.IPv6Address
    remote: ipaddress.IPv6Address
    lan_port: int  # TCP/UDP port, ICMPv6 echo identifier, 0
    remote_port: int
    proto: int
    last_seen_ns: int
    tcp_seen: int

    def timeout_s(self, timeouts: Timeouts6) -> int:
        """Seconds it may stay idle (firewall6.h fw6_timeout)."""
        if self.proto == socket.IPPROTO_TCP:
            seen = self.tcp_seen
            closing = seen & TCP_RST or (seen & TCP_FIN_OUT and seen & TCP_FIN_IN)
            if seen & TCP_REPLY and not closing:
                return timeouts.tcp_established
            return timeouts.tcp_transitory
        if self.proto == socket.IPPROTO_UDP:
            return timeouts.udp
        if self.proto == socket.IPPROTO_ICMPV6:
            return timeouts.icmp
        return timeouts.other

    def expired(self, now_ns: int, timeouts: Timeouts6) -> bool:
        return now_ns - self.last_seen_ns > self.timeout_s(timeouts) * NS

    def row(self, now_ns: int) -> dict:
        return {
            "protocol": PROTOCOL_NAMES.get(self.proto, str(self.proto)),
            "lan": str(self.lan),
            "lan_port": self.lan_port,
            "remote": str(self.remote),
            "remote_port": self.remote_port,
            "tcp_replied": self.proto == socket.IPPROTO_TCP and bool(self.tcp_seen & TCP_REPLY),
            "idle_s": round(max(0, now_ns - self.last_seen_ns) / NS, 1),
        }


def expired(sessions: Iterable[Session6], now_ns: int, timeouts: Timeouts6) -> list[Session6]:
    return [s for s in sessions if s.expired(now_ns, timeouts)]
