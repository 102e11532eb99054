"""libbpf through ctypes: the few calls the appliance makes on BPF objects
without bcc (open and pin by path, object info, map element access, map
creation). Every failure raises OSError with the path or the call named."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from homegw.dataplane.testrun import _lib

BPF_ANY = 0
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2


class MapInfo(ctypes.Structure):
    # the head of struct bpf_map_info; the kernel wants the rest zeroed
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 256),
    ]


class ProgInfo(ctypes.Structure):
    # the head of struct bpf_prog_info, up to map_ids
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 512),
    ]


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def obj_get(path: str | Path) -> int:
    """A new fd of the object pinned at path."""
    fd = _lib().bpf_obj_get(str(path).encode())
    if fd < 0:
        raise _error(str(path))
    return fd


def obj_pin(fd: int, path: str | Path) -> None:
    if _lib().bpf_obj_pin(fd, str(path).encode()) != 0:
        raise _error(f"pinning {path}")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise _error(f"map info of fd {fd}")
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise _error(f"program info of fd {fd}")
    return info


def prog_map_ids(fd: int) -> set[int]:
    """Ids of the maps a loaded program uses."""
    count = prog_info(fd).nr_map_ids
    ids = (ctypes.c_uint32 * max(count, 1))()
    info = ProgInfo(nr_map_ids=count, map_ids=ctypes.addressof(ids))
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise _error(f"map ids of program fd {fd}")
    return set(ids[:count])


def prog_fd_by_id(prog_id: int) -> int:
    fd = _lib().bpf_prog_get_fd_by_id(ctypes.c_uint32(prog_id))
    if fd < 0:
        raise _error(f"program id {prog_id}")
    return fd


def pinned_id(path: str | Path, kind: str = "map") -> int | None:
    """Id of the map (kind "map") or program ("prog") pinned at path; None
    if nothing is pinned there or it is not of that kind."""
    try:
        fd = obj_get(path)
    except OSError:
        return None
    try:
        info = map_info(fd) if kind == "map" else prog_info(fd)
        return info.id
    except OSError:
        return None
    finally:
        os.close(fd)


def lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fill value from the entry of key; False if there is none."""
    return _lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) == 0


def update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
    if _lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags) != 0:
        raise _error("map update")


def delete(fd: int, key: ctypes._CData) -> bool:
    """Remove the entry of key; False if there was none."""
    return _lib().bpf_map_delete_elem(fd, ctypes.byref(key)) == 0


def lookup_batch(
    fd: int,
    token_in: ctypes.Array | None,
    token_out: ctypes.Array,
    keys: ctypes.Array,
    values: ctypes.Array,
    count: ctypes.c_uint32,
) -> bool:
    """One BPF_MAP_LOOKUP_BATCH: up to count entries after the position in
    token_in (None: from the start) into keys/values, their number into
    count, the next position into token_out. False when the map has no more
    after these (the last batch, possibly with entries)."""
    lib = _lib()
    lib.bpf_map_lookup_batch.restype = ctypes.c_int
    rc = lib.bpf_map_lookup_batch(
        fd,
        ctypes.byref(token_in) if token_in is not None else None,
        ctypes.byref(token_out),
        ctypes.byref(keys),
        ctypes.byref(values),
        ctypes.byref(count),
        None,
    )
    if rc == 0:
        return True
    if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
        return False
    raise _error("map lookup batch")


def next_key(fd: int, key: ctypes._CData | None, out: ctypes._CData) -> bool:
    """The key after `key` (the first with None) into out; False at the end."""
    prev = ctypes.byref(key) if key is not None else None
    return _lib().bpf_map_get_next_key(fd, prev, ctypes.byref(out)) == 0


def create_array(name: str, value_size: int, max_entries: int = 1) -> int:
    """A new BPF_MAP_TYPE_ARRAY of u32 keys; its fd."""
    return create_map(BPF_MAP_TYPE_ARRAY, name, 4, value_size, max_entries)


def create_map(map_type: int, name: str, key_size: int, value_size: int, max_entries: int) -> int:
    """A new map (no flags); its fd."""
    lib = _lib()
    lib.bpf_map_create.restype = ctypes.c_int
    lib.bpf_map_create.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
    ]
    fd = lib.bpf_map_create(map_type, name.encode()[:15], key_size, value_size, max_entries, None)
    if fd < 0:
        raise _error(f"creating map {name}")
    return fd
