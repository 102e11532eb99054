"""Userspace side of the XDP fast path: fill and read the pinned maps.

The resolver writes every cacheable answer that is a plain A or AAAA record set into
``dns_cache`` (pinned by cache.bpf.c); the XDP program answers later queries
for it without waking Python. Maps are opened by their pinned path through
libbpf (ctypes), so the resolver needs no bcc object and may run in another
process than the one that loaded the program.

Deadlines are CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``), the clock
of ``bpf_ktime_get_coarse_ns`` (which lags it by at most a jiffy).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.cenum import counter_names
from homegw.dataplane.libbpf import obj_get
from homegw.dataplane.pinned import possible_cpus
from homegw.dataplane.testrun import _lib

log = logging.getLogger(__name__)

KEY_NAME = 128  # DNS_KEY_NAME
MAX_ADDRS = 8  # DNS_MAX_ADDRS
TYPE_A = 1
TYPE_AAAA = 28
ADDRESS_BYTES = {TYPE_A: 4, TYPE_AAAA: 16}  # of one record's data, by type
SLOT = 16  # bytes of one address slot in struct dns_answer
STAT_NAMES = counter_names(Path(__file__).parent / "cache.bpf.c", "dns_stat")
BPF_ANY = 0


class DnsKey(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_uint8 * KEY_NAME),
        ("qtype", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class DnsAnswer(ctypes.Structure):
    _fields_ = [
        ("expires_ns", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("addrs", ctypes.c_uint8 * (SLOT * MAX_ADDRS)),
    ]


@dataclass(frozen=True)
class FastPathStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0
    passed: int = 0
    no_room: int = 0


def make_key(qname: bytes, qtype: int = TYPE_A) -> DnsKey | None:
    """The map key of a (lower-cased, uncompressed) wire name; None if too long."""
    if len(qname) > KEY_NAME:
        return None
    key = DnsKey()
    ctypes.memmove(key.name, qname.lower(), len(qname))
    key.qtype = qtype
    return key


def make_answer(addresses: Sequence[str], expires_ns: int, qtype: int = TYPE_A) -> DnsAnswer | None:
    """The map value of an A (IPv4) or AAAA (IPv6) record set; None if it
    does not fit (no address, too many, another type, an address that is
    not of the type)."""
    if not 1 <= len(addresses) <= MAX_ADDRS or qtype not in ADDRESS_BYTES:
        return None
    kind = ipaddress.IPv4Address if qtype == TYPE_A else ipaddress.IPv6Address
    try:
        packed = [kind(a).packed for a in addresses]
    except ValueError:
        return None
    value = DnsAnswer(expires_ns=expires_ns, count=len(addresses))
    for index, data in enumerate(packed):
        ctypes.memmove(ctypes.addressof(value.addrs) + index * SLOT, data, len(data))
    return value


def answer_addresses(value: DnsAnswer, qtype: int = TYPE_A) -> list[str]:
    """The addresses a map value holds (for tests and inspection)."""
    size = ADDRESS_BYTES[qtype]
    raw = bytes(value.addrs)
    kind = ipaddress.IPv4Address if qtype == TYPE_A else ipaddress.IPv6Address
    return [str(kind(raw[i * SLOT : i * SLOT + size])) for i in range(value.count)]


class FastPathCache:
    """The pinned dns_cache and dns_stats maps under a dataplane pin dir."""

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self._cache_fd = obj_get(f"{pin_dir}/dns_cache")
        self._stats_fd = obj_get(f"{pin_dir}/dns_stats")
        self.writes = self.failures = 0

    def put(
        self, qname: bytes, addresses: Sequence[str], expires_ns: int, qtype: int = TYPE_A
    ) -> bool:
        """Publish an A or AAAA answer until expires_ns; False if it does not
        fit the fast path."""
        key = make_key(qname, qtype)
        value = make_answer(addresses, expires_ns, qtype)
        if key is None or value is None:
            return False
        rc = _lib().bpf_map_update_elem(
            self._cache_fd, ctypes.byref(key), ctypes.byref(value), BPF_ANY
        )
        if rc != 0:
            self.failures += 1
            log.debug("dns_cache update failed: %s", os.strerror(ctypes.get_errno()))
            return False
        self.writes += 1
        return True

    def get(self, qname: bytes, qtype: int = TYPE_A) -> DnsAnswer | None:
        key = make_key(qname, qtype)
        value = DnsAnswer()
        if key is None:
            return None
        rc = _lib().bpf_map_lookup_elem(self._cache_fd, ctypes.byref(key), ctypes.byref(value))
        return value if rc == 0 else None

    def clear(self) -> int:
        """Remove every entry (block lists changed, service stopped); return how many."""
        removed = 0
        key, next_key = DnsKey(), DnsKey()
        while _lib().bpf_map_get_next_key(self._cache_fd, None, ctypes.byref(next_key)) == 0:
            ctypes.memmove(ctypes.byref(key), ctypes.byref(next_key), ctypes.sizeof(key))
            if _lib().bpf_map_delete_elem(self._cache_fd, ctypes.byref(key)) != 0:
                break
            removed += 1
        return removed

    def stats(self) -> FastPathStats:
        cpus = possible_cpus()
        values = (ctypes.c_uint64 * cpus)()
        totals = []
        for index in range(len(STAT_NAMES)):
            key = ctypes.c_uint32(index)
            if _lib().bpf_map_lookup_elem(self._stats_fd, ctypes.byref(key), values) != 0:
                totals.append(0)
                continue
            totals.append(sum(values))
        return FastPathStats(*totals)

    def close(self) -> None:
        for fd in (self._cache_fd, self._stats_fd):
            if fd >= 0:
                os.close(fd)
        self._cache_fd = self._stats_fd = -1
