"""TEMPORARY KERNEL PATH: Linux forwarding + nftables masquerade.

Until the router and NAT IO modules are in the chain, LAN->WAN traffic is
forwarded by the kernel: the XDP roots pass packets up (XDP_PASS), Linux
routes them and nftables masquerades them on the WAN. The appliance sets this
up only when those modules are absent or disabled, and says so in its log.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

TABLE = "homegw_kernelpath"
FORWARDING_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"nft refused the kernel-path rules: {result.stderr.strip()}")


def ruleset(lan_if: str, wan_if: str) -> str:
    return f"""
table ip {TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "{lan_if}" oifname "{wan_if}" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{wan_if}" ct state established,related accept
        iifname "{wan_if}" udp sport 67 udp dport 68 accept
        iifname "{wan_if}" icmp type {{ echo-request, destination-unreachable,
                                        time-exceeded }} accept
        iifname "{wan_if}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan_if}" masquerade
    }}
}}
"""


def enable(lan_if: str, wan_if: str) -> None:
    disable(quiet=True)
    _nft(ruleset(lan_if, wan_if))
    FORWARDING_SYSCTL.write_text("1")
    log.warning(
        "TEMPORARY KERNEL PATH active: %s -> %s forwarded by Linux + nftables masquerade "
        "(router/NAT IO modules not in the chain)",
        lan_if,
        wan_if,
    )


def disable(quiet: bool = False) -> None:
    result = subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)
    if result.returncode == 0:
        FORWARDING_SYSCTL.write_text("0")
        if not quiet:
            log.info("temporary kernel path removed")
