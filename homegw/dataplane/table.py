"""BPF maps opened by fd, with the part of bcc's table API the modules use.

A module's on_load(bpf) gets the same calls whether `bpf` is a bcc.BPF (the
datapath tests compile in-process) or the appliance's adopted build (maps
opened by pinned path, no bcc in the process): ``t[k]``, ``t[k] = v``,
``del t[k]``, ``get``/``pop``, ``items()``, ``keys()``, ``values()``,
``clear()``, ``len(t)``, ``t.Key``, ``t.Leaf``, ``getvalue(k)`` on per-CPU
maps, ``items_lookup_batch()`` and ``map_fd``. As in bcc: deleting an array
element zeroes it; a per-CPU value is an array of one value per possible CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, MutableMapping
from typing import Any

from homegw.dataplane import libbpf
from homegw.dataplane.pinned import possible_cpus

# enum bpf_map_type, the ones homegw uses
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY = 1, 2, 3, 4
PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH, LPM_TRIE = 5, 6, 9, 10, 11
ARRAYS = (ARRAY, PERCPU_ARRAY)
BATCHED = (HASH, LRU_HASH)  # read with BPF_MAP_LOOKUP_BATCH (per-CPU values are not)
BATCH = 4096  # entries a batch call may return
PER_CPU = (PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH)


class TableError(ValueError):
    """A key or value of the wrong size for the map."""


class Table(MutableMapping):
    """One map. Key and Leaf are ctypes types (decoded from bcc's type
    descriptions); keys and values of other ctypes types of the same size
    are accepted, as bcc does, and an int for a scalar key."""

    def __init__(self, name: str, fd: int, map_type: int, key_type: Any, leaf_type: Any) -> None:
        info = libbpf.map_info(fd)
        self.name = name
        self.map_fd = fd
        self.map_type = map_type
        self.max_entries = info.max_entries
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.Key = key_type
        self.Leaf = leaf_type
        if ctypes.sizeof(key_type) != info.key_size:
            raise TableError(
                f"{name}: key type of {ctypes.sizeof(key_type)} bytes, map has {info.key_size}"
            )

    # -- raw access ------------------------------------------------------
    def _key(self, key: Any) -> ctypes._CData:
        if isinstance(key, int):
            key = self.Key(key)
        if ctypes.sizeof(key) != self.key_size:
            raise TableError(
                f"{self.name}: key of {ctypes.sizeof(key)} bytes, want {self.key_size}"
            )
        return key

    def _value(self, value: Any) -> ctypes._CData:
        if isinstance(value, int):
            value = self.Leaf(value)
        want = ctypes.sizeof(self.Leaf)
        if ctypes.sizeof(value) != want:
            raise TableError(f"{self.name}: value of {ctypes.sizeof(value)} bytes, want {want}")
        return value

    def _new_leaf(self) -> ctypes._CData:
        return self.Leaf()

    # -- the mapping -----------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        value = self._new_leaf()
        if not libbpf.lookup(self.map_fd, self._key(key), value):
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        libbpf.update(self.map_fd, self._key(key), self._value(value))

    def __delitem__(self, key: Any) -> None:
        if self.map_type in ARRAYS:  # an element cannot go: it becomes zero
            self[key] = self._new_leaf()
            return
        if not libbpf.delete(self.map_fd, self._key(key)):
            raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[Any]:  # type: ignore[override]
        found: list[Any] = []
        previous = None
        while True:
            key = self.Key()
            if not libbpf.next_key(self.map_fd, previous, key):
                return found
            found.append(key)
            previous = key

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """Entries as of now: one that goes between listing and reading is left out.
        A hash map is read in batches (a few system calls for 10,000 entries,
        not two per entry)."""
        if self.map_type in BATCHED:
            return self._batched_items()
        out = []
        for key in self.keys():
            value = self._new_leaf()
            if libbpf.lookup(self.map_fd, key, value):
                out.append((key, self._decoded(value)))
        return out

    def _batched_items(self) -> list[tuple[Any, Any]]:
        size = max(1, min(BATCH, self.max_entries))
        keys, values = (self.Key * size)(), (self.Leaf * size)()
        token_in, token_out = None, (ctypes.c_uint8 * max(8, self.key_size))()
        out: list[tuple[Any, Any]] = []
        more = True
        while more:
            count = ctypes.c_uint32(size)
            more = libbpf.lookup_batch(self.map_fd, token_in, token_out, keys, values, count)
            key_size, leaf_size = ctypes.sizeof(self.Key), ctypes.sizeof(self.Leaf)
            for i in range(count.value):
                key = self.Key.from_buffer_copy(keys, i * key_size)
                value = self.Leaf.from_buffer_copy(values, i * leaf_size)
                out.append((key, self._decoded(value)))
            token_in, token_out = token_out, type(token_out)()
        return out

    def values(self) -> list[Any]:  # type: ignore[override]
        return [value for _, value in self.items()]

    def items_lookup_batch(self) -> Iterator[tuple[Any, Any]]:
        """bcc's batch read: items() (hash maps are read in batches there)."""
        yield from self.items()

    def clear(self) -> None:
        for key in self.keys():
            with contextlib.suppress(KeyError):  # gone meanwhile
                del self[key]

    def _decoded(self, value: Any) -> Any:
        return value

    def close(self) -> None:
        if self.map_fd >= 0:
            os.close(self.map_fd)
            self.map_fd = -1


class PerCpuTable(Table):
    """A per-CPU hash or array: values are arrays of one sLeaf per possible
    CPU (each slot of the kernel's buffer 8-byte aligned)."""

    def __init__(self, name: str, fd: int, map_type: int, key_type: Any, leaf_type: Any) -> None:
        super().__init__(name, fd, map_type, key_type, leaf_type)
        self.sLeaf = leaf_type
        self.total_cpu = possible_cpus()
        self._stride = (ctypes.sizeof(leaf_type) + 7) & ~7
        if self._stride == ctypes.sizeof(leaf_type):
            self.Leaf = leaf_type * self.total_cpu
        elif leaf_type in (ctypes.c_uint, ctypes.c_uint32):
            self.Leaf = ctypes.c_uint64 * self.total_cpu
        elif leaf_type in (ctypes.c_int, ctypes.c_int32):
            self.Leaf = ctypes.c_int64 * self.total_cpu
        else:
            self.Leaf = (ctypes.c_ubyte * self._stride) * self.total_cpu

    def getvalue(self, key: Any) -> Any:
        return self[key]

    def __getitem__(self, key: Any) -> Any:
        return self._decoded(super().__getitem__(key))

    def _decoded(self, raw: Any) -> Any:
        if ctypes.sizeof(self.sLeaf) == self._stride:
            return raw
        out = (self.sLeaf * self.total_cpu)()
        buffer = bytes(raw)
        size = ctypes.sizeof(self.sLeaf)
        for cpu in range(self.total_cpu):
            start = cpu * self._stride
            out[cpu] = self.sLeaf.from_buffer_copy(buffer[start : start + size])
        return out

    def _value(self, value: Any) -> Any:
        if ctypes.sizeof(value) == ctypes.sizeof(self.Leaf):
            return value
        if ctypes.sizeof(value) == ctypes.sizeof(self.sLeaf) * self.total_cpu:
            raw = (ctypes.c_ubyte * ctypes.sizeof(self.Leaf))()
            data = bytes(value)
            size = ctypes.sizeof(self.sLeaf)
            for cpu in range(self.total_cpu):
                ctypes.memmove(
                    ctypes.addressof(raw) + cpu * self._stride,
                    data[cpu * size : (cpu + 1) * size],
                    size,
                )
            return raw
        raise TableError(f"{self.name}: a per-CPU value of {ctypes.sizeof(value)} bytes")


class ProgArray(Table):
    """A BPF_PROG_ARRAY: values are program fds (written), ids (read)."""

    def _value(self, value: Any) -> ctypes._CData:
        if isinstance(value, int):
            return ctypes.c_int(value)
        return super()._value(value)


def open_table(name: str, fd: int, map_type: int, key_type: Any, leaf_type: Any) -> Table:
    """The adapter for one map fd (the table takes the fd over)."""
    if map_type in PER_CPU:
        return PerCpuTable(name, fd, map_type, key_type, leaf_type)
    if map_type == PROG_ARRAY:
        return ProgArray(name, fd, map_type, key_type, leaf_type)
    return Table(name, fd, map_type, key_type, leaf_type)
