/* DPI IO module: per-device, per-application flows and their policy in XDP.
 *
 * dpi_xdp runs first in the LAN chain (before the DHCP guard, firewall,
 * router and NAT) and last in the WAN chain (after NAT's reverse translation
 * and the router). A flow is keyed from the LAN host's side (dpi.h).
 *
 * Which packets are a flow's (everything else: the next module, untouched,
 * not counted):
 *   LAN chain: IPv4 TCP/UDP from a DPI_LAN_NET/DPI_LAN_MASK source to a
 *     unicast destination outside that subnet (not the gateway's LAN address,
 *     not 224/4, not 255.255.255.255): an "up" packet; the device is the
 *     Ethernet source.
 *   WAN chain: IPv4 TCP/UDP the chain so far routed to a LAN host (cursor fwd
 *     HOMEGW_FWD_REDIRECT, out_nic HOMEGW_NIC_LAN): a "down" packet; the
 *     device is the Ethernet destination the router wrote.
 * Header problems, each counted, the packet passed on untouched (the router
 * and firewall after it decide): a truncated IPv4 header, IHL other than 5
 * (options), an IP fragment, a total length longer than the frame or shorter
 * than its headers, a truncated TCP/UDP header, a TCP doff < 5.
 *
 * Per packet of a flow, in this CPU's copy of it: in a slot of one of its
 * two buckets of dpi_flow_slots (dpi.h: array lookups, the steady state's
 * only ones) if one holds it, else in dpi_flows (per-CPU hash):
 *   miss: an empty slot of the emptier bucket taken, else a copy inserted in
 *     dpi_flows (BPF_NOEXIST);
 *     no room there: counted flows_full, the packet still held to the policy
 *     (dpi_classified, then DNS attribution, then the policy lookups; no
 *     entry, no punts). A slot is freed only by the control side (forget).
 *   NEW (also another CPU's zeroed copy): dpi_classified[key] -> DONE with it;
 *     else dpi_dns[remote] not expired -> DONE, source DNS; else CLASSIFYING.
 *     The policy is evaluated.
 *   CLASSIFYING: dpi_classified looked up each packet (found -> DONE, the
 *     policy evaluated). An up packet with payload (TCP payload > 0, any UDP)
 *     while fewer than DPI_PUNT_PACKETS were punted: a copy punted
 *     (DPI_REASON_PAYLOAD, meta0 = its number), the packet goes on; over
 *     DPI_PUNTS_PER_TICK punts on this CPU in a tick: not punted, counted
 *     punt_limited (the flow's punt spent all the same). Held: the first
 *     punt of a TCP flow (not a SYN) or of UDP to port 443 (QUIC) from a
 *     device with a (mac, HOLD, 0) policy entry (it has an app or category
 *     block), once its copy is on the ring: the packet is dropped, counted
 *     held, and the client's retransmission (an RTO later) meets the
 *     verdict. A blocked app's first request never reaches its server
 *     however late the slow path answers; a punt not sent (limited, ring
 *     full) holds nothing, and a retransmission without a verdict yet
 *     (punt 2) goes on. After the
 *     last punt, DPI_GIVE_UP_AFTER more packets without a verdict, or
 *     DPI_GIVE_UP_PACKETS packets in all: given up (DONE, source UNKNOWN) so a
 *     lost punt never leaves a flow on the slow lookup.
 *   DONE: one lookup (this one) and the dpi_policy_gen check.
 *   every packet: bytes and packets counted by direction, last_tick on change,
 *     DPI_FLOW_FIN on FIN/RST, the device MAC on change; a copy whose
 *     policy_gen is not dpi_policy_gen[0] evaluates the policy again (a
 *     policy change cuts established flows at their next packet).
 * A passed packet of a DONE flow in its slot lets the flow fast path forward
 * the flow (homegw_fastpath_meter): the fast path counts its packets in the
 * slot's flow meter (claimed with the slot, homegw_meter_claim), maps.py
 * adds those counts to the slot's, and a policy change retires the fast
 * path's entries (the control side bumps its epoch) so every flow is
 * evaluated again at its next packet. Any other passed packet of a flow
 * vetoes the fast path (HOMEGW_F_NO_FASTPATH): DPI must see it.
 * Policy: (mac, APP, app) if the app is known, (mac, CATEGORY, category) if
 * known, (mac, ALL, 0); the first entry found decides (ALLOW: pass, BLOCK:
 * block); none: pass. A blocked packet, counted by kind:
 *   TCP up: answered with a RST to the client out of the ingress (MACs,
 *     addresses and ports swapped; seq = its ack_seq with RST if ACK was set,
 *     else seq 0 with RST|ACK and ack = seq + payload + SYN + FIN; no options,
 *     no payload; TTL 64, DF; both checksums computed)
 *   TCP down: turned into a RST to the client (addresses, ports and seq kept,
 *     RST only, options and payload cut, lengths and checksums fixed), which
 *     goes on its way (homegw_next_xdp)
 *   UDP: dropped
 * A frame that cannot be cut to a RST (bpf_xdp_adjust_tail failed) is dropped,
 * counted rst_failed.
 *
 * Compile-time: DPI_H (path of dpi.h, a string), DPI_LAN_ADDR, DPI_LAN_NET,
 * DPI_LAN_MASK (host byte order). */
#include "homegw.h"
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include DPI_H

#if DPI_SLOTS > HOMEGW_FLOW_METERS
#error "a DPI slot's meter is this CPU's meter of the slot's index: DPI_SLOTS must not exceed HOMEGW_FLOW_METERS"
#endif

#define DPI_GIVE_UP_AFTER 16    /* packets after the last punt without a verdict */
#define DPI_GIVE_UP_PACKETS 256 /* packets of a copy classifying, at most */
#define DPI_RST_BYTES (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr))
#define DPI_IP_DF 0x4000
#define DPI_TCP_FIN 0x01
#define DPI_TCP_SYN 0x02
#define DPI_TCP_RST 0x04
#define DPI_TCP_ACK 0x10
#define DPI_HOLD 2 /* track's answer for a held packet (never a flow's verdict) */

/* maps.py reads the counter names from this enum. */
enum dpi_counter {
	D_NEW_FLOWS,       /* copies inserted */
	D_FLOWS_FULL,      /* no room in dpi_flows: held to the policy, not counted */
	D_PUNTED,
	D_PUNT_FAILED,     /* the perf ring was full */
	D_PUNT_LIMITED,    /* over DPI_PUNTS_PER_TICK on this CPU: not punted */
	D_CLASSIFIED,      /* a copy found its flow in dpi_classified */
	D_DNS_ATTRIBUTED,  /* a new copy classified by dpi_dns */
	D_GAVE_UP,         /* a copy stopped waiting for a verdict */
	D_EVALUATED,       /* policy evaluations */
	D_BLOCKED_TCP_UP,  /* answered with a RST */
	D_BLOCKED_TCP_DOWN, /* turned into a RST */
	D_BLOCKED_UDP,     /* dropped */
	D_HELD,            /* a first payload packet dropped until its verdict */
	D_RST_FAILED,
	D_BAD_TRUNCATED_IP,
	D_BAD_IP_HEADER,   /* version not 4, or IHL not 5 (options) */
	D_BAD_FRAGMENT,
	D_BAD_IP_LENGTH,
	D_BAD_TRUNCATED_L4,
	D_BAD_TCP_DOFF,
	D_COUNTERS,
};

// <struct dpi_flow_key (LAN host side), this CPU's struct dpi_flow>: flows for
// which both buckets of dpi_flow_slots were full on this CPU
BPF_TABLE_PINNED("percpu_hash", struct dpi_flow_key, struct dpi_flow, dpi_flows, DPI_MAX_FLOWS,
		 HOMEGW_PIN("dpi_flows"));
// <dpi_slot_at(hash of key, bucket, way), this CPU's struct dpi_slot>: most flows' copies (dpi.h)
BPF_TABLE_PINNED("percpu_array", u32, struct dpi_slot, dpi_flow_slots, DPI_SLOTS,
		 HOMEGW_PIN("dpi_flow_slots"));
// <struct dpi_flow_key, struct dpi_class>: verdicts of the slow path
BPF_TABLE_PINNED("hash", struct dpi_flow_key, struct dpi_class, dpi_classified, DPI_MAX_FLOWS,
		 HOMEGW_PIN("dpi_classified"));
// <remote IPv4 address (network order), struct dpi_dns_entry>: DNS attribution
BPF_TABLE_PINNED("hash", __be32, struct dpi_dns_entry, dpi_dns, DPI_MAX_DNS,
		 HOMEGW_PIN("dpi_dns"));
// <struct dpi_policy_key, DPI_ACTION_*>
BPF_TABLE_PINNED("hash", struct dpi_policy_key, __u32, dpi_policy, DPI_MAX_POLICY,
		 HOMEGW_PIN("dpi_policy"));
// <0, generation of dpi_policy>: bumped after each write, never back to 0
BPF_TABLE_PINNED("array", __u32, __u32, dpi_policy_gen, 1, HOMEGW_PIN("dpi_policy_gen"));
// <enum dpi_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, dpi_stats, D_COUNTERS, HOMEGW_PIN("dpi_stats"));
// <DPI_SOURCE_*, copies that became DONE with a verdict from that source>
BPF_TABLE_PINNED("percpu_array", u32, u64, dpi_source_stats, DPI_SOURCES,
		 HOMEGW_PIN("dpi_source_stats"));

struct punt_budget {
	__u32 tick;  /* the tick `sent` counts in */
	__u32 sent;
};

// <0, punts sent in the current tick on this CPU>: a LAN host starting flows
// at a high rate cannot flood the slow path
BPF_PERCPU_ARRAY(dpi_punt_budget, struct punt_budget, 1);

/* What the packet is to its flow. */
struct dpi_packet {
	struct dpi_flow_key key;
	__u64 mac;
	__u32 bytes;    /* the frame's */
	__u32 payload;  /* L4 payload bytes (by the IP total length) */
	__u32 up;       /* LAN host -> remote */
	__u32 tcp_flags; /* the TCP header's flag byte; 0 for UDP */
};

#define DPI_SKIP -1 /* not a flow's packet: next module */
#define DPI_OK 0

static __always_inline void count(u32 counter)
{
	u64 *value = dpi_stats.lookup(&counter);

	if (value)
		*value += 1;
}

static __always_inline int bad(u32 counter)
{
	count(counter);
	return DPI_SKIP;
}

/* Whether the LAN chain's packet is a flow's up packet (by its addresses). */
static __always_inline int is_up(struct iphdr *ip)
{
	__u32 src = ntohl(ip->saddr), dst = ntohl(ip->daddr);

	if ((src & DPI_LAN_MASK) != DPI_LAN_NET || (dst & DPI_LAN_MASK) == DPI_LAN_NET)
		return 0;
	return (dst >> 28) != 0xe && dst != 0xffffffff && src != DPI_LAN_ADDR;
}

/* The L4 part of dpi_parse: ports, payload length, TCP flags. */
static __always_inline int parse_l4(struct iphdr *ip, void *end, struct dpi_packet *pkt)
{
	__u32 total = ntohs(ip->tot_len);
	void *l4 = (void *)(ip + 1);

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return bad(D_BAD_TRUNCATED_L4);
		if (tcp->doff < 5)
			return bad(D_BAD_TCP_DOFF);
		__u32 headers = sizeof(*ip) + tcp->doff * 4;
		if (total < headers)
			return bad(D_BAD_IP_LENGTH);
		pkt->payload = total - headers;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > end)
			return bad(D_BAD_TRUNCATED_L4);
		if (total < sizeof(*ip) + sizeof(*udp))
			return bad(D_BAD_IP_LENGTH);
		pkt->payload = total - sizeof(*ip) - sizeof(*udp);
	}
	__be16 *ports = l4;
	pkt->key.lan_port = pkt->up ? ports[0] : ports[1];
	pkt->key.remote_port = pkt->up ? ports[1] : ports[0];
	return DPI_OK;
}

/* Whether the frame is a flow's packet, and which; DPI_SKIP otherwise (the
 * odd ones counted). */
static __always_inline int dpi_parse(struct xdp_md *ctx, struct homegw_cursor *cur,
				     struct dpi_packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP))
		return DPI_SKIP;
	if (cur->nic == HOMEGW_NIC_WAN &&
	    (cur->fwd != HOMEGW_FWD_REDIRECT || cur->out_nic != HOMEGW_NIC_LAN))
		return DPI_SKIP;
	if ((void *)(ip + 1) > end)
		return bad(D_BAD_TRUNCATED_IP);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return DPI_SKIP;
	pkt->up = cur->nic == HOMEGW_NIC_LAN;
	if (pkt->up && !is_up(ip))
		return DPI_SKIP;
	if (ip->version != 4 || ip->ihl != 5)
		return bad(D_BAD_IP_HEADER);
	if (ip->frag_off & htons(0x3fff))
		return bad(D_BAD_FRAGMENT);
	if ((void *)ip + ntohs(ip->tot_len) > end)
		return bad(D_BAD_IP_LENGTH);
	pkt->key.lan_addr = pkt->up ? ip->saddr : ip->daddr;
	pkt->key.remote_addr = pkt->up ? ip->daddr : ip->saddr;
	pkt->key.proto = ip->protocol;
	pkt->bytes = end - data;
	__builtin_memcpy(&pkt->mac, pkt->up ? eth->h_source : eth->h_dest, ETH_ALEN);
	return parse_l4(ip, end, pkt);
}

/* The first policy entry of the device for (app, category), or pass. */
static __always_inline __u8 policy_verdict(__u64 mac, __u16 app, __u8 category)
{
	struct dpi_policy_key key = {};
	__u32 *action;

	key.mac = mac;
	if (app != DPI_APP_UNKNOWN) {
		key.kind = DPI_POLICY_APP;
		key.id = app;
		action = dpi_policy.lookup(&key);
		if (action)
			return *action == DPI_ACTION_BLOCK ? DPI_VERDICT_BLOCK : DPI_VERDICT_PASS;
	}
	if (category != DPI_CATEGORY_UNKNOWN) {
		key.kind = DPI_POLICY_CATEGORY;
		key.id = category;
		action = dpi_policy.lookup(&key);
		if (action)
			return *action == DPI_ACTION_BLOCK ? DPI_VERDICT_BLOCK : DPI_VERDICT_PASS;
	}
	key.kind = DPI_POLICY_ALL;
	key.id = 0;
	action = dpi_policy.lookup(&key);
	return action && *action == DPI_ACTION_BLOCK ? DPI_VERDICT_BLOCK : DPI_VERDICT_PASS;
}

static __always_inline void evaluate(struct dpi_flow *flow, __u32 gen)
{
	count(D_EVALUATED);
	flow->verdict = policy_verdict(flow->mac, flow->app, flow->category);
	flow->policy_gen = gen;
}

static __always_inline void done(struct dpi_flow *flow, __u16 app, __u8 category, __u8 source)
{
	u32 index = source;
	u64 *value = dpi_source_stats.lookup(&index);

	if (value)
		*value += 1;
	flow->app = app;
	flow->category = category;
	flow->source = source;
	flow->state = DPI_STATE_DONE;
}

/* NEW: a verdict the slow path or DNS attribution already has, or CLASSIFYING. */
static __always_inline void first_look(struct dpi_flow *flow, struct dpi_flow_key *key, __u32 tick)
{
	struct dpi_class *known = dpi_classified.lookup(key);

	if (known) {
		count(D_CLASSIFIED);
		done(flow, known->app, known->category, known->source);
		return;
	}
	struct dpi_dns_entry *dns = dpi_dns.lookup(&key->remote_addr);
	if (dns && (__s32)(dns->expires_tick - tick) > 0) {
		count(D_DNS_ATTRIBUTED);
		done(flow, dns->app, dns->category, DPI_SOURCE_DNS);
		return;
	}
	flow->state = DPI_STATE_CLASSIFYING;
}

/* Punt a copy of the packet, within this CPU's budget; whether it was sent. */
static __always_inline int punt(struct xdp_md *ctx, __u8 number, __u32 tick)
{
	u32 zero = 0;
	struct punt_budget *budget = dpi_punt_budget.lookup(&zero);

	if (!budget)
		return 0;
	if (budget->tick != tick) {
		budget->tick = tick;
		budget->sent = 0;
	}
	if (budget->sent >= DPI_PUNTS_PER_TICK) {
		count(D_PUNT_LIMITED);
		return 0;
	}
	budget->sent++;
	if (homegw_punt_xdp(ctx, DPI_REASON_PAYLOAD, number, 0) == 0) {
		count(D_PUNTED);
		return 1;
	}
	count(D_PUNT_FAILED);
	return 0;
}

/* Whether a flow's first punted packet waits for its verdict: TCP but not a
 * SYN (its RTO is a second), or UDP to port 443 (a QUIC Initial, which may
 * carry 0-RTT data; other UDP, DNS to a resolver say, retries slowly), from
 * a device with a (mac, HOLD, 0) entry. */
static __always_inline int holds(struct dpi_packet *pkt)
{
	struct dpi_policy_key key = { .mac = pkt->mac, .kind = DPI_POLICY_HOLD };

	if (pkt->key.proto == IPPROTO_TCP ? (pkt->tcp_flags & DPI_TCP_SYN) != 0
					  : pkt->key.remote_port != htons(443))
		return 0;
	return dpi_policy.lookup(&key) != NULL;
}

/* CLASSIFYING: the slow path's verdict, a punt, or giving up. Whether the
 * copy's classification changed (the policy is then evaluated again);
 * *held: the packet waits for the verdict. */
static __always_inline int classifying(struct xdp_md *ctx, struct dpi_flow *flow,
				       struct dpi_packet *pkt, __u32 tick, int *held)
{
	struct dpi_class *known = dpi_classified.lookup(&pkt->key);

	if (known) {
		count(D_CLASSIFIED);
		done(flow, known->app, known->category, known->source);
		return 1;
	}
	if (flow->punted < DPI_PUNT_PACKETS) {
		if (pkt->up && (pkt->payload || pkt->key.proto == IPPROTO_UDP)) {
			flow->punted++; /* spent even when limited: a flood stays bounded */
			if (punt(ctx, flow->punted, tick) && flow->punted == 1)
				*held = holds(pkt);
		}
	} else if (flow->punted < DPI_PUNT_PACKETS + DPI_GIVE_UP_AFTER) {
		flow->punted++; /* packets since the last punt */
	}
	if (flow->punted >= DPI_PUNT_PACKETS + DPI_GIVE_UP_AFTER ||
	    flow->up_packets + flow->down_packets >= DPI_GIVE_UP_PACKETS) {
		count(D_GAVE_UP);
		done(flow, DPI_APP_UNKNOWN, DPI_CATEGORY_UNKNOWN, DPI_SOURCE_UNKNOWN);
		return 1;
	}
	return 0;
}

static __always_inline void account(struct dpi_flow *flow, struct dpi_packet *pkt, __u32 tick)
{
	if (pkt->up) {
		flow->up_packets++;
		flow->up_bytes += pkt->bytes;
	} else {
		flow->down_packets++;
		flow->down_bytes += pkt->bytes;
	}
	if (flow->last_tick != tick)
		flow->last_tick = tick;
	if (!flow->first_tick)
		flow->first_tick = tick;
	if (flow->mac != pkt->mac)
		flow->mac = pkt->mac;
	if ((pkt->tcp_flags & (DPI_TCP_FIN | DPI_TCP_RST)) && !(flow->flags & DPI_FLOW_FIN))
		flow->flags |= DPI_FLOW_FIN;
}

/* This packet's verdict for its flow (the copy updated), or DPI_HOLD. */
static __always_inline __u8 track(struct xdp_md *ctx, struct dpi_flow *flow,
				  struct dpi_packet *pkt, __u32 gen, __u32 tick)
{
	int changed = 0, held = 0;

	account(flow, pkt, tick);
	if (flow->state == DPI_STATE_NEW) {
		first_look(flow, &pkt->key, tick);
		changed = 1;
	}
	if (flow->state == DPI_STATE_CLASSIFYING && classifying(ctx, flow, pkt, tick, &held))
		changed = 1;
	if (changed || flow->policy_gen != gen)
		evaluate(flow, gen);
	return held && flow->verdict == DPI_VERDICT_PASS ? DPI_HOLD : flow->verdict;
}

/* No room for the flow: its verdict as far as the maps tell, no state kept. */
static __always_inline __u8 untracked(struct dpi_packet *pkt, __u32 tick)
{
	struct dpi_flow flow = { .mac = pkt->mac, .flags = DPI_FLOW_UNCOUNTED };

	count(D_FLOWS_FULL);
	first_look(&flow, &pkt->key, tick);
	return policy_verdict(flow.mac, flow.app, flow.category);
}

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* The IPv4 header's checksum (IHL 5) and the TCP one (20 bytes, no payload). */
static __always_inline void rst_checksums(struct iphdr *ip, struct tcphdr *tcp)
{
	__u16 *word = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	ip->check = csum_fold32(sum);
	tcp->check = 0;
	word = (__u16 *)tcp;
	sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
	      htons(IPPROTO_TCP) + htons(sizeof(*tcp));
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	tcp->check = csum_fold32(sum);
}

/* Cut the frame to Ethernet + IPv4 + TCP headers; its pointers, or -1. */
static __always_inline int cut_to_rst(struct xdp_md *ctx, struct ethhdr **eth, struct iphdr **ip,
				      struct tcphdr **tcp)
{
	long extra = (long)(ctx->data_end - ctx->data) - (long)DPI_RST_BYTES;

	if (extra > 0 && bpf_xdp_adjust_tail(ctx, -(int)extra))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + DPI_RST_BYTES > end)
		return -1;
	*eth = data;
	*ip = data + sizeof(struct ethhdr);
	*tcp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	return 0;
}

static __always_inline void rst_headers(struct iphdr *ip, struct tcphdr *tcp)
{
	ip->tot_len = htons(sizeof(*ip) + sizeof(*tcp));
	tcp->doff = 5;
	tcp->window = 0;
	tcp->urg_ptr = 0;
}

/* Answer a blocked client -> server segment with a RST out of the ingress. */
static __always_inline int rst_to_client(struct xdp_md *ctx, struct dpi_packet *pkt)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	tcp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	if ((void *)(tcp + 1) > end)
		return XDP_DROP;
	__u32 flags = pkt->tcp_flags;
	__be32 ack_seq = tcp->ack_seq;
	__u32 seq = ntohl(tcp->seq) + pkt->payload + !!(flags & DPI_TCP_SYN) +
		    !!(flags & DPI_TCP_FIN);
	if (cut_to_rst(ctx, &eth, &ip, &tcp)) {
		count(D_RST_FAILED);
		return XDP_DROP;
	}
	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tos = 0;
	ip->id = 0;
	ip->frag_off = htons(DPI_IP_DF);
	ip->ttl = 64;
	__be16 port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	__u8 *tcp_flags = (__u8 *)tcp + 13;
	if (flags & DPI_TCP_ACK) {
		tcp->seq = ack_seq;
		tcp->ack_seq = 0;
		*tcp_flags = DPI_TCP_RST;
	} else {
		tcp->seq = 0;
		tcp->ack_seq = htonl(seq);
		*tcp_flags = DPI_TCP_RST | DPI_TCP_ACK;
	}
	((__u8 *)tcp)[12] = 0; /* doff and reserved bits, doff set below */
	rst_headers(ip, tcp);
	rst_checksums(ip, tcp);
	count(D_BLOCKED_TCP_UP);
	return homegw_tx_xdp(ctx);
}

/* Turn a blocked server -> client segment into a RST to the client. */
static __always_inline int rst_in_place(struct xdp_md *ctx)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;

	if (cut_to_rst(ctx, &eth, &ip, &tcp)) {
		count(D_RST_FAILED);
		return XDP_DROP;
	}
	tcp->ack_seq = 0;
	((__u8 *)tcp)[12] = 0;
	((__u8 *)tcp)[13] = DPI_TCP_RST;
	rst_headers(ip, tcp);
	rst_checksums(ip, tcp);
	count(D_BLOCKED_TCP_DOWN);
	return homegw_next_xdp(ctx);
}

static __always_inline int block(struct xdp_md *ctx, struct dpi_packet *pkt)
{
	if (pkt->key.proto != IPPROTO_TCP) {
		count(D_BLOCKED_UDP);
		return XDP_DROP;
	}
	if (pkt->up)
		return rst_to_client(ctx, pkt);
	return rst_in_place(ctx);
}

static __always_inline int same_key(const struct dpi_flow_key *a, const struct dpi_flow_key *b)
{
	return *(const __u64 *)a == *(const __u64 *)b &&
	       *((const __u64 *)a + 1) == *((const __u64 *)b + 1);
}

/* The slot of the key's two buckets holding its copy on this CPU, or NULL;
 * *index: that slot's index, else an empty slot's of the emptier bucket, or
 * DPI_NO_SLOT when both are full. */
static __always_inline struct dpi_slot *find_slot(const struct dpi_flow_key *key, u32 *index)
{
	__u32 hash = dpi_hash(key);
	u32 first_empty[2] = { DPI_NO_SLOT, DPI_NO_SLOT };
	int empty[2] = { 0, 0 };

#pragma unroll
	for (int choice = 0; choice < 2; choice++) {
#pragma unroll
		for (int way = 0; way < DPI_WAYS; way++) {
			u32 i = dpi_slot_at(hash, choice, way);
			struct dpi_slot *slot = dpi_flow_slots.lookup(&i);

			if (!slot)
				continue;
			if (same_key(&slot->key, key)) {
				*index = i;
				return slot;
			}
			if (slot->key.proto == 0 && empty[choice]++ == 0)
				first_empty[choice] = i;
		}
	}
	*index = empty[0] >= empty[1] ? first_empty[0] : first_empty[1];
	return NULL;
}

/* The copy of a flow in no slot: in dpi_flows, else a new one in the free
 * slot if there is one (*claimed), else a new one in dpi_flows; NULL when
 * that is full. */
static __always_inline struct dpi_flow *hashed_flow(struct dpi_flow_key *key, u32 free, __u32 tick,
						    struct dpi_slot **claimed)
{
	struct dpi_flow *flow = dpi_flows.lookup(key);

	if (flow)
		return flow;
	struct dpi_slot *slot = free == DPI_NO_SLOT ? NULL : dpi_flow_slots.lookup(&free);
	if (slot) {
		*claimed = slot;
		__builtin_memset(&slot->flow, 0, sizeof(slot->flow));
		slot->flow.first_tick = tick;
		slot->key = *key;
		homegw_meter_claim(free); /* the slot's meter: the fast path's counts */
		count(D_NEW_FLOWS);
		return &slot->flow;
	}
	struct dpi_flow fresh = { .first_tick = tick };
	if (dpi_flows.insert(key, &fresh) == 0)
		count(D_NEW_FLOWS);
	return dpi_flows.lookup(key); /* ours, or another CPU's insert */
}

int dpi_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();
	struct dpi_packet pkt = {};
	u32 zero = 0;

	if (!cur || dpi_parse(ctx, cur, &pkt) != DPI_OK)
		return homegw_next_xdp(ctx);
	__u32 *gen_now = dpi_policy_gen.lookup(&zero);
	__u32 gen = gen_now ? *gen_now : 0;
	__u32 tick = bpf_ktime_get_coarse_ns() >> HOMEGW_NEIGH_TICK_SHIFT;
	__u8 verdict;
	u32 index = DPI_NO_SLOT;
	struct dpi_slot *slot = find_slot(&pkt.key, &index);
	struct dpi_flow *flow = slot ? &slot->flow : hashed_flow(&pkt.key, index, tick, &slot);

	if (flow)
		verdict = track(ctx, flow, &pkt, gen, tick);
	else
		verdict = untracked(&pkt, tick);
	if (verdict == DPI_VERDICT_BLOCK)
		return block(ctx, &pkt);
	if (verdict == DPI_HOLD) {
		count(D_HELD);
		return XDP_DROP;
	}
	/* the fast path may forward a classified flow of a slot, counting in the
	 * slot's meter; any other flow's packets DPI must see (the cursor is at
	 * hand: not homegw_no_fastpath_xdp's second lookup) */
	if (slot && flow->state == DPI_STATE_DONE)
		homegw_fastpath_meter(cur, index);
	else
		cur->flags |= HOMEGW_F_NO_FASTPATH;
	return homegw_next_xdp(ctx);
}
