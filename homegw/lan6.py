"""The LAN's IPv6 as the kernel sees it on the LAN NIC: the gateway's own
addresses there and the IPv6 neighbours by MAC, followed by netlink events
(RTM_NEWADDR/DELADDR, RTM_NEWNEIGH/DELNEIGH; one dump at the start, no
polling).

:class:`Lan6Table` is the pure part (every event takes `now`);
:class:`Lan6Watcher` feeds it from netlink in a supervised thread and calls
``on_change()`` after each change that matters to a reader.

What readers get:

- :meth:`Lan6Table.own_addresses`: the gateway's global and ULA addresses on
  the LAN NIC that are usable and preferred (not tentative, not deprecated):
  what ``homegw.lan`` answers with.
- :meth:`Lan6Table.device_addresses`: every non-link-local address seen for
  a MAC (privacy addresses included), newest first, at most
  :data:`MAX_PER_DEVICE`; kept after the kernel forgets the entry, so that
  addresses a phone rotated through stay listed (the inventory).
- :meth:`Lan6Table.name_addresses`: the addresses a device's local name
  answers AAAA with: one per preferred LAN prefix of the gateway (ULA and
  global), the device's EUI-64 address (made from its MAC: stable by
  construction) if it uses one, else the address of that prefix it used
  most recently, and only while the kernel holds a usable entry for it. A
  temporary (RFC 8981) address cannot be told from a stable one from outside
  the host; the most recently used one is what the device answers on now.

Devices whose MACs are many or hostile are bounded: at most
:data:`MAX_DEVICES` MACs are remembered (the stalest one forgotten first).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from homegw import supervise

log = logging.getLogger(__name__)

IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network

MAX_PER_DEVICE = 16  # addresses remembered per MAC
MAX_DEVICES = 4096  # MACs remembered
LINK_LOCAL = IPv6Network("fe80::/10")
ULA = IPv6Network("fc00::/7")
RTM_NEWADDR, RTM_DELADDR, RTM_NEWNEIGH, RTM_DELNEIGH = 20, 21, 28, 29
IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x08, 0x20, 0x40
NUD_INCOMPLETE, NUD_FAILED, NUD_NOARP = 0x01, 0x20, 0x40
USABLE_NUD = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT


@dataclass
class _Seen:
    last_seen: float
    usable: bool  # the kernel holds an entry for it that it can use


def eui64(mac: str, prefix: IPv6Network) -> IPv6Address:
    """The modified EUI-64 address (RFC 4291 appendix A) of mac in a /64."""
    octets = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    return IPv6Address(prefix.network_address.packed[:8] + iid)


def _lan_address(address: IPv6Address) -> bool:
    """Global or ULA unicast: not link-local, multicast, loopback or unspecified."""
    return not (
        address in LINK_LOCAL
        or address.is_multicast
        or address.is_loopback
        or address.is_unspecified
    )


class Lan6Table:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # writer: the netlink thread; readers: DNS, API
        self._own: dict[IPv6Address, tuple[int, bool]] = {}  # address -> (prefixlen, preferred)
        self._devices: OrderedDict[str, OrderedDict[IPv6Address, _Seen]] = OrderedDict()
        self._owner: dict[IPv6Address, str] = {}  # usable address -> its MAC

    # -- events --------------------------------------------------------------
    def address(self, address: IPv6Address, prefixlen: int, flags: int, present: bool) -> bool:
        """One of the gateway's addresses on the LAN NIC came, changed or went;
        whether what readers see changed."""
        if not _lan_address(address):
            return False
        usable = not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
        preferred = usable and not flags & IFA_F_DEPRECATED
        with self._lock:
            before = self._own.get(address)
            if present and usable:
                self._own[address] = (prefixlen, preferred)
            else:
                self._own.pop(address, None)
            return self._own.get(address) != before

    def neighbour(self, address: IPv6Address, mac: str | None, state: int, now: float) -> bool:
        """A neighbour entry on the LAN NIC changed (state 0: deleted); whether
        what readers see changed."""
        if not _lan_address(address):
            return False
        with self._lock:
            if mac is None:  # deleted, or unresolved: whoever had it no longer has it
                return self._unusable(address)
            mac = mac.lower()
            usable = bool(state & USABLE_NUD) and not state & (NUD_FAILED | NUD_INCOMPLETE)
            if usable:  # the address moved to this MAC: nobody else has it now
                self._unusable(address, mac)
                self._owner[address] = mac
            elif self._owner.get(address) == mac:
                del self._owner[address]
            seen = self._devices.setdefault(mac, OrderedDict())
            self._devices.move_to_end(mac)
            entry = seen.get(address)
            changed = entry is None or entry.usable != usable
            if usable or entry is None:
                seen[address] = _Seen(now, usable)
                seen.move_to_end(address)
            else:
                entry.usable = False
            while len(seen) > MAX_PER_DEVICE:
                seen.popitem(last=False)
            while len(self._devices) > MAX_DEVICES:
                gone, addresses = self._devices.popitem(last=False)
                for old in addresses:
                    if self._owner.get(old) == gone:
                        del self._owner[old]
            return changed

    def _unusable(self, address: IPv6Address, keep: str | None = None) -> bool:
        if self._owner.get(address) != keep:
            self._owner.pop(address, None)
        changed = False
        for mac, seen in self._devices.items():
            entry = seen.get(address) if mac != keep else None
            if entry is not None and entry.usable:
                entry.usable = False
                changed = True
        return changed

    # -- reading -------------------------------------------------------------
    def own_addresses(self) -> list[IPv6Address]:
        """The gateway's preferred LAN addresses, ULA before global."""
        with self._lock:
            own = [a for a, (_len, preferred) in self._own.items() if preferred]
        return sorted(own, key=lambda a: (a not in ULA, a))

    def preferred_prefixes(self) -> list[IPv6Network]:
        with self._lock:
            items = list(self._own.items())
        nets = {IPv6Network((a, n), strict=False) for a, (n, preferred) in items if preferred}
        return sorted(nets, key=lambda n: (not n.subnet_of(ULA), n))

    def mac_of(self, address: IPv6Address) -> str | None:
        """The MAC that holds address now (a usable neighbour entry), or None."""
        with self._lock:
            return self._owner.get(address)

    def device_addresses(self, mac: str) -> list[IPv6Address]:
        """Every non-link-local address seen for mac, newest first."""
        with self._lock:
            seen = self._devices.get(mac.lower(), {})
            return [a for a, _ in sorted(seen.items(), key=lambda kv: -kv[1].last_seen)]

    def all_devices(self) -> dict[str, list[IPv6Address]]:
        with self._lock:
            macs = list(self._devices)
        return {mac: self.device_addresses(mac) for mac in macs}

    def name_addresses(self, mac: str) -> list[IPv6Address]:
        """What the device's local name answers AAAA with (module docstring)."""
        prefixes = self.preferred_prefixes()
        with self._lock:
            seen = dict(self._devices.get(mac.lower(), {}))
        out = []
        for prefix in prefixes:
            usable = {a: s for a, s in seen.items() if s.usable and a in prefix}
            if not usable:
                continue
            stable = eui64(mac, prefix) if prefix.prefixlen == 64 else None
            if stable in usable:
                out.append(stable)
            else:
                out.append(max(usable, key=lambda a: usable[a].last_seen))
        return out


# -- netlink -------------------------------------------------------------------------
def _ifa_flags(msg) -> int:  # pyroute2 ifaddrmsg: IFA_FLAGS holds all 32 bits
    return msg.get_attr("IFA_FLAGS") or msg["flags"]


class Lan6Watcher(supervise.LoopThread):
    """Follows the LAN NIC's IPv6 addresses and neighbours into a Lan6Table."""

    def __init__(
        self,
        ifname: str,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.ifname = ifname
        self.table = Lan6Table()
        self.on_change = on_change
        self._clock = clock or time.time
        self._ifindex = 0
        super().__init__("lan6-netlink")

    def start(self) -> None:
        """Start following (the caller's network namespace); returns after the first dump."""
        self._ifindex = socket.if_nametoindex(self.ifname)
        super().start()

    async def serve(self) -> None:
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_NEIGH

        async with AsyncIPRoute() as events, AsyncIPRoute() as dump:
            await events.bind(groups=RTMGRP_NEIGH | RTMGRP_IPV6_IFADDR)
            async for msg in await dump.addr("dump", family=socket.AF_INET6):
                self._handle(msg, notify=False)
            async for msg in await dump.neigh("dump", family=socket.AF_INET6):
                self._handle(msg, notify=False)
            self.ready()
            self._notify()
            while True:
                async for msg in events.get():
                    self._handle(msg)

    def _handle(self, msg, notify: bool = True) -> None:
        try:
            changed = self._apply(msg)
        except (ValueError, KeyError, TypeError) as exc:  # an odd message: skip it
            log.debug("netlink message skipped: %s", exc)
            return
        if changed and notify:
            self._notify()

    def _apply(self, msg) -> bool:
        kind = msg["header"]["type"]
        if msg["family"] != socket.AF_INET6:
            return False
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            if msg["index"] != self._ifindex:
                return False
            address = IPv6Address(msg.get_attr("IFA_ADDRESS"))
            return self.table.address(
                address, msg["prefixlen"], _ifa_flags(msg), kind == RTM_NEWADDR
            )
        if kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
            if msg["ifindex"] != self._ifindex or not msg.get_attr("NDA_DST"):
                return False
            state = 0 if kind == RTM_DELNEIGH else msg["state"]
            mac = msg.get_attr("NDA_LLADDR") if state else None
            address = IPv6Address(msg.get_attr("NDA_DST"))
            return self.table.neighbour(address, mac, state, self._clock())
        return False

    def _notify(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            log.exception("IPv6 LAN change listener failed")
