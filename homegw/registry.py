"""The module registry: the one place that names homegw's IO modules.

Adding a module means adding its folder under homegw/modules/ and one entry
here. The config schema (a ``<name>:`` section per entry, the names allowed in
``dataplane.order``), the appliance (which modules to build, in which order
to tell them about the WAN), the management API and /metrics iterate this
list; nothing else lists module names.

An entry names the module's config section model (imported here: config
models are light) and its datapath class as ``"package.module:Class"``,
imported only when the module is built, so that reading or checking a config
does not load pyroute2, sockets or the BPF loader.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homegw.configtypes import Section
from homegw.modules.dhcp.config import DhcpConfig
from homegw.modules.dns.config import DnsConfig
from homegw.modules.dpi.config import DpiConfig
from homegw.modules.firewall.config import FirewallConfig
from homegw.modules.nat.config import NatConfig
from homegw.modules.router.config import RouterConfig

if TYPE_CHECKING:
    from homegw.dataplane.module import IOModule


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    section: type[Section]
    # "package.module:Class" of its IOModule; None while it has no datapath
    datapath: str | None
    # only in the chains when homegw forwards in XDP (router on; NAT in XDP):
    # otherwise the kernel forwards and masquerades, and these stay out
    forwarding: bool = False

    def datapath_class(self) -> type[IOModule] | None:
        if self.datapath is None:
            return None
        module_path, class_name = self.datapath.split(":")
        return getattr(importlib.import_module(module_path), class_name)


# Order matters twice: it is the order of the sections in a written config,
# and the order in which modules learn a new WAN address (the firewall last:
# until it knows the new address, packets to it are dropped).
MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec("dhcp", DhcpConfig, "homegw.modules.dhcp.module:DhcpModule"),
    ModuleSpec("router", RouterConfig, "homegw.modules.router.module:RouterModule", True),
    ModuleSpec("nat", NatConfig, "homegw.modules.nat.module:NatModule", True),
    ModuleSpec("dns", DnsConfig, "homegw.modules.dns.module:DnsModule"),
    ModuleSpec("dpi", DpiConfig, "homegw.modules.dpi.module:DpiModule"),
    ModuleSpec("firewall", FirewallConfig, "homegw.modules.firewall.module:FirewallModule"),
)

MODULE_NAMES: tuple[str, ...] = tuple(spec.name for spec in MODULES)


def spec(name: str) -> ModuleSpec:
    for entry in MODULES:
        if entry.name == name:
            return entry
    raise KeyError(f"no module named {name!r} (known: {', '.join(MODULE_NAMES)})")
