"""Read pinned maps without loading any program (libbpf through ctypes):
for tests, status commands, and a new process looking at an old one's state."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from homegw.dataplane.abi import Hook, Nic, generation_key
from homegw.dataplane.libbpf import map_info, obj_get
from homegw.dataplane.testrun import _lib


class _Counter(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


def possible_cpus() -> int:
    """Per-CPU maps hold one value per *possible* CPU."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def read_percpu_counter(path: str, key: int) -> tuple[int, int]:
    """(packets, bytes) of one entry of a pinned per-CPU array of struct
    homegw_counter, summed over CPUs."""
    fd = obj_get(path)
    try:
        values = (_Counter * possible_cpus())()
        index = ctypes.c_uint32(key)
        if _lib().bpf_map_lookup_elem(fd, ctypes.byref(index), ctypes.byref(values)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{path} lookup: {os.strerror(err)}")
        return sum(v.packets for v in values), sum(v.bytes for v in values)
    finally:
        os.close(fd)


def read_chain_stats(pin_dir: str, nic: Nic, hook: Hook) -> tuple[int, int]:
    """(packets, bytes) that entered the chain of (nic, hook), summed over CPUs."""
    return read_percpu_counter(f"{pin_dir}/chain_stats", generation_key(nic, hook))


def read_percpu_u64(path: str, key: int) -> int:
    """One entry of a pinned per-CPU array of u64 counters, summed over CPUs."""
    fd = obj_get(path)
    try:
        values = (ctypes.c_uint64 * possible_cpus())()
        index = ctypes.c_uint32(key)
        if _lib().bpf_map_lookup_elem(fd, ctypes.byref(index), ctypes.byref(values)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{path} lookup: {os.strerror(err)}")
        return sum(values)
    finally:
        os.close(fd)


class PinnedMap:
    """A pinned map opened by path (another process's, e.g. the running
    appliance's): list its keys or empty it."""

    def __init__(self, path: str) -> None:
        self.fd = obj_get(path)
        try:
            info = map_info(self.fd)
        except OSError:
            os.close(self.fd)
            raise
        self.key_size = info.key_size
        self.value_size = info.value_size

    def keys(self) -> list[ctypes.Array]:
        found, prev = [], None
        while True:
            key = ctypes.create_string_buffer(self.key_size)
            if _lib().bpf_map_get_next_key(self.fd, prev, key) != 0:
                return found
            found.append(key)
            prev = key

    def clear(self) -> int:
        keys = self.keys()
        for key in keys:
            _lib().bpf_map_delete_elem(self.fd, key)
        return len(keys)

    def update(self, key: bytes, value: bytes) -> None:
        """Write one entry (BPF_ANY); key and value as the map's raw bytes."""
        if len(key) != self.key_size or len(value) != self.value_size:
            raise ValueError(f"entry of {len(key)}+{len(value)} bytes for this map")
        if _lib().bpf_map_update_elem(self.fd, key, value, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"map update: {os.strerror(err)}")

    def close(self) -> None:
        os.close(self.fd)
