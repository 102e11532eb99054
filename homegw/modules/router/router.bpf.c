/* Router IO module: IPv4 forwarding between the LAN and WAN NICs in XDP.
 *
 * For a packet to forward it looks up the route (LPM trie), the next hop's
 * MAC (neighbour map, filled by the slow path), decrements the TTL, rewrites
 * the MACs and records the egress in the chain cursor; the chain's end then
 * redirects it (or the NAT module after it translates it first). The gateway's
 * own traffic, broadcast and multicast, non-IPv4 and the cases below go on
 * to the kernel; nothing is dropped silently:
 *   TTL <= 1           ICMP time exceeded from the gateway (XDP_TX)
 *   DF and over MTU    ICMP fragmentation needed (XDP_TX)
 *   no route / NIC down ICMP destination net unreachable (XDP_TX)
 *   unknown neighbour  punted to the slow path, which resolves it and sends
 *                      the packet again through the chain */
#include "homegw.h"
#include "homegw_icmp.h"

#define ROUTER_MAX_ROUTES 1024
#define ROUTER_MAX_NEIGHBOURS 4096
#define ROUTER_MAX_DEVICES 4096
#define ROUTER_ICMP_PER_SEC 1000 /* ICMP errors per CPU and second, at most */

#define REASON_NEIGH_MISS 1

/* Keep in step with homegw/modules/router/maps.py. */
enum router_counter {
	C_FORWARDED, /* not counted here: the sum of router_nic_stats */
	C_TO_KERNEL,
	C_NEIGH_MISS,
	C_TTL_EXCEEDED,
	C_FRAG_NEEDED,
	C_UNREACHABLE,
	C_ICMP_RATE_LIMITED,
	C_DEVICE_TABLE_FULL,
	C_COUNTERS,
};

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

struct neighbour {
	unsigned char mac[ETH_ALEN];
	__u16 nic;
};

struct device_counters {
	__u64 tx_packets; /* sent by the device (LAN -> gateway) */
	__u64 tx_bytes;
	__u64 rx_packets; /* forwarded to the device */
	__u64 rx_bytes;
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
// <next-hop IPv4 address, MAC and NIC>: mirrored from the kernel by neigh.py;
// pinned because the NAT module reads it for hairpinned packets
BPF_TABLE_PINNED("hash", __be32, struct neighbour, router_neigh, ROUTER_MAX_NEIGHBOURS,
		 HOMEGW_PIN("router_neigh"));
// <enum router_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, router_stats, C_COUNTERS,
		 HOMEGW_PIN("router_stats"));
// <HOMEGW_NIC_* of the egress, packets and bytes forwarded out of it>
BPF_TABLE_PINNED("percpu_array", u32, struct homegw_counter, router_nic_stats, HOMEGW_NICS,
		 HOMEGW_PIN("router_nic_stats"));
// <LAN device MAC as u64, its forwarded traffic>
BPF_TABLE_PINNED("percpu_hash", u64, struct device_counters, router_devices,
		 ROUTER_MAX_DEVICES, HOMEGW_PIN("router_devices"));
// <0, ICMP errors sent in the current second on this CPU>
BPF_PERCPU_ARRAY(router_icmp_budget, struct icmp_budget, 1);

static __always_inline void count(u32 counter)
{
	u64 *value = router_stats.lookup(&counter);

	if (value)
		*value += 1;
}

static __always_inline u64 mac_key(const unsigned char *mac)
{
	u64 key = 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	return key;
}

static __always_inline void count_device(const unsigned char *mac, u64 bytes, int to_device)
{
	u64 key = mac_key(mac);
	struct device_counters *dev = router_devices.lookup(&key);

	if (!dev) {
		struct device_counters zero = {};
		if (router_devices.update(&key, &zero)) {
			count(C_DEVICE_TABLE_FULL);
			return;
		}
		dev = router_devices.lookup(&key);
		if (!dev)
			return;
	}
	if (to_device) {
		dev->rx_packets++;
		dev->rx_bytes += bytes;
	} else {
		dev->tx_packets++;
		dev->tx_bytes += bytes;
	}
}

static __always_inline int icmp_allowed(void)
{
	u32 zero = 0;
	struct icmp_budget *budget = router_icmp_budget.lookup(&zero);
	u64 now = bpf_ktime_get_ns();

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

/* Answer with an ICMP error from the gateway's address on the ingress NIC;
 * hand the packet to the kernel when that cannot be done here. */
static __always_inline int icmp_error(struct xdp_md *ctx, struct iface *in, u8 type, u8 code,
				      __be32 rest, u32 counter)
{
	count(counter);
	if (!in->addr || !icmp_allowed())
		return XDP_DROP;
	if (homegw_icmp_error_xdp(ctx, type, code, in->addr, rest) == 0)
		return XDP_TX;
	count(C_TO_KERNEL);
	return XDP_PASS;
}

static __always_inline int same_mac(const unsigned char *a, const unsigned char *b)
{
	/* not __builtin_memcmp: clang may emit a call to memcmp, which BPF lacks */
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline int is_martian(__be32 addr)
{
	u32 host = ntohl(addr);

	return host == 0 || (host >> 24) == 127 || (host >> 28) == 0xe || host == 0xffffffff;
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

int router_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (!cur || (void *)(ip + 1) > end || eth->h_proto != htons(ETH_P_IP) || ip->version != 4)
		return homegw_next_xdp(ctx);
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
	/* broadcast, multicast, frames not sent to our MAC, odd sources: kernel */
	if (is_martian(ip->daddr) || is_martian(ip->saddr) || ip->ihl < 5 ||
	    !same_mac(eth->h_dest, in->mac))
		return to_kernel(ctx);

	struct route route;
	int routed = find_route(ip->daddr, in_nic, in, other, &route);
	u32 out_nic = routed ? route.nic : HOMEGW_NIC_NONE;
	struct iface *out = out_nic == in_nic ? in : other;

	if (!routed || !out->up || !out->ifindex)
		return icmp_error(ctx, in, ICMP_DEST_UNREACH, ICMP_NET_UNREACH, 0, C_UNREACHABLE);
	if (out_nic == in_nic) /* back out where it came from: the kernel sends a redirect */
		return to_kernel(ctx);
	if (ip->ttl <= 1)
		return icmp_error(ctx, in, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0, C_TTL_EXCEEDED);
	if (ntohs(ip->tot_len) > out->mtu) {
		if (!(ip->frag_off & htons(0x4000))) /* no DF: the kernel fragments */
			return to_kernel(ctx);
		return icmp_error(ctx, in, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
				  htonl(out->mtu & 0xffff), C_FRAG_NEEDED);
	}

	__be32 next_hop = route.gateway ? route.gateway : ip->daddr;
	struct neighbour *neigh = router_neigh.lookup(&next_hop);
	if (!neigh || neigh->nic != out_nic) {
		count(C_NEIGH_MISS);
		/* The slow path owns the packet now: it resolves the neighbour and
		 * sends the packet through the chain again. */
		homegw_punt_xdp(ctx, REASON_NEIGH_MISS, next_hop, out_nic);
		return XDP_DROP;
	}

	u64 bytes = (u64)(end - data);
	if (in_nic == HOMEGW_NIC_LAN)
		count_device(eth->h_source, bytes, 0);
	else if (out_nic == HOMEGW_NIC_LAN)
		count_device(neigh->mac, bytes, 1);

	/* TTL shares a 16-bit checksum word with the protocol field. */
	__u16 old_word = *(__u16 *)&ip->ttl;
	ip->ttl--;
	homegw_csum_replace2(&ip->check, old_word, *(__u16 *)&ip->ttl);
	__builtin_memcpy(cur->in_src_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(cur->in_dst_mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, neigh->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, out->mac, ETH_ALEN);

	struct homegw_counter *nic_stats = router_nic_stats.lookup(&out_nic);
	if (nic_stats) {
		nic_stats->packets++;
		nic_stats->bytes += bytes;
	}
	cur->fwd = HOMEGW_FWD_REDIRECT;
	cur->out_ifindex = out->ifindex;
	cur->out_nic = out_nic;
	return homegw_next_xdp(ctx);
}
