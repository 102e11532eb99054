/* Root programs: one is attached per NIC at XDP ingress and at TC egress.
 * They count the packet, start its chain cursor at position 0 of the active
 * generation and tail-call the first module. An empty chain hands the packet
 * to the kernel unchanged. HOMEGW_NIC (0 LAN, 1 WAN) is set by the loader. */
#include "homegw.h"

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
}

int homegw_root_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();

	count_packet(HOMEGW_HOOK_XDP, ctx->data_end - ctx->data);
	if (!cur)
		return XDP_PASS;
	start_chain(cur, HOMEGW_HOOK_XDP, ctx->ingress_ifindex);
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
