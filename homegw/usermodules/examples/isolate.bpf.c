/* Isolate devices from the rest of the LAN (an example user IO module): an
 * isolated device reaches the internet and the gateway's DHCP and DNS, and
 * nothing else through the gateway (not the admin UI, not other LAN hosts);
 * no other device reaches it through the gateway.
 *
 * LAN NIC, XDP, right after the router: it reads the router's decision
 * (hgw_decision_xdp). A forwarded frame's MACs were rewritten by then, so
 * the sender is the decision's in_src_mac; a frame for the gateway keeps
 * its own. Outcomes, each counted:
 *   from an isolated device:
 *     routed out of the WAN                      the next module (internet)
 *     routed back into the LAN                   dropped (to_lan)
 *     to the gateway: ARP, DHCP (UDP to port 67), DNS (UDP or TCP to port
 *       53), IPv6 neighbour discovery and router solicitation (ICMPv6 133
 *       to 136), DHCPv6 (UDP to port 547)       the next module (service)
 *     to the gateway, anything else (the web UI, ping, SSH, a broadcast to
 *       another service, an IPv4 fragment, IPv6 with extension headers)
 *                                                dropped (to_gateway)
 *   from another device, routed to an isolated one (rewritten destination
 *     MAC in `isolated`)                         dropped (to_isolated)
 *   anything else (shorter than an Ethernet header included: the modules
 *     after it drop what they cannot parse)      the next module (other)
 * What it cannot do: frames two hosts exchange directly (the same switch or
 * Wi-Fi access point) never reach the gateway's port; isolating those needs
 * the access point's client isolation or a VLAN.
 */
#include "homegw_user.h"
#include <uapi/linux/in6.h>

#define ISOLATED_MAX 1024
#define IPV6_HEADER 40

enum { INTERNET, SERVICE, TO_GATEWAY, TO_LAN, TO_ISOLATED, OTHER };

// <device MAC (hgw_mac_key: the 6 bytes, 2 zero), 1: the device is isolated>
BPF_HASH(isolated, __u64, __u8, ISOLATED_MAX);

static __always_inline int is_isolated(const unsigned char *mac)
{
	__u64 key = hgw_mac_key(mac);

	return isolated.lookup(&key) != NULL;
}

/* An IPv6 frame to the gateway: ND, RS, DHCPv6 and DNS only. */
static __always_inline int ipv6_service(struct xdp_md *ctx)
{
	void *end = (void *)(long)ctx->data_end;
	__u8 *ip6 = (void *)(long)ctx->data + sizeof(struct ethhdr);

	if ((void *)(ip6 + IPV6_HEADER + 4) > end)
		return 0;
	__u8 next = ip6[6];
	__u8 *l4 = ip6 + IPV6_HEADER;
	if (next == IPPROTO_ICMPV6)
		return l4[0] >= 133 && l4[0] <= 136;
	__u16 dport = ((__u16)l4[2] << 8) | l4[3];
	if (next == IPPROTO_UDP)
		return dport == 547 || dport == 53;
	return next == IPPROTO_TCP && dport == 53;
}

/* A frame from an isolated device to the gateway itself: the few services
 * an isolated device needs. */
static __always_inline int gateway_service(struct xdp_md *ctx, struct hgw_packet *p)
{
	if (p->proto == ETH_P_ARP)
		return 1;
	if (p->proto == ETH_P_IPV6)
		return ipv6_service(ctx);
	if (!p->ip || !p->first_fragment)
		return 0;
	if (p->l4proto == IPPROTO_UDP)
		return p->dport == 67 || p->dport == 53;
	return p->l4proto == IPPROTO_TCP && p->dport == 53;
}

static __always_inline int from_isolated(struct xdp_md *ctx, struct hgw_packet *p,
					 struct hgw_decision *d)
{
	if (d->fwd == HGW_FWD_REDIRECT) {
		if (d->out_nic == HGW_NIC_WAN) {
			hgw_count(INTERNET);
			return hgw_next_xdp(ctx);
		}
		hgw_count(TO_LAN);
		return XDP_DROP;
	}
	if (gateway_service(ctx, p)) {
		hgw_count(SERVICE);
		return hgw_next_xdp(ctx);
	}
	hgw_count(TO_GATEWAY);
	return XDP_DROP;
}

int isolate(struct xdp_md *ctx)
{
	struct hgw_packet p;
	struct hgw_decision d;

	if (hgw_parse_xdp(ctx, &p) < 0 || hgw_decision_xdp(&d) < 0) {
		hgw_count(OTHER);
		return hgw_next_xdp(ctx);
	}
	int routed = d.fwd == HGW_FWD_REDIRECT;
	if (is_isolated(routed ? d.in_src_mac : p.eth->h_source))
		return from_isolated(ctx, &p, &d);
	if (routed && d.out_nic == HGW_NIC_LAN && is_isolated(p.eth->h_dest)) {
		hgw_count(TO_ISOLATED);
		return XDP_DROP;
	}
	hgw_count(OTHER);
	return hgw_next_xdp(ctx);
}
