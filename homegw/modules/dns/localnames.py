"""Names the gateway answers itself and never sends upstream.

- ``<host>.<domain>`` (default domain ``lan``) from DHCP leases
  (:meth:`LocalNames.set_hosts`) and reservations (:meth:`set_reservations`;
  they win over leases), and the gateway's own ``<lan.hostname>.<lan.domain>``.
- single-label names (``printer``): the same hosts, else NXDOMAIN
  (dnsmasq's ``domain-needed``).
- PTR for LAN addresses; every reverse name in a private range (in-addr.arpa
  and ip6.arpa) that is not a known host gets NXDOMAIN (``bogus-priv``).
- ``localhost`` and ``*.localhost`` (RFC 6761).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping

from dnslib import AAAA, PTR, RR, A, DNSLabel

from homegw.modules.dns import message
from homegw.modules.dns.message import Template
from homegw.modules.dns.rebind import PRIVATE_NETWORKS
from homegw.modules.dns.wire import NOERROR, NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR, Query

log = logging.getLogger(__name__)

LOCAL_TTL = 0  # as dnsmasq's default local-ttl: leases change, clients must ask again
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
V4_REVERSE = "in-addr.arpa"
V6_REVERSE = "ip6.arpa"


def _host_label(name: str, domain: str) -> str | None:
    """The single label a DHCP client's name stands for, or None if unusable."""
    name = name.strip().lower().rstrip(".")
    if name.endswith("." + domain):
        name = name[: -len(domain) - 1]
    return name if _LABEL.match(name) else None


def _reverse_v4(labels: list[str]) -> ipaddress.IPv4Network | None:
    """The network a name under in-addr.arpa covers (labels left to right)."""
    octets: list[int] = []
    for label in reversed(labels):
        if len(octets) == 4 or not label.isdigit() or int(label) > 255 or label != str(int(label)):
            break
        octets.append(int(label))
    if not octets:
        return None
    padded = octets + [0] * (4 - len(octets))
    return ipaddress.IPv4Network((".".join(map(str, padded)), 8 * len(octets)))


def _reverse_v6(labels: list[str]) -> ipaddress.IPv6Network | None:
    nibbles: list[str] = []
    for label in reversed(labels):
        if len(nibbles) == 32 or len(label) != 1 or label not in "0123456789abcdef":
            break
        nibbles.append(label)
    if not nibbles:
        return None
    value = int("".join(nibbles).ljust(32, "0"), 16)
    return ipaddress.IPv6Network((value, 4 * len(nibbles)))


def _private(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(
        net.version == private.version and net.subnet_of(private)  # type: ignore[arg-type]
        for private in PRIVATE_NETWORKS
    )


class LocalNames:
    def __init__(self, domain: str, hostname: str, lan: ipaddress.IPv4Interface) -> None:
        self.domain = domain.lower().rstrip(".")
        self.hostname = hostname.lower()
        self.lan = lan
        self._leases: dict[str, ipaddress.IPv4Address] = {}
        self._reserved: dict[str, ipaddress.IPv4Address] = {}
        self._names: dict[str, ipaddress.IPv4Address] = {}
        self._reverse: dict[ipaddress.IPv4Address, str] = {}
        self._rebuild()

    # -- feeding -----------------------------------------------------------
    def set_hosts(self, mapping: Mapping[str, str]) -> None:
        """Replace the lease-derived names: {hostname: IPv4 address}."""
        self._leases = self._clean(mapping)
        self._rebuild()

    def set_reservations(self, mapping: Mapping[str, str]) -> None:
        """Replace the names of static reservations (they win over leases)."""
        self._reserved = self._clean(mapping)
        self._rebuild()

    def _clean(self, mapping: Mapping[str, str]) -> dict[str, ipaddress.IPv4Address]:
        out = {}
        for name, address in mapping.items():
            label = _host_label(name, self.domain)
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError:
                label = None
            if label is None:
                log.warning(
                    "ignoring local name %r -> %r: not a host name and IPv4 address", name, address
                )
                continue
            out[label] = ip
        return out

    def _rebuild(self) -> None:
        names = {**self._leases, **self._reserved, self.hostname: self.lan.ip}
        self._names = names
        reverse: dict[ipaddress.IPv4Address, str] = {}
        for label, ip in names.items():
            reverse.setdefault(ip, label)
        reverse[self.lan.ip] = self.hostname
        self._reverse = reverse

    def hosts(self) -> dict[str, str]:
        """Every local name (fully qualified) and its address."""
        return {f"{label}.{self.domain}": str(ip) for label, ip in sorted(self._names.items())}

    # -- answering ---------------------------------------------------------
    def answer(self, query: Query) -> Template | None:
        """The reply if the query's name is local, None if it may go upstream."""
        name = query.name
        if name == "localhost" or name.endswith(".localhost"):
            return self._localhost(query)
        if name.endswith("." + V4_REVERSE) or name.endswith("." + V6_REVERSE):
            return self._reverse_answer(query, name)
        if name == self.domain:
            return self._reply(query, NOERROR)
        if name.endswith("." + self.domain):
            return self._host(query, name[: -len(self.domain) - 1])
        if name and "." not in name:
            return self._host(query, name)
        return None

    def _reply(self, query: Query, rcode: int, answers: list[RR] | None = None) -> Template:
        return message.build(
            query.qname,
            query.qtype,
            query.qclass,
            rcode=rcode,
            answers=answers,
            authoritative=True,
        )

    def _rr(self, query: Query, rtype: int, rdata: object) -> RR:
        return RR(message.label_of(query.qname), rtype, rdata=rdata, ttl=LOCAL_TTL)

    def _host(self, query: Query, label: str) -> Template:
        ip = self._names.get(label)
        if ip is None:
            return self._reply(query, NXDOMAIN)
        if query.qtype in (TYPE_A, TYPE_ANY):
            return self._reply(query, NOERROR, [self._rr(query, TYPE_A, A(str(ip)))])
        return self._reply(query, NOERROR)

    def _localhost(self, query: Query) -> Template:
        if query.qtype in (TYPE_A, TYPE_ANY):
            return self._reply(query, NOERROR, [self._rr(query, TYPE_A, A("127.0.0.1"))])
        if query.qtype == TYPE_AAAA:
            return self._reply(query, NOERROR, [self._rr(query, TYPE_AAAA, AAAA("::1"))])
        return self._reply(query, NOERROR)

    def _reverse_answer(self, query: Query, name: str) -> Template | None:
        v4 = name.endswith("." + V4_REVERSE)
        labels = name[: -len(V4_REVERSE if v4 else V6_REVERSE) - 1].split(".")
        net = _reverse_v4(labels) if v4 else _reverse_v6(labels)
        if net is None or not _private(net):
            return None  # public space: the owner of the addresses answers
        exact = isinstance(net, ipaddress.IPv4Network) and net.prefixlen == 32 and len(labels) == 4
        host = self._reverse.get(net.network_address) if exact else None  # type: ignore[arg-type]
        if host is None:
            return self._reply(query, NXDOMAIN)
        if query.qtype not in (TYPE_PTR, TYPE_ANY):
            return self._reply(query, NOERROR)
        target = DNSLabel(f"{host}.{self.domain}")
        return self._reply(query, NOERROR, [self._rr(query, TYPE_PTR, PTR(target))])
