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
        "v6_malformed": "IPv6: malformed packets",
        "v6_ext_truncated": "IPv6: extension headers cut short",
        "v6_ext_too_many": "IPv6: too many extension headers",
        "v6_ext_hop_not_first": "IPv6: hop-by-hop options out of place",
        "v6_routing_type0": "IPv6: source-routed (routing header type 0)",
        "v6_martian_destination": "IPv6: to an impossible address",
        "v6_wan_martian_source": "IPv6: from the internet with an impossible source address",
        "v6_wan_spoofed_own_address": "IPv6: from the internet claiming the gateway's address",
        "v6_wan_spoofed_lan_source": "IPv6: from the internet claiming a home address",
        "v6_wan_transit": "IPv6: from the internet to an address outside the home",
        "v6_fragment_unadmitted": "IPv6: fragments of nothing let in",
        "v6_icmp_filtered": "IPv6: ICMPv6 types a home never needs (RFC 4890)",
        "v6_icmp_error_unmatched": "IPv6: ICMPv6 errors for no live connection",
        "v6_ping_rate_limited": "IPv6: pings to home devices over the rate limit",
        "v6_ping_lan_dropped": "IPv6: pings to home devices (LAN ping is off)",
        "v6_unsolicited": "IPv6: from the internet to a home device, not asked for",
        "v6_lan_spoofed_source": "IPv6: from a home device with a forged source address",
        "v6_sessions_full": "IPv6: new connections refused: the session table is full",
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
        "v6_bad_version": "IPv6: not IPv6 by their header",
        "v6_bad_length": "IPv6: length does not match the frame",
        "v6_truncated": "IPv6: headers cut short",
        "v6_too_many_headers": "IPv6: too many extension headers",
        "v6_hop_by_hop": "IPv6: hop-by-hop options (not forwarded)",
        "v6_link_local_source": "IPv6: link-local source, not to be forwarded",
        "v6_martian": "IPv6: impossible source or destination address",
        "v6_spoofed_source": "IPv6: source outside the side they came from",
        "v6_link_multicast": "IPv6: link multicast to a unicast address",
        "v6_wan_to_wan": "IPv6: from the WAN back out of the WAN",
        "v6_unreachable": "IPv6: no route to their destination",
        "v6_hop_limit_exceeded": "IPv6: their hop limit ran out (loops, traceroute)",
        "v6_packet_too_big": "IPv6: too big for the next link",
        "v6_icmp_suppressed": "IPv6: errors that may not be answered",
        "v6_neigh_limited": "IPv6: next hop not yet resolved",
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
