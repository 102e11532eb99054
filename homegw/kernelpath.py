"""The kernel's part in forwarding: ip_forward and one nftables table
(``inet``, so IPv6 is held too) for everything XDP hands to the kernel.

- input: from the WAN only the gateway's own replies (established/related),
  its DHCP client's offers and acks, the ICMP errors it needs, ICMP echo when
  ``firewall.wan_ping``, and ICMPv6 neighbour discovery / router adverts /
  MLD queries on the link (RFC 4890) and ICMPv6 errors; everything else from
  the WAN is dropped and counted, IPv6 included.
- forward: drop by default, counted. With the router forwarding in XDP the
  kernel forwards nothing between LAN and WAN (a packet it sent out of the
  WAN would leave untranslated); only LAN -> LAN, which the router itself
  forwards in XDP (a static route via a LAN router), so nothing it hands up
  needs forwarding. With the router disabled
  (the kernel fallback path) LAN -> WAN and its replies are forwarded, WAN ->
  LAN only with ``firewall.forward_wan_to_lan``; with NAT wanted nftables
  masquerades on the WAN (the TEMPORARY KERNEL PATH, said in the log).
- paused devices (the ``devices`` config): nothing from their MACs is
  forwarded, nor anything to their addresses (their leases, reservations
  and the kernel's LAN neighbour entries when the table was written),
  established flows included; first in the forward chain. What they send
  to the gateway itself (input) is untouched.

The table outlives the appliance process, so that default-deny holds while a
restart is under way: enable() replaces it in one nft transaction, and only
disable() (`homegw cleanup`) removes it.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TABLE = "homegw_kernelpath"
FAMILY = "inet"
FORWARDING_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class KernelPath:
    """What the table must allow; see the module docstring."""

    lan_if: str
    wan_if: str
    kernel_forwards: bool  # the router is not in XDP: Linux forwards LAN <-> WAN
    masquerade: bool  # ... and masquerades (NAT wanted)
    wan_ping: bool = True
    forward_wan_to_lan: bool = False
    paused_macs: tuple[str, ...] = ()  # forward nothing from them ...
    paused_addresses: tuple[str, ...] = ()  # ... nor to their IPv4 addresses


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"nft refused the kernel-path rules: {result.stderr.strip()}")


def _input_chain(path: KernelPath) -> str:
    wan = f'iifname "{path.wan_if}"'
    ping = f"\n        {wan} icmp type echo-request accept" if path.wan_ping else ""
    return f"""
    chain input {{
        type filter hook input priority filter; policy accept;
        {wan} ct state established,related accept
        {wan} udp sport 67 udp dport 68 accept
        {wan} udp sport 547 udp dport 546 ip6 saddr fe80::/10 accept{ping}
        {wan} icmp type {{ destination-unreachable, time-exceeded, parameter-problem }} accept
        {wan} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} \
ip6 hoplimit 255 accept
        {wan} icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept
        {wan} icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded,
                              parameter-problem }} accept
        {wan} counter drop comment "from the WAN, not the gateway's own"
    }}"""


def _forward_chain(path: KernelPath) -> str:
    lan_in, lan_out = f'iifname "{path.lan_if}"', f'oifname "{path.lan_if}"'
    wan_in, wan_out = f'iifname "{path.wan_if}"', f'oifname "{path.wan_if}"'
    rules = [f"{lan_in} {lan_out} accept"]
    if path.kernel_forwards:
        rules[:0] = ["ct state established,related accept", "ct state invalid counter drop"]
        rules.append(f"{lan_in} {wan_out} meta nfproto ipv4 accept")
        if path.forward_wan_to_lan:
            rules.append(f"{wan_in} {lan_out} meta nfproto ipv4 accept")
    rules[:0] = _paused_rules(path)  # first: established flows included
    body = "\n        ".join(rules)
    return f"""
    chain forward {{
        type filter hook forward priority filter; policy drop;
        {body}
        counter drop comment "default deny"
    }}"""


def _paused_rules(path: KernelPath) -> list[str]:
    rules = []
    if path.paused_macs:
        macs = ", ".join(sorted(path.paused_macs))
        rules.append(f'ether saddr {{ {macs} }} counter drop comment "device paused: from"')
    if path.paused_addresses:
        addresses = ", ".join(sorted(path.paused_addresses))
        rules.append(
            f'oifname "{path.lan_if}" ip daddr {{ {addresses} }} counter drop '
            'comment "device paused: to"'
        )
    return rules


def lan_neighbours(lan_if: str) -> list[tuple[str, str]]:
    """(MAC, IPv4 address) of the kernel's neighbour entries on the LAN NIC."""
    from pyroute2 import IPRoute  # the appliance has it loaded; kept out of tests' imports

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=lan_if)
        entries = ipr.get_neighbours(ifindex=index[0], family=2) if index else []
    pairs = ((n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")) for n in entries)
    return [(mac.lower(), ip) for mac, ip in pairs if mac and ip]


def paused_devices(config: Any, leases: Iterable[Any]) -> dict[str, tuple[str, ...]]:
    """KernelPath's paused_macs and paused_addresses for a Config and the
    DHCP server's active leases."""
    macs = {d.mac for d in config.devices if d.paused}
    addresses = {str(r.address) for r in config.dhcp.reservations if r.mac in macs}
    addresses |= {str(lease.ip) for lease in leases if lease.mac in macs}
    if macs:
        addresses |= {ip for mac, ip in lan_neighbours(config.lan.interface) if mac in macs}
    return {"paused_macs": tuple(sorted(macs)), "paused_addresses": tuple(sorted(addresses))}


def _postrouting_chain(path: KernelPath) -> str:
    return f"""
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{path.wan_if}" meta nfproto ipv4 masquerade
    }}"""


def ruleset(path: KernelPath) -> str:
    chains = _input_chain(path) + _forward_chain(path)
    if path.kernel_forwards and path.masquerade:
        chains += _postrouting_chain(path)
    return f"table {FAMILY} {TABLE} {{{chains}\n}}\n"


def enable(path: KernelPath) -> None:
    """Install the table, replacing the last run's in one nft transaction:
    the forward path is never open, not even across a restart."""
    _delete_legacy_table()
    _nft(f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{ruleset(path)}")
    FORWARDING_SYSCTL.write_text("1")
    if path.kernel_forwards and path.masquerade:
        log.warning(
            "TEMPORARY KERNEL PATH active: %s -> %s forwarded by Linux + nftables masquerade "
            "(no NAT IO module in the chain)",
            path.lan_if,
            path.wan_if,
        )
    elif path.kernel_forwards:
        log.warning(
            "kernel path: %s -> %s forwarded by Linux (router disabled), forward chain "
            "default deny",
            path.lan_if,
            path.wan_if,
        )
    else:
        log.info("kernel forwards nothing between LAN and WAN; WAN input guarded (%s)", FAMILY)


def _delete_legacy_table() -> None:
    """The "ip" table of versions before the firewall."""
    subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)


def disable(quiet: bool = False) -> None:
    removed = False
    for family in (FAMILY, "ip"):  # "ip": the table of versions before the firewall
        result = subprocess.run(["nft", "delete", "table", family, TABLE], capture_output=True)
        removed |= result.returncode == 0
    if removed:
        FORWARDING_SYSCTL.write_text("0")
        if not quiet:
            log.info("kernel path removed")
