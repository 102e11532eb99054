"""Userspace side of the XDP fast path: fill and read the pinned maps.

The resolver writes every cacheable answer that is a plain A record set into
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
from homegw.dataplane.pinned import possible_cpus
from homegw.dataplane.testrun import _lib

log = logging.getLogger(__name__)

KEY_NAME = 128  # DNS_KEY_NAME
MAX_ADDRS = 8  # DNS_MAX_ADDRS
TYPE_A = 1
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
        ("addrs", ctypes.c_uint8 * (4 * MAX_ADDRS)),
    ]


@dataclass(frozen=True)
class FastPathStats:
    hits: int = 0
    misses: int = 0
    expired: int = 0
    passed: int = 0


def make_key(qname: bytes, qtype: int = TYPE_A) -> DnsKey | None:
    """The map key of a (lower-cased, uncompressed) wire name; None if too long."""
    if len(qname) > KEY_NAME:
        return None
    key = DnsKey()
    ctypes.memmove(key.name, qname.lower(), len(qname))
    key.qtype = qtype
    return key


def make_answer(addresses: Sequence[str], expires_ns: int) -> DnsAnswer | None:
    if not 1 <= len(addresses) <= MAX_ADDRS:
        return None
    value = DnsAnswer(expires_ns=expires_ns, count=len(addresses))
    packed = b"".join(ipaddress.IPv4Address(a).packed for a in addresses)
    ctypes.memmove(value.addrs, packed, len(packed))
    return value


def _obj_get(path: str) -> int:
    fd = _lib().bpf_obj_get(path.encode())
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{path}: {os.strerror(err)}")
    return fd


class FastPathCache:
    """The pinned dns_cache and dns_stats maps under a dataplane pin dir."""

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self._cache_fd = _obj_get(f"{pin_dir}/dns_cache")
        self._stats_fd = _obj_get(f"{pin_dir}/dns_stats")
        self.writes = self.failures = 0

    def put(self, qname: bytes, addresses: Sequence[str], expires_ns: int) -> bool:
        """Publish an A answer until expires_ns; False if it does not fit the fast path."""
        key = make_key(qname)
        value = make_answer(addresses, expires_ns)
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

    def get(self, qname: bytes) -> DnsAnswer | None:
        key = make_key(qname)
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
