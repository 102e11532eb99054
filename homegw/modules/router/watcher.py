"""Follow the kernel's neighbour (ARP and NDP) and link events (pyroute2,
asyncio thread), and ask the kernel to resolve a next hop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK, RTMGRP_NEIGH

from homegw import supervise
from homegw.modules.router.neigh import CONFIRMED, USABLE, IPAddress

log = logging.getLogger(__name__)

RTM_NEWLINK, RTM_NEWNEIGH, RTM_DELNEIGH = 16, 28, 29
IFF_LOWER_UP = 0x10000
NTF_USE = 0x01
AF_INET, AF_INET6 = 2, 10
FAMILIES = (AF_INET, AF_INET6)


@dataclass(frozen=True)
class NeighEvent:
    ip: IPAddress
    ifindex: int
    mac: str | None
    state: int  # NUD_* bits; 0 when deleted


@dataclass(frozen=True)
class LinkEvent:
    ifindex: int
    carrier: bool
    mtu: int


def _neigh_event(msg) -> NeighEvent | None:  # pyroute2 message
    if msg["family"] not in FAMILIES or not msg.get_attr("NDA_DST"):
        return None
    ip = ipaddress.ip_address(msg.get_attr("NDA_DST"))
    if ip.is_multicast:  # the kernel's NOARP entries of its groups: never a next hop
        return None
    deleted = msg["header"]["type"] == RTM_DELNEIGH
    return NeighEvent(
        ip,
        msg["ifindex"],
        msg.get_attr("NDA_LLADDR"),
        0 if deleted else msg["state"],
    )


def _link_event(msg) -> LinkEvent:
    return LinkEvent(msg["index"], bool(msg["flags"] & IFF_LOWER_UP), msg.get_attr("IFLA_MTU"))


class KernelWatcher:
    def __init__(
        self, on_neigh: Callable[[NeighEvent], None], on_link: Callable[[LinkEvent], None]
    ) -> None:
        self._on_neigh = on_neigh
        self._on_link = on_link
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self._thread = supervise.Thread(self._run, "router-netlink")

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("netlink watcher did not start")

    def stop(self) -> None:
        if self._loop and self._task:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)

    def resolve(self, ip: IPAddress, ifindex: int) -> None:
        """Have the kernel resolve ip on ifindex; the answer arrives as a
        neighbour event. A kernel entry that is usable already is reported as
        it is and left alone (asking again would reset even a permanent one)."""
        self._ask(ip, ifindex, USABLE)

    def confirm(self, ip: IPAddress, ifindex: int) -> None:
        """Have the kernel re-confirm a next hop in use: an entry it confirmed
        lately (REACHABLE, PERMANENT, NOARP) is reported as it is; any other
        is sent through the kernel's state machine (STALE -> DELAY -> PROBE:
        a unicast ARP), whose outcome arrives as neighbour events."""
        self._ask(ip, ifindex, CONFIRMED)

    def _ask(self, ip: IPAddress, ifindex: int, good_enough: int) -> None:
        if self._loop:
            asyncio.run_coroutine_threadsafe(self._resolve(ip, ifindex, good_enough), self._loop)

    async def _resolve(self, ip: IPAddress, ifindex: int, good_enough: int) -> None:
        try:
            async with AsyncIPRoute() as ipr:
                family = AF_INET if ip.version == 4 else AF_INET6
                async for msg in await ipr.neigh("dump", family=family, ifindex=ifindex):
                    event = _neigh_event(msg)
                    if event and event.ip == ip and event.mac and event.state & good_enough:
                        self._deliver(self._on_neigh, event)
                        return
                # as `ip neigh replace IP dev X use nud none`: resolve like a packet would
                await ipr.neigh(
                    "replace", dst=str(ip), ifindex=ifindex, family=family, state=0, flags=NTF_USE
                )
        except Exception:
            log.exception("resolving %s on ifindex %d failed", ip, ifindex)

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        supervise.watch_loop(self._loop, "router-netlink")
        self._task = asyncio.current_task()
        async with AsyncIPRoute() as events, AsyncIPRoute() as dump:
            await events.bind(groups=RTMGRP_NEIGH | RTMGRP_LINK)
            for family in FAMILIES:
                async for msg in await dump.neigh("dump", family=family):
                    if event := _neigh_event(msg):
                        self._deliver(self._on_neigh, event)
            self._started.set()
            while True:
                async for msg in events.get():
                    self._dispatch(msg)

    def _dispatch(self, msg) -> None:
        kind = msg["header"]["type"]
        if kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
            if event := _neigh_event(msg):
                self._deliver(self._on_neigh, event)
        elif kind == RTM_NEWLINK:
            self._deliver(self._on_link, _link_event(msg))

    @staticmethod
    def _deliver(callback: Callable, event: object) -> None:
        try:
            callback(event)
        except Exception:
            log.exception("handling %s failed", event)
