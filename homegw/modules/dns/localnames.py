"""Names the gateway answers itself and never sends upstream.

- ``<host>.<domain>`` (default domain ``lan``): the gateway's own
  ``<lan.hostname>``, static reservations (:meth:`LocalNames.set_reservations`)
  and the DHCP leases' names, one device at a time
  (:meth:`set_device`, called by the DHCP server the moment a lease is
  granted, renamed, released, declined or expires).
- single-label names (``printer``): the same hosts, else NXDOMAIN
  (dnsmasq's ``domain-needed``).
- PTR for LAN addresses; every reverse name in a private range (in-addr.arpa
  and ip6.arpa) that is not a known host gets NXDOMAIN (``bogus-priv``).
- ``localhost`` and ``*.localhost`` (RFC 6761).
- AAAA (with :meth:`LocalNames.set_ipv6`, a :class:`homegw.lan6.Lan6Table`):
  the gateway's name gets its preferred ULA and global LAN addresses; a
  device's name (a lease's, by the lease's MAC, or a reservation's MAC) the
  addresses ``Lan6Table.name_addresses`` picks for that MAC from the
  kernel's IPv6 neighbours: one per preferred LAN prefix, never link-local;
  PTR for any LAN IPv6 address the view ties to the gateway or to a named
  device (ULA and global; privacy addresses too).

A lease's name is chosen by the device, so it is hostile input. It becomes a
name only if it is one RFC 1123 label (ASCII letters, digits, inner '-',
at most 63 characters; the name with the domain at most 253) and is none of
the gateway's name, ``localhost``, the WPAD/ISATAP discovery names (a device
calling itself ``wpad`` would become every browser's proxy) or a
reservation's name; otherwise it is refused (logged) and the device gets no
name. Two devices claiming one name: the first keeps it; the later claim
waits and takes the name over when the holder's lease ends. Names are
answered in one dictionary look-up; every change is one small update under
a lock, never a rebuild from all leases.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dnslib import AAAA, PTR, RR, A, DNSLabel

from homegw.modules.dns import message
from homegw.modules.dns.message import Template
from homegw.modules.dns.rebind import PRIVATE_NETWORKS
from homegw.modules.dns.wire import NOERROR, NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR, Query

if TYPE_CHECKING:
    from homegw.lan6 import Lan6Table

log = logging.getLogger(__name__)

LOCAL_TTL = 0  # as dnsmasq's default local-ttl: leases change, clients must ask again
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_NAME = 253  # characters of a name in dotted form (RFC 1035 §2.3.4: 255 octets on the wire)
# Never a lease's name: names browsers and Windows look up to find a proxy or
# a tunnel (the WPAD / ISATAP hijacks), and localhost (RFC 6761).
NOT_FROM_LEASES = frozenset({"wpad", "isatap", "localhost"})
V4_REVERSE = "in-addr.arpa"
V6_REVERSE = "ip6.arpa"

Address = ipaddress.IPv4Address


def _host_label(name: str, domain: str) -> str | None:
    """The single label a name stands for (``Laptop``, ``laptop.lan.``), or
    None if it is not exactly one RFC 1123 label (ASCII only: no Unicode
    case folding into ASCII) or too long with the domain."""
    if not name.isascii():
        return None
    name = name.lower()
    name = name.removesuffix(".").removesuffix("." + domain)
    if not _LABEL.fullmatch(name) or len(name) + 1 + len(domain) > MAX_NAME:
        return None
    return name


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
        self._lock = threading.Lock()  # writers: DHCP server thread, tests; readers: DNS
        self._reserved: dict[str, Address] = {}
        self._claims: dict[str, dict[str, Address]] = {}  # label -> {device: address}, oldest first
        self._label_of: dict[str, str] = {}  # device -> the label it claims
        self._names: dict[str, Address] = {}  # label -> the answer
        self._at: dict[Address, dict[str, None]] = {}  # address -> labels (first: the PTR)
        self._reserved_macs: dict[str, str] = {}  # reservation label -> its MAC
        self._lan6: Lan6Table | None = None
        self.refused: collections.Counter[str] = collections.Counter()  # lease names, by reason
        self._rebuild()

    # -- feeding -----------------------------------------------------------
    def set_device(self, device: str, name: str | None, address: str | Address | None) -> None:
        """`device` (a MAC) is now called `name` at `address`; `name` None: it
        has no name any more (lease released, declined or expired)."""
        with self._lock:
            claim = self._lease_claim(device, name, address) if name is not None else None
            label = claim[0] if claim else None
            previous = self._label_of.get(device)
            if previous is not None and previous != label:
                self._unclaim(device, previous)
            if claim is not None:
                self._claim(device, *claim)

    def set_hosts(self, mapping: Mapping[str, str]) -> None:
        """Replace every lease name: {hostname: IPv4 address}, each its own device."""
        with self._lock:
            self._claims.clear()
            self._label_of.clear()
            self._rebuild()
        for name, address in mapping.items():
            self.set_device(f"name:{name}", name, address)

    def set_ipv6(self, table: Lan6Table | None) -> None:
        """Answer AAAA for local names from this view of the LAN's IPv6 (None: none)."""
        self._lan6 = table

    def set_reservations(
        self, mapping: Mapping[str, str], macs: Mapping[str, str] | None = None
    ) -> None:
        """Replace the names of static reservations (they win over leases,
        and resolve with or without a lease); macs: name -> the reservation's
        MAC, whose IPv6 addresses the name's AAAA answers with."""
        macs = macs or {}
        reserved_macs = {}
        reserved = {}
        for name, address in mapping.items():
            label = _host_label(name, self.domain)
            if label is None or label == self.hostname:
                log.warning("ignoring reservation name %r: not a usable host name", name)
                continue
            reserved[label] = Address(address)
            if name in macs:
                reserved_macs[label] = macs[name].lower()
        with self._lock:
            self._reserved = reserved
            self._reserved_macs = reserved_macs
            self._rebuild()

    def _lease_claim(self, device: str, name: str, address: object) -> tuple[str, Address] | None:
        """(label, address) a lease may claim, or None, counted and logged, if refused."""
        label = _host_label(name, self.domain)
        try:
            ip = Address(address)  # type: ignore[arg-type]
        except ValueError:
            label = None
        if label is None:
            reason = "invalid"
        elif label == self.hostname:
            reason = "gateway_name"
        elif label in NOT_FROM_LEASES:
            reason = "discovery_name"
        elif label in self._reserved:
            if self._reserved[label] == ip:
                return None  # the reserved device itself: its reservation answers
            reason = "reserved_name"
        else:
            return label, ip
        self.refused[reason] += 1
        log.warning("no local name for %s: %r at %r refused (%s)", device, name, address, reason)
        return None

    def _claim(self, device: str, label: str, ip: Address) -> None:
        claims = self._claims.setdefault(label, {})
        holder = next(iter(claims), device)
        if holder != device and device not in claims:
            self.refused["taken"] += 1
            log.warning(
                "local name %s.%s stays with %s; %s gets it when that lease ends",
                label,
                self.domain,
                holder,
                device,
            )
        claims[device] = ip  # a renewal keeps its place in the queue
        self._label_of[device] = label
        self._elect(label)

    def _unclaim(self, device: str, label: str) -> None:
        claims = self._claims.get(label, {})
        claims.pop(device, None)
        if not claims:
            self._claims.pop(label, None)
        self._label_of.pop(device, None)
        self._elect(label)

    def _elect(self, label: str) -> None:
        """Publish the answer of a lease label: its oldest claim, or none.
        The gateway's and the reservations' names never move."""
        if label == self.hostname or label in self._reserved:
            return
        claims = self._claims.get(label)
        self._publish(label, next(iter(claims.values())) if claims else None)

    def _publish(self, label: str, ip: Address | None) -> None:
        old = self._names.get(label)
        if old == ip:
            return
        if old is not None:
            labels = self._at[old]
            del labels[label]
            if not labels:
                del self._at[old]
            del self._names[label]
        if ip is not None:
            self._names[label] = ip
            self._at.setdefault(ip, {})[label] = None

    def _rebuild(self) -> None:
        """All answers from scratch: the gateway, reservations, then leases
        (only on set_reservations / set_hosts)."""
        self._names, self._at = {}, {}
        self._publish(self.hostname, self.lan.ip)
        for label, ip in self._reserved.items():
            self._publish(label, ip)
        for label, claims in list(self._claims.items()):
            if label in self._reserved:
                for device in list(claims):
                    self._unclaim(device, label)
            else:
                self._elect(label)

    def stats(self) -> dict[str, object]:
        """How many names are served, and the lease names refused, by reason."""
        with self._lock:
            return {"names": len(self._names), "refused": dict(self.refused)}

    def hosts(self) -> dict[str, str]:
        """Every local name (fully qualified) and its address."""
        with self._lock:
            names = sorted(self._names.items())
        return {f"{label}.{self.domain}": str(ip) for label, ip in names}

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
        with self._lock:
            ip = self._names.get(label)
        if ip is None:
            return self._reply(query, NXDOMAIN)
        answers = []
        if query.qtype in (TYPE_A, TYPE_ANY):
            answers.append(self._rr(query, TYPE_A, A(str(ip))))
        if query.qtype in (TYPE_AAAA, TYPE_ANY):
            answers += [self._rr(query, TYPE_AAAA, AAAA(str(a))) for a in self._ipv6_of(label)]
        return self._reply(query, NOERROR, answers)

    def _ipv6_of(self, label: str) -> list:
        """The IPv6 addresses a local name answers AAAA with (none without a table)."""
        table = self._lan6
        if table is None:
            return []
        if label == self.hostname:
            return table.own_addresses()
        with self._lock:
            mac = self._reserved_macs.get(label)
            if mac is None and label not in self._reserved:
                holder = next(iter(self._claims.get(label, {})), None)
                mac = holder.lower() if holder and _MAC.fullmatch(holder.lower()) else None
        return table.name_addresses(mac) if mac else []

    def _localhost(self, query: Query) -> Template:
        if query.qtype in (TYPE_A, TYPE_ANY):
            return self._reply(query, NOERROR, [self._rr(query, TYPE_A, A("127.0.0.1"))])
        if query.qtype == TYPE_AAAA:
            return self._reply(query, NOERROR, [self._rr(query, TYPE_AAAA, AAAA("::1"))])
        return self._reply(query, NOERROR)

    def _ptr(self, ip: Address) -> str | None:
        with self._lock:
            labels = self._at.get(ip)
            return next(iter(labels)) if labels else None

    def _reverse_answer(self, query: Query, name: str) -> Template | None:
        v4 = name.endswith("." + V4_REVERSE)
        labels = name[: -len(V4_REVERSE if v4 else V6_REVERSE) - 1].split(".")
        net = _reverse_v4(labels) if v4 else _reverse_v6(labels)
        if not v4 and net is not None and net.prefixlen == 128 and len(labels) == 32:
            host6 = self._ptr6(net.network_address)  # type: ignore[arg-type]
            if host6 is not None:  # a LAN address of ours or a device's, ULA or global
                return self._ptr_reply(query, host6)
        if net is None or not _private(net):
            return None  # public space: the owner of the addresses answers
        exact = isinstance(net, ipaddress.IPv4Network) and net.prefixlen == 32 and len(labels) == 4
        host = self._ptr(net.network_address) if exact else None  # type: ignore[arg-type]
        if host is None:
            return self._reply(query, NXDOMAIN)
        return self._ptr_reply(query, host)

    def _ptr_reply(self, query: Query, host: str) -> Template:
        if query.qtype not in (TYPE_PTR, TYPE_ANY):
            return self._reply(query, NOERROR)
        target = DNSLabel(f"{host}.{self.domain}")
        return self._reply(query, NOERROR, [self._rr(query, TYPE_PTR, PTR(target))])

    def _ptr6(self, address: ipaddress.IPv6Address) -> str | None:
        """The local name of an IPv6 address the LAN view knows: the gateway's
        own, or a named device's (by the MAC holding the address)."""
        table = self._lan6
        if table is None:
            return None
        if address in table.own_addresses():
            return self.hostname
        mac = table.mac_of(address)
        if mac is None:
            return None
        with self._lock:
            for label, reserved_mac in self._reserved_macs.items():
                if reserved_mac == mac:
                    return label
            label = self._label_of.get(mac)
            holder = next(iter(self._claims.get(label, {})), None) if label else None
            return label if holder == mac else None
