"""The root configuration schema of homegw and the checks that span sections.

Module sections live with their modules (``homegw/modules/<name>/config.py``);
this module owns the root sections (``wan``, ``lan``, ``webui``, ``dataplane``),
fills in the values that default from ``lan.address`` (the DHCP range, the web
UI's listen address) and checks values against each other (a DHCP range inside
the LAN subnet, no web UI on the WAN address, ...).  Use it through
:mod:`homegw.config`, which re-exports these names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    ValidationError,
    create_model,
    model_validator,
)

from homegw.configtypes import (
    EPHEMERAL_PORTS,
    ChainRules,
    Hostname,
    HostPort,
    IfName,
    IPv4Address,
    IPv4Interface,
    Loc,
    MacAddress,
    PortRange,
    Problem,
    Section,
    duplicates,
    raise_problems,
    shown,
)
from homegw.modules.dhcp.config import DhcpConfig, default_range
from homegw.modules.ipv6.config import Lan6Config, Wan6Config
from homegw.modules.nat.config import NatConfig
from homegw.modules.router.config import RouterConfig
from homegw.registry import MODULE_NAMES, MODULES

#: A module that can sit in a datapath chain (``dataplane.order``).
ModuleName = Literal[MODULE_NAMES]  # type: ignore[valid-type]
CHAIN_MODULES: tuple[str, ...] = get_args(ModuleName)
#: Top-level sections that belong to a module (one per registry entry).
MODULE_SECTIONS = MODULE_NAMES
#: ``type`` of the errors raised by the checks that span sections.
CROSS_CHECK = "cross_check"


# --- root sections --------------------------------------------------------------


class WanConfig(Section):
    """``wan:`` -- the upstream (ISP) side."""

    interface: IfName
    mode: Literal["dhcp", "static"] = "dhcp"
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    mtu: Annotated[int, Field(strict=True, ge=576, le=9000)] | None = None
    ipv6: Wan6Config = Field(default_factory=Wan6Config)

    @model_validator(mode="after")
    def _check(self) -> WanConfig:
        raise_problems("WanConfig", self._mode_problems())
        return self

    def _mode_problems(self) -> list[Problem]:
        keys = ("address", "gateway")
        if self.mode == "dhcp":
            reason = "only allowed when wan.mode is static (with dhcp the ISP assigns it)"
            return [((key,), reason) for key in keys if getattr(self, key) is not None]
        if self.address is None or self.gateway is None:
            missing = [key for key in keys if getattr(self, key) is None]
            return [((key,), "required when wan.mode is static") for key in missing]
        return self._static_problems(self.address, self.gateway)

    @staticmethod
    def _static_problems(
        address: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Address
    ) -> list[Problem]:
        net = address.network
        if address.ip in _edges(address):
            return [(("address",), f"{address.ip} is the network or broadcast address of {net}")]
        if gateway not in net:
            return [(("gateway",), f"{gateway} is outside the WAN subnet {net}")]
        if gateway == address.ip:
            return [(("gateway",), f"{gateway} is wan.address itself")]
        return []


class LanConfig(Section):
    """``lan:`` -- the home side; ``address`` is the gateway's own address on it."""

    interface: IfName
    address: IPv4Interface = ipaddress.IPv4Interface("192.168.1.1/24")
    domain: Hostname = "lan"
    hostname: Hostname = "homegw"
    ipv6: Lan6Config = Field(default_factory=Lan6Config)

    @model_validator(mode="after")
    def _check(self) -> LanConfig:
        if self.address.network.prefixlen > 30:
            reason = f"{self.address}: a LAN needs room for hosts, use a /30 or shorter prefix"
            raise_problems("LanConfig", [(("address",), reason)])
        if self.ip in _edges(self.address):
            reason = f"{self.ip} is the network or broadcast address of {self.network}"
            raise_problems("LanConfig", [(("address",), reason)])
        return self

    @property
    def ip(self) -> ipaddress.IPv4Address:
        """The gateway's own LAN address."""
        return self.address.ip

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The LAN subnet."""
        return self.address.network


class WebuiConfig(Section):
    """``webui:`` -- the admin web UI.  ``listen`` defaults to ``<lan.address ip>:80``.
    ``metrics_public``: /metrics answers without a login (false: it needs one)."""

    listen: HostPort | None = None
    metrics_public: bool = True


class ChainOrder(Section):
    """``dataplane.order`` -- the order of the modules in each NIC's XDP chain."""

    lan: tuple[ModuleName, ...] = ("dpi", "dhcp", "dns", "firewall", "router", "nat")
    wan: tuple[ModuleName, ...] = ("firewall", "nat", "router", "dpi")

    @model_validator(mode="after")
    def _check(self) -> ChainOrder:
        problems: list[Problem] = [
            ((side, i), f"{getattr(self, side)[i]} is listed twice")
            for side in ("lan", "wan")
            for i in duplicates(getattr(self, side))
        ]
        raise_problems("ChainOrder", problems)
        return self


def _pin_dir(value: str) -> str:
    if not value.startswith("/sys/fs/bpf/") or ".." in value.split("/") or value.endswith("/"):
        raise ValueError(
            f"{value!r} must be a directory under /sys/fs/bpf/, e.g. /sys/fs/bpf/homegw"
        )
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path")
    return value


class DataplaneConfig(Section):
    """``dataplane:`` -- how the eBPF programs are attached and where maps are pinned."""

    pin_dir: Annotated[str, AfterValidator(_pin_dir)] = "/sys/fs/bpf/homegw"
    # auto: native, else generic where the driver refuses native (attach.py)
    xdp_mode: Literal["native", "generic", "auto"] = "native"
    # the flow fast path (README, Architecture): off, nothing is learnt and
    # every packet goes through the chains
    fastpath: bool = True
    order: ChainOrder = Field(default_factory=ChainOrder)


def _device_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string (the name shown for the device)")
    if not 1 <= len(value) <= 64:
        raise ValueError(f"{len(value)} characters: a device name has 1 to 64")
    if not value.isprintable():
        raise ValueError(f"{shown(value)} has a control or unprintable character")
    return value


#: A user-given device name: 1-64 printable characters, kept as given.
DeviceName = Annotated[str, AfterValidator(_device_name)]


class DeviceEntry(Section):
    """One entry of ``devices:`` -- what the owner set for the device with
    ``mac``: a name shown instead of its DHCP hostname, and ``paused`` (no
    forwarding to or from it, established flows included; the gateway itself
    still answers it)."""

    mac: MacAddress
    name: DeviceName | None = None
    paused: StrictBool = False


class _RootSections(Section):
    """The sections of the whole configuration that belong to no module."""

    state_dir: Annotated[str, AfterValidator(_absolute)] = "/var/lib/homegw"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    wan: WanConfig
    lan: LanConfig


class _ApplianceSections(Section):
    webui: WebuiConfig = Field(default_factory=WebuiConfig)
    dataplane: DataplaneConfig = Field(default_factory=DataplaneConfig)
    devices: tuple[DeviceEntry, ...] = ()


# one ``<name>:`` section per registry entry, defaulted from its model
_ModuleSections = create_model(
    "_ModuleSections",
    __base__=Section,
    **{spec.name: (spec.section, Field(default_factory=spec.section)) for spec in MODULES},
)


class Config(_ApplianceSections, _ModuleSections, _RootSections):  # type: ignore[misc,valid-type]
    """The whole configuration.  Build it with :func:`parse_config` or :func:`load_config`."""

    @model_validator(mode="wrap")
    @classmethod
    def _derive_and_cross_check(cls, data: Any, handler: Any) -> Config:
        config: Config = handler(data)
        sections = {name: getattr(config, name) for name in cls.model_fields}
        updates = _derived(sections)
        raise_problems("Config", _cross_problems(sections | updates), kind=CROSS_CHECK)
        return config.model_copy(update=updates)

    @property
    def modules(self) -> dict[str, Section]:
        """The module sections by module name (``dhcp``, ``firewall``, ``router``, ...)."""
        return {name: getattr(self, name) for name in MODULE_SECTIONS}


# --- values derived from lan, checks across sections -------------------------------


def _edges(interface: ipaddress.IPv4Interface) -> tuple[ipaddress.IPv4Address, ...]:
    """Network and broadcast address of a subnet that has them (/30 or shorter)."""
    net = interface.network
    return (net.network_address, net.broadcast_address) if net.prefixlen <= 30 else ()


def _derived(s: Mapping[str, Any]) -> dict[str, Section]:
    """Sections whose unset values default from ``lan.address``, filled in."""
    lan, dhcp, webui = s.get("lan"), s.get("dhcp"), s.get("webui")
    updates: dict[str, Section] = {}
    if lan is None:
        return updates
    if dhcp is not None and dhcp.range_start is None and dhcp.range_end is None:
        start, end = default_range(lan.address)
        updates["dhcp"] = dhcp.model_copy(update={"range_start": start, "range_end": end})
    if webui is not None and webui.listen is None:
        updates["webui"] = webui.model_copy(update={"listen": HostPort(lan.ip, 80)})
    return updates


def _not_a_lan_host(address: ipaddress.IPv4Address, lan: LanConfig) -> str | None:
    """Why ``address`` cannot be a host on the LAN, or None if it can."""
    if address not in lan.network:
        return f"{address} is outside the LAN subnet {lan.network}"
    if address in _edges(lan.address):
        return f"{address} is the network or broadcast address of {lan.network}"
    if address == lan.ip:
        return f"{address} is the gateway's own address (lan.address)"
    return None


def _cross_problems(s: Mapping[str, Any]) -> list[Problem]:
    """Problems between sections; a section missing from ``s`` is skipped."""
    problems: list[Problem] = []
    if "lan" in s:
        problems += _wan_lan_problems(s["lan"], s.get("wan"))
        if "dhcp" in s:
            problems += _dhcp_problems(s["dhcp"], s["lan"])
        if "nat" in s:
            problems += _nat_problems(s["nat"], s["lan"], s.get("webui"))
        if "router" in s:
            problems += _route_problems(s["router"], s["lan"], s.get("wan"))
    if "webui" in s:
        problems += _webui_problems(s["webui"], s.get("lan"), s.get("wan"))
    if "dataplane" in s:
        problems += _chain_problems(s["dataplane"].order, s)
    if s.get("devices"):
        macs = [entry.mac for entry in s["devices"]]
        problems += [(("devices", i, "mac"), f"duplicate mac {macs[i]}") for i in duplicates(macs)]
    if "firewall" in s and "nat" in s and s["firewall"].forward_wan_to_lan and s["nat"].enabled:
        reason = (
            "only with nat.enabled: false; with NAT, port forwards and nat.dmz_host let traffic in"
        )
        problems.append((("firewall", "forward_wan_to_lan"), reason))
    return problems


def _chain_problems(order: ChainOrder, s: Mapping[str, Any]) -> list[Problem]:
    """Module orders that break a module's ``chain_rules`` (e.g. NAT before the
    router on the LAN would let routed traffic leave untranslated)."""
    problems: list[Problem] = []
    for side in ("lan", "wan"):
        chain: tuple[str, ...] = getattr(order, side)
        where: Loc = ("dataplane", "order", side)
        for i, name in enumerate(chain):
            rules = _chain_rules(name)
            for other in rules.after(side):
                if other in chain and chain.index(other) > i:
                    problems.append((where + (i,), f"{name} must come after {other}: {rules.why}"))
            for other in rules.before(side):
                if other in chain and chain.index(other) < i:
                    problems.append((where + (i,), f"{name} must come before {other}: {rules.why}"))
        for name in MODULE_SECTIONS:
            section = s.get(name)
            rules = _chain_rules(name)
            if name in chain or section is None or not section.enabled:
                continue
            if present := [other for other in rules.required_with if other in chain]:
                reason = f"{name} is missing while {present[0]} is in the chain: {rules.why}"
                problems.append((where, reason))
    return problems


def _chain_rules(name: str) -> ChainRules:
    model = Config.model_fields[name].annotation
    return getattr(model, "chain_rules", ChainRules())


def _wan_lan_problems(lan: LanConfig, wan: WanConfig | None) -> list[Problem]:
    if wan is None:
        return []
    problems: list[Problem] = []
    if lan.interface == wan.interface:
        problems.append((("lan", "interface"), f"must differ from wan.interface ({wan.interface})"))
    if wan.address is not None and wan.address.network.overlaps(lan.network):
        reason = f"the LAN subnet {lan.network} overlaps the WAN subnet {wan.address.network}"
        problems.append((("lan", "address"), reason))
    return problems


def _dhcp_problems(dhcp: DhcpConfig, lan: LanConfig) -> list[Problem]:
    problems: list[Problem] = []
    start, end = dhcp.range_start, dhcp.range_end
    for key, address in (("range_start", start), ("range_end", end)):
        if address is not None and (reason := _not_a_lan_host(address, lan)):
            problems.append((("dhcp", key), reason))
    if start is not None and end is not None and not problems:
        if start > end:
            problems.append((("dhcp", "range_end"), f"{end} is before dhcp.range_start {start}"))
        elif start <= lan.ip <= end:
            reason = f"the range {start}-{end} contains the gateway's own address {lan.ip}"
            problems.append((("dhcp", "range_start"), reason))
    for i, reservation in enumerate(dhcp.reservations):
        if reason := _not_a_lan_host(reservation.address, lan):
            problems.append((("dhcp", "reservations", i, "address"), reason))
    return problems


def _nat_problems(
    nat: NatConfig, lan: LanConfig, webui: WebuiConfig | None = None
) -> list[Problem]:
    """Port forwards to hosts outside the LAN, or onto a port of the gateway
    itself: DNS 53, DHCP client UDP 68, the web UI's TCP port, the kernel's
    ephemeral range (its own connections)."""
    listen = webui.listen if webui is not None else None
    own = [
        (PortRange(53, 53), ("tcp", "udp"), "the gateway's DNS"),
        (PortRange(68, 68), ("udp",), "the gateway's DHCP client"),
        (PortRange(*EPHEMERAL_PORTS), ("tcp", "udp"), "the kernel's ephemeral port range"),
    ]
    admin = listen.port if listen is not None else 80
    own.append((PortRange(admin, admin), ("tcp",), "the web UI (webui.listen)"))
    problems: list[Problem] = []
    for i, forward in enumerate(nat.port_forwards):
        if reason := _not_a_lan_host(forward.internal_address, lan):
            problems.append((("nat", "port_forwards", i, "internal_address"), reason))
        for ports, protocols, whose in own:
            if forward.external_port.overlaps(ports) and set(protocols) & set(forward.protocols):
                reason = f"{forward.external_port} overlaps {ports}, {whose}"
                problems.append((("nat", "port_forwards", i, "external_port"), reason))
                break
    if nat.dmz_host is not None and (reason := _not_a_lan_host(nat.dmz_host, lan)):
        problems.append((("nat", "dmz_host"), reason))
    return problems


def _route_problems(router: RouterConfig, lan: LanConfig, wan: WanConfig | None) -> list[Problem]:
    wan_if = wan.address if wan is not None else None
    own = {lan.ip} | ({wan_if.ip} if wan_if else set())
    problems: list[Problem] = []
    for i, route in enumerate(router.routes):
        where: Loc = ("router", "routes", i, "via")
        if route.via in own:
            problems.append((where, f"{route.via} is one of the gateway's own addresses"))
        elif (
            wan_if is not None and route.via not in lan.network and route.via not in wan_if.network
        ):
            nets = f"LAN {lan.network}, WAN {wan_if.network}"
            problems.append((where, f"{route.via} is not on a directly connected network ({nets})"))
    return problems


def _webui_problems(
    webui: WebuiConfig, lan: LanConfig | None, wan: WanConfig | None
) -> list[Problem]:
    host = webui.listen.host if webui.listen is not None else None
    if host is None:
        return []
    if wan is not None and wan.address is not None and host == wan.address.ip:
        return [(("webui", "listen"), "the admin surface must not listen on the WAN address")]
    allowed = {ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("0.0.0.0")}
    if lan is not None and host not in allowed | {lan.ip}:
        reason = f"{host} must be the LAN address ({lan.ip}), 127.0.0.1 or 0.0.0.0"
        return [(("webui", "listen"), reason)]
    return []


def partial_problems(data: Mapping[Any, Any]) -> list[Problem]:
    """Cross-section problems among the sections that are valid on their own."""
    sections: dict[str, Section] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, Section):
            try:
                sections[name] = model.model_validate(data.get(name))
            except ValidationError:
                continue
    return _cross_problems(sections | _derived(sections))
