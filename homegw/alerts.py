"""What needs the owner's eye now (the Overview page's alerts).

Pure logic over a :class:`Snapshot` of the appliance, taking ``now``
(:meth:`AlertWatch.evaluate`); :func:`snapshot_of` reads the snapshot from the
running appliance. Codes:

- ``wan_down`` (critical): the WAN link is down, or the WAN is in DHCP mode
  and holds no lease.
- ``pool_nearly_full`` (warning; critical when full): at least
  POOL_NEARLY_FULL of the DHCP range is leased or reserved.
- ``flood_drops`` (warning): the flood-drop counters (FLOOD_COUNTERS: the
  firewall's drops, the NAT's inbound budget and caps, the DHCP guard's
  drops) rose by more than FLOOD_DROPS_PER_MINUTE in the last minute.
- ``module_failed`` (critical): a module the config enables is not loaded,
  or a supervised thread died for good.

Drop rates are measured between calls (each evaluation keeps its counters
with their time; the baseline is the newest sample at least a minute old, or
the oldest kept), not by a sampling thread: alerts are only read when someone
looks, and on a 2-core gateway a thread waking up every few seconds to feed a
page nobody opens is not worth it. The cost: the first look after a start
has no baseline (no flood alert yet), and when looks are more than a minute
apart the rise is averaged over the time between them.

``since`` is the time of the first look that found a condition; None when
it was there at the very first look (it began before anyone looked), except
for a dead thread, whose time is known.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute

if TYPE_CHECKING:
    from homegw.appliance import Appliance

log = logging.getLogger(__name__)

POOL_NEARLY_FULL = 0.9
FLOOD_DROPS_PER_MINUTE = 6000  # 100 a second: far above the WAN's background scans
WINDOW_S = 60.0
FLOOD_COUNTERS: dict[str, tuple[str, ...]] = {
    "firewall": (
        "malformed",
        "wan_to_lan",
        "wan_transit",
        "wan_spoofed_lan_source",
        "wan_spoofed_own_address",
        "wan_martian_source",
        "wan_ping_dropped",
        "lan_spoofed_source",
        "v6_malformed",
        "v6_wan_martian_source",
        "v6_wan_spoofed_own_address",
        "v6_wan_spoofed_lan_source",
        "v6_wan_transit",
        "v6_fragment_unadmitted",
        "v6_icmp_error_unmatched",
        "v6_ping_rate_limited",
        "v6_unsolicited",
        "v6_lan_spoofed_source",
        "v6_sessions_full",
    ),
    "nat": ("inbound_budget_full", "inbound_remote_cap", "inbound_port_cap", "inbound_table_full"),
    "dhcp": ("dropped_ipv4", "dropped_arp", "dropped_gateway_mac", "dropped_dhcp_server"),
}
_LINK_DOWN_STATES = {"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"}
Alert = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What the alerts are computed from, read at one moment."""

    wan_interface: str
    wan_mode: str  # "dhcp" | "static"
    wan_lease: bool  # a DHCP lease is held (ignored in static mode)
    wan_link_up: bool | None  # None: not known
    pool_size: int = 0  # addresses in the DHCP range; 0: no DHCP server
    pool_used: int = 0  # of them leased or reserved
    drops: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> reason -> count
    missing_modules: tuple[str, ...] = ()  # enabled by the config, not loaded


@dataclass
class _Sample:
    time: float
    drops: dict[str, int]  # module -> sum of its flood counters


def flood_totals(drops: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per module, the sum of its FLOOD_COUNTERS in `drops`."""
    return {
        module: sum(counters.get(reason, 0) for reason in FLOOD_COUNTERS[module])
        for module, counters in drops.items()
        if module in FLOOD_COUNTERS
    }


class AlertWatch:
    """Keeps what alerts need between looks: drop samples, since-times and
    the supervised threads that died (:meth:`thread_died`)."""

    def __init__(self, threshold: int = FLOOD_DROPS_PER_MINUTE, window: float = WINDOW_S) -> None:
        self.threshold = threshold
        self.window = window
        self._samples: deque[_Sample] = deque()
        self._since: dict[str, float | None] = {}
        self._looks = 0
        self._dead: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def thread_died(self, reason: str, now: float | None = None) -> None:
        """A supervise.on_fatal listener."""
        with self._lock:
            self._dead.append((reason, time.time() if now is None else now))

    def evaluate(self, snap: Snapshot, now: float) -> list[Alert]:
        with self._lock:
            self._looks += 1
            found = [
                *self._wan(snap),
                *self._pool(snap),
                *self._flood(snap, now),
                *self._modules(snap),
            ]
            active = {key for key, _ in found}
            self._since = {k: v for k, v in self._since.items() if k in active}
            out = []
            for key, alert in found:
                if "since" not in alert:
                    alert["since"] = self._since.setdefault(key, None if self._looks == 1 else now)
                out.append(alert)
            return out

    # -- the codes -------------------------------------------------------------
    @staticmethod
    def _wan(snap: Snapshot) -> list[tuple[str, Alert]]:
        if snap.wan_link_up is False:
            message = f"the WAN link {snap.wan_interface} is down: is the cable plugged in?"
        elif snap.wan_mode == "dhcp" and not snap.wan_lease:
            message = f"no address from the ISP: no DHCP lease on {snap.wan_interface}"
        else:
            return []
        return [("wan_down", _alert("wan_down", "critical", message))]

    @staticmethod
    def _pool(snap: Snapshot) -> list[tuple[str, Alert]]:
        if snap.pool_size <= 0 or snap.pool_used < POOL_NEARLY_FULL * snap.pool_size:
            return []
        full = snap.pool_used >= snap.pool_size
        message = (
            f"{snap.pool_used} of the {snap.pool_size} addresses of the DHCP range are "
            "leased or reserved" + (": new devices get no address" if full else "")
        )
        severity = "critical" if full else "warning"
        return [("pool_nearly_full", _alert("pool_nearly_full", severity, message))]

    def _flood(self, snap: Snapshot, now: float) -> list[tuple[str, Alert]]:
        totals = flood_totals(snap.drops)
        self._samples.append(_Sample(now, totals))
        while len(self._samples) > 2 and self._samples[1].time <= now - self.window:
            self._samples.popleft()
        base = self._samples[0]
        elapsed = now - base.time
        if len(self._samples) < 2 or elapsed <= 0:
            return []
        scale = min(1.0, self.window / elapsed)  # looks further apart: the average rate
        rises = {}
        for module, value in totals.items():
            if module not in base.drops:  # newly loaded (or unread then): no baseline yet
                continue
            before = base.drops[module]
            rise = value - before if value >= before else value  # a reload restarts at 0
            if rise > 0:
                rises[module] = round(rise * scale)
        if sum(rises.values()) <= self.threshold:
            return []
        detail = ", ".join(f"{module} {count}" for module, count in sorted(rises.items()))
        message = f"{sum(rises.values())} packets dropped as a flood in the last minute ({detail})"
        return [("flood_drops", _alert("flood_drops", "warning", message))]

    def _modules(self, snap: Snapshot) -> list[tuple[str, Alert]]:
        out = [
            (
                f"module_failed:{name}",
                _alert(
                    "module_failed",
                    "critical",
                    f"module {name} is enabled but not loaded (see the logs)",
                ),
            )
            for name in snap.missing_modules
        ]
        for reason, died in self._dead:
            alert = _alert("module_failed", "critical", reason)
            alert["since"] = died
            out.append((f"module_failed:{reason}", alert))
        return out


def _alert(code: str, severity: str, message: str) -> Alert:
    return {"code": code, "severity": severity, "message": message}


# -- reading the snapshot from the running appliance ---------------------------------


def link_up(ifname: str) -> bool | None:
    """Whether ifname is administratively up with a carrier (None: unknown)."""
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return False
            link = ipr.get_links(found[0])[0]
    except Exception:  # netlink refused or the link went meanwhile: unknown, never a crash
        log.debug("cannot read the state of %s", ifname, exc_info=True)
        return None
    if not link["flags"] & 1:  # IFF_UP
        return False
    return link.get_attr("IFLA_OPERSTATE") not in _LINK_DOWN_STATES


def _pool(app: Appliance) -> tuple[int, int]:
    dhcp = app.dhcp
    if dhcp is None:
        return 0, 0
    low, high = int(dhcp.settings.range_start), int(dhcp.settings.range_end)
    used = {lease.address for lease in dhcp.leases()}
    used |= {int(r.address) for r in app.config.dhcp.reservations}
    return high - low + 1, sum(1 for a in used if low <= a <= high)


def snapshot_of(app: Appliance) -> Snapshot:
    cfg = app.config
    dataplane = app.dataplane
    loaded = dict(dataplane.modules) if dataplane else {}
    drops = {}
    for name in FLOOD_COUNTERS.keys() & loaded.keys():
        try:
            drops[name] = loaded[name].module.counters()
        except Exception:  # replaced meanwhile (its maps closed): left out of this look
            log.debug("counters of %s unreadable", name, exc_info=True)
    missing = tuple(app.missing_modules()) if dataplane else ()
    size, used = _pool(app)
    return Snapshot(
        wan_interface=cfg.wan.interface,
        wan_mode=cfg.wan.mode,
        wan_lease=bool(app.wan_client and app.wan_client.lease),
        wan_link_up=link_up(cfg.wan.interface),
        pool_size=size,
        pool_used=used,
        drops=drops,
        missing_modules=missing,
    )
