/* A user module that calls every helper of the SDK (homegw_user.h) and
 * leaves what they returned in its maps, for tests/datapath/test_user_sdk.py.
 * Compiled as the gateway compiles a user module (sdk=True). */
#include "homegw_user.h"

struct parse_out {
	__s32 ret;
	__u32 ip_offset; /* p.ip - data, or 0xffffffff when p.ip is NULL */
	__u32 eth_offset;
	__u32 len;
	__u16 proto;
	__u8 l4proto;
	__u8 first_fragment;
	__u16 sport;
	__u16 dport;
};

struct device_out {
	__s32 ret;
	__s32 paused;
	__s32 same_mac; /* source MAC == destination MAC */
	__u32 pad;
	__u64 key;      /* hgw_mac_key(source) */
	struct hgw_device_view view;
};

// <0, what hgw_parse_* made of the last frame>
BPF_ARRAY(parsed, struct parse_out, 1);
// <0, hgw_decision_* of the last frame>
BPF_ARRAY(decided, struct hgw_decision, 1);
// <0, hgw_decision_* return value of the last frame>
BPF_ARRAY(decided_ret, __s32, 1);
// <0, what the last hgw_punt_* returned>
BPF_ARRAY(punt_ret, __s32, 1);
// <0, hgw_device and hgw_device_paused of the last frame's source MAC>
BPF_ARRAY(device, struct device_out, 1);

static __always_inline void keep_parse(void *data, void *end)
{
	struct hgw_packet p;
	struct parse_out out = {};
	__u32 zero = 0;

	out.ret = hgw_parse(data, end, &p);
	out.ip_offset = p.ip ? (__u32)((void *)p.ip - data) : 0xffffffff;
	out.eth_offset = p.eth ? (__u32)((void *)p.eth - data) : 0xffffffff;
	out.len = p.len;
	out.proto = p.proto;
	out.l4proto = p.l4proto;
	out.first_fragment = p.first_fragment;
	out.sport = p.sport;
	out.dport = p.dport;
	parsed.update(&zero, &out);
}

int parse_xdp(struct xdp_md *ctx)
{
	struct hgw_packet p;

	keep_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	hgw_parse_xdp(ctx, &p); /* the wrapper: the same result, nothing kept */
	return XDP_PASS;
}

int parse_tc(struct __sk_buff *skb)
{
	keep_parse((void *)(long)skb->data, (void *)(long)skb->data_end);
	return TC_ACT_OK;
}

int count_xdp(struct xdp_md *ctx)
{
	hgw_count(0);
	hgw_count_add(1, ctx->data_end - ctx->data);
	hgw_count_add(HGW_MAX_COUNTERS - 1, 2);
	hgw_count_add(HGW_MAX_COUNTERS, 5); /* out of range: ignored */
	hgw_count(1000);
	return XDP_PASS;
}

int punt_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__s32 ret = hgw_punt_xdp(ctx, 7, 0x11223344, ctx->data_end - ctx->data);

	punt_ret.update(&zero, &ret);
	return XDP_DROP;
}

int punt_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__s32 ret = hgw_punt_tc(skb, 9, 0xaabbccdd, skb->len);

	punt_ret.update(&zero, &ret);
	return TC_ACT_SHOT;
}

static __always_inline void keep_decision(__s32 ret, struct hgw_decision *d)
{
	__u32 zero = 0;

	decided.update(&zero, d);
	decided_ret.update(&zero, &ret);
}

int decision_xdp(struct xdp_md *ctx)
{
	struct hgw_decision d = {};

	keep_decision(hgw_decision_xdp(&d), &d);
	return hgw_next_xdp(ctx);
}

int decision_tc(struct __sk_buff *skb)
{
	struct hgw_decision d = {};

	keep_decision(hgw_decision_tc(&d), &d);
	return hgw_next_tc(skb);
}

int device_xdp(struct xdp_md *ctx)
{
	struct hgw_packet p;
	struct device_out out = {};
	__u32 zero = 0;

	if (hgw_parse_xdp(ctx, &p) < 0)
		return XDP_ABORTED;
	out.ret = hgw_device(p.eth->h_source, &out.view);
	out.paused = hgw_device_paused(p.eth->h_source);
	out.same_mac = hgw_same_mac(p.eth->h_source, p.eth->h_dest);
	out.key = hgw_mac_key(p.eth->h_source);
	device.update(&zero, &out);
	return XDP_PASS;
}
