"""A user module as an IO module of the dataplane: one program on one hook
of one NIC, its punts to the module's subscribers, its counters and exposed
maps by name. Built like a built-in module (a build child, pinned, reused by
a restart), but from an uploaded source with the SDK header and limits."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homegw.dataplane.builds import BuildLimits
from homegw.dataplane.loader import Define
from homegw.dataplane.module import IOModule
from homegw.dataplane.slowpath import Punt
from homegw.dataplane.table import PER_CPU, Table
from homegw.usermodules.store import ModuleRecord

log = logging.getLogger(__name__)

COUNTERS_MAP = "hgw_counters"
PUNT_BUDGET_MAP = "hgw_punt_budget"  # the SDK's punt rate limit (homegw_user.h)
SDK_MAPS = frozenset({COUNTERS_MAP, PUNT_BUDGET_MAP})
# a module compiles in ~1 s within 500 MiB of address space here
COMPILE_LIMITS = BuildLimits(timeout_s=60, memory_bytes=1 << 30)


class UserModule(IOModule):
    def __init__(
        self, record: ModuleRecord, source: Path, on_punt: Callable[[str, Punt], None]
    ) -> None:
        self.record = record
        self.name = record.name  # type: ignore[misc]
        self.module_id = record.module_id  # type: ignore[misc]
        self.source = source  # type: ignore[misc]
        self.xdp_function = record.function if record.hook == "xdp" else None  # type: ignore[misc]
        self.tc_function = record.function if record.hook == "tc" else None  # type: ignore[misc]
        self.sdk = True
        self.build_limits = COMPILE_LIMITS  # type: ignore[misc]
        self._on_punt = on_punt
        self._bpf: Any = None

    def defines(self) -> dict[str, Define]:
        return dict(self.record.defines)

    def on_load(self, bpf) -> None:
        self._bpf = bpf

    def on_unload(self) -> None:
        self._bpf = None

    def all_punts(self) -> Callable[[Punt], None]:
        return lambda punt: self._on_punt(self.name, punt)

    # -- counters and maps -------------------------------------------------------
    def counters(self) -> dict[str, int]:
        if self._bpf is None:
            return {}
        table = self._bpf[COUNTERS_MAP]
        out = {}
        for index, value in table.items():
            total = sum(int(v) for v in value)
            name = _counter_name(self.record.counters, int(index.value))
            if total or name in self.record.counters:
                out[name] = total
        limited = sum(b.limited for b in self._bpf[PUNT_BUDGET_MAP].getvalue(0))
        if limited:
            out["punts_limited"] = limited
        return out

    def table(self, name: str) -> Table:
        if self._bpf is None:
            raise KeyError(name)
        return self._bpf[name]


def _counter_name(names: tuple[str, ...], index: int) -> str:
    return names[index] if index < len(names) else f"counter_{index}"


# -- exposed maps as hex -------------------------------------------------------------
def raw_type(size: int) -> type[ctypes.Array]:
    return ctypes.c_ubyte * size


def map_rows(table: Table) -> list[dict[str, Any]]:
    """Every entry as {key, value} hex of its bytes; a per-CPU map's
    value is the sum when it is an integer (1, 2, 4, 8 bytes), and
    ``values`` holds each CPU's."""
    rows = []
    for key, value in table.items():
        row: dict[str, Any] = {"key": bytes(key).hex()}
        if table.map_type in PER_CPU:
            size = table.value_size
            per_cpu = [bytes(v)[:size] for v in value]
            row["values"] = [v.hex() for v in per_cpu]
            if size in (1, 2, 4, 8):
                total = sum(int.from_bytes(v, "little") for v in per_cpu) % (1 << (8 * size))
                row["value"] = total.to_bytes(size, "little").hex()
        else:
            row["value"] = bytes(value)[: table.value_size].hex()
        rows.append(row)
    return rows


def write_entry(table: Table, key: bytes, value: bytes) -> None:
    """One entry from raw bytes (a per-CPU map: the same value on every CPU)."""
    if len(key) != table.key_size:
        raise ValueError(f"key: {len(key)} bytes, the map's keys have {table.key_size}")
    if len(value) != table.value_size:
        raise ValueError(f"value: {len(value)} bytes, the map's values have {table.value_size}")
    raw_key = raw_type(len(key)).from_buffer_copy(key)
    if table.map_type in PER_CPU:
        cpus = table.total_cpu  # type: ignore[attr-defined]
        table[raw_key] = raw_type(len(value) * cpus).from_buffer_copy(value * cpus)
    else:
        table[raw_key] = raw_type(len(value)).from_buffer_copy(value)


def delete_entry(table: Table, key: bytes) -> bool:
    if len(key) != table.key_size:
        raise ValueError(f"key: {len(key)} bytes, the map's keys have {table.key_size}")
    try:
        del table[raw_type(len(key)).from_buffer_copy(key)]
    except KeyError:
        return False
    return True
