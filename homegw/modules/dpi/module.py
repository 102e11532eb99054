"""The DPI IO module ("dpi", id 7): a minimal stub loading dpi.bpf.c (the
lead extends it with the slow path, the DNS hooks and the policy)."""

from __future__ import annotations

from pathlib import Path

from homegw.config import Config
from homegw.dataplane.loader import Define
from homegw.dataplane.module import IOModule
from homegw.modules.dpi.maps import DpiMaps

HERE = Path(__file__).parent


class DpiModule(IOModule):
    name = "dpi"
    module_id = 7  # DPI_MODULE_ID in dpi.h
    source = HERE / "dpi.bpf.c"
    xdp_function = "dpi_xdp"

    def __init__(self, config: Config, limits: dict[str, int] | None = None) -> None:
        """limits: dpi.h's overridable bounds (DPI_MAX_FLOWS, DPI_SLOTS, a power
        of 2, DPI_PUNTS_PER_TICK) other than their defaults (the tests' small tables)."""
        self.config = config
        self.limits = dict(limits or {})
        self.maps: DpiMaps | None = None

    def defines(self) -> dict[str, Define]:
        lan = self.config.lan
        defines: dict[str, Define] = {
            "DPI_H": f'"{HERE / "dpi.h"}"',
            "DPI_LAN_ADDR": int(lan.ip),
            "DPI_LAN_NET": int(lan.network.network_address),
            "DPI_LAN_MASK": int(lan.network.netmask),
        }
        return defines | self.limits

    def on_load(self, bpf) -> None:
        self.maps = DpiMaps(bpf)

    def counters(self) -> dict[str, int]:
        return self.maps.counters() if self.maps is not None else {}
