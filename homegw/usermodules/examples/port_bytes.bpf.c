/* Per-destination-port byte counter (an example user IO module): what the
 * home's devices send through the gateway, by protocol and destination port.
 *
 * LAN NIC, XDP ingress, last in the chain (after the router and NAT: the
 * forwarding decision is made; NAT rewrites sources, never the destination
 * port). Not TC egress of the WAN: frames the router forwards in XDP are
 * redirected to the WAN NIC and never pass its TC hook. Outcomes: every
 * frame goes on to the chain's end (hgw_next_xdp) untouched; counted:
 *   for one of the gateway's own addresses (HGW_F_LOCAL), or routed back
 *     into the LAN: not added (local)
 *   a TCP or UDP packet with its ports (first fragments included): its
 *     packets and bytes (the whole frame) added to its `ports` entry
 *     (counted)
 *   `ports` full for a new port: not added (table_full)
 *   anything else (not IPv4, another protocol, a later fragment, ports cut
 *     short): not added (other)
 * The `ports` map is read through the API:
 * GET /api/v1/modules/user/port_bytes/maps/ports; key "00500600" is TCP
 * port 80 (the port in network order, the protocol, a zero byte), the value
 * two little-endian u64: packets, bytes.
 */
#include "homegw_user.h"

#ifndef PORTS_MAX /* an upload's defines may set it */
#define PORTS_MAX 4096
#endif

enum { COUNTED, TABLE_FULL, OTHER, LOCAL };

struct port_key {
	__be16 port; /* destination port, network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct port_total {
	__u64 packets;
	__u64 bytes;
};

// <destination port and protocol, packets and bytes sent to it (shared by
// the CPUs: added atomically)>
BPF_HASH(ports, struct port_key, struct port_total, PORTS_MAX);

int port_bytes(struct xdp_md *ctx)
{
	struct hgw_decision d;
	struct hgw_packet p;

	if (hgw_decision_xdp(&d) == 0 &&
	    ((d.flags & HGW_F_LOCAL) || (d.fwd == HGW_FWD_REDIRECT && d.out_nic == HGW_NIC_LAN))) {
		hgw_count(LOCAL);
		return hgw_next_xdp(ctx);
	}
	if (hgw_parse_xdp(ctx, &p) < 0 || (!p.sport && !p.dport)) {
		hgw_count(OTHER);
		return hgw_next_xdp(ctx);
	}
	struct port_key key = { .port = bpf_htons(p.dport), .proto = p.l4proto };
	struct port_total zero = {};
	struct port_total *total = ports.lookup_or_try_init(&key, &zero);
	if (!total) {
		hgw_count(TABLE_FULL);
		return hgw_next_xdp(ctx);
	}
	__sync_fetch_and_add(&total->packets, 1);
	__sync_fetch_and_add(&total->bytes, p.len);
	hgw_count(COUNTED);
	return hgw_next_xdp(ctx);
}
