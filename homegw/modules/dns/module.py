"""The DNS IO module: the XDP fast path that answers cached A and AAAA queries,
over IPv4 (to ``lan.address``) and IPv6 (to the gateway's LAN addresses,
``<prefix>::1`` of each LAN /64, told by :meth:`DnsModule.on_ipv6`).

Sits in the LAN XDP chain. Its map ``dns_cache`` is filled by the Python
resolver (:class:`homegw.modules.dns.service.DnsService`) through
:class:`homegw.modules.dns.fastpath.FastPathCache`; see cache.bpf.c for what
it answers and what it passes on.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
from pathlib import Path

from homegw.config import Config
from homegw.dataplane.loader import Define
from homegw.dataplane.module import IOModule
from homegw.modules.dns.fastpath import STAT_NAMES, FastPathCache
from homegw.netfacts import Ipv6Facts

log = logging.getLogger(__name__)

MODULE_ID = 5
PIN_NAMES = ("dns_cache", "dns_stats")


class DnsModule(IOModule):
    name = "dns"
    module_id = MODULE_ID
    source = Path(__file__).parent / "cache.bpf.c"
    xdp_function = "dns_xdp"

    def __init__(self, config: Config) -> None:
        self.lan_ip = config.lan.ip
        self.cache_size = max(1, config.dns.cache_size)
        self.pin_dir = config.dataplane.pin_dir
        self.bpf = None
        self.addresses6: frozenset[ipaddress.IPv6Address] = frozenset()

    def defines(self) -> dict[str, Define]:
        return {"DNS_LAN_ADDR": int(self.lan_ip), "DNS_CACHE_SIZE": self.cache_size}

    def on_load(self, bpf) -> None:  # the build's maps
        """Empties the previous run's dns_cache: no answer cached under an
        older block list outlives a restart (when dns.cache_size changes, the
        build child makes the map anew at that size). The counters are kept."""
        self.bpf = bpf
        bpf["dns_cache"].clear()
        self._write_addresses6(self.addresses6)

    def on_ipv6(self, facts: Ipv6Facts) -> None:
        """Answer over IPv6 on the gateway's address in each LAN /64
        (``<prefix>::1``, deprecated prefixes included while valid) and on
        ``facts.lan_address``; queries to other addresses (link-local, ...)
        go to the Python resolver."""
        wanted = {net.network_address + 1 for net in facts.lan_prefixes}
        if facts.lan_address is not None:
            wanted.add(facts.lan_address)
        self.addresses6 = frozenset(wanted)
        if self.bpf is not None:
            self._write_addresses6(self.addresses6)

    def _write_addresses6(self, wanted: frozenset[ipaddress.IPv6Address]) -> None:
        table = self.bpf["dns_addrs6"]
        have = {ipaddress.IPv6Address(bytes(key)) for key in table}
        for address in have - wanted:
            del table[_in6_key(table, address)]
        for address in sorted(wanted - have):
            table[_in6_key(table, address)] = table.Leaf(1)

    @classmethod
    def wanted(cls, config: Config) -> bool:
        """Only with the XDP answer cache on (dns.fast_path and a cache size)."""
        return config.dns.enabled and config.dns.fast_path and config.dns.cache_size > 0

    def compile_options_changed(self, config: Config) -> bool:
        return (config.lan.ip, max(1, config.dns.cache_size)) != (self.lan_ip, self.cache_size)

    def apply(self, config: Config) -> bool:
        """Nothing but compile-time options (the LAN address, the cache size)
        is in its datapath; the DNS service takes the rest."""
        return True

    def addresses6_in_map(self) -> set[ipaddress.IPv6Address]:
        """The IPv6 addresses the XDP program answers on now (from its map)."""
        return {ipaddress.IPv6Address(bytes(key)) for key in self.bpf["dns_addrs6"]}

    def counters(self) -> dict[str, int]:
        """Queries to the gateway's DNS address by what the XDP cache did."""
        stats = self.bpf["dns_stats"]
        return {
            name: int(sum(stats.getvalue(ctypes.c_uint32(i)))) for i, name in enumerate(STAT_NAMES)
        }

    def fast_path(self) -> FastPathCache:
        """A writer for the pinned map, to hand to DnsService.set_fast_path()."""
        return FastPathCache(self.pin_dir)


def _in6_key(table, address: ipaddress.IPv6Address):  # a bcc Table's key
    key = table.Key()
    ctypes.memmove(ctypes.byref(key), address.packed, 16)
    return key
