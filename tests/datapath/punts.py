"""Collect slow-path punts in datapath tests, in order, without sleeping:
the test thread is pinned to one CPU so every punt goes to that CPU's perf
ring, and a last marker punt (an unresolved next hop no test uses) tells
that all earlier ones have been read."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.slowpath import Punt
from homegw.modules.router.module import REASON_NEIGH_MISS, RouterModule
from tests.datapath.router_kit import ISP_MAC, WAN_MAC, run

MARKER_HOP = "192.168.1.254"
REMOTE = "198.51.100.80"


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


class PuntLog:
    """Every punt of the given (module, reason) pairs, and the marker's."""

    def __init__(self, dataplane: Dataplane, router: RouterModule, *kinds: tuple[int, int]) -> None:
        self.dataplane = dataplane
        self.router = router
        self.punts: list[Punt] = []
        self._marker = threading.Event()
        assert dataplane.slowpath is not None
        for module, reason in {*kinds, (RouterModule.module_id, REASON_NEIGH_MISS)}:
            dataplane.slowpath.register(module, reason, self._on_punt)
        dataplane.slowpath.start()

    def _on_punt(self, punt: Punt) -> None:
        if punt.module == RouterModule.module_id and punt.meta[0] == _be32(MARKER_HOP):
            self._marker.set()
        else:
            self.punts.append(punt)

    def drain(self) -> list[Punt]:
        """All punts so far (call within one_cpu(), as the runs were)."""
        frame = bytes(Ether(src=ISP_MAC, dst=WAN_MAC) / IP(src=REMOTE, dst=MARKER_HOP) / UDP())
        self._marker.clear()
        run(self.dataplane, Nic.WAN, frame)
        assert self._marker.wait(10), "the marker punt never arrived"
        assert self.router.maps is not None
        self.router.maps.del_neighbour(ipaddress.IPv4Address(MARKER_HOP))  # for the next drain
        return self.punts


def _be32(address: str) -> int:
    return int.from_bytes(bytes(map(int, address.split("."))), "little")
