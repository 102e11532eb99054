/* homegw_fastpath.h: the flow fast path, shared by the root programs (which
 * forward a known flow's packet with one hash lookup, skipping the chain)
 * and the learning program (fastpath.bpf.c, which records what the chain
 * did to a flow's packet). Userspace: homegw/dataplane/fastpath.py.
 *
 * Which packets are looked up (homegw_flow_parse), anything else goes
 * through the chain: IPv4 with IHL 5, not a fragment, a total length within
 * the frame, TCP (20 bytes of header in the frame) or UDP, not re-injected
 * by the slow path.
 *
 * Learning (fastpath.bpf.c, tail-called at the chain's end, homegw_finish_xdp):
 * a packet the chain redirects from one NIC to the other, with the egress
 * MTU known (the router sets it) and no module's veto (HOMEGW_F_NO_FASTPATH,
 * homegw_no_fastpath_xdp: user modules for every packet of their flows, DPI
 * for a flow it is still classifying or keeps outside its slots, NAT for the
 * packet that opened a session, so a flow is learnt from its second packet
 * and flows of one packet cost no entry). A module that counts the flow's
 * packets names a flow meter for them (homegw_fastpath_meter, homegw.h: DPI
 * for a classified flow in its slot). The entry is of the epoch the root
 * saw when the packet arrived (a change meanwhile retires it). The chain may have changed only the MACs, the
 * addresses, the ports, the TTL (by one) and the checksums to match; the
 * program checks this by recomputing both checksums from the differences
 * and refuses anything else (counted learn_refused). The entry holds the
 * rewrite as checksum deltas, so it applies to every packet of the flow.
 *
 * A hit forwards the packet itself when the entry is of the current epoch
 * (homegw_flow_epoch: userspace bumps it on any change of what the chain
 * decides: config, chain, policy, neighbours) and younger than
 * HOMEGW_FLOW_LIFETIME_NS (each flow goes through the chain at least that
 * often, which keeps NAT sessions, neighbour use and the modules' state
 * fresh), and the packet is one the chain would treat alike: the same MACs
 * as learnt, no TCP SYN, FIN or RST (NAT's state bits), a TTL above 1 when
 * the chain decrements it, not over the egress MTU, a valid IPv4 header
 * checksum, a LAN device that is not paused (a paused one's frame goes to
 * the chain: the router drops and counts it), a flow meter (if the entry
 * has one) that this CPU's copy still has the entry's claim on. It counts
 * the LAN device's traffic (homegw_count_device), the egress NIC's
 * forwarded packets as the router would (homegw_nic_forwarded), the flow
 * meter's, by the NIC the packet arrived on, and its own
 * (homegw_fastpath_stats).
 * Anything else: the chain.
 */
#ifndef HOMEGW_FASTPATH_H
#define HOMEGW_FASTPATH_H

#include "homegw.h"

#ifndef HOMEGW_MAX_FLOWS
#define HOMEGW_MAX_FLOWS 65536
#endif
#define HOMEGW_FLOW_LIFETIME_NS 1000000000ULL
#define HOMEGW_IP_MF_OFFSET 0x3fff /* MF and the fragment offset */
#define HOMEGW_TCP_FIN 0x01
#define HOMEGW_TCP_SYN 0x02
#define HOMEGW_TCP_RST 0x04

/* What the fast path does to a flow's packet. */
struct homegw_flow {
	unsigned char in_macs[2 * ETH_ALEN];  /* destination, source: as it must arrive */
	unsigned char out_macs[2 * ETH_ALEN]; /* destination, source: as it leaves */
	__be32 saddr;                         /* as it leaves */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u16 ip_delta;     /* ones' complement addend of the IPv4 checksum */
	__u16 l4_delta;     /* of the TCP/UDP checksum (a UDP checksum 0 stays 0) */
	__u16 max_len;      /* IPv4 total length the egress takes (its MTU) */
	__u8 ttl_dec;       /* 1: the chain decrements the TTL */
	__u8 device_dir;    /* HOMEGW_DEVICE_FROM / _TO of `device`; 0xff: none */
	__u32 out_ifindex;
	__u32 out_nic;
	__u32 epoch;        /* homegw_flow_epoch[0] when learnt */
	__u64 expires_ns;   /* coarse monotonic time the entry stops serving */
	__u64 device;       /* homegw_devices key of the LAN device counted */
	__u32 meter;        /* homegw_flow_meters index, or HOMEGW_NO_METER */
	__u32 meter_claim;  /* the claim the meter must still have on the packet's CPU */
};

#define HOMEGW_FLOW_NO_DEVICE 0xff

/* homegw_fastpath_stats indices; keep in step with fastpath.py */
#define HOMEGW_FP_LAN_TO_WAN 0 /* forwarded, by the NIC it arrived on */
#define HOMEGW_FP_WAN_TO_LAN 1
#define HOMEGW_FP_LEARNT 2
#define HOMEGW_FP_LEARN_REFUSED 3 /* the chain changed more than the fast path can */
#define HOMEGW_FP_STALE 4      /* an entry found too old or of an old epoch: deleted */
#define HOMEGW_FP_COUNTERS 5

// <struct homegw_flow_key, struct homegw_flow>: flows the fast path forwards.
// An LRU: it is a cache, an evicted flow costs one pass through the chain
BPF_TABLE_PINNED("lru_hash", struct homegw_flow_key, struct homegw_flow, homegw_flows,
		 HOMEGW_MAX_FLOWS, HOMEGW_PIN("fastpath_flows"));
// <0, epoch>: bumped by userspace when what the chain decides may change
BPF_TABLE_PINNED("array", __u32, __u32, homegw_flow_epoch, 1, HOMEGW_PIN("fastpath_epoch"));
// <HOMEGW_FP_*, packets>
BPF_TABLE_PINNED("percpu_array", __u32, struct homegw_counter, homegw_fastpath_stats,
		 HOMEGW_FP_COUNTERS, HOMEGW_PIN("fastpath_stats"));

static __always_inline void homegw_fp_count(__u32 what, __u64 bytes)
{
	struct homegw_counter *c = homegw_fastpath_stats.lookup(&what);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline __u32 homegw_flow_epoch_now(void)
{
	__u32 zero = 0;
	__u32 *epoch = homegw_flow_epoch.lookup(&zero);

	return epoch ? *epoch : 0;
}


/* The addend that turns a checksum over `old` into one over `new` (one
 * 16-bit word each, as they sit in the packet); 0 when they are equal. */
static __always_inline __u32 homegw_csum_term(__u16 old, __u16 new)
{
	return old == new ? 0 : (__u32)(__u16)~old + new;
}

static __always_inline __u32 homegw_csum_term4(__u32 old, __u32 new)
{
	return homegw_csum_term(old, new) + homegw_csum_term(old >> 16, new >> 16);
}

static __always_inline __u16 homegw_csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return c;
}

/* ~fold(~sum + delta): a checksum with a precomputed addend (RFC 1624). */
static __always_inline __u16 homegw_csum_add(__u16 sum, __u16 delta)
{
	return ~homegw_csum_fold((__u32)(__u16)~sum + delta);
}

/* Where a looked-up packet's fields are (pointers checked against the frame). */
struct homegw_flow_pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 *ports;   /* source, destination */
	__u16 *l4_check;
	__u8 *tcp_flags; /* NULL for UDP */
};

/* Whether the frame is one the fast path looks up; its key and fields. */
static __always_inline int homegw_flow_parse(struct xdp_md *ctx, __u32 nic,
					     struct homegw_flow_key *key, struct homegw_flow_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	void *l4 = ip + 1;

	if (l4 > end || eth->h_proto != htons(ETH_P_IP) || *(__u8 *)ip != 0x45 ||
	    (ip->frag_off & htons(HOMEGW_IP_MF_OFFSET)))
		return 0;
	__u64 tot_len = ntohs(ip->tot_len);
	if ((void *)ip + tot_len > end)
		return 0;
	if (ip->protocol == IPPROTO_TCP) {
		if (l4 + 20 > end || tot_len < 40)
			return 0;
		p->tcp_flags = l4 + 13;
		p->l4_check = l4 + 16;
	} else if (ip->protocol == IPPROTO_UDP) {
		if (l4 + 8 > end || tot_len < 28)
			return 0;
		p->tcp_flags = NULL;
		p->l4_check = l4 + 6;
	} else {
		return 0;
	}
	p->eth = eth;
	p->ip = ip;
	p->ports = l4;
	key->saddr = ip->saddr;
	key->daddr = ip->daddr;
	key->sport = p->ports[0];
	key->dport = p->ports[1];
	key->proto = ip->protocol;
	key->nic = nic;
	key->pad = 0;
	return 1;
}

/* Whether the IPv4 header (IHL 5) sums to all ones. */
static __always_inline int homegw_ip_check_ok(struct iphdr *ip)
{
	__u32 *w = (__u32 *)ip;
	__u64 s = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s == 0xffff;
}

/* The new L4 checksum of a packet: a UDP checksum 0 (none) stays 0, a
 * computed 0 is sent as all ones (RFC 768), as NAT does. */
static __always_inline __u16 homegw_flow_l4_check(__u16 check, __u16 delta, int udp)
{
	if (udp && !check)
		return 0;
	check = homegw_csum_add(check, delta);
	return udp && !check ? 0xffff : check;
}

#endif /* HOMEGW_FASTPATH_H */
