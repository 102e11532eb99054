/* Root programs: one is attached per NIC at XDP ingress and at TC egress.
 * They count the packet, start its chain cursor at position 0 of the active
 * generation and tail-call the first module. An empty chain hands the packet
 * to the kernel unchanged. HOMEGW_NIC (0 LAN, 1 WAN) is set by the loader.
 *
 * At XDP, first the flow fast path (homegw_fastpath.h): a packet of a flow
 * the chain forwarded less than HOMEGW_FLOW_LIFETIME_NS ago is forwarded
 * here with one hash lookup, as the chain would have; a packet it could
 * teach the fast path goes into the chain marked HOMEGW_F_LEARN. */
#include "homegw_fastpath.h"

#ifndef HOMEGW_NIC
#error "HOMEGW_NIC must be defined by the loader"
#endif

static __always_inline u32 active_generation(u32 hook)
{
	u32 key = HOMEGW_NIC * HOMEGW_HOOKS + hook;
	u32 *gen = chain_generation.lookup(&key);

	return gen ? (*gen & 1) : 0;
}

static __always_inline void count_packet(u32 hook, u64 bytes)
{
	u32 key = HOMEGW_NIC * HOMEGW_HOOKS + hook;
	struct homegw_counter *c = chain_stats.lookup(&key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* A new packet: position 0 of the active generation, the kernel's by default. */
static __always_inline void start_chain(struct homegw_cursor *cur, u32 hook, u32 ifindex)
{
	cur->slot_base = HOMEGW_SLOT(HOMEGW_NIC, active_generation(hook), 0);
	cur->pos = 0;
	cur->nic = HOMEGW_NIC;
	cur->ifindex = ifindex;
	cur->fwd = HOMEGW_FWD_KERNEL;
	cur->out_ifindex = 0;
	cur->out_nic = HOMEGW_NIC_NONE;
	cur->flags = 0;
	cur->out_mtu = 0;
}

static __always_inline void count_meter(struct homegw_flow_meter *m, u64 bytes, u64 now)
{
	m->packets[HOMEGW_NIC]++;
	m->bytes[HOMEGW_NIC] += bytes;
	m->last_tick = now >> HOMEGW_NEIGH_TICK_SHIFT;
}

/* Forward a known flow's packet as the chain did (the header comment of
 * homegw_fastpath.h lists the conditions); -1: the chain's to decide. */
static __always_inline int fastpath_xdp(struct xdp_md *ctx, struct homegw_flow_key *key,
					struct homegw_flow_pkt *p, __u32 epoch)
{
	struct homegw_flow *f = homegw_flows.lookup(key);
	struct ethhdr *eth = p->eth;
	struct iphdr *ip = p->ip;

	if (!f)
		return -1;
	u64 now = bpf_ktime_get_coarse_ns();
	if (f->epoch != epoch || now >= f->expires_ns) {
		/* gone: the chain teaches it again, or (vetoed now) not */
		homegw_flows.delete(key);
		homegw_fp_count(HOMEGW_FP_STALE, 0);
		return -1;
	}
	if (p->tcp_flags && (*p->tcp_flags & (HOMEGW_TCP_FIN | HOMEGW_TCP_SYN | HOMEGW_TCP_RST)))
		return -1;
	if (!homegw_same_mac(eth->h_dest, f->in_macs) ||
	    !homegw_same_mac(eth->h_source, f->in_macs + ETH_ALEN))
		return -1;
	if (ntohs(ip->tot_len) > f->max_len || (f->ttl_dec && ip->ttl <= 1) ||
	    !homegw_ip_check_ok(ip))
		return -1;
	struct homegw_flow_meter *meter = NULL;
	if (f->meter != HOMEGW_NO_METER) {
		meter = homegw_meter(f->meter);
		if (!meter || meter->claim != f->meter_claim)
			return -1; /* this CPU's meter is another flow's */
	}
	u64 bytes = ctx->data_end - ctx->data;
	if (f->device_dir != HOMEGW_FLOW_NO_DEVICE &&
	    homegw_count_device((const unsigned char *)&f->device, bytes,
				f->device_dir | HOMEGW_DEVICE_UNLESS_PAUSED,
				now) == HOMEGW_DEVICE_IS_PAUSED)
		return -1; /* the router drops it and counts it */
	__builtin_memcpy(eth, f->out_macs, 2 * ETH_ALEN);
	ip->ttl -= f->ttl_dec;
	ip->check = homegw_csum_add(ip->check, f->ip_delta);
	ip->saddr = f->saddr;
	ip->daddr = f->daddr;
	*p->l4_check = homegw_flow_l4_check(*p->l4_check, f->l4_delta, !p->tcp_flags);
	p->ports[0] = f->sport;
	p->ports[1] = f->dport;
	homegw_fp_count(HOMEGW_NIC == HOMEGW_NIC_LAN ? HOMEGW_FP_LAN_TO_WAN : HOMEGW_FP_WAN_TO_LAN,
			bytes);
	homegw_count_forwarded(f->out_nic, bytes); /* the router's, as if it had */
	if (meter)
		count_meter(meter, bytes, now);
	return bpf_redirect(f->out_ifindex, 0) == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED;
}

/* What of the frame the chain may change, as it arrived, for the learning
 * at the chain's end. */
static __always_inline void remember_orig(struct xdp_md *ctx, struct homegw_cursor *cur,
					  struct homegw_flow_key *key, struct homegw_flow_pkt *p,
					  __u32 epoch)
{
	struct homegw_flow_orig *o = &cur->orig;

	cur->flow = *key;
	__builtin_memcpy(o->macs, p->eth, 2 * ETH_ALEN);
	o->len = ctx->data_end - ctx->data;
	o->ip_check = p->ip->check;
	o->l4_check = *p->l4_check;
	o->ttl = p->ip->ttl;
	o->tcp_flags = p->tcp_flags ? *p->tcp_flags : 0;
	o->epoch = epoch;
	cur->flags |= HOMEGW_F_LEARN;
}

int homegw_root_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();

	struct homegw_flow_key key;
	struct homegw_flow_pkt p;

	count_packet(HOMEGW_HOOK_XDP, ctx->data_end - ctx->data);
	if (!cur)
		return XDP_PASS;
	int known = homegw_flow_parse(ctx, HOMEGW_NIC, &key, &p) && !homegw_reinjected_xdp(ctx);
	__u32 epoch = 0;
	if (known) {
		epoch = homegw_flow_epoch_now(); /* read once: the hit's and the learning's */
		int verdict = fastpath_xdp(ctx, &key, &p, epoch);
		if (verdict >= 0)
			return verdict;
	}
	start_chain(cur, HOMEGW_HOOK_XDP, ctx->ingress_ifindex);
	if (known)
		remember_orig(ctx, cur, &key, &p, epoch);
	chain_xdp.call(ctx, cur->slot_base);
	return XDP_PASS;
}

int homegw_root_tc(struct __sk_buff *skb)
{
	struct homegw_cursor *cur = homegw_cursor_tc();

	count_packet(HOMEGW_HOOK_TC, skb->len);
	if (!cur)
		return TC_ACT_OK;
	start_chain(cur, HOMEGW_HOOK_TC, skb->ifindex);
	chain_tc.call(skb, cur->slot_base);
	return TC_ACT_OK;
}
