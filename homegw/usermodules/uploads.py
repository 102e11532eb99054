"""The checks of an upload that need more than its model (spec.py): which
program of the source to chain, whether its chain has room and its anchor,
whether the maps it exposes are its own and readable, and where a module
goes in a chain's order."""

from __future__ import annotations

import re
from typing import Any

from homegw.control import ConfigRejected, Conflict, Problem
from homegw.dataplane.abi import MAX_MODULES, Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.table import ARRAYS, HASH, LPM_TRIE, LRU_HASH, LRU_PERCPU_HASH, PER_CPU
from homegw.usermodules.module import SDK_MAPS
from homegw.usermodules.spec import ModuleUpload
from homegw.usermodules.store import ModuleRecord

EXPOSABLE = (HASH, LRU_HASH, LPM_TRIE, LRU_PERCPU_HASH, *ARRAYS, *PER_CPU)
HOOKS = {"xdp": Hook.XDP, "tc": Hook.TC}
NICS = {"lan": Nic.LAN, "wan": Nic.WAN}


PROGRAM = re.compile(
    r"^(?P<head>[^;{}]*?)\bint\s+(?P<name>\w+)\s*\(\s*struct\s+(?P<ctx>xdp_md|__sk_buff)\s*\*", re.M
)


def programs(source: str, ctx: str) -> list[str]:
    """The source's programs taking `ctx` (xdp_md, __sk_buff): its non-static functions."""
    return [
        m["name"] for m in PROGRAM.finditer(source) if m["ctx"] == ctx and "static" not in m["head"]
    ]


def program_of(upload: ModuleUpload) -> str:
    """The program to chain: the named one, or the source's only one of the hook's type."""
    want = "xdp" if upload.hook == "xdp" else "tc"
    functions = programs(upload.source, "xdp_md" if want == "xdp" else "__sk_buff")
    if upload.function is not None:
        if upload.function not in functions:
            raise ConfigRejected(
                [Problem("function", f"the source has no {want} program {upload.function!r}")]
            )
        return upload.function
    if len(functions) != 1:
        found = ", ".join(functions) or "none"
        raise ConfigRejected(
            [Problem("function", f"name the {want} program to chain (the source has: {found})")]
        )
    return functions[0]


def check_room(dataplane: Dataplane, upload: ModuleUpload) -> None:
    """The chain has a free position; a before/after anchor is in it."""
    nic, hook = NICS[upload.nic], HOOKS[upload.hook]
    chain = [n for n in dataplane.chain_of(nic, hook) if n != upload.name]
    if len(chain) >= MAX_MODULES:
        raise Conflict(f"the {upload.nic} {upload.hook} chain is full ({MAX_MODULES} modules)")
    anchor = upload.position.partition(":")[2]
    if anchor and anchor not in chain:
        raise ConfigRejected(
            [Problem("position", f"{anchor} is not in the {upload.nic} {upload.hook} chain")]
        )


def check_maps(record: ModuleRecord, manifest: dict[str, Any]) -> None:
    """Every exposed map is the module's own (in its build, not shared, not
    the SDK's) and of a type the API reads."""
    problems = []
    for index, name in enumerate(record.maps):
        spec = manifest["maps"].get(name)
        if spec is None or spec["shared"] or name in SDK_MAPS:
            problems.append(Problem(f"maps.{index}", f"the module has no map {name!r}"))
        elif spec["type"] not in EXPOSABLE:
            problems.append(Problem(f"maps.{index}", f"{name}: this map type is not exposed"))
    if problems:
        raise ConfigRejected(problems)


def placed(order: list[str], name: str, position: str) -> list[str]:
    """`order` with `name` moved where `position` says (an anchor that is
    not in it now: before it means first, after it means last)."""
    order = [n for n in order if n != name]
    where, _, anchor = position.partition(":")
    if where == "first" or (where == "before" and anchor not in order):
        return [name, *order]
    if where == "last" or anchor not in order:
        return [*order, name]
    index = order.index(anchor) + (1 if where == "after" else 0)
    return [*order[:index], name, *order[index:]]
