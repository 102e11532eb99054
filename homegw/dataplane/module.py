"""The IO module contract: what every homegw/modules/<name>/ provides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from homegw.dataplane.loader import Define
from homegw.dataplane.slowpath import PuntHandler


class IOModule:
    """One IO module: a .bpf.c datapath plus its control side.

    Subclasses set the class attributes and override the hooks they need.
    The framework builds `source` with `defines()` (compiled, loaded and
    pinned by a build child, or reused from the pin dir: builds.py), puts
    `xdp_function` in the XDP ingress chains and `tc_function` in the TC
    egress chains, then calls `on_load(bpf)` so the module fills its maps,
    and registers `handlers()` for its slow-path reasons. `bpf` is the
    adopted build (`bpf["map"]` a table with bcc's table API, table.py; the
    datapath tests may hand a bcc.BPF instead); every function of the
    source is loaded, and `loader.load_function(bpf, name, type)` gives the
    fd of any of them (programs the module tail-calls itself).
    """

    name: ClassVar[str]
    module_id: ClassVar[int]  # carried in punts; unique per module
    source: ClassVar[Path]
    xdp_function: ClassVar[str | None] = None
    tc_function: ClassVar[str | None] = None
    # Set by the dataplane when the module is added: sends a frame through the
    # XDP chain of the NIC with that ingress ifindex again (frames the slow
    # path held, e.g. until a neighbour was resolved).
    reinject: Callable[[bytes, int], None]

    def defines(self) -> dict[str, Define]:
        """Compile-time options (-D) computed from the module's config."""
        return {}

    def on_load(self, bpf) -> None:  # noqa: ANN001 - an AdoptedBuild (or a bcc.BPF)
        """Fill the module's maps from its config and state."""

    def handlers(self) -> dict[int, PuntHandler]:
        """Slow-path handlers by reason code."""
        return {}

    def on_unload(self) -> None:
        """Release what on_load took (threads, sockets)."""
