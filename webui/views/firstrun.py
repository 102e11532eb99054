"""The first-run form: what the owner typed, checked for shape, and the
whole config it makes (wan, lan and dhcp replaced). The values themselves
are checked by the config's own validation (config_apply), whose errors
come back by key path; this module only maps them to the form's fields.

The two ports (which NIC is WAN, which LAN; chosen at first boot by
`homegw firstboot`) can be swapped or picked among the Ethernet ports of the
gateway; a change restarts the appliance (wan/lan interfaces always do)."""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from homegw.auth import AuthError, check_password_rules
from homegw.modules.dhcp.config import default_range
from webui.views.common import int_field

#: the form field each config key path's error goes next to
FIELD_OF_LOC = {
    "wan.interface": "wan_interface",
    "lan.interface": "lan_interface",
    "wan.mode": "wan_mode",
    "wan.address": "wan_address",
    "wan.gateway": "wan_gateway",
    "wan.dns": "wan_dns",
    "lan.address": "lan_address",
    "dhcp.range_start": "dhcp_start",
    "dhcp.range_end": "dhcp_end",
}
WAN_MODES = (("dhcp", "Automatic (DHCP)"), ("static", "Static"))
TEXT_FIELDS = (
    "token",
    "wan_interface",
    "lan_interface",
    "wan_mode",
    "wan_address",
    "wan_prefix",
    "wan_gateway",
    "wan_dns",
    "lan_address",
    "lan_prefix",
    "dhcp_start",
    "dhcp_end",
)
MAX_FIELD = 256


@dataclass
class SetupForm:
    """The first-run form's values (text as typed, passwords never echoed)
    and its errors by field name."""

    values: dict[str, str]
    password: str = ""
    password_again: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    swap_ports: bool = False

    @classmethod
    def defaults(cls, config: dict[str, Any]) -> SetupForm:
        """The form as the running config fills it in."""
        wan, lan = config.get("wan", {}), config.get("lan", {})
        lan_if = ipaddress.IPv4Interface(lan.get("address", "192.168.1.1/24"))
        wan_if = ipaddress.IPv4Interface(wan["address"]) if wan.get("address") else None
        start, end = default_range(lan_if)
        dhcp = config.get("dhcp", {})
        return cls(
            values={
                "token": "",
                "wan_interface": wan.get("interface", ""),
                "lan_interface": lan.get("interface", ""),
                "wan_mode": wan.get("mode", "dhcp"),
                "wan_address": str(wan_if.ip) if wan_if else "",
                "wan_prefix": str(wan_if.network.prefixlen) if wan_if else "24",
                "wan_gateway": wan.get("gateway") or "",
                "wan_dns": ", ".join(wan.get("dns") or ()),
                "lan_address": str(lan_if.ip),
                "lan_prefix": str(lan_if.network.prefixlen),
                "dhcp_start": dhcp.get("range_start") or str(start),
                "dhcp_end": dhcp.get("range_end") or str(end),
            }
        )

    @classmethod
    def parse(cls, form: MultiDict[str, str], ports: list[str] | None = None) -> SetupForm:
        """The form as posted; `ports`: the Ethernet ports the two port
        fields may name (None: not checked)."""
        values = {name: form.get(name, "").strip()[:MAX_FIELD] for name in TEXT_FIELDS}
        parsed = cls(values, form.get("password", ""), form.get("password_again", ""))
        parsed.swap_ports = form.get("swap_ports") == "on"
        parsed.check_shape()
        if ports is not None:
            parsed.check_ports(ports)
        return parsed

    def check_ports(self, ports: list[str]) -> None:
        """Each port field empty (unchanged) or one of `ports`; not both the same."""
        for name in ("wan_interface", "lan_interface"):
            if self.values[name] and self.values[name] not in ports:
                self.errors[name] = f"Choose one of the ports: {', '.join(ports)}."
        wan, lan = self.values["wan_interface"], self.values["lan_interface"]
        if wan and wan == lan:
            self.errors["lan_interface"] = "The WAN and the LAN need two different ports."

    def check_shape(self) -> None:
        """What the config cannot say: passwords, numbers that are no numbers."""
        if not self.values["token"]:
            self.errors["token"] = "Enter the setup code."
        try:
            check_password_rules(self.password)
        except AuthError as exc:
            self.errors["password"] = f"Too weak: {exc}."
        if self.password != self.password_again:
            self.errors["password_again"] = "The two passwords differ."
        if self.values["wan_mode"] not in dict(WAN_MODES):
            self.errors["wan_mode"] = "Choose Automatic (DHCP) or Static."
        prefixes = ("lan_prefix", "wan_prefix") if self.static else ("lan_prefix",)
        for prefix in prefixes:
            if int_field(self.values[prefix], 0, 32) is None:
                self.errors[prefix] = "A whole number from 0 to 32, e.g. 24."

    @property
    def static(self) -> bool:
        return self.values["wan_mode"] == "static"

    def lan_address(self) -> str:
        return _with_prefix(self.values["lan_address"], self.values["lan_prefix"])

    def config(self, current: dict[str, Any]) -> dict[str, Any]:
        """The whole config with this form's wan, lan and dhcp sections."""
        config = copy.deepcopy(current)
        wan_port, lan_port = self.ports(current)
        config["wan"] = {**self._wan(config.get("wan", {})), "interface": wan_port}
        config["lan"] = {**config.get("lan", {}), "interface": lan_port}
        config["lan"]["address"] = self.lan_address()
        config["dhcp"] = self._dhcp(config.get("dhcp", {}), current.get("lan", {}))
        return config

    def ports(self, current: dict[str, Any]) -> tuple[str, str]:
        """(WAN, LAN) ports as chosen: a field left empty keeps the current
        port; "swap" exchanges the two chosen."""
        wan = self.values["wan_interface"] or current.get("wan", {}).get("interface", "")
        lan = self.values["lan_interface"] or current.get("lan", {}).get("interface", "")
        return (lan, wan) if self.swap_ports else (wan, lan)

    def _wan(self, wan: dict[str, Any]) -> dict[str, Any]:
        """Static: the typed address, gateway and DNS servers; automatic:
        no address or gateway (the ISP's), the configured DNS servers kept."""
        wan = {**wan, "mode": self.values["wan_mode"]}
        for key in ("address", "gateway"):
            wan.pop(key, None)
        if self.static:
            wan["address"] = _with_prefix(self.values["wan_address"], self.values["wan_prefix"])
            wan["gateway"] = self.values["wan_gateway"]
            wan["dns"] = [d for d in re.split(r"[\s,]+", self.values["wan_dns"]) if d]
        return wan

    def _dhcp(self, dhcp: dict[str, Any], old_lan: dict[str, Any]) -> dict[str, Any]:
        """The range as typed; left out (so derived from the new LAN) when
        empty, or when it is still the old LAN's default range."""
        dhcp = dict(dhcp)
        dhcp.pop("range_start", None)
        dhcp.pop("range_end", None)
        typed = (self.values["dhcp_start"], self.values["dhcp_end"])
        if typed == ("", "") or typed == _default_range_text(old_lan):
            return dhcp
        return {**dhcp, "range_start": typed[0], "range_end": typed[1]}

    def add_config_errors(self, errors: dict[str, str]) -> list[str]:
        """Put each config error next to its field; return those that
        belong to no field of this form (said at its top)."""
        others = []
        for loc, message in errors.items():
            name = FIELD_OF_LOC.get(loc) or FIELD_OF_LOC.get(".".join(loc.split(".")[:2]))
            if name is None:
                others.append(f"{loc}: {message}")
            else:
                self.errors.setdefault(name, message)
        return others


def _with_prefix(address: str, prefix: str) -> str:
    """ "192.168.2.1" and "24" -> "192.168.2.1/24"; an address typed with its
    prefix is kept as typed."""
    return address if "/" in address else f"{address}/{prefix}"


def _default_range_text(lan: dict[str, Any]) -> tuple[str, str] | None:
    try:
        start, end = default_range(ipaddress.IPv4Interface(lan.get("address", "")))
    except ValueError:
        return None
    return str(start), str(end)


def port_options(current: dict[str, Any], present: list[str]) -> list[str]:
    """The ports the owner may choose: the gateway's Ethernet ports and the
    two in use (always listed, even when /sys shows them differently)."""
    in_use = [current.get(k, {}).get("interface") for k in ("wan", "lan")]
    return sorted(set(present) | {name for name in in_use if name})


def ethernet_ports() -> list[str]:
    """The gateway's physical Ethernet ports, as `homegw firstboot` sees them."""
    from homegw.portprobe import candidate_ports

    try:
        return candidate_ports()
    except OSError:
        return []
