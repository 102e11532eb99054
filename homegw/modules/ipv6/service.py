"""The IPv6 service: the home's IPv6 addressing, from the ISP to the LAN.

    WAN: the kernel's SLAAC + default route (kernel6), DHCPv6 IA_NA + IA_PD
         (dhcp6.wanclient) or the static config
      -> the prefix plan (prefixes: the LAN /64s, old ones deprecated)
      -> the gateway's LAN addresses (lanaddrs), router advertisements
         (advertiser), the LAN DHCPv6 server (dhcp6.lanserver)
      -> Ipv6Facts (homegw/netfacts.py) for the datapath modules, whenever
         what the kernel holds changes (netlink events)

One worker thread applies every change in order: a new lease, a kernel
event, a prefix's lifetime running out (its next-due time is the worker's
timeout). Callbacks from other threads only record and wake it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from homegw import supervise
from homegw.modules.ipv6 import kernel6
from homegw.modules.ipv6.config import ULA_SPACE, Lan6Config, Wan6Config
from homegw.modules.ipv6.kernel6 import KernelState
from homegw.modules.ipv6.lanaddrs import apply_lan_addresses, gateway_address
from homegw.netfacts import Ipv6Facts

if TYPE_CHECKING:
    from homegw.config import Config

log = logging.getLogger(__name__)

IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network


@dataclass(frozen=True)
class StaticPrefix:
    """wan.ipv6.prefix in static mode, shaped as a delegated prefix."""

    prefix: IPv6Network
    preferred_until: float = math.inf
    valid_until: float = math.inf


def _is_global(address: IPv6Address) -> bool:
    """Global unicast (documentation prefixes included: the test bed's ISP)."""
    return not (address.is_link_local or address.is_multicast or address in ULA_SPACE)


def pick_source(addresses, in_networks: tuple[IPv6Network, ...] = ()) -> IPv6Address | None:
    """A source address for ICMPv6 errors: a preferred global one, else a
    preferred ULA one (inside `in_networks` when given), else None."""
    usable = [a.ip for a in addresses if not a.deprecated and not a.ip.is_link_local]
    if in_networks:
        usable = [a for a in usable if any(a in net for net in in_networks)]
    ranked = sorted(usable, key=lambda a: (not _is_global(a), int(a)))
    return ranked[0] if ranked else None


def build_facts(
    state: KernelState, lan_prefixes: tuple[IPv6Network, ...], inside: tuple[IPv6Network, ...]
) -> Ipv6Facts:
    """Ipv6Facts from the kernel's state and the prefix plan (pure)."""
    return Ipv6Facts(
        lan_prefixes=lan_prefixes,
        inside=inside,
        lan_address=pick_source(state.lan, lan_prefixes),
        wan_address=pick_source(state.wan),
        own=tuple(sorted({a.ip for a in state.wan + state.lan}, key=int)),
        wan_gateway=state.wan_gateway,
        lan_mtu=state.lan_mtu,
        wan_mtu=state.wan_mtu,
    )


def for_config(config: Config, on_facts: Callable[[Ipv6Facts], None]) -> Ipv6Service | None:
    """The service for the config's wan.ipv6 and lan.ipv6, or None with both off."""
    wan6, lan6 = config.wan.ipv6, config.lan.ipv6
    if wan6.mode == "off" and lan6.mode == "off":
        return None
    return Ipv6Service(
        config.wan.interface,
        config.lan.interface,
        wan6,
        lan6,
        config.lan.domain,
        Path(config.state_dir),
        on_facts,
    )


class Ipv6Service:
    def __init__(
        self,
        wan_if: str,
        lan_if: str,
        wan6: Wan6Config,
        lan6: Lan6Config,
        lan_domain: str,
        state_dir: Path,
        on_facts: Callable[[Ipv6Facts], None],
    ) -> None:
        self.wan_if, self.lan_if = wan_if, lan_if
        self.wan6, self.lan6 = wan6, lan6
        self.domain = lan6.dns_domain or lan_domain
        self.state_dir = state_dir
        self._on_facts = on_facts
        self.facts = Ipv6Facts()
        self.ula: IPv6Network | None = None
        self.plan = None  # prefixes.PrefixPlan
        self.client = None  # dhcp6.wanclient.WanDhcp6Client
        self.server = None  # dhcp6.lanserver.LanDhcp6Server
        self.advertiser = None  # advertiser.RouterAdvertiser
        self.lease = None  # the WAN's dhcp6 Lease6, or None
        self._wan_addresses = kernel6.WanAddresses(wan_if)
        self._wake = threading.Event()
        self._lease_changed = False
        self._stopping = False
        self._lock = threading.Lock()
        self._watcher = kernel6.KernelWatcher6(self._wake.set)
        self._worker = supervise.Thread(self._work, "ipv6-service")

    # -- start / stop ------------------------------------------------------
    def start(self) -> None:
        from homegw.modules.ipv6.prefixes import PrefixPlan
        from homegw.modules.ipv6.ula import ula_prefix

        kernel6.configure_kernel(self.wan_if, self.lan_if, wan_auto=self.wan6.mode == "auto")
        configured = None if self.lan6.ula == "auto" else self.lan6.ula
        self.ula = ula_prefix(self.state_dir, configured)
        self.plan = PrefixPlan(self.ula, self.lan6.subnet)
        now = time.time()
        self.plan.update(self._delegated(), now)
        if self.wan6.mode == "static":
            kernel6.set_static(self.wan_if, self.wan6.address, self.wan6.gateway)
        self._watcher.start()
        if self.lan6.mode == "auto":
            self._apply_lan(now)
        self._refresh_facts(now)  # first: the first RA already knows the default route
        if self.lan6.mode == "auto":
            self._start_lan_services()
        self._worker.start()
        if self.wan6.mode == "auto" and (self.wan6.request_address or self.wan6.request_prefix):
            self._start_wan_client()
        log.info("IPv6: ULA %s, LAN %s, WAN %s", self.ula, self.lan6.mode, self.wan6.mode)

    def _start_lan_services(self) -> None:
        from homegw.modules.ipv6.advertiser import RouterAdvertiser
        from homegw.modules.ipv6.dhcp6.lanserver import LanDhcp6Server

        self.advertiser = RouterAdvertiser(
            self.lan_if,
            self._advertised,
            rdnss=self.dns_addresses,
            dnssl=[self.domain],
            mtu=self.facts.lan_mtu,
            default_router=lambda: self.facts.wan_gateway is not None,
            managed=self.lan6.dhcpv6 == "stateful",
            other=True,
            max_interval=self.lan6.ra_interval,
        )
        self.advertiser.start()
        self.server = LanDhcp6Server(self.lan_if, self._server_options, self.state_dir)
        self.server.start()

    def _start_wan_client(self) -> None:
        from homegw.modules.ipv6.dhcp6.wanclient import WanDhcp6Client

        self.client = WanDhcp6Client(
            self.wan_if,
            self._on_lease,
            self.state_dir,
            want_address=self.wan6.request_address,
            want_prefix=self.wan6.request_prefix,
            prefix_hint=self.wan6.prefix_hint,
        )
        self.client.start()

    def stop(self) -> None:
        """Stop the slow path; the addresses and the kernel's state stay (a
        restart takes them over), the lease is kept in state_dir."""
        self._stopping = True
        self._wake.set()
        if self.advertiser is not None:
            # no final RA with router lifetime 0: the datapath goes on
            # forwarding across a restart, hosts keep their default route
            self._stop_part(lambda: self.advertiser.stop(withdraw=False), "the advertiser")
        for part in (self.client, self.server):
            if part is not None:
                self._stop_part(part.stop, type(part).__name__)
        self._watcher.stop()
        if self._worker.is_alive():
            self._worker.join(5)

    @staticmethod
    def _stop_part(stop: Callable[[], None], what: str) -> None:
        try:
            stop()
        except Exception:
            log.exception("IPv6: stopping %s failed", what)

    def renew(self) -> None:
        if self.client is not None:
            self.client.renew()

    # -- what others ask -----------------------------------------------------
    def dns_addresses(self) -> list[IPv6Address]:
        """Where LAN hosts send DNS over IPv6 (RDNSS, DHCPv6): the gateway's
        ULA address, stable when the ISP renumbers."""
        if self.ula is None or self.lan6.mode == "off":
            return []
        return [gateway_address(self.plan.ula_lan)] if self.plan is not None else []

    def upstream_dns(self) -> list[str]:
        """The ISP's IPv6 resolvers (DHCPv6), after wan.ipv6.dns."""
        learned = [str(a) for a in self.lease.dns] if self.lease else []
        return [str(a) for a in self.wan6.dns] + [a for a in learned if a not in self.wan6.dns]

    def status(self) -> dict:
        facts = self.facts
        return {
            "ula": str(self.ula) if self.ula else None,
            "delegated": [str(p.prefix) for p in self._delegated()],
            "lan_prefixes": [str(p) for p in facts.lan_prefixes],
            "wan_address": str(facts.wan_address) if facts.wan_address else None,
            "wan_gateway": str(facts.wan_gateway) if facts.wan_gateway else None,
            "dns": [str(a) for a in self.dns_addresses()],
        }

    # -- the worker ----------------------------------------------------------
    def _on_lease(self, lease) -> None:  # the DHCPv6 client's thread
        with self._lock:
            self.lease = lease
            self._lease_changed = True
        self._wake.set()

    def _work(self) -> None:
        while not self._stopping:
            self._wake.wait(self._timeout(time.time()))
            self._wake.clear()
            if self._stopping:
                return
            now = time.time()
            with self._lock:
                lease_changed, self._lease_changed = self._lease_changed, False
            if lease_changed:
                self._apply_lease(now)
            elif self.plan is not None and self.plan.update(self._delegated(), now):
                self._apply_lan(now)  # a deprecated prefix ran out
            self._refresh_facts(now)

    def _timeout(self, now: float) -> float | None:
        """Until the next prefix lifetime ends (the plan drops it then)."""
        prefixes = self._advertised()
        ends = [p.valid_until for p in prefixes if p.valid_until is not None]
        ends += [p.preferred_until for p in prefixes if p.preferred_until is not None]
        future = [end - now for end in ends if now < end < math.inf]
        return min(future) + 0.5 if future else None

    def _apply_lease(self, now: float) -> None:
        held = self.lease.addresses if self.lease else ()
        addresses = [(a.address, a.preferred_until, a.valid_until) for a in held]
        try:
            self._wan_addresses.set(addresses, now)
        except Exception:
            log.exception("IPv6: setting the WAN's DHCPv6 addresses failed")
        if self.plan is not None and self.plan.update(self._delegated(), now):
            self._apply_lan(now)

    def _delegated(self) -> list:
        if self.wan6.mode == "static" and self.wan6.prefix is not None:
            return [StaticPrefix(self.wan6.prefix)]
        return list(self.lease.prefixes) if self.lease else []

    def _advertised(self) -> list:
        if self.plan is None or self.lan6.mode == "off":
            return []
        return self.plan.advertised(time.time())

    def _apply_lan(self, now: float) -> None:
        if self.lan6.mode == "off":
            return
        prefixes = self.plan.advertised(now)
        try:
            apply_lan_addresses(self.lan_if, prefixes, now)
        except Exception:
            log.exception("IPv6: setting the LAN addresses failed")
        if self.advertiser is not None:
            self.advertiser.changed()
        log.info("IPv6 LAN prefixes: %s", ", ".join(str(p.network) for p in prefixes) or "none")

    def _server_options(self):
        """What the LAN DHCPv6 server hands out now: DNS always; with
        stateful DHCPv6 an address from each preferred LAN /64, its lifetimes
        never beyond what is left of the prefix's."""
        from homegw.modules.ipv6.dhcp6.lanserver import ServerOptions

        dns = ServerOptions(tuple(self.dns_addresses()), (self.domain,))
        if self.lan6.dhcpv6 != "stateful":
            return dns
        now = time.time()
        preferred = [p for p in self._advertised() if not p.deprecated(now)]
        start, end = int(self.lan6.pool_start), int(self.lan6.pool_end)
        pools = tuple(
            (p.network.network_address + start, p.network.network_address + end) for p in preferred
        )

        def left(until: float | None, cap: int) -> int:
            return cap if until is None else int(min(cap, until - now))

        return replace(
            dns,
            pools=pools,
            preferred=min([left(p.preferred_until, dns.preferred) for p in preferred], default=0),
            valid=min([left(p.valid_until, dns.valid) for p in preferred], default=0),
        )

    def _inside(self, now: float) -> tuple[IPv6Network, ...]:
        """The delegated prefixes still valid and the ULA /48."""
        return tuple(self.plan.inside(now)) if self.plan is not None else ()

    def _refresh_facts(self, now: float) -> None:
        try:
            state = kernel6.kernel_state(self.wan_if, self.lan_if)
        except Exception:
            log.exception("IPv6: reading the kernel's addresses failed")
            return
        lan = tuple(
            p.network for p in self._advertised() if p.valid_until is None or p.valid_until > now
        )
        facts = build_facts(state, lan, self._inside(now))
        if facts == self.facts:
            return
        default_router_changed = (facts.wan_gateway is None) != (self.facts.wan_gateway is None)
        self.facts = facts
        if default_router_changed and self.advertiser is not None:
            self.advertiser.changed()  # router lifetime 0 <-> on
        log.info(
            "IPv6: LAN %s, WAN %s via %s",
            ", ".join(map(str, facts.lan_prefixes)) or "-",
            facts.wan_address or "-",
            facts.wan_gateway or "-",
        )
        self._on_facts(facts)
