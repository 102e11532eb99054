"""The DPI module's maps as Python sees them: ctypes mirrors of dpi.h's
structs and the one adapter that reads and writes them (the only code of the
module touching bcc's tables). Callers get plain dataclasses."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from homegw.dataplane import libbpf
from homegw.dataplane.cenum import counter_names
from homegw.dataplane.devices import mac_key, mac_of
from homegw.dataplane.pinned import possible_cpus

log = logging.getLogger(__name__)

COUNTERS = counter_names(Path(__file__).parent / "dpi.bpf.c", "dpi_counter")
# DPI_SOURCE_* in dpi.h, by number
SOURCES = ("none", "dns", "sni", "host", "quic", "signature", "port", "unknown")
STATES = ("new", "classifying", "done")  # DPI_STATE_*
KINDS = {"app": 1, "category": 2, "all": 3, "hold": 4}  # DPI_POLICY_*
ACTIONS = {"allow": 1, "block": 2, "hold": 3}  # DPI_ACTION_*
VERDICT_BLOCK = 1  # DPI_VERDICT_BLOCK
FLOW_FIN = 1  # DPI_FLOW_FIN
TICK_SHIFT = 30  # HOMEGW_NEIGH_TICK_SHIFT
WAYS = 4  # DPI_WAYS in dpi.h (fewer when DPI_SLOTS is smaller)
GENERATION_MAX = 2**32 - 1
BATCH = 1024  # entries per BPF_MAP_LOOKUP_BATCH of dpi_flows
# bpf_ktime_get_coarse_ns()'s clock (Linux's id; Python's time module does not name it)
CLOCK_MONOTONIC_COARSE = 6


class CFlowKey(ctypes.Structure):
    _fields_ = [
        ("lan_addr", ctypes.c_uint32),
        ("remote_addr", ctypes.c_uint32),
        ("lan_port", ctypes.c_uint16),
        ("remote_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class CFlow(ctypes.Structure):
    _fields_ = [
        ("mac", ctypes.c_uint64),
        ("up_bytes", ctypes.c_uint64),
        ("down_bytes", ctypes.c_uint64),
        ("up_packets", ctypes.c_uint32),
        ("down_packets", ctypes.c_uint32),
        ("first_tick", ctypes.c_uint32),
        ("last_tick", ctypes.c_uint32),
        ("policy_gen", ctypes.c_uint32),
        ("app", ctypes.c_uint16),
        ("category", ctypes.c_uint8),
        ("source", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("punted", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
    ]


class CClass(ctypes.Structure):
    _fields_ = [("app", ctypes.c_uint16), ("category", ctypes.c_uint8), ("source", ctypes.c_uint8)]


class CDnsEntry(ctypes.Structure):
    _fields_ = [
        ("app", ctypes.c_uint16),
        ("category", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("expires_tick", ctypes.c_uint32),
    ]


class CPolicyKey(ctypes.Structure):
    _fields_ = [
        ("mac", ctypes.c_uint64),
        ("id", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 5),
    ]


class CSlot(ctypes.Structure):
    _fields_ = [("key", CFlowKey), ("flow", CFlow)]


class CMeter(ctypes.Structure):
    """struct homegw_flow_meter (homegw.h): the fast path's counts of the
    slot's flow, by the NIC they arrived on (0 LAN: up, 1 WAN: down)."""

    _fields_ = [
        ("bytes", ctypes.c_uint64 * 2),
        ("packets", ctypes.c_uint32 * 2),
        ("last_tick", ctypes.c_uint32),
        ("claim", ctypes.c_uint32),
    ]


def slots_of(flow: CFlowKey | Sequence[Any], slots: int) -> list[int]:
    """The slots of dpi_flow_slots where a flow's copies may be (dpi.h: the
    slots of its two buckets, dpi_hash and dpi_slot_at)."""
    key = flow if isinstance(flow, CFlowKey) else _ckey(flow)
    m = 0xFFFFFFFF
    ports = key.lan_port | (key.remote_port << 16)
    h = (key.lan_addr * 0x9E3779B1) ^ (key.remote_addr * 0x85EBCA77) ^ (ports * 0xC2B2AE3D)
    h = (h ^ key.proto) & m
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & m
    h ^= h >> 12
    ways = min(WAYS, slots)
    buckets = slots // ways
    firsts = dict.fromkeys(((h & 0xFFFF) % buckets * ways, (h >> 16) % buckets * ways))
    return [first + way for first in firsts for way in range(ways)]


class FlowKey(NamedTuple):
    """A flow from the LAN host's side (the classifier's FlowKey has the same fields)."""

    lan_addr: str
    remote_addr: str
    lan_port: int
    remote_port: int
    proto: int


@dataclass(frozen=True)
class FlowRow:
    """One flow, its per-CPU copies summed (classification: the copy with the
    most trusted source; state and verdict: the furthest any copy got)."""

    key: FlowKey
    mac: str | None  # the LAN device; None when no copy learnt it
    app: int
    category: int
    source: str  # SOURCES
    state: str  # STATES
    verdict: str  # "pass" | "block"
    up_bytes: int
    down_bytes: int
    up_packets: int
    down_packets: int
    first_tick: int  # TICK_SHIFT ticks of CLOCK_MONOTONIC; 0: unknown
    last_tick: int
    fin: bool
    punted: int

    @property
    def packets(self) -> int:
        return self.up_packets + self.down_packets

    @property
    def key_bytes(self) -> bytes:
        """The C key's bytes: a stable, compact id of the flow."""
        return bytes(_ckey(self.key))


def _be32(address: str) -> int:
    return int.from_bytes(socket.inet_aton(address), "little")


def _addr(value: int) -> str:
    return str(ipaddress.IPv4Address(value.to_bytes(4, "little")))


def _be16(port: int) -> int:
    return socket.htons(port)


def _ckey(key: Sequence[Any]) -> CFlowKey:
    lan_addr, remote_addr, lan_port, remote_port, proto = key
    return CFlowKey(
        _be32(str(lan_addr)), _be32(str(remote_addr)), _be16(lan_port), _be16(remote_port), proto
    )


def _flow_key(ckey: CFlowKey) -> FlowKey:
    return FlowKey(
        _addr(ckey.lan_addr),
        _addr(ckey.remote_addr),
        socket.ntohs(ckey.lan_port),
        socket.ntohs(ckey.remote_port),
        ckey.proto,
    )


def _source_number(source: int | str) -> int:
    return source if isinstance(source, int) else SOURCES.index(source)


def _trust(copy: CFlow) -> int:
    """Lower is better: a classified copy's source, then unknown, then none."""
    return copy.source if copy.source else len(SOURCES)


def merge_copies(ckey: CFlowKey, copies: Sequence[CFlow]) -> FlowRow | None:
    """The flow of one key from its per-CPU copies; None if no copy saw a packet."""
    live = [c for c in copies if c.up_packets or c.down_packets]
    if not live:
        return None
    best = min(live, key=_trust)
    macs = [c.mac for c in live if c.mac]
    firsts = [c.first_tick for c in live if c.first_tick]
    return FlowRow(
        key=_flow_key(ckey),
        mac=mac_of(macs[0]) if macs else None,
        app=best.app,
        category=best.category,
        source=SOURCES[best.source] if best.source < len(SOURCES) else "unknown",
        state=STATES[min(max(c.state for c in live), len(STATES) - 1)],
        verdict="block" if any(c.verdict == VERDICT_BLOCK for c in live) else "pass",
        up_bytes=sum(c.up_bytes for c in live),
        down_bytes=sum(c.down_bytes for c in live),
        up_packets=sum(c.up_packets for c in live),
        down_packets=sum(c.down_packets for c in live),
        first_tick=min(firsts, default=0),
        last_tick=max(c.last_tick for c in live),
        fin=any(c.flags & FLOW_FIN for c in live),
        punted=sum(c.punted for c in live),
    )


def with_meter(flow: CFlow, meter: CMeter) -> CFlow:
    """A slot's copy with the fast path's counts added (packets wrap at
    2**32 as the copy's own do)."""
    if meter.claim and (meter.packets[0] or meter.packets[1]):
        flow.up_bytes += meter.bytes[0]
        flow.down_bytes += meter.bytes[1]
        flow.up_packets = (flow.up_packets + meter.packets[0]) & 0xFFFFFFFF
        flow.down_packets = (flow.down_packets + meter.packets[1]) & 0xFFFFFFFF
        flow.last_tick = max(flow.last_tick, meter.last_tick)
    return flow


def _policy_key(mac: str, kind: int | str, ident: int | str | None) -> CPolicyKey:
    kind_number = kind if isinstance(kind, int) else KINDS[kind]
    return CPolicyKey(mac_key(mac), int(ident or 0), kind_number)


class DpiMaps:
    """All bcc access of the DPI module goes through here."""

    def __init__(self, bpf) -> None:  # an adopted build or a bcc.BPF
        self._flows = bpf["dpi_flows"]
        self._slots = bpf["dpi_flow_slots"]
        self._meters = bpf["homegw_flow_meters"]  # a slot's: at its index in its CPU's range
        self._classified = bpf["dpi_classified"]
        self._dns = bpf["dpi_dns"]
        self._policy = bpf["dpi_policy"]
        self._policy_gen = bpf["dpi_policy_gen"]
        self._stats = bpf["dpi_stats"]
        self._source_stats = bpf["dpi_source_stats"]
        self._cpus = possible_cpus()

    # -- flows -----------------------------------------------------------------------
    def flows(self) -> list[FlowRow]:
        """Every flow, its copies from the slots and the hash map, read in
        batches (a few system calls, not one per flow)."""
        copies: dict[bytes, tuple[CFlowKey, list[CFlow]]] = {}
        for ckey, flow in self._slot_copies():
            copies.setdefault(bytes(ckey), (ckey, []))[1].append(flow)
        for ckey, flow in self._hashed_copies():
            copies.setdefault(bytes(ckey), (ckey, []))[1].append(flow)
        rows = (merge_copies(ckey, flows) for ckey, flows in copies.values())
        return [row for row in rows if row is not None]

    def _batches(
        self, table, key_type: type, value_type: type, per_cpu: bool = True
    ) -> Iterable[tuple[Any, bytes]]:
        """(key, raw value: per CPU unless told) of every entry, BATCH at a time."""
        value_size = ((ctypes.sizeof(value_type) + 7) & ~7) * (self._cpus if per_cpu else 1)
        keys = (key_type * BATCH)()
        values = (ctypes.c_ubyte * (value_size * BATCH))()
        token_in, token_out = None, (ctypes.c_uint8 * max(8, ctypes.sizeof(key_type)))()
        more = True
        while more:
            count = ctypes.c_uint32(BATCH)
            more = libbpf.lookup_batch(table.map_fd, token_in, token_out, keys, values, count)
            raw = bytes(values)
            for i in range(count.value):
                yield keys[i], raw[i * value_size : (i + 1) * value_size]
            token_in, token_out = token_out, type(token_out)()

    def _per_cpu(self, raw: bytes, value_type: type) -> list[Any]:
        stride = (ctypes.sizeof(value_type) + 7) & ~7
        return [value_type.from_buffer_copy(raw, cpu * stride) for cpu in range(self._cpus)]

    def _slot_copies(self) -> Iterable[tuple[CFlowKey, CFlow]]:
        """The used slots' copies, each with what the fast path counted for
        it in the slot's meter on its CPU (claimed with the slot: its flow's
        alone). The slots are read first: a used slot keeps its flow and
        meter until forget() empties it."""
        stride = (ctypes.sizeof(CSlot) + 7) & ~7
        proto = CSlot.key.offset + CFlowKey.proto.offset
        used: list[tuple[int, int, CSlot]] = []
        for index, raw in self._batches(self._slots, ctypes.c_uint32, CSlot):
            for cpu in range(self._cpus):
                if raw[cpu * stride + proto]:
                    used.append((cpu, int(index), CSlot.from_buffer_copy(raw, cpu * stride)))
        if not used:
            return
        meters = b"".join(
            raw for _, raw in self._batches(self._meters, ctypes.c_uint32, CMeter, per_cpu=False)
        )
        per_cpu = self._meters.max_entries // self._cpus  # HOMEGW_FLOW_METERS
        meter_stride = (ctypes.sizeof(CMeter) + 7) & ~7
        for cpu, index, slot in used:
            meter = CMeter.from_buffer_copy(meters, (cpu * per_cpu + index) * meter_stride)
            yield slot.key, with_meter(slot.flow, meter)

    def _hashed_copies(self) -> Iterable[tuple[CFlowKey, CFlow]]:
        for key, raw in self._batches(self._flows, CFlowKey, CFlow):
            ckey = CFlowKey.from_buffer_copy(key)
            for flow in self._per_cpu(raw, CFlow):
                yield ckey, flow

    def classify(self, key: Sequence[Any], app: int, category: int, source: int | str) -> None:
        """The slow path's verdict for a flow: its classifying copies take it
        at their next packet."""
        self._classified[_ckey(key)] = CClass(app, category, _source_number(source))

    def classified(self, key: Sequence[Any]) -> tuple[int, int, str] | None:
        """(app, category, source) written for the flow, if any."""
        try:
            value = self._classified[_ckey(key)]
        except KeyError:
            return None
        return value.app, value.category, SOURCES[value.source]

    def forget(self, keys: Iterable[Sequence[Any]]) -> None:
        """Remove flows (all their copies) and their verdicts. A slot is read
        and written back with the flow's copies emptied: a packet another CPU
        counts in its copy of that slot meanwhile (another flow whose key
        hashes there) is lost, or, if it claimed the slot, starts its flow
        again as new at its next packet."""
        for key in keys:
            ckey = _ckey(key)
            for table in (self._flows, self._classified):
                with contextlib.suppress(KeyError):
                    del table[ckey]
            self._empty_slot(ckey)

    def _empty_slot(self, ckey: CFlowKey) -> None:
        """Empty the key's copies in the slots of its buckets (on each CPU
        its copy may be in another of them)."""
        for number in slots_of(ckey, self._slots.max_entries):
            index = ctypes.c_uint32(number)
            per_cpu = self._per_cpu(bytes(self._slots[index]), CSlot)
            if not any(bytes(slot.key) == bytes(ckey) for slot in per_cpu):
                continue
            for cpu, slot in enumerate(per_cpu):
                if bytes(slot.key) == bytes(ckey):
                    per_cpu[cpu] = CSlot()
            self._slots[index] = (CSlot * self._cpus)(*per_cpu)

    # -- DNS attribution -------------------------------------------------------------
    def set_dns(
        self, addr: str | ipaddress.IPv4Address, app: int, category: int, expires_tick: int
    ):
        """Flows to addr starting before expires_tick are the app's (from their first packet)."""
        key = ctypes.c_uint32(_be32(str(addr)))
        self._dns[key] = CDnsEntry(app, category, 0, expires_tick)

    def drop_dns(self, addrs: Iterable[str | ipaddress.IPv4Address]) -> None:
        for addr in addrs:
            with contextlib.suppress(KeyError):
                del self._dns[ctypes.c_uint32(_be32(str(addr)))]

    # -- policy ----------------------------------------------------------------------
    def policy(self) -> dict[tuple[str, str, int], str]:
        """The entries in force: (mac, kind, id) -> "allow" | "block"."""
        kinds = {number: name for name, number in KINDS.items()}
        actions = {number: name for name, number in ACTIONS.items()}
        return {
            (mac_of(key.mac), kinds.get(key.kind, str(key.kind)), key.id): actions.get(
                int(value.value), str(value.value)
            )
            for key, value in self._policy.items()
        }

    def policy_generation(self) -> int:
        return int(self._policy_gen[ctypes.c_int(0)].value)

    def set_policy(self, entries: dict[tuple[str, int | str, int | str | None], int | str]) -> bool:
        """Make the policy exactly `entries` ((mac, "app"|"category"|"all", id
        number or 0) -> "allow"|"block", (mac, "hold", 0) -> "hold"): the
        difference written, what is gone deleted, then the generation bumped
        (never back to 0) so every flow evaluates again at its next packet.
        Whether anything changed."""
        wanted = {}
        for (mac, kind, ident), action in entries.items():
            key = _policy_key(mac, kind, ident)
            wanted[bytes(key)] = (key, action if isinstance(action, int) else ACTIONS[action])
        current = {bytes(key): int(value.value) for key, value in self._policy.items()}
        changed = False
        for raw, (key, action) in wanted.items():
            if current.get(raw) != action:
                self._policy[key] = ctypes.c_uint32(action)
                changed = True
        for raw in set(current) - set(wanted):
            with contextlib.suppress(KeyError):
                del self._policy[CPolicyKey.from_buffer_copy(raw)]
            changed = True
        if changed:
            generation = self.policy_generation() % GENERATION_MAX + 1
            self._policy_gen[ctypes.c_int(0)] = ctypes.c_uint32(generation)
            log.info("dpi policy %d: %d entries", generation, len(wanted))
        return changed

    # -- counters and time -----------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Datapath counters by name, and flows classified by source (classified_<source>)."""
        out = {
            name: int(sum(self._stats.getvalue(ctypes.c_int(i)))) for i, name in enumerate(COUNTERS)
        }
        for number, name in enumerate(SOURCES[1:], start=1):
            out[f"classified_{name}"] = int(sum(self._source_stats.getvalue(ctypes.c_int(number))))
        return out

    @staticmethod
    def now_tick() -> int:
        """The datapath's clock now, in its ticks (first_tick, expires_tick)."""
        return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) >> TICK_SHIFT
