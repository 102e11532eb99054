"""Read pinned maps without loading any program (libbpf through ctypes):
for tests, status commands, and a new process looking at an old one's state."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from homegw.dataplane.abi import Hook, Nic, generation_key
from homegw.dataplane.testrun import _lib


class _Counter(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


def possible_cpus() -> int:
    """Per-CPU maps hold one value per *possible* CPU."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def _open(path: str) -> int:
    fd = _lib().bpf_obj_get(path.encode())
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{path}: {os.strerror(err)}")
    return fd


def read_percpu_counter(path: str, key: int) -> tuple[int, int]:
    """(packets, bytes) of one entry of a pinned per-CPU array of struct
    homegw_counter, summed over CPUs."""
    fd = _open(path)
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
    fd = _open(path)
    try:
        values = (ctypes.c_uint64 * possible_cpus())()
        index = ctypes.c_uint32(key)
        if _lib().bpf_map_lookup_elem(fd, ctypes.byref(index), ctypes.byref(values)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{path} lookup: {os.strerror(err)}")
        return sum(values)
    finally:
        os.close(fd)
