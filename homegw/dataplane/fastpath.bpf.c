/* The dataplane's learning program, in chain_learn[0]: the chain's end
 * (homegw_finish_xdp) tail-calls it for a packet the root marked
 * HOMEGW_F_LEARN that the chain redirects and no module vetoed. It records
 * what the chain did to the packet as a fast-path entry (homegw_fastpath.h)
 * and redirects it. Outcomes, counted in homegw_fastpath_stats:
 *   learnt: from one NIC to the other, the egress MTU known (the router's),
 *     the frame's length, IPv4 header fields but the TTL (same or one less),
 *     addresses and checksums, the protocol and the TCP flags as they were,
 *     both checksums equal to the arrived ones plus the differences of the
 *     addresses, ports and TTL; with the flow meter a module named
 *     (HOMEGW_F_METER) and the epoch of the packet's arrival
 *   learn_refused: anything else (a module changed more: no entry)
 * The packet is redirected either way (the chain decided so). */
#include "homegw_fastpath.h"

/* The IPv4 and L4 checksum addends of the chain's changes to the packet,
 * or 0 when it changed more than those. */
static __always_inline int rewrite_of(struct homegw_cursor *cur, struct homegw_flow_pkt *p,
				      struct homegw_flow *f)
{
	struct homegw_flow_orig *o = &cur->orig;
	struct homegw_flow_key *k = &cur->flow;
	struct iphdr *ip = p->ip;
	__u8 dec = o->ttl - ip->ttl;

	if (ip->protocol != k->proto || dec > 1)
		return 0;
	if (p->tcp_flags && *p->tcp_flags != o->tcp_flags)
		return 0;
	__u16 ttl_word = *(__u16 *)&ip->ttl; /* TTL and protocol: one checksum word */
	/* the addresses are in both checksums (L4: its pseudo-header) */
	__u32 addresses = homegw_csum_term4(k->saddr, ip->saddr) +
			  homegw_csum_term4(k->daddr, ip->daddr);
	__u32 ports = homegw_csum_term(k->sport, p->ports[0]) +
		      homegw_csum_term(k->dport, p->ports[1]);
	f->ip_delta = homegw_csum_fold(homegw_csum_term(ttl_word + dec, ttl_word) + addresses);
	f->l4_delta = homegw_csum_fold(addresses + ports);
	if (homegw_csum_add(o->ip_check, f->ip_delta) != ip->check)
		return 0;
	if (homegw_flow_l4_check(o->l4_check, f->l4_delta, !p->tcp_flags) != *p->l4_check)
		return 0;
	f->ttl_dec = dec;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->sport = p->ports[0];
	f->dport = p->ports[1];
	return 1;
}

/* The LAN device the router counts the flow's packets for. */
static __always_inline void device_of(struct homegw_cursor *cur, struct homegw_flow_pkt *p,
				      struct homegw_flow *f)
{
	f->device = 0;
	if (cur->nic == HOMEGW_NIC_LAN) {
		__builtin_memcpy(&f->device, cur->orig.macs + ETH_ALEN, ETH_ALEN);
		f->device_dir = HOMEGW_DEVICE_FROM;
	} else {
		__builtin_memcpy(&f->device, p->eth->h_dest, ETH_ALEN);
		f->device_dir = HOMEGW_DEVICE_TO;
	}
}

static __always_inline int learn(struct xdp_md *ctx, struct homegw_cursor *cur)
{
	struct homegw_flow_key key;
	struct homegw_flow_pkt p;
	struct homegw_flow f = {};

	if (cur->fwd != HOMEGW_FWD_REDIRECT || cur->out_nic > HOMEGW_NIC_WAN ||
	    cur->out_nic == cur->nic || !cur->out_mtu)
		return 0;
	if (!homegw_flow_parse(ctx, cur->nic, &key, &p) ||
	    ctx->data_end - ctx->data != cur->orig.len || !rewrite_of(cur, &p, &f))
		return 0;
	__builtin_memcpy(f.in_macs, cur->orig.macs, 2 * ETH_ALEN);
	__builtin_memcpy(f.out_macs, p.eth, 2 * ETH_ALEN);
	f.max_len = cur->out_mtu > 0xffff ? 0xffff : cur->out_mtu;
	f.out_ifindex = cur->out_ifindex;
	f.out_nic = cur->out_nic;
	f.epoch = cur->orig.epoch; /* a change while the chain ran retires it */
	f.meter = HOMEGW_NO_METER;
	if (cur->flags & HOMEGW_F_METER) {
		f.meter = cur->meter;
		f.meter_claim = cur->meter_claim;
	}
	f.expires_ns = bpf_ktime_get_coarse_ns() + HOMEGW_FLOW_LIFETIME_NS;
	device_of(cur, &p, &f);
	return homegw_flows.update(&cur->flow, &f) == 0;
}

int homegw_learn_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (!cur)
		return XDP_DROP; /* cannot happen: the chain that called has one */
	homegw_fp_count(learn(ctx, cur) ? HOMEGW_FP_LEARNT : HOMEGW_FP_LEARN_REFUSED, 0);
	return bpf_redirect(cur->out_ifindex, 0) == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED;
}
