"""The kernel's part in forwarding: ip_forward, an input guard, and (until the
NAT IO module lands) the TEMPORARY KERNEL PATH masquerade.

- Linux forwarding is on: what XDP hands to the kernel (fragmentation, IP
  options with TTL 1, frames for the same interface) is still forwarded.
- The gateway's own services are not reachable from the WAN (input chain).
- With NAT wanted but no NAT module in the chain, Linux forwards LAN->WAN and
  nftables masquerades on the WAN: the temporary kernel path, said in the log.
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


def _input_chain(wan_if: str) -> str:
    return f"""
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{wan_if}" ct state established,related accept
        iifname "{wan_if}" udp sport 67 udp dport 68 accept
        iifname "{wan_if}" icmp type {{ echo-request, destination-unreachable,
                                        time-exceeded }} accept
        iifname "{wan_if}" drop
    }}"""


def _masquerade_chains(lan_if: str, wan_if: str) -> str:
    return f"""
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "{lan_if}" oifname "{wan_if}" accept
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan_if}" masquerade
    }}"""


def ruleset(lan_if: str, wan_if: str, masquerade: bool) -> str:
    chains = _input_chain(wan_if)
    if masquerade:
        chains += _masquerade_chains(lan_if, wan_if)
    return f"table ip {TABLE} {{{chains}\n}}\n"


def enable(lan_if: str, wan_if: str, masquerade: bool) -> None:
    disable(quiet=True)
    _nft(ruleset(lan_if, wan_if, masquerade))
    FORWARDING_SYSCTL.write_text("1")
    if masquerade:
        log.warning(
            "TEMPORARY KERNEL PATH active: %s -> %s forwarded by Linux + nftables masquerade "
            "(no NAT IO module in the chain)",
            lan_if,
            wan_if,
        )
    else:
        log.info("kernel forwarding on for what XDP hands up; WAN input guarded")


def disable(quiet: bool = False) -> None:
    result = subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)
    if result.returncode == 0:
        FORWARDING_SYSCTL.write_text("0")
        if not quiet:
            log.info("kernel path removed")
