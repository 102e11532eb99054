"""The IO module contract: what every homegw/modules/<name>/ provides."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from homegw.control import Sample
from homegw.dataplane.builds import BuildLimits
from homegw.dataplane.loader import Define
from homegw.dataplane.slowpath import PuntHandler

if TYPE_CHECKING:
    from homegw.config import Config
    from homegw.netfacts import Ipv6Facts

#: A table the management API pages through: rows as flat JSON objects.
TableReader = Callable[[], list[dict[str, Any]]]


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
    sdk: ClassVar[bool] = False  # user modules: compiled with homegw_user.h
    build_limits: ClassVar[BuildLimits] = BuildLimits()  # of its build child
    # Set by the dataplane when the module is added: sends a frame through the
    # XDP chain of the NIC with that ingress ifindex again (frames the slow
    # path held, e.g. until a neighbour was resolved).
    reinject: Callable[[bytes, int], None]

    def invalidate_fastpath(self, why: str) -> None:
        """Retire the flow fast path's entries: every flow's next packet goes
        through the chain (a module whose decision for established flows
        changed calls it). The dataplane replaces it when the module is added."""

    @classmethod
    def wanted(cls, config: Config) -> bool:
        """Whether the config asks for this module's datapath."""
        return bool(getattr(config, cls.name).enabled)

    def defines(self) -> dict[str, Define]:
        """Compile-time options (-D) computed from the module's config."""
        return {}

    def on_load(self, bpf) -> None:  # an AdoptedBuild (or a bcc.BPF)
        """Fill the module's maps from its config and state."""

    def handlers(self) -> dict[int, PuntHandler]:
        """Slow-path handlers by reason code."""
        return {}

    def all_punts(self) -> PuntHandler | None:
        """A handler for every reason handlers() does not name (user modules)."""
        return None

    def on_unload(self) -> None:
        """Release what on_load took (threads, sockets)."""

    def on_wan(
        self, address: ipaddress.IPv4Interface | None, gateway: ipaddress.IPv4Address | None
    ) -> None:
        """The WAN address changed (a DHCP lease came, changed or went)."""

    def on_ipv6(self, facts: Ipv6Facts) -> None:
        """The home's IPv6 addressing changed (homegw/netfacts.py): a prefix
        came, changed or went, the WAN got an address or a default router.
        Called in the appliance's control thread, in registry order."""

    def compile_options_changed(self, config: Config) -> bool:
        """Whether `config` changes what defines() compiles in: then the
        dataplane reloads the module instead of calling apply()."""
        return False

    def apply(self, config: Config) -> bool:
        """Take a new config without a reload, by map updates (only called
        when the module's compile-time options, defines(), are unchanged).
        Returns False when it cannot: the dataplane then reloads the module."""
        return False

    def tables(self) -> dict[str, TableReader]:
        """The module's tables for the management API, by table name."""
        return {}

    def counters(self) -> dict[str, int]:
        """The module's datapath counters by reason (for /metrics and the API)."""
        return {}

    def gauges(self) -> dict[str, float]:
        """Levels worth a metric (table sizes, live sessions), by name."""
        return {}

    def samples(self) -> Iterable[Sample]:
        """Metrics of the module's own with labels (beyond counters and gauges)."""
        return ()
