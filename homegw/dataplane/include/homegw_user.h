/* homegw_user.h: the SDK of user IO modules (README, "User IO modules").
 *
 * A user module is one C file uploaded through /api/v1/modules. It starts
 * with #include "homegw_user.h" and defines one program:
 *
 *     int my_module(struct xdp_md *ctx)      for the XDP ingress hook, or
 *     int my_module(struct __sk_buff *skb)   for the TC egress hook,
 *
 * and ends every path with one of the outcomes below:
 *
 *     return hgw_next_xdp(ctx);  the next module of the chain runs (the
 *                                packet goes on as if this one were absent;
 *                                its flow is never left to the fast path,
 *                                so the module sees all of its packets)
 *     return XDP_DROP;           the packet ends here (count it first)
 *     return XDP_PASS;           the kernel takes it now; the modules after
 *                                this one do not run (the kernel path's
 *                                default-deny nftables table still holds)
 *     (TC: hgw_next_tc(skb), TC_ACT_SHOT, TC_ACT_OK)
 *
 * What a module may use is this header: the packet (hgw_parse_*), the
 * forwarding decision of the modules before it (hgw_decision_*, a copy),
 * counters (hgw_count), punts to the slow path (hgw_punt_*: streamed to
 * API clients), the per-device table read-only (hgw_device_*), and maps of
 * its own (BPF_HASH, BPF_ARRAY, ... : private to the module; the ones named
 * in the upload's `maps` are read and written through the API). The upload
 * check refuses a source that names anything of homegw's own (homegw_*,
 * HOMEGW_*, the chain, cursor and slow-path maps), pinned or shared tables,
 * bpf_pseudo_fd, inline assembly, token pasting, or includes other than this
 * header and <linux/...>, <uapi/linux/...>: no module reads or writes
 * another module's maps.
 *
 * The loader prepends homegw.h and this header to the source (bcc rewrites
 * map calls only in the main file) and sets HOMEGW_MODULE_ID to the id the
 * gateway gave the module; -D options of the upload are set as given.
 */
#ifndef HOMEGW_USER_H
#define HOMEGW_USER_H

#include "homegw.h"

#define HGW_NIC_LAN HOMEGW_NIC_LAN
#define HGW_NIC_WAN HOMEGW_NIC_WAN
#define HGW_NIC_NONE HOMEGW_NIC_NONE
#define HGW_FWD_KERNEL HOMEGW_FWD_KERNEL     /* the kernel decides at the chain's end */
#define HGW_FWD_REDIRECT HOMEGW_FWD_REDIRECT /* the router chose an egress */
#define HGW_F_LOCAL HOMEGW_F_LOCAL           /* to one of the gateway's addresses */
#define HGW_F_DNAT HOMEGW_F_DNAT             /* destination translated inbound */
#define HGW_PUNT_MAX_BYTES HOMEGW_PUNT_MAX_BYTES
#define HGW_MAX_COUNTERS 16

// <counter index, packets counted on this CPU>: the module's counters, named
// by the upload's `counters` list (index 0 the first name); summed by the API
BPF_PERCPU_ARRAY(hgw_counters, __u64, HGW_MAX_COUNTERS);

/* Add n to counter `index` (0 .. HGW_MAX_COUNTERS - 1; others are ignored). */
static __always_inline void hgw_count_add(__u32 index, __u64 n)
{
	__u64 *value = hgw_counters.lookup(&index);

	if (value)
		*value += n;
}

static __always_inline void hgw_count(__u32 index)
{
	hgw_count_add(index, 1);
}

/* -- continuing the chain --------------------------------------------------- */
/* A user module sees every packet of the flows it passes on: the flow fast
 * path (which skips the chain) never learns them. */
static __always_inline int hgw_next_xdp(struct xdp_md *ctx)
{
	homegw_no_fastpath_xdp();
	return homegw_next_xdp(ctx);
}

static __always_inline int hgw_next_tc(struct __sk_buff *skb)
{
	return homegw_next_tc(skb);
}

/* -- the forwarding decision so far (a copy: modules cannot change it) ------- */
struct hgw_decision {
	__u32 nic;         /* HGW_NIC_* the packet arrived on (XDP) or leaves by (TC) */
	__u32 ifindex;     /* its interface */
	__u32 fwd;         /* HGW_FWD_*: what happens at the chain's end */
	__u32 out_ifindex; /* with HGW_FWD_REDIRECT: the egress interface */
	__u32 out_nic;     /* HGW_NIC_* of the egress, or HGW_NIC_NONE */
	__u32 flags;       /* HGW_F_* */
	/* With HGW_FWD_REDIRECT: the frame's MACs as it arrived (the router
	 * rewrote the frame's to the egress's); all zero otherwise (the frame's
	 * own MACs are the ones it arrived with). */
	unsigned char in_src_mac[ETH_ALEN];
	unsigned char in_dst_mac[ETH_ALEN];
};

static __always_inline int hgw_decision_copy(struct homegw_cursor *cur, struct hgw_decision *d)
{
	if (!cur)
		return -1;
	d->nic = cur->nic;
	d->ifindex = cur->ifindex;
	d->fwd = cur->fwd;
	d->out_ifindex = cur->out_ifindex;
	d->out_nic = cur->out_nic;
	d->flags = cur->flags;
	__builtin_memset(d->in_src_mac, 0, ETH_ALEN);
	__builtin_memset(d->in_dst_mac, 0, ETH_ALEN);
	if (cur->fwd == HOMEGW_FWD_REDIRECT) {
		__builtin_memcpy(d->in_src_mac, cur->in_src_mac, ETH_ALEN);
		__builtin_memcpy(d->in_dst_mac, cur->in_dst_mac, ETH_ALEN);
	}
	return 0;
}

/* 0 and *d filled, or -1 (no cursor: cannot happen in a chain). */
static __always_inline int hgw_decision_xdp(struct hgw_decision *d)
{
	return hgw_decision_copy(homegw_cursor_xdp(), d);
}

static __always_inline int hgw_decision_tc(struct hgw_decision *d)
{
	return hgw_decision_copy(homegw_cursor_tc(), d);
}

/* -- parsing --------------------------------------------------------------- */
struct hgw_packet {
	struct ethhdr *eth;  /* always set when hgw_parse returned 0 */
	struct iphdr *ip;    /* the IPv4 header (options included), or NULL */
	__u16 proto;         /* ethertype, host order (0x0800 IPv4, 0x86dd IPv6, ...) */
	__u8 l4proto;        /* IPPROTO_* of an IPv4 packet, else 0 */
	__u8 first_fragment; /* 1 unless a later IPv4 fragment (no L4 header) */
	__u16 sport;         /* TCP/UDP ports, host order; 0 when there are none */
	__u16 dport;
	__u32 len;           /* frame length in bytes */
};

/* Parse a frame between data and end. 0 and *p filled, or -1 when the
 * frame is shorter than an Ethernet header. An IPv4 header that is cut
 * short or has a bad IHL leaves p->ip NULL; ports are read only when the
 * whole TCP/UDP port pair is in the frame. */
static __always_inline int hgw_parse(void *data, void *end, struct hgw_packet *p)
{
	struct ethhdr *eth = data;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > end)
		return -1;
	p->eth = eth;
	p->len = end - data;
	p->proto = bpf_ntohs(eth->h_proto);
	p->first_fragment = 1;
	if (p->proto != ETH_P_IP)
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
		return 0;
	if ((void *)ip + ip->ihl * 4 > end)
		return 0; /* options cut short */
	p->ip = ip;
	p->l4proto = ip->protocol;
	if (ip->frag_off & bpf_htons(0x1fff)) {
		p->first_fragment = 0;
		return 0;
	}
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		return 0;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	return 0;
}

static __always_inline int hgw_parse_xdp(struct xdp_md *ctx, struct hgw_packet *p)
{
	return hgw_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, p);
}

static __always_inline int hgw_parse_tc(struct __sk_buff *skb, struct hgw_packet *p)
{
	return hgw_parse((void *)(long)skb->data, (void *)(long)skb->data_end, p);
}

/* -- punts: the packet's first bytes to the module's API subscribers -------- */
/* A module shares the slow-path ring with homegw's own modules: its punts
 * are held to HGW_PUNT_RATE a second per CPU (bursts of HGW_PUNT_BURST), so
 * that a module punting every packet cannot crowd out DHCP, neighbour
 * resolution or DNS. Punts over the rate are not sent and are counted. */
#ifndef HGW_PUNT_RATE
#define HGW_PUNT_RATE 2000
#endif
#define HGW_PUNT_BURST 64
#define HGW_PUNT_LIMITED -16 /* -EBUSY: over the rate, not sent */

struct hgw_punt_budget {
	__u64 refilled_ns; /* when tokens were last refilled */
	__u64 tokens;      /* punts that may go now */
	__u64 limited;     /* punts refused over the rate (read by the API) */
};

// <0, this CPU's punt budget of the module>
BPF_PERCPU_ARRAY(hgw_punt_budget, struct hgw_punt_budget, 1);

/* Whether a punt may go now (one token taken), else counted as limited. */
static __always_inline int hgw_punt_allowed(void)
{
	__u32 zero = 0;
	struct hgw_punt_budget *b = hgw_punt_budget.lookup(&zero);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!b)
		return 0;
	__u64 fresh = (now - b->refilled_ns) / (1000000000ULL / HGW_PUNT_RATE);
	if (fresh) {
		b->tokens = b->tokens + fresh > HGW_PUNT_BURST ? HGW_PUNT_BURST : b->tokens + fresh;
		b->refilled_ns = now;
	}
	if (!b->tokens) {
		b->limited++;
		return 0;
	}
	b->tokens--;
	return 1;
}

/* The frame (up to HGW_PUNT_MAX_BYTES) with reason and two words of the
 * module's own; the caller still decides the packet's fate (drop it when the
 * slow path takes it over: it may send it again through the API). 0,
 * HGW_PUNT_LIMITED over the rate, or a negative errno (the ring is full:
 * counted by the gateway as lost). */
static __always_inline int hgw_punt_xdp(struct xdp_md *ctx, __u16 reason, __u32 meta0, __u32 meta1)
{
	if (!hgw_punt_allowed())
		return HGW_PUNT_LIMITED;
	return homegw_punt_xdp(ctx, reason, meta0, meta1);
}

static __always_inline int hgw_punt_tc(struct __sk_buff *skb, __u16 reason, __u32 meta0, __u32 meta1)
{
	struct homegw_punt hdr = {
		.module = HOMEGW_MODULE_ID,
		.reason = reason,
		.ifindex = skb->ifindex,
		.pkt_len = skb->len,
		.meta = { meta0, meta1, 0, 0 },
	};
	__u64 cap = skb->len > HOMEGW_PUNT_MAX_BYTES ? HOMEGW_PUNT_MAX_BYTES : skb->len;

	if (!hgw_punt_allowed())
		return HGW_PUNT_LIMITED;
	return slowpath.perf_submit_skb(skb, cap, &hdr, sizeof(hdr));
}

/* -- the per-device table (read-only) ---------------------------------------- */
/* The key of a device: its MAC's 6 bytes then 2 zero bytes, as a u64 (the
 * same key as the maps of examples keyed by MAC). */
static __always_inline __u64 hgw_mac_key(const unsigned char *mac)
{
	__u64 key = 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	return key;
}

/* A device's traffic as counted on this CPU (the table is per-CPU: the API
 * shows the sums). */
struct hgw_device_view {
	__u64 from_packets; /* frames from the device, forwarded */
	__u64 from_bytes;
	__u64 to_packets;   /* frames forwarded to it */
	__u64 to_bytes;
	__u64 dropped;      /* frames from it the datapath dropped */
};

/* 0 and *out filled when the gateway knows the device (it has sent or been
 * sent a forwarded frame), else -1. */
static __always_inline int hgw_device(const unsigned char *mac, struct hgw_device_view *out)
{
	__u64 key = hgw_mac_key(mac);
	struct homegw_device *dev = homegw_devices.lookup(&key);

	if (!dev)
		return -1;
	out->from_packets = dev->from_packets;
	out->from_bytes = dev->from_bytes;
	out->to_packets = dev->to_packets;
	out->to_bytes = dev->to_bytes;
	out->dropped = dev->dropped;
	return 0;
}

/* Whether the owner paused the device (the devices page: nothing forwarded). */
static __always_inline int hgw_device_paused(const unsigned char *mac)
{
	return homegw_device_paused(mac);
}

/* Whether two MAC addresses are equal. */
static __always_inline int hgw_same_mac(const unsigned char *a, const unsigned char *b)
{
	return homegw_same_mac(a, b);
}

#endif /* HOMEGW_USER_H */
