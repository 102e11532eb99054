"""The drop counters of the firewall, NAT and router modules that the
Firewall & NAT page shows, each said in plain words. A module's other
counters (passed, forwarded, translated) are not drops and are left out."""

from __future__ import annotations

from typing import Any

DROP_REASONS: dict[str, dict[str, str]] = {
    "firewall": {
        "wan_to_lan": "From the internet to a home device, not asked for",
        "wan_transit": "From the internet to an address that is not the gateway's",
        "wan_spoofed_lan_source": "From the internet claiming a home address",
        "wan_spoofed_own_address": "From the internet claiming the gateway's own address",
        "wan_martian_source": "From the internet with an impossible source address",
        "wan_ping_dropped": "Pings to the WAN address (WAN ping is off)",
        "lan_spoofed_source": "From a home device with a forged source address",
        "malformed": "Malformed packets",
    },
    "nat": {
        "unsolicited_dropped": "From the internet with no connection, forward or DMZ host",
        "refused_table_full": "New connections refused: the session table is full",
        "ports_exhausted": "New connections refused: no WAN port left",
        "inbound_budget_full": "Inbound connections refused: their budget is used up",
        "inbound_remote_cap": "Inbound connections refused: one remote has its share",
        "inbound_port_cap": "Inbound connections refused: one port has its share",
        "inbound_table_full": "Inbound connections refused: the session table is full",
        "fragments_dropped": "Fragments dropped (too many or too long)",
        "icmp_errors_unmatched": "ICMP errors for no live connection",
        "icmp_errors_bad": "Malformed or forged ICMP errors",
        "icmp_out_dropped": "ICMP from home devices without an identifier",
        "truncated_dropped": "Packets cut short",
        "untranslatable_dropped": "To the internet while the WAN has no address",
        "hairpin_neighbour_limited": "To a home server by the WAN address, not yet resolved",
    },
    "router": {
        "bad_version": "Not IPv4 by their header",
        "bad_ihl": "Bad IPv4 header length",
        "bad_checksum": "Bad IPv4 header checksum",
        "bad_length": "IPv4 length does not match the frame",
        "link_broadcast": "Link broadcast to a unicast address",
        "martian": "Impossible source or destination address",
        "wan_to_wan": "From the WAN back out of the WAN",
        "ttl_exceeded": "Their time to live ran out (loops, traceroute)",
        "unreachable": "No route to their destination",
        "frag_needed": "Too big and not to be fragmented",
        "frag_too_big": "Too big to fragment",
        "neigh_limited": "Next hop not yet resolved",
        "icmp_suppressed": "Errors that may not be answered",
        "device_table_full": "Not counted per device: the device table is full",
    },
}


def drop_counts(modules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every drop counter of the three modules, most first (zeros last):
    {module, reason, label, count}."""
    rows = []
    for module in modules:
        labels = DROP_REASONS.get(module["name"], {})
        for reason, count in module.get("counters", {}).items():
            if reason in labels:
                rows.append(
                    {
                        "module": module["name"],
                        "reason": reason,
                        "label": labels[reason],
                        "count": count,
                    }
                )
    return sorted(rows, key=lambda row: (-row["count"], row["module"], row["reason"]))
