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

    def __init__(
        self, config: Config, max_flows: int | None = None, slots: int | None = None
    ) -> None:
        """max_flows, slots: the sizes of dpi_flows and dpi_flow_slots
        (dpi.h's DPI_MAX_FLOWS and DPI_SLOTS by default; slots a power of 2)."""
        self.config = config
        self.max_flows = max_flows
        self.slots = slots
        self.maps: DpiMaps | None = None

    def defines(self) -> dict[str, Define]:
        lan = self.config.lan
        defines: dict[str, Define] = {
            "DPI_H": f'"{HERE / "dpi.h"}"',
            "DPI_LAN_ADDR": int(lan.ip),
            "DPI_LAN_NET": int(lan.network.network_address),
            "DPI_LAN_MASK": int(lan.network.netmask),
        }
        if self.max_flows is not None:
            defines["DPI_MAX_FLOWS"] = self.max_flows
        if self.slots is not None:
            defines["DPI_SLOTS"] = self.slots
        return defines

    def on_load(self, bpf) -> None:
        self.maps = DpiMaps(bpf)

    def counters(self) -> dict[str, int]:
        return self.maps.counters() if self.maps is not None else {}
