"""The DPI IO module's control side: its datapath (dpi.bpf.c, first in the
LAN chain and last in the WAN chain) and the slow path that classifies,
attributes DNS answers, enforces the parental-control policies on time and
folds usage history (service.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from homegw import supervise
from homegw.config import Config
from homegw.control import Sample
from homegw.dataplane.loader import Define
from homegw.dataplane.module import IOModule, TableReader
from homegw.dataplane.slowpath import Punt, PuntHandler
from homegw.modules.dpi.maps import DpiMaps
from homegw.modules.dpi.service import DpiService

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
REASON_PAYLOAD = 1  # DPI_REASON_PAYLOAD in dpi.h


class DpiModule(IOModule):
    name = "dpi"
    module_id = 7  # DPI_MODULE_ID in dpi.h
    source = HERE / "dpi.bpf.c"
    xdp_function = "dpi_xdp"

    def __init__(
        self, config: Config, limits: dict[str, int] | None = None, slow_path: bool = True
    ) -> None:
        """limits: dpi.h's overridable bounds (DPI_MAX_FLOWS, DPI_SLOTS, a power
        of 2, DPI_PUNTS_PER_TICK) other than their defaults (the tests' small
        tables). Without slow_path only the datapath runs (datapath tests
        drive the maps themselves)."""
        self.config = config
        self.limits = dict(limits or {})
        self.slow_path = slow_path
        self.maps: DpiMaps | None = None
        self.service: DpiService | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._timer: supervise.Thread | None = None

    def defines(self) -> dict[str, Define]:
        lan = self.config.lan.address
        defines: dict[str, Define] = {
            "DPI_H": f'"{HERE / "dpi.h"}"',
            "DPI_LAN_ADDR": int(lan.ip),
            "DPI_LAN_NET": int(lan.network.network_address),
            "DPI_LAN_MASK": int(lan.network.netmask),
        }
        return defines | self.limits

    def compile_options_changed(self, config: Config) -> bool:
        return config.lan.address != self.config.lan.address

    def on_load(self, bpf) -> None:
        self.maps = DpiMaps(bpf)
        if not self.slow_path:
            return
        self.service = DpiService(
            self.config.dpi,
            self.config.state_dir,
            self.maps,
            on_policy_change=lambda: self.invalidate_fastpath("dpi policy changed"),
        )
        self.service.decide()  # the policies in force from the first packet
        self.service.refresh_sources()  # URL app sources, in the background
        self._timer = supervise.Thread(self._tick_loop, "dpi-timer", restart=True)
        self._timer.start()

    def handlers(self) -> dict[int, PuntHandler]:
        return {REASON_PAYLOAD: self._on_payload}

    def _on_payload(self, punt: Punt) -> None:
        if self.service is not None:
            self.service.on_payload(punt)

    def _tick_loop(self) -> None:
        """Usage folds, flow GC and policy changes: at the next change or
        every few seconds, and at once after a config change."""
        due = 0.0
        while not self._stop.is_set():
            self._wake.wait(due)
            self._wake.clear()
            if self._stop.is_set() or self.service is None:
                return
            due = self.service.tick()

    def apply(self, config: Config) -> bool:
        self.config = config
        if self.service is not None:
            self.service.apply(config.dpi)
            self._wake.set()
        return True

    def on_unload(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._timer is not None:
            self._timer.join(5)
        if self.service is not None:
            try:
                self.service.tick()  # the last fold
            except Exception:
                log.exception("dpi: the last usage fold failed")
            self.service.close()

    def tables(self) -> dict[str, TableReader]:
        service = self.service
        return {"dpi_flows": service.flow_rows} if service else {}

    def counters(self) -> dict[str, int]:
        return self.maps.counters() if self.maps else {}

    def gauges(self) -> dict[str, float]:
        return self.service.gauges() if self.service else {}

    def samples(self) -> Iterable[Sample]:
        return self.service.samples() if self.service else ()
