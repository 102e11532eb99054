"""The build child: `python -m homegw.dataplane.build REQUEST` takes one build
request (JSON, from builds.BuildSpec.request) as its argument, compiles the source with bcc,
loads every function, pins programs and private maps, writes the manifest,
and prints {"manifest": ...} or {"error": "..."} on stdout. It is the only
process of homegw that imports bcc (and with it LLVM); it exits when done.

Shared pinned maps (the header's, the modules' HOMEGW_PIN ones) are checked
against the layout this build wants: its kernel sizes and type, and a record
of bcc's type descriptions kept in ``<pin_dir>/layouts``. A pin that differs
only in capacity (max_entries, flags) is migrated: a new map is made and the
old entries copied over. Any other change drops the pin and its state, with a
log line saying so, rather than let the programs misread it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homegw.dataplane import libbpf
from homegw.dataplane.builds import BUILDS, read_manifest, write_manifest
from homegw.dataplane.loader import LoadError, _bcc, compile_source, load_function, program_text
from homegw.dataplane.pinned import possible_cpus
from homegw.dataplane.table import PER_CPU, PERF_EVENT_ARRAY, PROG_ARRAY

log = logging.getLogger("homegw.dataplane.build")

LAYOUTS = "layouts"  # <pin name (64 bytes), sha256 of its layout>
LAYOUT_NAME_BYTES = 64
MAX_ATTEMPTS = 4  # compiles: each can drop or migrate pins that changed
FUNCTION = re.compile(r"\bint\s+(\w+)\s*\(\s*struct\s+(xdp_md|__sk_buff)\s*\*")
CONTEXT_TYPES = {"xdp_md": "xdp", "__sk_buff": "tc"}


@dataclass(frozen=True)
class TableLayout:
    """What a compiled program wants of one of its maps."""

    name: str
    fd: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: str
    leaf_desc: str

    def signature(self) -> bytes:
        """The layout's identity, capacity left out (that can be migrated)."""
        text = json.dumps(
            [self.map_type, self.key_size, self.value_size, self.key_desc, self.leaf_desc]
        )
        return hashlib.sha256(text.encode()).digest()


def _declare(lib: Any) -> None:
    """libbcc calls bcc's Python bindings do not declare."""
    c = ctypes
    lib.bpf_num_tables.restype = c.c_ulonglong
    lib.bpf_num_tables.argtypes = [c.c_void_p]
    lib.bpf_table_name.restype = c.c_char_p
    lib.bpf_table_name.argtypes = [c.c_void_p, c.c_ulonglong]
    for call in ("bpf_table_key_size_id", "bpf_table_leaf_size_id"):
        getattr(lib, call).restype = c.c_size_t
        getattr(lib, call).argtypes = [c.c_void_p, c.c_size_t]


def table_layouts(bpf: Any) -> list[TableLayout]:
    lib = _bcc().lib
    _declare(lib)
    layouts = []
    for index in range(lib.bpf_num_tables(bpf.module)):
        name = lib.bpf_table_name(bpf.module, index)
        layouts.append(
            TableLayout(
                name.decode(),
                lib.bpf_table_fd(bpf.module, name),
                lib.bpf_table_type_id(bpf.module, index),
                lib.bpf_table_key_size_id(bpf.module, index),
                lib.bpf_table_leaf_size_id(bpf.module, index),
                lib.bpf_table_max_entries_id(bpf.module, index),
                lib.bpf_table_flags_id(bpf.module, index),
                (lib.bpf_table_key_desc(bpf.module, name) or b"").decode(),
                (lib.bpf_table_leaf_desc(bpf.module, name) or b"").decode(),
            )
        )
    return layouts


# -- the layouts record of shared pins ------------------------------------------------
def _layouts_fd(pin_dir: str) -> int:
    path = Path(pin_dir) / LAYOUTS
    try:
        return libbpf.obj_get(path)
    except OSError:
        fd = libbpf.create_map(
            libbpf.BPF_MAP_TYPE_HASH, "homegw_layouts", LAYOUT_NAME_BYTES, 32, 1024
        )
        try:
            libbpf.obj_pin(fd, path)
        except OSError:  # another build child pinned one first
            os.close(fd)
            return libbpf.obj_get(path)
        return fd


def _layout_key(pin_name: str) -> ctypes.Array:
    return ctypes.create_string_buffer(pin_name.encode()[:LAYOUT_NAME_BYTES], LAYOUT_NAME_BYTES)


def recorded_signature(pin_dir: str, pin_name: str) -> bytes | None:
    fd = _layouts_fd(pin_dir)
    try:
        value = (ctypes.c_ubyte * 32)()
        return bytes(value) if libbpf.lookup(fd, _layout_key(pin_name), value) else None
    finally:
        os.close(fd)


def record_signature(pin_dir: str, pin_name: str, signature: bytes) -> None:
    fd = _layouts_fd(pin_dir)
    try:
        libbpf.update(fd, _layout_key(pin_name), (ctypes.c_ubyte * 32)(*signature))
    finally:
        os.close(fd)


# -- shared pins ------------------------------------------------------------------------
def shared_pins(pin_dir: str) -> dict[int, Path]:
    """Map id -> path of every map pinned at the top of pin_dir."""
    found = {}
    for entry in Path(pin_dir).iterdir():
        if entry.is_dir() or entry.name == LAYOUTS:
            continue
        map_id = libbpf.pinned_id(entry)
        if map_id is not None:
            found[map_id] = entry
    return found


def _changes(layout: TableLayout, info: libbpf.MapInfo, recorded: bytes | None) -> tuple[str, bool]:
    """(what differs, whether the old entries can be copied over); "" if nothing."""
    if (info.type, info.key_size, info.value_size) != (
        layout.map_type,
        layout.key_size,
        layout.value_size,
    ):
        return (
            f"type/key/value {info.type}/{info.key_size}/{info.value_size} -> "
            f"{layout.map_type}/{layout.key_size}/{layout.value_size}",
            False,
        )
    if recorded is not None and recorded != layout.signature():
        return "its key or value type changed", False
    capacity = layout.map_type != PERF_EVENT_ARRAY and (
        info.max_entries != layout.max_entries or info.map_flags != layout.flags
    )
    if capacity:
        return f"max_entries {info.max_entries} -> {layout.max_entries}", True
    return "", False


def _copy_entries(old_fd: int, new_fd: int, key_size: int, value_size: int, per_cpu: bool) -> int:
    """Copy every entry of old into new (as many as fit); how many went."""
    stride = (value_size + 7) & ~7
    size = stride * possible_cpus() if per_cpu else value_size
    copied, previous = 0, None
    while True:
        key = ctypes.create_string_buffer(key_size)
        if not libbpf.next_key(old_fd, previous, key):
            return copied
        previous = key
        value = ctypes.create_string_buffer(size)
        if not libbpf.lookup(old_fd, key, value):
            continue
        try:
            libbpf.update(new_fd, key, value)
        except OSError:
            return copied  # the new map is smaller: the rest is lost
        copied += 1


def _compile(request: dict[str, Any]) -> Any:  # bcc.BPF
    """compile_source; again if a sibling build child pinned a shared map
    between bcc's look for it and its pinning of a new one."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return compile_source(
                Path(request["source"]),
                pin_dir=request["pin_dir"],
                module_id=request["module_id"],
                defines=request["defines"],
                sdk=request.get("sdk", False),
            )
        except LoadError as exc:
            if "failed to pin map" not in str(exc) or attempt == MAX_ATTEMPTS - 1:
                raise
            log.info("%s: a shared map was pinned meanwhile; compiling again", request["name"])
    raise AssertionError("unreachable")


def compile_fitting(request: dict[str, Any]) -> Any:  # bcc.BPF
    """Compile; while a shared pin's layout differs from what the program
    wants, migrate or drop it and compile again."""
    pin_dir = request["pin_dir"]
    for _ in range(MAX_ATTEMPTS):
        bpf = _compile(request)
        shared = shared_pins(pin_dir)
        changed = []
        for layout in table_layouts(bpf):
            info = libbpf.map_info(layout.fd)
            path = shared.get(info.id)
            if path is None:
                continue
            why, migrate = _changes(layout, info, recorded_signature(pin_dir, path.name))
            if why:
                changed.append((layout, path, why, migrate))
        if not changed:
            return bpf
        bpf.cleanup()
        _replace_pins(pin_dir, changed, request)
    raise LoadError(f"{request['name']}: pinned maps keep changing layout")


def _replace_pins(pin_dir: str, changed: list, request: dict[str, Any]) -> None:
    old_fds = []
    for layout, path, why, migrate in changed:
        if migrate:
            old_fds.append((layout, path, libbpf.obj_get(path)))
        path.unlink()
        record_signature(pin_dir, path.name, layout.signature())
        if not migrate:
            log.warning(
                "dropped pinned map %s: its layout changed (%s); its state is lost", path, why
            )
    if not old_fds:
        return
    # the next compile makes the new maps; make them now to copy into
    bpf = _compile(request)
    try:
        for layout, path, old_fd in old_fds:
            new_fd = libbpf.obj_get(path)
            try:
                copied = _copy_entries(
                    old_fd, new_fd, layout.key_size, layout.value_size, layout.map_type in PER_CPU
                )
            finally:
                os.close(new_fd)
                os.close(old_fd)
            log.warning(
                "migrated pinned map %s to max_entries %d: %d entries copied",
                path,
                layout.max_entries,
                copied,
            )
    finally:
        bpf.cleanup()


# -- private state across a rebuild ------------------------------------------------------
NOT_CARRIED = (PROG_ARRAY, PERF_EVENT_ARRAY)  # their values are fds: made anew


def previous_build(pin_dir: str, name: str, final: Path) -> dict[str, Any] | None:
    """The manifest of the newest other build of the same name (the one the
    running chain uses, unless nothing was pruned since)."""
    root = Path(pin_dir) / BUILDS
    others = [
        entry
        for entry in root.glob(f"{name}-*")
        if entry.is_dir() and entry.name != final.name and entry.name[len(name) + 1 :].isalnum()
    ]
    for entry in sorted(others, key=lambda e: e.stat().st_mtime, reverse=True):
        manifest = read_manifest(entry)
        if manifest is not None:
            return manifest
    return None


def carry_over(bpf: Any, previous: dict[str, Any]) -> None:
    """Copy the entries of each private map of the previous build into this
    build's map of the same name and layout (counters, settings, budgets:
    the state of a module survives a change of its compile-time options)."""
    for layout in table_layouts(bpf):
        old = previous["maps"].get(layout.name)
        if old is None or old["shared"] or layout.map_type in NOT_CARRIED:
            continue
        same = (old["type"], old["key_size"], old["value_size"], old["key_desc"], old["leaf_desc"])
        if same != (
            layout.map_type,
            layout.key_size,
            layout.value_size,
            layout.key_desc,
            layout.leaf_desc,
        ):
            log.warning(
                "map %s of %s changed layout: not carried over", layout.name, previous["name"]
            )
            continue
        try:
            old_fd = libbpf.obj_get(old["path"])
        except OSError:
            continue
        try:
            copied = _copy_entries(
                old_fd, layout.fd, layout.key_size, layout.value_size, layout.map_type in PER_CPU
            )
        finally:
            os.close(old_fd)
        log.info("map %s: %d entries carried over from the previous build", layout.name, copied)


# -- the build ---------------------------------------------------------------------------
def function_types(text: str) -> dict[str, str]:
    """Program type ("xdp", "tc") of each function, from its context argument."""
    return {name: CONTEXT_TYPES[ctx] for name, ctx in FUNCTION.findall(text)}


def _pin_programs(bpf: Any, source: Path, sdk: bool, staging: Path, final: Path) -> dict[str, Any]:
    lib = _bcc().lib
    types = function_types(program_text(source, sdk))
    programs = {}
    for index in range(lib.bpf_num_functions(bpf.module)):
        name = lib.bpf_function_name(bpf.module, index).decode()
        if name not in types:
            raise LoadError(f"{source.name}: cannot tell the program type of {name}")
        fd = load_function(bpf, name, types[name])
        libbpf.obj_pin(fd, staging / f"prog_{name}")
        programs[name] = {
            "path": str(final / f"prog_{name}"),
            "type": types[name],
            "id": libbpf.prog_info(fd).id,
        }
    return programs


def _pin_maps(bpf: Any, pin_dir: str, staging: Path, final: Path) -> dict[str, Any]:
    shared = shared_pins(pin_dir)
    maps = {}
    for layout in table_layouts(bpf):
        info = libbpf.map_info(layout.fd)
        path = shared.get(info.id)
        if path is None:
            libbpf.obj_pin(layout.fd, staging / f"map_{layout.name}")
            path = final / f"map_{layout.name}"
        else:
            record_signature(pin_dir, path.name, layout.signature())
        maps[layout.name] = {
            "path": str(path),
            "shared": path.parent != final,
            "type": info.type,
            "key_size": info.key_size,
            "value_size": info.value_size,
            "max_entries": info.max_entries,
            "flags": info.map_flags,
            "key_desc": layout.key_desc,
            "leaf_desc": layout.leaf_desc,
            "id": info.id,
        }
    return maps


def build(request: dict[str, Any]) -> dict[str, Any]:
    final = Path(request["build_dir"])
    (Path(request["pin_dir"]) / BUILDS).mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"staging-{final.name}-{os.getpid()}"  # bpffs: no dots
    staging.mkdir()
    try:
        bpf = compile_fitting(request)
        try:
            previous = previous_build(request["pin_dir"], request["name"], final)
            if previous is not None:
                carry_over(bpf, previous)
            manifest = {
                "name": request["name"],
                "key": request["key"],
                "source": request["source"],
                "build_dir": str(final),
                "maps": _pin_maps(bpf, request["pin_dir"], staging, final),
                "programs": _pin_programs(
                    bpf, Path(request["source"]), request.get("sdk", False), staging, final
                ),
            }
            write_manifest(staging, manifest)
        finally:
            bpf.cleanup()
        try:
            staging.rename(final)
        except OSError:
            existing = read_manifest(final)  # another child made the same build first
            if existing is None:
                raise
            return existing
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def limit_resources(request: dict[str, Any]) -> None:
    """The request's memory limit (address space) and its time as CPU seconds."""
    memory = request.get("memory_bytes")
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    seconds = math.ceil(request.get("timeout_s") or 0)
    if seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def main() -> int:
    # bcc and clang may print on stdout: keep it for the answer alone
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    request = json.loads(sys.argv[1])
    limit_resources(request)
    try:
        result: dict[str, Any] = {"manifest": build(request)}
    except (LoadError, OSError) as exc:
        result = {"error": f"{request.get('name')}: {exc}"}
    except MemoryError:
        result = {"error": f"{request.get('name')}: the compiler ran out of its memory limit"}
    answer.write(json.dumps(result))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
