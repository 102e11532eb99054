"""The DHCP IO module ("dhcp", id 1): the lease-aware LAN datapath.

`guard.bpf.c` runs in the LAN XDP chain. Its pinned maps:

- `dhcp_bindings` <MAC, {ipv4, flags}> (hash, DHCP_MAX_BINDINGS entries):
  written through this class by the DHCP server (`DhcpService`) on every
  ACK, RELEASE, DECLINE and expiry; reservations are always present.
- the chain's device table (`homegw_devices`, homegw/dataplane/devices.py):
  the guard counts there the frames it drops of a device that has a
  binding; a device's entry goes with its lease's expiry.
- `dhcp_guard_stats` <counter, per-CPU count> (pinned as `dhcp_guard_counters`):
  checked frames and drops by reason (`GUARD_COUNTERS`).

The source guard (`dhcp.source_guard`) is a runtime switch in a config map,
so turning it on or off needs no recompile. Frames from the LAN carrying the
gateway's own MAC are dropped whether the guard is on or not. The module
implements the service's `BindingsWriter` protocol.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from homegw.config import Config
from homegw.dataplane.cenum import counter_names
from homegw.dataplane.devices import Devices, DeviceTraffic
from homegw.dataplane.module import IOModule
from homegw.dataplane.slowpath import Punt, PuntHandler
from homegw.modules.dhcp.service import Binding

log = logging.getLogger(__name__)

MAX_BINDINGS = 4096  # DHCP_MAX_BINDINGS in guard.bpf.c
REASON_PROBE_ANSWER = 1
GUARD_COUNTERS = counter_names(Path(__file__).parent / "guard.bpf.c", "guard_counter")

ProbeListener = Callable[[int, bytes], None]  # (sender address, sender MAC)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _lan_mac(ifname: str) -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            return None
        return ipr.link("get", index=index[0])[0].get_attr("IFLA_ADDRESS")


class DhcpModule(IOModule):
    name = "dhcp"
    module_id = 1
    source = Path(__file__).parent / "guard.bpf.c"
    xdp_function = "dhcp_guard_xdp"

    def __init__(self, config: Config, gateway_mac: str | None = None) -> None:
        """`gateway_mac` defaults to the LAN interface's MAC (read at load)."""
        self.config = config
        self.source_guard = config.dhcp.source_guard
        self.gateway_mac = gateway_mac
        self.bpf = None
        self._lock = threading.Lock()
        self._probe_listener: ProbeListener | None = None

    # -- IOModule -------------------------------------------------------------------

    def defines(self) -> dict[str, int | str]:
        return {"DHCP_MAX_BINDINGS": MAX_BINDINGS}

    def on_load(self, bpf) -> None:  # bcc.BPF
        self.bpf = bpf
        if self.gateway_mac is None:
            self.gateway_mac = _lan_mac(self.config.lan.interface)
        self.set_source_guard(self.source_guard)

    def handlers(self) -> dict[int, PuntHandler]:
        return {REASON_PROBE_ANSWER: self._on_probe_answer}

    # -- configuration ----------------------------------------------------------------

    def set_source_guard(self, enabled: bool) -> None:
        """Turn the source guard on or off at once (one map write)."""
        self.source_guard = enabled
        table = self.bpf["dhcp_guard_config"]
        value = table.Leaf()
        value.enabled = int(enabled)
        mac = _mac_bytes(self.gateway_mac) if self.gateway_mac else b"\0" * 6
        value.gateway_mac = (ctypes.c_ubyte * 6)(*mac)
        value.gateway_ip = struct.unpack("=I", self.config.lan.ip.packed)[0]
        table[ctypes.c_int(0)] = value
        log.info("dhcp: source guard %s", "on" if enabled else "off")

    def set_probe_listener(self, listener: ProbeListener | None) -> None:
        """Who hears ARP probe answers the guard dropped (the DHCP server)."""
        self._probe_listener = listener

    def _on_probe_answer(self, punt: Punt) -> None:
        sender = int.from_bytes(punt.meta[0].to_bytes(4, "little"), "big")
        listener = self._probe_listener
        if listener is not None and len(punt.packet) >= 12:
            listener(sender, punt.packet[6:12])

    def apply(self, config: Config) -> bool:
        """The guard's switch and the gateway's address by one map write (the
        DHCP server itself is restarted by the appliance with its service)."""
        self.config = config
        if self.bpf is not None:
            self.set_source_guard(config.dhcp.source_guard)
        return True

    def counters(self) -> dict[str, int]:
        return self.guard_stats() if self.bpf is not None else {}

    # -- BindingsWriter ----------------------------------------------------------------

    def _key(self, mac: str):  # a bcc ctypes key
        key = self.bpf["dhcp_bindings"].Key()
        key.addr = (ctypes.c_ubyte * 6)(*_mac_bytes(mac))
        return key

    def set_binding(self, mac: str, binding: Binding) -> None:
        table = self.bpf["dhcp_bindings"]
        value = table.Leaf()
        value.ipv4 = struct.unpack("=I", binding.address.packed)[0]
        value.flags = binding.flags
        with self._lock:
            table[self._key(mac)] = value

    def remove_binding(self, mac: str) -> None:
        with self._lock:
            self.bpf["dhcp_bindings"].pop(self._key(mac), None)

    def sync_bindings(self, bindings: dict[str, Binding]) -> None:
        """Make the pinned map hold exactly `bindings` (start-up after a restart)."""
        current = self.bindings()
        for mac in current.keys() - bindings.keys():
            self.remove_binding(mac)
        for mac, binding in bindings.items():
            if current.get(mac) != binding:
                self.set_binding(mac, binding)

    def forget_device(self, mac: str) -> None:
        """Drop a device's counters (its lease expired: it left the network)."""
        with self._lock:
            Devices(self.bpf["homegw_devices"]).forget(mac)

    # -- observation -------------------------------------------------------------------

    def bindings(self) -> dict[str, Binding]:
        out = {}
        for key, value in self.bpf["dhcp_bindings"].items():
            mac = bytes(key.addr).hex(":")
            address = ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("=I", value.ipv4)))
            out[mac] = Binding(address, value.flags)
        return out

    def device_traffic(self) -> dict[str, DeviceTraffic]:
        """The chain's per-device table, by MAC (this module counts drops in it)."""
        return Devices(self.bpf["homegw_devices"]).read()

    def guard_stats(self) -> dict[str, int]:
        table = self.bpf["dhcp_guard_stats"]
        return {
            name: sum(table.getvalue(ctypes.c_uint32(i))) for i, name in enumerate(GUARD_COUNTERS)
        }
