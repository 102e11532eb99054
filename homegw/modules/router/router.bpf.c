/* Router IO module: IPv4 forwarding between the LAN and WAN NICs in XDP
 * (RFC 1812 as it applies to a home gateway).
 *
 * For a packet to forward it validates the IPv4 header, looks up the route
 * (LPM trie), the next hop's MAC (the shared neighbour map, homegw.h),
 * decrements the TTL, rewrites the MACs and records the egress in the chain
 * cursor; the chain's end then redirects it (or the NAT module after it
 * translates it first). Outcomes, each counted:
 *   not IPv4, for the gateway, to an IP broadcast or multicast address, a
 *     DHCP server's reply arriving on the WAN (the gateway's own client, to
 *     an address it may not have yet), or a unicast frame for another MAC:
 *     the kernel (its input path; nothing
 *     the kernel would have to forward is handed to it)
 *   bad IPv4 header (version, IHL, checksum, total length vs the frame):
 *     dropped, a counter per reason
 *   link-layer broadcast or multicast to a unicast IP: dropped (RFC 1812
 *     5.3.4 leaves forwarding them to nobody)
 *   martian: from 0/8, 127/8, 224/3, 255.255.255.255, a subnet broadcast,
 *     or to 0/8, 127/8, 240/4: dropped
 *   WAN back out of the WAN: dropped (nobody on the ISP's link transits us);
 *     LAN back out of the LAN (a static route via a LAN router): forwarded
 *   TTL <= 1           ICMP time exceeded
 *   DF and over MTU    ICMP fragmentation needed
 *   no route / NIC down ICMP destination net unreachable
 *   over MTU, no DF    forwarded with HOMEGW_F_FRAGMENT: the chain's end hands
 *                      it, translated by NAT by then, to the dataplane's slow
 *                      path, which fragments it; frames over the punt cap
 *                      (1514 bytes) dropped
 *   from or to a paused LAN device (the `devices` config; its MAC in the
 *     shared policy map, homegw.h): dropped, counted device_paused and in
 *     the device's `dropped`; what it sends to the gateway itself (DHCP,
 *     DNS, the web UI) is not forwarded and goes on as before
 *   unknown neighbour  punted to the slow path (at most one punt per next hop
 *                      per HOMEGW_NEIGH_PUNT_INTERVAL_NS, others dropped),
 *                      which resolves it and sends the packet again
 * ICMP errors go back out of the ingress NIC from the gateway's address
 * there, at most ROUTER_ICMP_PER_SEC per CPU, never where RFC 1812 4.3.2.7
 * forbids them (then the packet is dropped, counted icmp_suppressed); they
 * quote up to 576 bytes, the packet as the remote sent it if NAT translated
 * its destination (HOMEGW_F_DNAT).
 *
 * IPv6 (router6_xdp; pure parts in router6.h), forwarded without
 * translation (RFC 8200, RFC 4443, RFC 7084) from the settings the IPv6
 * facts give (on_ipv6); each outcome counted as v6_*:
 *   IPv6 off (no LAN prefix yet): the kernel
 *   no whole fixed header, payload length past the frame, version not 6:
 *     dropped (v6_bad_length, v6_bad_version)
 *   to one of the gateway's addresses: the kernel, HOMEGW_F_LOCAL set;
 *     to a multicast or link-local address (NDP, RS, DHCPv6, MLD), or a
 *     unicast frame for another MAC: the kernel
 *   link-layer multicast to a unicast address: dropped
 *   forwarded from a link-local source: dropped (v6_link_local_source);
 *     from a multicast, unspecified, loopback or IPv4-embedded source or to
 *     an unspecified, loopback or IPv4-embedded address: dropped (v6_martian)
 *   from the LAN with a source outside the home's prefixes, from the WAN
 *     with one inside them: dropped (v6_spoofed_source)
 *   extension headers past the frame or too many (homegw_ipv6_walk):
 *     dropped; a hop-by-hop options header: dropped (see router6.h); other
 *     extension headers (destination options, routing, fragment) forwarded
 *     untouched
 *   from the LAN: to a LAN /64 back out of the LAN; to the home's other
 *     space (a delegated prefix, the ULA /48) ICMPv6 no route (RFC 7084
 *     WPD-5); else to the WAN's default router (none, or a NIC down: ICMPv6
 *     no route)
 *   from the WAN: to a LAN /64 onto the LAN; anything else dropped
 *     (v6_wan_to_wan)
 *   hop limit <= 1: ICMPv6 time exceeded; over the egress MTU: ICMPv6
 *     packet too big with the MTU (no IPv6 router fragments)
 *   unknown neighbour: punted as IPv4's (reason ROUTER6_REASON_NEIGH_MISS +
 *     egress NIC), others dropped; a paused device: dropped
 * ICMPv6 errors go back out of the ingress NIC from the facts' LAN or WAN
 * address (none there: dropped), quoting up to 1280 bytes in all, within
 * the IPv4 errors' per-CPU budget, never about an ICMPv6 error, a packet to
 * a multicast address (but packet too big) or from a source that is not one
 * host (RFC 4443 2.4: dropped, v6_icmp_suppressed).
 *
 * Long (both families in one program: one chain position, one pass over the
 * frame) although IPv6's pure checks live in router6.h: bcc rewrites map
 * calls only in the main file, so every function touching a map is here. */
#include "homegw.h"
#include "homegw_icmp.h"

#define ROUTER_MAX_ROUTES 1024
#define ROUTER_ICMP_PER_SEC 1000 /* ICMP errors per CPU and second, at most */

/* maps.py reads the counter names from this enum. */
enum router_counter {
	C_FORWARDED, /* not counted here: the sum of homegw_nic_forwarded */
	C_TO_KERNEL,
	C_NEIGH_MISS,
	C_TTL_EXCEEDED,
	C_FRAG_NEEDED,
	C_UNREACHABLE,
	C_ICMP_RATE_LIMITED,
	C_DEVICE_TABLE_FULL,
	C_BAD_VERSION,
	C_BAD_IHL,
	C_BAD_CHECKSUM,
	C_BAD_LENGTH,
	C_LINK_BROADCAST,
	C_MARTIAN,
	C_WAN_TO_WAN,
	C_ICMP_SUPPRESSED,
	C_ICMP_FAILED,
	C_TO_FRAGMENT,
	C_FRAG_TOO_BIG,
	C_NEIGH_LIMITED,
	C_DEVICE_PAUSED,
	C_V6_FORWARDED, /* IPv6 (router6.h) */
	C_V6_TO_KERNEL,
	C_V6_BAD_VERSION,
	C_V6_BAD_LENGTH,
	C_V6_TRUNCATED,
	C_V6_TOO_MANY_HEADERS,
	C_V6_HOP_BY_HOP,
	C_V6_LINK_LOCAL_SOURCE,
	C_V6_MARTIAN,
	C_V6_SPOOFED_SOURCE,
	C_V6_LINK_MULTICAST,
	C_V6_WAN_TO_WAN,
	C_V6_UNREACHABLE,
	C_V6_HOP_LIMIT_EXCEEDED,
	C_V6_PACKET_TOO_BIG,
	C_V6_ICMP_SUPPRESSED,
	C_V6_ICMP_FAILED,
	C_V6_NEIGH_MISS,
	C_V6_NEIGH_LIMITED,
	C_V6_DEVICE_PAUSED,
	C_COUNTERS,
};

#include ROUTER6_HEADER /* router6.h (module.py defines the path); after the counters: its checks answer with them */

struct route_key {
	__u32 prefixlen;
	__be32 addr;
};

struct route {
	__be32 gateway; /* 0: destination is on the link */
	__u32 nic;      /* HOMEGW_NIC_* of the egress */
};

struct iface {
	__u32 ifindex;
	__be32 addr;    /* the gateway's own address on this NIC (0: none yet) */
	__be32 mask;    /* its subnet mask */
	__be32 gateway; /* next hop of the default route, if it leaves by this NIC */
	__u32 mtu;
	__u32 up;       /* carrier up */
	unsigned char mac[ETH_ALEN];
	__u16 pad;
};

struct settings {
	__u32 use_lpm;  /* static routes exist: look routes up in the trie */
};

struct icmp_budget {
	__u64 window_start_ns;
	__u32 sent;
	__u32 pad;
};

// <prefix length + IPv4 destination, next hop and egress NIC>
BPF_F_TABLE("lpm_trie", struct route_key, struct route, router_routes, ROUTER_MAX_ROUTES,
	    BPF_F_NO_PREALLOC);
// <HOMEGW_NIC_*, the gateway's interface there>
BPF_ARRAY(router_ifaces, struct iface, HOMEGW_NICS);
// <0, how routes are looked up>
BPF_ARRAY(router_settings, struct settings, 1);
// (the neighbour map, homegw_neigh, is declared in homegw.h: NAT uses it too)
// <enum router_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, router_stats, C_COUNTERS,
		 HOMEGW_PIN("router_stats"));
// (what it forwards out of each NIC: homegw_nic_forwarded, in homegw.h: the
// flow fast path forwards for it and counts there too)
// <0, ICMP errors sent in the current second on this CPU>
BPF_PERCPU_ARRAY(router_icmp_budget, struct icmp_budget, 1);

static __always_inline void count(u32 counter)
{
	u64 *value = router_stats.lookup(&counter);

	if (value)
		*value += 1;
}

/* Count the frame for its LAN device; whether that device is paused (drop it). */
static __always_inline int device_paused(const unsigned char *mac, u64 bytes, int what, u64 now)
{
	int counted = homegw_count_device(mac, bytes, what, now);

	if (counted == HOMEGW_DEVICE_FULL)
		count(C_DEVICE_TABLE_FULL);
	return counted == HOMEGW_DEVICE_IS_PAUSED;
}

/* Whether the LAN device that sent the frame or the one it goes to is paused;
 * the device's traffic is counted. LAN -> LAN (a static route via a LAN
 * router) is counted for the sender; its next hop is checked in the policy. */
static __always_inline int paused(const unsigned char *from, const unsigned char *to, u64 bytes,
				  u32 in_nic, u32 out_nic, u64 now)
{
	if (in_nic == HOMEGW_NIC_LAN) {
		if (device_paused(from, bytes, HOMEGW_DEVICE_FROM, now))
			return 1;
		return out_nic == HOMEGW_NIC_LAN && homegw_device_paused(to);
	}
	return out_nic == HOMEGW_NIC_LAN && device_paused(to, bytes, HOMEGW_DEVICE_TO, now);
}

static __always_inline int icmp_allowed(void)
{
	u32 zero = 0;
	struct icmp_budget *budget = router_icmp_budget.lookup(&zero);
	u64 now = bpf_ktime_get_coarse_ns();

	if (!budget)
		return 0;
	if (now - budget->window_start_ns >= 1000000000ULL) {
		budget->window_start_ns = now;
		budget->sent = 0;
	}
	if (budget->sent >= ROUTER_ICMP_PER_SEC) {
		count(C_ICMP_RATE_LIMITED);
		return 0;
	}
	budget->sent++;
	return 1;
}

static __always_inline int is_subnet_broadcast(__be32 addr, struct iface *nic)
{
	return nic->addr && nic->mask != 0xffffffff && addr == (nic->addr | ~nic->mask);
}

/* Destinations the kernel's input path takes (it forwards none of them). */
static __always_inline int is_broadcast_or_multicast(__be32 daddr, struct iface *in,
						     struct iface *other)
{
	return (ntohl(daddr) >> 28) == 0xe || daddr == 0xffffffff ||
	       is_subnet_broadcast(daddr, in) || is_subnet_broadcast(daddr, other);
}

/* Not a unique host's address as a source (RFC 1812 5.3.7, 4.3.2.7). */
/* UDP from a DHCP server to a client (67 -> 68): on the WAN, for the
 * gateway's own DHCP client, also when unicast to an address it has not
 * configured yet. */
static __always_inline int is_dhcp_to_client(struct iphdr *ip, void *end)
{
	__be16 *ports = (void *)ip + ip->ihl * 4;

	if (ip->protocol != IPPROTO_UDP || (ip->frag_off & htons(0x1fff)) ||
	    (void *)(ports + 2) > end)
		return 0;
	return ports[0] == htons(67) && ports[1] == htons(68);
}

static __always_inline int is_martian_source(__be32 saddr, struct iface *in)
{
	u32 host = ntohl(saddr);

	return (host >> 24) == 0 || (host >> 24) == 127 || (host >> 29) == 7 ||
	       is_subnet_broadcast(saddr, in);
}

static __always_inline int is_martian_destination(__be32 daddr)
{
	u32 host = ntohl(daddr);

	return (host >> 24) == 0 || (host >> 24) == 127 || (host >> 28) == 0xf;
}

/* What is wrong with the IPv4 header (a counter), or -1. The checksum costs
 * ten 16-bit adds; options add up to twenty more. */
static __always_inline int ip_header_problem(struct iphdr *ip, void *data, void *end)
{
	if (ip->version != 4)
		return C_BAD_VERSION;
	if (ip->ihl < 5)
		return C_BAD_IHL;
	u32 header_bytes = ip->ihl * 4;
	__u16 *word = (__u16 *)ip;
	u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	if (header_bytes > 20) {
		/* options: 4 to 40 bytes, one 32-bit word at a time */
#pragma clang loop unroll(full)
		for (int i = 0; i < 10; i++) {
			__u16 *option = (void *)ip + 20 + 4 * i;
			if (20 + 4 * i >= header_bytes)
				break;
			if ((void *)(option + 2) > end)
				return C_BAD_LENGTH;
			sum += option[0];
			sum += option[1];
		}
	}
	if (homegw_csum_fold(sum))
		return C_BAD_CHECKSUM;
	u32 total = ntohs(ip->tot_len);
	if (total < header_bytes || (void *)ip + total > end)
		return C_BAD_LENGTH;
	return -1;
}

/* Answer with an ICMP error from the gateway's address on the ingress NIC,
 * where RFC 1812 allows one; drop the packet otherwise. */
static __always_inline int icmp_error(struct xdp_md *ctx, struct homegw_cursor *cur,
				      struct iface *in, struct iphdr *ip, void *end, u8 type,
				      u8 code, __be32 rest, u32 counter)
{
	count(counter);
	if (!homegw_icmp_error_allowed(ip, end)) {
		count(C_ICMP_SUPPRESSED);
		return XDP_DROP;
	}
	if (!in->addr || !icmp_allowed())
		return XDP_DROP;
	__be32 orig_daddr = (cur->flags & HOMEGW_F_DNAT) ? cur->orig_daddr : 0;
	if (homegw_icmp_error_quoting_xdp(ctx, type, code, in->addr, rest, orig_daddr,
					  cur->orig_dport) == 0)
		return homegw_tx_xdp(ctx);
	count(C_ICMP_FAILED);
	return XDP_DROP;
}

/* The route to daddr. The trie holds every route; without static routes
 * (the common home) the same answer comes cheaper from the two NICs'
 * subnets and the default route, so the trie is only searched when needed. */
static __always_inline int find_route(__be32 daddr, u32 in_nic, struct iface *in,
				      struct iface *other, struct route *found)
{
	u32 zero = 0;
	struct settings *settings = router_settings.lookup(&zero);

	if (!settings || settings->use_lpm) {
		struct route_key key = { .prefixlen = 32, .addr = daddr };
		struct route *hit = router_routes.lookup(&key);
		if (!hit)
			return 0;
		*found = *hit;
		return 1;
	}
	found->gateway = 0;
	if (in->addr && !((daddr ^ in->addr) & in->mask)) {
		found->nic = in_nic;
	} else if (other->addr && !((daddr ^ other->addr) & other->mask)) {
		found->nic = in_nic ^ 1;
	} else if (in->gateway) {
		found->nic = in_nic;
		found->gateway = in->gateway;
	} else if (other->gateway) {
		found->nic = in_nic ^ 1;
		found->gateway = other->gateway;
	} else {
		return 0;
	}
	return 1;
}

static __always_inline int to_kernel(struct xdp_md *ctx)
{
	count(C_TO_KERNEL);
	return homegw_next_xdp(ctx);
}

static __always_inline int drop(u32 counter)
{
	count(counter);
	return XDP_DROP;
}

/* Send the frame on to neigh out of `out` (both families, the hop count
 * already decremented): the MACs rewritten (the arrival's kept in the
 * cursor), the egress counted, the decision left for the chain's end. */
static __always_inline int forward(struct xdp_md *ctx, struct homegw_cursor *cur, struct ethhdr *eth,
				   struct homegw_neighbour *neigh, struct iface *out, u32 out_nic,
				   u64 bytes)
{
	__builtin_memcpy(cur->in_src_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(cur->in_dst_mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, neigh->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, out->mac, ETH_ALEN);

	homegw_count_forwarded(out_nic, bytes);
	cur->fwd = HOMEGW_FWD_REDIRECT;
	cur->out_ifindex = out->ifindex;
	cur->out_nic = out_nic;
	cur->out_mtu = out->mtu;
	return homegw_next_xdp(ctx);
}

/* IPv6 (the pure parts in router6.h; bcc rewrites map calls only here) */
// <prefix length + IPv6 prefix, ROUTER6_LAN or ROUTER6_INSIDE>
BPF_F_TABLE("lpm_trie", struct router6_key, __u32, router6_prefixes, ROUTER6_MAX_PREFIXES,
	    BPF_F_NO_PREALLOC);
// <IPv6 address of the gateway, 1>
BPF_HASH(router6_own, struct in6_addr, __u32, ROUTER6_MAX_OWN);
// <0, the IPv6 facts the datapath needs beyond the two tables>
BPF_ARRAY(router6_settings, struct router6_settings, 1);
// <in6 next hop, struct homegw_neighbour>: mirrored from the kernel's NDP
// table by neigh.py; incomplete entries are made here on a miss
BPF_TABLE_PINNED("hash", struct in6_addr, struct homegw_neighbour, router_neigh6,
		 HOMEGW_MAX_NEIGHBOURS, HOMEGW_PIN("router_neigh6"));

static __always_inline void router6_punt_miss(struct xdp_md *ctx, const struct in6_addr *next_hop,
					      __u32 nic)
{
	struct homegw_punt hdr = {
		.module = HOMEGW_ROUTER_ID,
		.reason = ROUTER6_REASON_NEIGH_MISS + nic,
	};

	__builtin_memcpy(hdr.meta, next_hop, sizeof(*next_hop));
	homegw_punt_hdr_xdp(ctx, &hdr);
}

/* homegw_neighbour_xdp for an IPv6 next hop (router_neigh6). */
static __always_inline struct homegw_neighbour *router6_neighbour(struct xdp_md *ctx,
								  const struct in6_addr *next_hop,
								  __u32 nic, __u64 now, int *miss)
{
	struct in6_addr key = *next_hop;
	struct homegw_neighbour *n = router_neigh6.lookup(&key);

	if (n && n->nic == nic) {
		homegw_neigh_mark_used(n, now);
		return n;
	}
	struct homegw_neighbour incomplete = { .nic = HOMEGW_NIC_NONE, .punted_ns = now };
	/* the first miss makes the incomplete entry (BPF_NOEXIST: one CPU wins;
	 * a full map punts nothing), later ones punt once an interval */
	int due = n ? homegw_neigh_punt_due(n, now) : router_neigh6.insert(&key, &incomplete) == 0;
	if (due)
		router6_punt_miss(ctx, &key, nic);
	*miss = due ? HOMEGW_NEIGH_PUNTED : HOMEGW_NEIGH_LIMITED;
	return NULL;
}

/* The kind of the longest prefix holding a (ROUTER6_LAN, ROUTER6_INSIDE), 0: none. */
static __always_inline __u32 router6_prefix_kind(const struct in6_addr *a)
{
	struct router6_key key = { .prefixlen = 128, .addr = *a };
	__u32 *kind = router6_prefixes.lookup(&key);

	return kind ? *kind : 0;
}

/* Answer with an ICMPv6 error from the gateway's address on the ingress
 * side, where RFC 4443 2.4 allows one; drop the packet otherwise. */
static __always_inline int router6_icmp_error(struct xdp_md *ctx, struct router6_settings *s,
					      u32 in_nic, struct ipv6hdr *ip6, void *end,
					      const struct homegw_l4v6 *l4, u8 type, u8 code,
					      __be32 rest, u32 counter)
{
	const struct in6_addr *from = in_nic == HOMEGW_NIC_LAN ? &s->lan_address : &s->wan_address;

	count(counter);
	if (!homegw_icmp6_error_allowed(ip6, end, l4, type)) {
		count(C_V6_ICMP_SUPPRESSED);
		return XDP_DROP;
	}
	if (router6_is_unset(from) || !icmp_allowed())
		return XDP_DROP;
	if (homegw_icmp6_error_xdp(ctx, type, code, from, rest) == 0)
		return homegw_tx_xdp(ctx);
	count(C_V6_ICMP_FAILED);
	return XDP_DROP;
}

static __always_inline int router6_to_kernel(struct xdp_md *ctx)
{
	count(C_V6_TO_KERNEL);
	return homegw_next_xdp(ctx);
}

/* The verdict for a packet that is not to be forwarded: for the gateway
 * itself, the kernel's input path, or dropped; -1 for one to forward. */
static __always_inline int router6_not_forwarded(struct xdp_md *ctx, struct homegw_cursor *cur,
						 struct ethhdr *eth, struct ipv6hdr *ip6,
						 struct iface *in)
{
	struct in6_addr daddr = ip6->daddr;

	if (router6_own.lookup(&daddr)) { /* the gateway's own */
		cur->flags |= HOMEGW_F_LOCAL;
		return homegw_next_xdp(ctx);
	}
	if (homegw_ipv6_is_multicast(&daddr) || homegw_ipv6_is_link_local(&daddr))
		return router6_to_kernel(ctx); /* NDP, RS, DHCPv6, MLD, link-local: its input */
	if (!homegw_same_mac(eth->h_dest, in->mac)) {
		if (eth->h_dest[0] & 1) /* link-layer multicast to a unicast address */
			return drop(C_V6_LINK_MULTICAST);
		return router6_to_kernel(ctx); /* another host's frame: the kernel discards it */
	}
	return -1;
}

static __always_inline int router6_xdp(struct xdp_md *ctx, struct homegw_cursor *cur)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	u32 zero = 0;
	struct router6_settings *s = router6_settings.lookup(&zero);

	if (!s || !s->enabled)
		return router6_to_kernel(ctx); /* IPv6 off: the kernel's (it forwards none) */
	if ((void *)(ip6 + 1) > end)
		return drop(C_V6_BAD_LENGTH);
	if (ip6->version != 6)
		return drop(C_V6_BAD_VERSION);
	if ((void *)(ip6 + 1) + ntohs(ip6->payload_len) > end)
		return drop(C_V6_BAD_LENGTH);
	u32 in_nic = cur->nic;
	struct iface *in = router_ifaces.lookup(&in_nic);
	u32 other_nic = in_nic ^ 1;
	struct iface *other = router_ifaces.lookup(&other_nic);
	if (!in || !other)
		return homegw_next_xdp(ctx);
	int verdict = router6_not_forwarded(ctx, cur, eth, ip6, in);
	if (verdict >= 0)
		return verdict;
	struct homegw_l4v6 l4 = {};
	int problem = router6_forward_problem(ip6, end, &l4);
	if (problem >= 0)
		return drop(problem);
	struct in6_addr saddr = ip6->saddr;
	if (!router6_source_fits(in_nic, router6_prefix_kind(&saddr)))
		return drop(C_V6_SPOOFED_SOURCE);

	struct in6_addr daddr = ip6->daddr, next_hop = {};
	u32 why = C_V6_UNREACHABLE;
	u32 out_nic = router6_route(s, in_nic, router6_prefix_kind(&daddr), &daddr, &next_hop, &why);
	struct iface *out = out_nic == in_nic ? in : other;
	/* Each answer returns at once: after an error is built the packet
	 * pointers are stale. */
	if (out_nic == HOMEGW_NIC_NONE && why == C_V6_WAN_TO_WAN)
		return drop(C_V6_WAN_TO_WAN);
	if (out_nic == HOMEGW_NIC_NONE || !out->up || !out->ifindex)
		return router6_icmp_error(ctx, s, in_nic, ip6, end, &l4, HOMEGW_ICMP6_DEST_UNREACH,
					  HOMEGW_ICMP6_NO_ROUTE, 0, C_V6_UNREACHABLE);
	if (ip6->hop_limit <= 1)
		return router6_icmp_error(ctx, s, in_nic, ip6, end, &l4, HOMEGW_ICMP6_TIME_EXCEEDED,
					  HOMEGW_ICMP6_HOP_EXCEEDED, 0, C_V6_HOP_LIMIT_EXCEEDED);
	u32 mtu = out_nic == HOMEGW_NIC_LAN ? s->lan_mtu : s->wan_mtu;
	if (sizeof(*ip6) + ntohs(ip6->payload_len) > mtu) /* routers never fragment IPv6 */
		return router6_icmp_error(ctx, s, in_nic, ip6, end, &l4,
					  HOMEGW_ICMP6_PACKET_TOO_BIG, 0, htonl(mtu),
					  C_V6_PACKET_TOO_BIG);

	int miss = 0;
	u64 now = bpf_ktime_get_coarse_ns(); /* once: neighbour use and device marks */
	struct homegw_neighbour *neigh = router6_neighbour(ctx, &next_hop, out_nic, now, &miss);
	if (!neigh) /* punted (the slow path resends it once resolved) or limited */
		return drop(miss == HOMEGW_NEIGH_PUNTED ? C_V6_NEIGH_MISS : C_V6_NEIGH_LIMITED);
	u64 bytes = (u64)(end - data);
	if (paused(eth->h_source, neigh->mac, bytes, in_nic, out_nic, now))
		return drop(C_V6_DEVICE_PAUSED);

	ip6->hop_limit--; /* IPv6 has no header checksum */
	count(C_V6_FORWARDED);
	return forward(ctx, cur, eth, neigh, out, out_nic, bytes);
}


int router_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (!cur || (void *)(eth + 1) > end)
		return homegw_next_xdp(ctx);
	if (eth->h_proto == htons(ETH_P_IPV6))
		return router6_xdp(ctx, cur);
	if (eth->h_proto != htons(ETH_P_IP))
		return homegw_next_xdp(ctx);
	if ((void *)(ip + 1) > end)
		return drop(C_BAD_LENGTH);
	int problem = ip_header_problem(ip, data, end);
	if (problem >= 0)
		return drop(problem);
	u32 in_nic = cur->nic;
	struct iface *in = router_ifaces.lookup(&in_nic);
	if (!in)
		return homegw_next_xdp(ctx);
	u32 other_nic = in_nic ^ 1;
	struct iface *other = router_ifaces.lookup(&other_nic);
	if (!other)
		return homegw_next_xdp(ctx);
	if (ip->daddr == in->addr || ip->daddr == other->addr) { /* the gateway's own */
		cur->flags |= HOMEGW_F_LOCAL;
		return homegw_next_xdp(ctx);
	}
	if (is_broadcast_or_multicast(ip->daddr, in, other))
		return to_kernel(ctx);
	if (in_nic == HOMEGW_NIC_WAN && is_dhcp_to_client(ip, end))
		return to_kernel(ctx); /* an offer to the address the gateway is getting */
	if (!homegw_same_mac(eth->h_dest, in->mac)) {
		if (eth->h_dest[0] & 1) /* link-layer broadcast or multicast */
			return drop(C_LINK_BROADCAST);
		return to_kernel(ctx); /* another host's frame: the kernel discards it */
	}
	if (is_martian_source(ip->saddr, in) || is_martian_destination(ip->daddr))
		return drop(C_MARTIAN);

	struct route route;
	int routed = find_route(ip->daddr, in_nic, in, other, &route);
	u32 out_nic = routed ? route.nic : HOMEGW_NIC_NONE;
	struct iface *out = out_nic == in_nic ? in : other;
	/* Everything but plain forwarding. Each answer returns at once: after an
	 * ICMP error is built the packet pointers are stale. */
	if (!routed || !out->up || !out->ifindex)
		return icmp_error(ctx, cur, in, ip, end, ICMP_DEST_UNREACH, ICMP_NET_UNREACH, 0,
				  C_UNREACHABLE);
	if (out_nic == in_nic && in_nic == HOMEGW_NIC_WAN)
		return drop(C_WAN_TO_WAN);
	if (ip->ttl <= 1)
		return icmp_error(ctx, cur, in, ip, end, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0,
				  C_TTL_EXCEEDED);
	if (ntohs(ip->tot_len) > out->mtu) {
		if (ip->frag_off & htons(HOMEGW_IP_DF))
			return icmp_error(ctx, cur, in, ip, end, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
					  htonl(out->mtu & 0xffff), C_FRAG_NEEDED);
		if (end - data > HOMEGW_PUNT_MAX_BYTES)
			return drop(C_FRAG_TOO_BIG);
		count(C_TO_FRAGMENT);
		cur->flags |= HOMEGW_F_FRAGMENT; /* the chain's end fragments it */
	}

	__be32 next_hop = route.gateway ? route.gateway : ip->daddr;
	int miss = 0;
	u64 now = bpf_ktime_get_coarse_ns(); /* once: neighbour use and device marks */
	struct homegw_neighbour *neigh = homegw_neighbour_xdp(ctx, next_hop, out_nic, now, &miss);
	if (!neigh) /* punted (the slow path resends it once resolved) or limited */
		return drop(miss == HOMEGW_NEIGH_PUNTED ? C_NEIGH_MISS : C_NEIGH_LIMITED);

	u64 bytes = (u64)(end - data);
	if (paused(eth->h_source, neigh->mac, bytes, in_nic, out_nic, now))
		return drop(C_DEVICE_PAUSED);

	/* TTL shares a 16-bit checksum word with the protocol field. */
	__u16 old_word = *(__u16 *)&ip->ttl;
	ip->ttl--;
	homegw_csum_replace2(&ip->check, old_word, *(__u16 *)&ip->ttl);
	return forward(ctx, cur, eth, neigh, out, out_nic, bytes);
}
