"""Constants shared with include/homegw.h: keep both in step."""

import ipaddress
import socket
import struct
from enum import IntEnum

MAX_MODULES = 8  # chain positions per NIC, hook and generation
GENERATIONS = 2
PUNT_MAX_BYTES = 1514

# Punts from the chain itself (struct homegw_punt.module == DATAPLANE_ID).
DATAPLANE_ID = 0
REASON_FRAGMENT = 1  # meta0 = egress ifindex, meta1 = egress Nic
# XDP metadata of frames the slow path re-injects (HOMEGW_META_REINJECTED)
META_REINJECTED = struct.pack("=I", 0x686D6772)


class Nic(IntEnum):
    LAN = 0
    WAN = 1


class Hook(IntEnum):
    XDP = 0  # XDP ingress
    TC = 1  # TC clsact egress


def chain_slot(nic: Nic, generation: int, position: int) -> int:
    """Index in a chain prog array of (nic, generation, position)."""
    return ((int(nic) * GENERATIONS) + generation) * MAX_MODULES + position


def generation_key(nic: Nic, hook: Hook) -> int:
    """Key of chain_generation and chain_stats for (nic, hook)."""
    return int(nic) * len(Hook) + int(hook)


# XDP verdicts, for logs and tests.
XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_VERDICTS = {-1: "TC_ACT_UNSPEC", 0: "TC_ACT_OK", 2: "TC_ACT_SHOT", 7: "TC_ACT_REDIRECT"}


def be32(address: ipaddress.IPv4Address | None) -> int:
    """An address as the u32 the datapath compares with (network byte order)."""
    if address is None:
        return 0
    return struct.unpack("=I", socket.inet_aton(str(address)))[0]
