"""What the user-module datapath tests share: a user source compiled with
the SDK on a test dataplane's pin dir, the chain cursor set as the modules
before it would have left it, and the module's counters summed."""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from homegw.dataplane.abi import Nic
from homegw.dataplane.libbpf import obj_get
from homegw.dataplane.loader import compile_source, load_function
from homegw.dataplane.pinned import possible_cpus
from homegw.dataplane.testrun import _lib

USER_MODULE_ID = 200
FWD_KERNEL, FWD_REDIRECT = 0, 1
NIC_NONE = 0xFF
F_LOCAL, F_DNAT = 1, 2
CURSOR_SIZE = 104  # struct homegw_cursor (its fast-path fields: zero here)
NO_MAC = "00:00:00:00:00:00"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_key(mac: str) -> bytes:
    """hgw_mac_key(mac) as the map's key bytes: the 6 bytes, 2 zero."""
    return mac_bytes(mac) + b"\0\0"


@dataclass(frozen=True)
class Decision:
    """The part of struct homegw_cursor a user module sees (hgw_decision)."""

    nic: int = Nic.LAN
    ifindex: int = 11
    fwd: int = FWD_KERNEL
    out_ifindex: int = 0
    out_nic: int = NIC_NONE
    flags: int = 0
    in_src_mac: str = NO_MAC
    in_dst_mac: str = NO_MAC

    def cursor_bytes(self, slot_base: int = 0, pos: int = 0) -> bytes:
        head = struct.pack(
            "<8I",
            slot_base,
            pos,
            self.nic,
            self.ifindex,
            self.fwd,
            self.out_ifindex,
            self.out_nic,
            self.flags,
        )
        tail = mac_bytes(self.in_src_mac) + mac_bytes(self.in_dst_mac) + bytes(8)
        return head + tail


def set_cursor(pin_dir: str, decision: Decision, hook: str = "xdp") -> None:
    """Every CPU's chain cursor (cursor_xdp or cursor_tc) as the root and the
    modules before this one left it; the chain's slots are empty, so the
    module's hgw_next_* returns the chain end's verdict."""
    value_size = (CURSOR_SIZE + 7) // 8 * 8
    one = decision.cursor_bytes().ljust(value_size, b"\0")
    values = ctypes.create_string_buffer(one * possible_cpus(), value_size * possible_cpus())
    key = ctypes.c_uint32(0)
    fd = obj_get(f"{pin_dir}/cursor_{hook}")
    try:
        if _lib().bpf_map_update_elem(fd, ctypes.byref(key), values, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cursor update: {os.strerror(err)}")
    finally:
        os.close(fd)


class UserModule:
    """One user source compiled as the gateway compiles it (sdk=True) and
    its program loaded for a hook."""

    def __init__(
        self, source: Path, function: str, hook: str, pin_dir: str, defines: dict | None = None
    ) -> None:
        self.pin_dir = pin_dir
        self.hook = hook
        self.bpf = compile_source(
            source, pin_dir=pin_dir, module_id=USER_MODULE_ID, defines=defines, sdk=True
        )
        self.fd = self.load(function, hook)

    def load(self, function: str, hook: str) -> int:
        """Another program of the same source, loaded for `hook`."""
        return load_function(self.bpf, function, hook)

    def counters(self, count: int) -> list[int]:
        """hgw_counters 0 .. count - 1, summed over CPUs."""
        table = self.bpf["hgw_counters"]
        return [table.sum(ctypes.c_int(i)).value for i in range(count)]

    def close(self) -> None:
        self.bpf.cleanup()
