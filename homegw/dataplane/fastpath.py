"""The flow fast path's userspace side (include/homegw_fastpath.h): its
counters, its flows, and the epoch that retires every entry at once.

The roots forward a known flow's packets without the chain; the chain's end
teaches them the flow (fastpath.bpf.c). Whatever changes what the chain
would decide (a config change, a chain re-ordered or a module replaced)
calls invalidate(): the next packet of every flow goes through the chain
again. Entries also retire on their own after HOMEGW_FLOW_LIFETIME_NS, so
every flow passes the chain at least once a second."""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger(__name__)

# HOMEGW_FP_* of homegw_fastpath.h, in index order
COUNTERS = ("lan_to_wan", "wan_to_lan", "learnt", "learn_refused", "stale")
LIFETIME_S = 1.0  # HOMEGW_FLOW_LIFETIME_NS
EPOCH_MAX = 2**32 - 1


class FastPath:
    def __init__(self, root) -> None:  # a root's build: the maps are the roots' own
        self._epoch = root["homegw_flow_epoch"]
        self._stats = root["homegw_fastpath_stats"]
        self._lock = threading.Lock()  # one read-modify-write of the epoch at a time

    def epoch(self) -> int:
        return int(self._epoch[ctypes.c_uint32(0)].value)

    def invalidate(self, why: str) -> None:
        """Retire every entry: their flows' next packets take the chain."""
        with self._lock:
            epoch = self.epoch() % EPOCH_MAX + 1
            self._epoch[ctypes.c_uint32(0)] = ctypes.c_uint32(epoch)
        log.debug("fast path: epoch %d (%s)", epoch, why)

    def counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) of each HOMEGW_FP_* counter, summed over CPUs."""
        out = {}
        for index, name in enumerate(COUNTERS):
            per_cpu = self._stats.getvalue(ctypes.c_uint32(index))
            out[name] = (sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu))
        return out
