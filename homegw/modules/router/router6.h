/* router6.h: the pure parts of the router's IPv6 forwarding (RFC 8200,
 * RFC 4443, the forwarding parts of RFC 7084), no translation: structs and
 * checks without map access. Included by router.bpf.c after its counter enum;
 * its maps and router6_xdp, which runs for every frame with EtherType IPv6,
 * are there (bcc rewrites map calls only in the main file), and so is the
 * list of outcomes. The settings come from Ipv6Facts (RouterModule.on_ipv6):
 * the LAN /64s and the home's prefixes (one trie), the gateway's own
 * addresses, the sources of its errors, the WAN's default router, MTUs.
 *
 * A hop-by-hop options header on a packet to forward is dropped: routers
 * may ignore it (RFC 8200 4.3) but forwarding it here would pass on options
 * nobody checked, and the kernel path cannot take it instead: with XDP in
 * front the kernel forwards no IPv6 (forwarding is the router's job). */
#ifndef ROUTER6_H
#define ROUTER6_H

#include "homegw_ipv6.h"
#include "homegw_icmp6.h"

#define ROUTER6_MAX_PREFIXES 64
#define ROUTER6_MAX_OWN 64
#define ROUTER6_LAN 1    /* a /64 on the LAN link: delivered there */
#define ROUTER6_INSIDE 2 /* the home's space (delegated, ULA) but no LAN /64 */
/* Neighbour misses: ROUTER6_REASON_NEIGH_MISS + the egress NIC, with the
 * next hop in the punt's four meta words (network order). */
#define ROUTER6_REASON_NEIGH_MISS 2

struct router6_key {
	__u32 prefixlen;
	struct in6_addr addr;
};

struct router6_settings {
	struct in6_addr lan_address; /* source of errors to the LAN (:: none) */
	struct in6_addr wan_address; /* source of errors to the WAN (:: none) */
	struct in6_addr wan_gateway; /* next hop of the default route (:: none) */
	__u32 lan_mtu;
	__u32 wan_mtu;
	__u32 enabled; /* the LAN has IPv6 (a prefix at least) */
	__u32 pad;
};

static __always_inline int router6_is_unset(const struct in6_addr *a)
{
	return !(a->s6_addr32[0] | a->s6_addr32[1] | a->s6_addr32[2] | a->s6_addr32[3]);
}

/* Not a destination anybody may send to beyond a link: unspecified,
 * loopback, IPv4-mapped/compatible (multicast went to the kernel before). */
static __always_inline int router6_is_martian_destination(const struct in6_addr *a)
{
	return homegw_ipv6_is_unspecified_or_loopback(a) || homegw_ipv6_is_v4_embedded(a);
}

/* What is wrong with the packet for forwarding (a counter), or -1; the walk
 * of its extension headers in *l4. */
static __always_inline int router6_forward_problem(struct ipv6hdr *ip6, void *end,
						   struct homegw_l4v6 *l4)
{
	if (homegw_ipv6_is_link_local(&ip6->saddr))
		return C_V6_LINK_LOCAL_SOURCE;
	if (homegw_ipv6_is_martian_source(&ip6->saddr) ||
	    router6_is_martian_destination(&ip6->daddr))
		return C_V6_MARTIAN;
	switch (homegw_ipv6_walk(ip6, end, l4)) {
	case HOMEGW_V6_OK:
		break;
	case HOMEGW_V6_TRUNCATED:
		return C_V6_TRUNCATED;
	case HOMEGW_V6_HOP_NOT_FIRST:
		return C_V6_HOP_BY_HOP;
	default:
		return C_V6_TOO_MANY_HEADERS;
	}
	if (l4->l4_off > sizeof(*ip6) + ntohs(ip6->payload_len))
		return C_V6_TRUNCATED; /* the headers run past the payload length */
	if (l4->hop_by_hop)
		return C_V6_HOP_BY_HOP;
	return -1;
}

/* Whether a source whose longest prefix is of `kind` (0: none) may arrive on
 * in_nic: the LAN's are the home's (its LAN /64s, kept while deprecated, and
 * its delegated and ULA space), the WAN's never are (BCP 38 both ways). */
static __always_inline int router6_source_fits(u32 in_nic, u32 kind)
{
	return in_nic == HOMEGW_NIC_LAN ? kind != 0 : kind == 0;
}

/* The egress of a packet to forward and its next hop, from the kind of the
 * destination's longest prefix: HOMEGW_NIC_* or HOMEGW_NIC_NONE, then with
 * *why C_V6_WAN_TO_WAN (drop it) or left as it was (no route). */
static __always_inline u32 router6_route(struct router6_settings *s, u32 in_nic, u32 kind,
					 const struct in6_addr *daddr, struct in6_addr *next_hop,
					 u32 *why)
{
	if (kind == ROUTER6_LAN) {
		*next_hop = *daddr;
		return HOMEGW_NIC_LAN;
	}
	if (in_nic == HOMEGW_NIC_WAN) {
		*why = C_V6_WAN_TO_WAN;
		return HOMEGW_NIC_NONE;
	}
	if (kind == ROUTER6_INSIDE || router6_is_unset(&s->wan_gateway))
		return HOMEGW_NIC_NONE; /* RFC 7084 WPD-5: no route out for the home's own space */
	*next_hop = s->wan_gateway;
	return HOMEGW_NIC_WAN;
}

#endif /* ROUTER6_H */
