/* homegw.h: the contract between the root programs, the IO modules and
 * userspace. Every .bpf.c of homegw includes it (bcc compiles each module on
 * its own; the shared maps below are pinned under HOMEGW_PIN_DIR, so all
 * modules and the roots open the same maps, and so do restarts).
 *
 * Compile-time defines set by homegw/dataplane/loader.py:
 *   HOMEGW_PIN_DIR     "/sys/fs/bpf/homegw" (string literal)
 *   HOMEGW_MODULE_ID   the module's id, carried in slow-path punts
 *   HOMEGW_CPUS        the possible CPUs (homegw_flow_meters has a range each)
 */
#ifndef HOMEGW_H
#define HOMEGW_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>

/* ntohs whose result every kernel's verifier can bound. Verifiers before
 * 6.13 (Debian 12's 6.1, backports' 6.12) forget a byte swap's bounds, so a
 * swapped length added to a packet pointer is refused ("math between pkt
 * pointer and register with unbounded min value"). The mask is an asm the
 * compiler cannot drop; it costs one instruction. */
static __always_inline __u64 homegw_ntohs(__u16 net)
{
	__u64 host = __builtin_bswap16(net);

	asm("%[v] &= 0xffff" : [v] "+r"(host));
	return host;
}
#undef ntohs
#define ntohs(x) homegw_ntohs(x)

/* x & mask, kept: the compiler drops a mask it proves redundant, and a 6.1
 * verifier, which bounds fewer operations (an OR of two unknowns), then
 * refuses the index it guarded ("math between map_value pointer and register
 * with unbounded min value"). */
#define homegw_mask(x, mask)                                        \
	({                                                          \
		__u64 __masked = (x);                               \
		asm("%[v] &= %[m]" : [v] "+r"(__masked) : [m] "i"(mask)); \
		__masked;                                           \
	})

/* What the compiler knows of var forgotten (its value unchanged), so that
 * it keeps a loop's bounds where the verifier can see them. */
#define homegw_barrier_var(var) asm volatile("" : "+r"(var))

#ifndef HOMEGW_PIN_DIR
#error "HOMEGW_PIN_DIR must be defined by the loader"
#endif
#ifndef HOMEGW_MODULE_ID
#define HOMEGW_MODULE_ID 0
#endif

/* Keep in step with homegw/dataplane/abi.py. */
#define HOMEGW_NIC_LAN 0
#define HOMEGW_NIC_WAN 1
#define HOMEGW_NICS 2
#define HOMEGW_HOOK_XDP 0
#define HOMEGW_HOOK_TC 1
#define HOMEGW_HOOKS 2
#define HOMEGW_GENERATIONS 2
#define HOMEGW_MAX_MODULES 8 /* chain positions per NIC, hook and generation */
#define HOMEGW_CHAIN_SLOTS (HOMEGW_NICS * HOMEGW_GENERATIONS * HOMEGW_MAX_MODULES)
#define HOMEGW_PUNT_MAX_BYTES 1514 /* packet bytes copied to the slow path */

/* Chain slot of (nic, generation, position): one block of positions per
 * NIC and generation. Userspace fills the inactive generation, then flips
 * chain_generation[nic]: a re-order is one atomic map write. */
#define HOMEGW_SLOT(nic, gen, pos) \
	((((nic) * HOMEGW_GENERATIONS) + (gen)) * HOMEGW_MAX_MODULES + (pos))

/* A flow of the fast path (homegw_fastpath.h): an IPv4 TCP/UDP 5-tuple as
 * the packet carries it (network order) and the NIC it arrives on. */
struct homegw_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 nic;
	__u16 pad; /* always zero */
};

/* What of a learnable frame the chain may change, as it arrived. */
struct homegw_flow_orig {
	unsigned char macs[2 * ETH_ALEN]; /* destination, source */
	__u16 len;                        /* frame length */
	__u16 ip_check;
	__u16 l4_check;
	__u8 ttl;
	__u8 tcp_flags;
	__u32 epoch;                      /* homegw_flow_epoch[0] then: what the chain
					   * decides is of that epoch */
};

/* Where the running packet is in its chain; written by the root, advanced by
 * each module. Per-CPU: a packet's whole chain runs on one CPU without
 * preemption, so the entry belongs to that packet until the chain ends. */
struct homegw_cursor {
	__u32 slot_base;   /* HOMEGW_SLOT(nic, gen, 0) */
	__u32 pos;         /* position of the module now running */
	__u32 nic;         /* HOMEGW_NIC_* the packet arrived on / leaves by */
	__u32 ifindex;
	/* The forwarding decision so far, acted on when the chain ends: a module
	 * that routes (router) sets HOMEGW_FWD_REDIRECT and the egress; later
	 * modules (nat) read it. The root resets it to HOMEGW_FWD_KERNEL. */
	__u32 fwd;         /* HOMEGW_FWD_* */
	__u32 out_ifindex; /* egress interface when fwd == HOMEGW_FWD_REDIRECT */
	__u32 out_nic;     /* HOMEGW_NIC_* of the egress, or HOMEGW_NIC_NONE */
	__u32 flags;       /* HOMEGW_F_* */
	/* The frame's MACs as it arrived, saved by a module that rewrites them
	 * (router), so a later one can still answer the sender (nat's ICMP). */
	unsigned char in_src_mac[ETH_ALEN];
	unsigned char in_dst_mac[ETH_ALEN];
	/* With HOMEGW_F_DNAT: the destination as the remote sent it (network
	 * order), so an ICMP error about the packet quotes it untranslated. */
	__be32 orig_daddr;
	__be16 orig_dport;
	__u16 pad;
	/* The egress MTU, set with fwd by the module that routes (router): the
	 * flow fast path (homegw_fastpath.h) sends no larger packet. */
	__u32 out_mtu;
	/* With HOMEGW_F_LEARN: the frame as it arrived, for the fast path's
	 * learning at the chain's end (homegw_fastpath.h) */
	struct homegw_flow_key flow;
	struct homegw_flow_orig orig;
	/* With HOMEGW_F_METER: the flow meter the fast path counts the flow's
	 * packets in (homegw_fastpath_meter) */
	__u32 meter;
	__u32 meter_claim;
};

#define HOMEGW_FWD_KERNEL 0   /* chain end: XDP_PASS, the kernel decides */
#define HOMEGW_FWD_REDIRECT 1 /* chain end: bpf_redirect(out_ifindex) */
#define HOMEGW_NIC_NONE 0xff
#define HOMEGW_F_LOCAL 1      /* destined to one of the gateway's addresses */
#define HOMEGW_F_DNAT 2       /* destination translated inbound: see orig_daddr */
/* Over the egress MTU without DF (set by the router): the chain's end hands
 * the packet, translated by then, to the slow path, which fragments it and
 * sends the fragments out of out_ifindex. Never to the kernel untranslated. */
#define HOMEGW_F_FRAGMENT 4
/* A module that must see every packet of this flow (DPI while it counts or
 * classifies it, a user module) sets it: the fast path does not learn it. */
#define HOMEGW_F_NO_FASTPATH 8
/* Set by the root: cursor flow/orig hold the frame as it arrived, so the
 * chain's end may teach the fast path the flow (homegw_fastpath.h). */
#define HOMEGW_F_LEARN 16
/* A module that counts every packet of this flow lets the fast path forward
 * it, counting in cursor meter (homegw_fastpath_meter). */
#define HOMEGW_F_METER 32

/* XDP metadata (4 bytes) of a frame the slow path sends through its chain
 * again (Dataplane.reinject: held until a neighbour was resolved). Such a
 * frame already passed the modules before the one that punted it (the
 * firewall sits before every module that does), maybe translated by NAT.
 * A frame from the wire has no metadata: no homegw module writes any. */
#define HOMEGW_META_REINJECTED 0x686d6772

/* Punts from the chain itself (no module): module id and reasons. */
#define HOMEGW_DATAPLANE_ID 0
#define HOMEGW_REASON_FRAGMENT 1 /* meta0 = out_ifindex, meta1 = out_nic */

struct homegw_counter {
	__u64 packets;
	__u64 bytes;
};

/* Header of every slow-path message; the packet's first bytes follow. */
struct homegw_punt {
	__u16 module;   /* HOMEGW_MODULE_ID of the sender */
	__u16 reason;   /* module-defined reason code */
	__u32 ifindex;  /* interface the packet came in on */
	__u32 pkt_len;  /* full length of the packet */
	__u32 meta[4];  /* module-defined metadata */
};

#define HOMEGW_PIN(name) HOMEGW_PIN_DIR "/" name

// <position slot, module program fd>: XDP ingress chains of both NICs
BPF_TABLE_PINNED("prog", u32, u32, chain_xdp, HOMEGW_CHAIN_SLOTS, HOMEGW_PIN("chain_xdp"));
// <position slot, module program fd>: TC egress chains of both NICs
BPF_TABLE_PINNED("prog", u32, u32, chain_tc, HOMEGW_CHAIN_SLOTS, HOMEGW_PIN("chain_tc"));
// <0, the dataplane's fragment program>: see homegw_finish_xdp
BPF_TABLE_PINNED("prog", u32, u32, chain_fragment, 1, HOMEGW_PIN("chain_fragment"));
// <0, the dataplane's fast-path learning program>: see homegw_finish_xdp
BPF_TABLE_PINNED("prog", u32, u32, chain_learn, 1, HOMEGW_PIN("chain_learn"));
// <nic * HOMEGW_HOOKS + hook, active generation (0 or 1)>
BPF_TABLE_PINNED("array", u32, u32, chain_generation, HOMEGW_NICS * HOMEGW_HOOKS,
		 HOMEGW_PIN("chain_generation"));
// <0, chain cursor of the packet in XDP on this CPU>
BPF_TABLE_PINNED("percpu_array", u32, struct homegw_cursor, cursor_xdp, 1,
		 HOMEGW_PIN("cursor_xdp"));
// <0, chain cursor of the packet in TC on this CPU>
BPF_TABLE_PINNED("percpu_array", u32, struct homegw_cursor, cursor_tc, 1,
		 HOMEGW_PIN("cursor_tc"));
// <nic * HOMEGW_HOOKS + hook, packets and bytes that entered that chain>
BPF_TABLE_PINNED("percpu_array", u32, struct homegw_counter, chain_stats,
		 HOMEGW_NICS * HOMEGW_HOOKS, HOMEGW_PIN("chain_stats"));
// <cpu, perf ring>: slow-path channel, struct homegw_punt + packet bytes.
// Spelled out because bcc's BPF_PERF_OUTPUT has no pinned variant.
struct slowpath_table_t {
	int key;
	u32 leaf;
	int (*perf_submit)(void *, void *, u32);
	int (*perf_submit_skb)(void *, u32, void *, u32);
	u32 max_entries;
};
__attribute__((section("maps/perf_output:" HOMEGW_PIN("slowpath"))))
struct slowpath_table_t slowpath = { .max_entries = 0 };

static __always_inline struct homegw_cursor *homegw_cursor_xdp(void)
{
	u32 zero = 0;
	return cursor_xdp.lookup(&zero);
}

static __always_inline struct homegw_cursor *homegw_cursor_tc(void)
{
	u32 zero = 0;
	return cursor_tc.lookup(&zero);
}

/* Copy the packet (up to HOMEGW_PUNT_MAX_BYTES) with a header to the slow
 * path, as module `module`. The caller decides the packet's fate: XDP_DROP
 * when userspace takes it over (it may send it again through the packet-out
 * path), XDP_PASS when the slow path only needs to know. Returns 0 or a
 * negative errno. homegw_punt_hdr_xdp sends a header the caller filled
 * (module, reason, all four meta words: an IPv6 address fits). */
static __always_inline int homegw_punt_hdr_xdp(struct xdp_md *ctx, struct homegw_punt *hdr)
{
	__u64 len = (__u64)(ctx->data_end - ctx->data);
	__u64 cap = len > HOMEGW_PUNT_MAX_BYTES ? HOMEGW_PUNT_MAX_BYTES : len;

	hdr->ifindex = ctx->ingress_ifindex;
	hdr->pkt_len = len;
	/* bcc turns this into bpf_perf_event_output with cap << 32 in the flags:
	 * the kernel appends cap bytes of the packet after the header. */
	return slowpath.perf_submit_skb(ctx, cap, hdr, sizeof(*hdr));
}

static __always_inline int homegw_punt_as_xdp(struct xdp_md *ctx, __u16 module, __u16 reason,
					      __u32 meta0, __u32 meta1)
{
	struct homegw_punt hdr = {
		.module = module,
		.reason = reason,
		.meta = { meta0, meta1, 0, 0 },
	};

	return homegw_punt_hdr_xdp(ctx, &hdr);
}

/* The same as the module compiled in (HOMEGW_MODULE_ID). */
static __always_inline int homegw_punt_xdp(struct xdp_md *ctx, __u16 reason, __u32 meta0,
					   __u32 meta1)
{
	return homegw_punt_as_xdp(ctx, HOMEGW_MODULE_ID, reason, meta0, meta1);
}

/* Send the frame, rewritten into an answer, back out of the NIC it came in
 * on. Not XDP_TX: on a veth, XDP_TX frames reach the peer's ring but wake
 * the peer's NAPI only if the peer runs an XDP program of its own (the
 * kernel's veth_xdp_flush), so a lone answer sat there until the next frame
 * arrived. A redirect is flushed with XDP_XMIT_FLUSH, which always wakes the
 * peer; on a physical NIC the two cost the same. */
static __always_inline int homegw_tx_xdp(struct xdp_md *ctx)
{
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

/* The verdict at the end of a chain: what the modules decided, else the
 * kernel, which is the safe default for anything no module claimed. A packet
 * to fragment (HOMEGW_F_FRAGMENT, translated by now) goes to the dataplane's
 * fragment program (fragment.bpf.c, in chain_fragment), which punts it to
 * the slow path to be fragmented and sent out of the egress. It is never
 * handed to the kernel, which would forward it untranslated. (A tail call,
 * not the punt itself: this is inlined wherever a module ends its work, and
 * the punt's code there would cost NAT its verification.) A redirected
 * packet the root marked HOMEGW_F_LEARN that no module vetoed
 * (HOMEGW_F_NO_FASTPATH) goes to the fast path's learning program
 * (fastpath.bpf.c, in chain_learn), which redirects it. */
static __always_inline int homegw_finish_xdp(struct xdp_md *ctx, struct homegw_cursor *cur)
{
	if (cur->fwd != HOMEGW_FWD_REDIRECT)
		return XDP_PASS;
	if (cur->flags & HOMEGW_F_FRAGMENT) {
		chain_fragment.call(ctx, 0);
		return XDP_DROP; /* no fragment program loaded */
	}
	/* a flow the fast path may forward from now on: the learning program
	 * records what the chain did to it, then redirects it (no program
	 * loaded: redirected here) */
	if ((cur->flags & (HOMEGW_F_LEARN | HOMEGW_F_NO_FASTPATH)) == HOMEGW_F_LEARN)
		chain_learn.call(ctx, 0);
	/* XDP_REDIRECT, or XDP_ABORTED on bad flags: said so the verifier
	 * knows it too (a module's "verdict >= 0" test after this would
	 * otherwise leave it a path no packet takes, and on a 6.12 kernel
	 * one it refuses) */
	return bpf_redirect(cur->out_ifindex, 0) == XDP_REDIRECT ? XDP_REDIRECT : XDP_ABORTED;
}

/* Hand the packet to the next module of its chain. Returns only when there
 * is none (end of chain, or an empty slot), with homegw_finish_xdp's verdict. */
static __always_inline int homegw_next_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();
	if (!cur)
		return XDP_PASS;
	if (cur->pos + 1 < HOMEGW_MAX_MODULES) {
		cur->pos++;
		chain_xdp.call(ctx, cur->slot_base + cur->pos);
	}
	return homegw_finish_xdp(ctx, cur);
}

static __always_inline int homegw_next_tc(struct __sk_buff *skb)
{
	struct homegw_cursor *cur = homegw_cursor_tc();
	if (!cur)
		return TC_ACT_OK;
	if (cur->pos + 1 < HOMEGW_MAX_MODULES) {
		cur->pos++;
		chain_tc.call(skb, cur->slot_base + cur->pos);
	}
	return TC_ACT_OK;
}

/* The running packet's flow is not to be learnt by the fast path
 * (HOMEGW_F_NO_FASTPATH): this module must see its next packets too, or
 * the packet opened the flow (its first packet: most flows of one packet,
 * a DNS query, a scan, a flood, would only churn the fast path's table). */
static __always_inline void homegw_no_fastpath_xdp(void)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (cur)
		cur->flags |= HOMEGW_F_NO_FASTPATH;
}

/* Whether the slow path re-injected this frame (HOMEGW_META_REINJECTED). */
static __always_inline int homegw_reinjected_xdp(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;

	if (meta + sizeof(__u32) > data)
		return 0;
	return *(__u32 *)meta == HOMEGW_META_REINJECTED;
}

/* Next hops (neighbours), shared by the modules that forward: the router
 * mirrors the kernel's ARP table into homegw_neigh (homegw/modules/router/
 * neigh.py) and resolves misses; any module may look a next hop up with
 * homegw_neighbour_xdp, which punts a miss as the router's NEIGH_MISS. */
#define HOMEGW_ROUTER_ID 2          /* the router module's id */
#define HOMEGW_REASON_NEIGH_MISS 1  /* router reason: meta0 = next hop, meta1 = egress NIC */
#define HOMEGW_MAX_NEIGHBOURS 4096
/* An unresolved next hop is punted at most this often; its other packets are
 * dropped, so a flood to an offline host cannot swamp the slow path. */
#define HOMEGW_NEIGH_PUNT_INTERVAL_NS 200000000ULL
/* Use marks count ticks of 2^30 ns (1.07 s): a shift, where a division by 1e9
 * would cost a 64-bit divide on every forwarded packet. */
#define HOMEGW_NEIGH_TICK_SHIFT 30

struct homegw_neighbour {
	unsigned char mac[ETH_ALEN];
	__u16 nic;        /* HOMEGW_NIC_* of the egress; HOMEGW_NIC_NONE: incomplete */
	__u32 used_tick;  /* CLOCK_MONOTONIC >> HOMEGW_NEIGH_TICK_SHIFT of the last use,
			   * written on change */
	__u64 punted_ns;  /* when a miss for it was last punted (incomplete entries) */
};

/* A lookup's outcome when it returned no entry. */
#define HOMEGW_NEIGH_PUNTED 1  /* handed to the slow path: it resolves and resends */
#define HOMEGW_NEIGH_LIMITED 2 /* dropped: a punt for it went up less than an interval ago */

// <next-hop IPv4 address, MAC, egress NIC, last use>: mirrored from the
// kernel by the router's neigh.py; incomplete entries are made here on a miss.
// Pinned as router_neigh; its first 8 bytes keep the old layout (mac, nic).
BPF_TABLE_PINNED("hash", __be32, struct homegw_neighbour, homegw_neigh, HOMEGW_MAX_NEIGHBOURS,
		 HOMEGW_PIN("router_neigh"));

/* Whether a miss for the incomplete entry n is to be punted now: none went
 * up for an interval and this CPU won the compare-and-swap of punted_ns.
 * (The router's IPv6 neighbours use it too.) */
static __always_inline int homegw_neigh_punt_due(struct homegw_neighbour *n, __u64 now)
{
	__u64 last = n->punted_ns;

	return now - last >= HOMEGW_NEIGH_PUNT_INTERVAL_NS &&
	       __sync_val_compare_and_swap(&n->punted_ns, last, now) == last;
}

/* Mark a resolved entry used at `now` (one write a tick at most). */
static __always_inline void homegw_neigh_mark_used(struct homegw_neighbour *n, __u64 now)
{
	__u32 tick = now >> HOMEGW_NEIGH_TICK_SHIFT;

	if (n->used_tick != tick)
		n->used_tick = tick;
}

/* Punt a miss for next_hop unless one went up less than an interval ago. */
static __always_inline int homegw_neigh_punt_limited(struct xdp_md *ctx, struct homegw_neighbour *n,
						     __be32 next_hop, __u32 nic, __u64 now)
{
	if (!homegw_neigh_punt_due(n, now))
		return HOMEGW_NEIGH_LIMITED;
	homegw_punt_as_xdp(ctx, HOMEGW_ROUTER_ID, HOMEGW_REASON_NEIGH_MISS, next_hop, nic);
	return HOMEGW_NEIGH_PUNTED;
}

/* The MAC of next_hop out of NIC `nic`, its use marked (one write a tick
 * at most; `now` is the caller's bpf_ktime_get_coarse_ns()). NULL on a miss, with *miss = HOMEGW_NEIGH_PUNTED (the slow path
 * owns a copy: the caller returns XDP_DROP) or HOMEGW_NEIGH_LIMITED (drop).
 * A first miss leaves an incomplete entry that carries the rate limit. */
static __always_inline struct homegw_neighbour *homegw_neighbour_xdp(struct xdp_md *ctx,
							      __be32 next_hop, __u32 nic,
							      __u64 now, int *miss)
{
	struct homegw_neighbour *n = homegw_neigh.lookup(&next_hop);

	if (n && n->nic == nic) {
		homegw_neigh_mark_used(n, now);
		return n;
	}
	if (!n) {
		struct homegw_neighbour incomplete = { .nic = HOMEGW_NIC_NONE, .punted_ns = now };
		if (homegw_neigh.insert(&next_hop, &incomplete) == 0) { /* BPF_NOEXIST */
			homegw_punt_as_xdp(ctx, HOMEGW_ROUTER_ID, HOMEGW_REASON_NEIGH_MISS,
					   next_hop, nic);
			*miss = HOMEGW_NEIGH_PUNTED;
			return NULL;
		}
		n = homegw_neigh.lookup(&next_hop); /* another CPU made it, or full */
		if (!n) {
			*miss = HOMEGW_NEIGH_LIMITED;
			return NULL;
		}
	}
	*miss = homegw_neigh_punt_limited(ctx, n, next_hop, nic, now);
	return NULL;
}

// <HOMEGW_NIC_* of the egress, packets and bytes forwarded out of it>: by the
// router, and by the flow fast path for it (homegw_fastpath.h); read by the
// router's maps.py. Pinned as router_nic_stats, its name before it was shared.
BPF_TABLE_PINNED("percpu_array", u32, struct homegw_counter, homegw_nic_forwarded, HOMEGW_NICS,
		 HOMEGW_PIN("router_nic_stats"));

static __always_inline void homegw_count_forwarded(u32 out_nic, __u64 bytes)
{
	struct homegw_counter *c = homegw_nic_forwarded.lookup(&out_nic);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Flow meters: a module that counts every packet of a flow (DPI, per flow
 * and application) need not keep the flow off the fast path. It names one
 * of this CPU's meters for the flow (homegw_fastpath_meter); the fast path
 * counts the packets it forwards for the flow there and adds nothing else.
 * A meter is claimed for a flow (homegw_meter_claim: zeroed, a new claim
 * number); an entry of the fast path counts in its meter only while the
 * meter on the packet's CPU still has the claim it was learnt with, else
 * the packet goes through the chain (that CPU's meter is another flow's, or
 * was claimed again). The module reads the meters of its flows and adds
 * them to its own counts. One module uses them (DPI: the index is its slot);
 * a second would need a range of its own. */
#define HOMEGW_FLOW_METERS 16384 /* per CPU */
#define HOMEGW_NO_METER 0xffffffff
#ifndef HOMEGW_CPUS
#error "HOMEGW_CPUS (the possible CPUs) must be defined by the loader"
#endif

struct homegw_flow_meter {
	__u64 bytes[HOMEGW_NICS];   /* frame bytes, by the NIC they arrived on */
	__u32 packets[HOMEGW_NICS]; /* (wrapping as DPI's own) 32 bytes: two to a cache line */
	__u32 last_tick;            /* HOMEGW_NEIGH_TICK_SHIFT ticks: the last packet counted */
	__u32 claim;                /* (claims << 8) | CPU: never the same on two CPUs; 0 unclaimed */
};

// <CPU * HOMEGW_FLOW_METERS + meter index, struct homegw_flow_meter>: what the
// fast path forwarded on that CPU of the flow that claimed the meter there.
// A plain array, each CPU its own range: the fast path's meter is one memory
// access away (a per-CPU array's element is two dependent ones, and at
// 10,000 flows each is a cache miss: 30 % of NAT saturation)
BPF_TABLE_PINNED("array", u32, struct homegw_flow_meter, homegw_flow_meters,
		 HOMEGW_CPUS * HOMEGW_FLOW_METERS, HOMEGW_PIN("fastpath_meters"));

/* This CPU's meter `index`, or NULL. */
static __always_inline struct homegw_flow_meter *homegw_meter(u32 index)
{
	if (index >= HOMEGW_FLOW_METERS)
		return NULL;
	u32 at = bpf_get_smp_processor_id() * HOMEGW_FLOW_METERS + index;

	return homegw_flow_meters.lookup(&at);
}

/* Give this CPU's meter `index` to a new flow: zeroed, claimed anew (what
 * the fast path learnt for its old flow no longer counts in it). */
static __always_inline void homegw_meter_claim(u32 index)
{
	struct homegw_flow_meter *m = homegw_meter(index);

	if (!m)
		return;
	__u32 claim = (((m->claim >> 8) + 1) << 8) | (bpf_get_smp_processor_id() & 0xff);
	__builtin_memset(m, 0, sizeof(*m));
	m->claim = claim;
}

/* The running packet's flow may take the fast path, which counts it in this
 * CPU's meter `index` (claimed by the caller for the flow). */
static __always_inline void homegw_fastpath_meter(struct homegw_cursor *cur, u32 index)
{
	struct homegw_flow_meter *m = homegw_meter(index);

	if (!m || !m->claim) {
		cur->flags |= HOMEGW_F_NO_FASTPATH;
		return;
	}
	cur->meter = index;
	cur->meter_claim = m->claim;
	cur->flags |= HOMEGW_F_METER;
}

/* Per-device accounting and policy, one map for the whole chain: the router
 * counts what it forwards from and to a LAN device and drops what a paused
 * device sends or is sent, other modules count what they drop of a known
 * device's frames (the DHCP guard). Read by homegw/dataplane/devices.py. */
#define HOMEGW_MAX_DEVICES 4096
#define HOMEGW_DEVICE_FROM 0    /* a frame from the device, forwarded */
#define HOMEGW_DEVICE_TO 1      /* a frame forwarded to the device */
#define HOMEGW_DEVICE_DROPPED 2 /* a frame from the device, dropped */
/* Or-ed into FROM or TO: a paused device's frame is not counted (the fast
 * path hands it to the chain, whose router drops and counts it). */
#define HOMEGW_DEVICE_UNLESS_PAUSED 4

/* homegw_count_device's outcomes */
#define HOMEGW_DEVICE_COUNTED 0
#define HOMEGW_DEVICE_FULL -1    /* no room in the table: not counted */
#define HOMEGW_DEVICE_IS_PAUSED 1 /* a paused device's frame: drop it (counted as dropped) */

/* Policy flags of a device (the appliance's `devices` config section). */
#define HOMEGW_DEVICE_PAUSED 1 /* forward nothing from or to it */

struct homegw_device {
	__u64 from_packets;
	__u64 from_bytes;
	__u64 to_packets;
	__u64 to_bytes;
	__u64 dropped;
	__u32 first_tick; /* HOMEGW_NEIGH_TICK_SHIFT ticks: first counted on this CPU */
	__u32 last_tick;  /* counted on this CPU last (written on change) */
	__u32 policy_gen; /* the homegw_device_policy_gen value `flags` was read at */
	__u32 flags;      /* HOMEGW_DEVICE_* policy flags, cached on this CPU */
};

// <LAN device MAC (6 bytes, 2 zero, as a u64), per-CPU traffic of the device>
BPF_TABLE_PINNED("percpu_hash", __u64, struct homegw_device, homegw_devices, HOMEGW_MAX_DEVICES,
		 HOMEGW_PIN("devices"));
// <device MAC as u64 (as homegw_devices), HOMEGW_DEVICE_* flags>: written by the
// appliance (the router module, from the `devices` config); only devices with a flag
BPF_TABLE_PINNED("hash", __u64, __u32, homegw_device_policy, HOMEGW_MAX_DEVICES,
		 HOMEGW_PIN("device_policy"));
// <0, generation of homegw_device_policy>: bumped by the appliance after each
// write (never back to 0 once written), so the datapath re-reads a device's
// flags only when the policy changed: one array lookup per frame, not a hash
BPF_TABLE_PINNED("array", __u32, __u32, homegw_device_policy_gen, 1,
		 HOMEGW_PIN("device_policy_gen"));

static __always_inline __u32 homegw_device_flags(__u64 key)
{
	__u32 *flags = homegw_device_policy.lookup(&key);
	return flags ? *flags : 0;
}

/* Whether the device with this MAC is paused, from the policy map itself
 * (for a frame not counted in the table: a LAN -> LAN destination). */
static __always_inline int homegw_device_paused(const unsigned char *mac)
{
	__u64 key = 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	return homegw_device_flags(key) & HOMEGW_DEVICE_PAUSED;
}

/* Count one frame of `bytes` for the device with this MAC, at `now`
 * (bpf_ktime_get_coarse_ns(), read once per packet by the caller).
 * HOMEGW_DEVICE_COUNTED; HOMEGW_DEVICE_FULL when the table is full (the
 * caller counts that its own way); for a FROM or TO frame of a paused device
 * HOMEGW_DEVICE_IS_PAUSED, counted as dropped instead (the caller drops it).
 * The per-CPU entry caches the device's policy flags with the generation it
 * read them at and re-reads them only when the generation moved on; a new
 * entry (on another CPU a zeroed one: generation 0) reads them at once. A
 * device the table has no room for is still held to its policy. */
static __always_inline int homegw_count_device(const unsigned char *mac, __u64 bytes, int how,
					       __u64 now)
{
	int what = how & ~HOMEGW_DEVICE_UNLESS_PAUSED;
	__u64 key = 0;
	__u32 tick = now >> HOMEGW_NEIGH_TICK_SHIFT;
	__u32 zero = 0;
	__u32 *gen_now = homegw_device_policy_gen.lookup(&zero);
	__u32 gen = gen_now ? *gen_now : 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	struct homegw_device *dev = homegw_devices.lookup(&key);
	if (!dev) {
		struct homegw_device fresh = { .first_tick = tick, .last_tick = tick };
		if (homegw_devices.update(&key, &fresh))
			dev = NULL;
		else
			dev = homegw_devices.lookup(&key);
		if (!dev) {
			if (what != HOMEGW_DEVICE_DROPPED &&
			    (homegw_device_flags(key) & HOMEGW_DEVICE_PAUSED))
				return HOMEGW_DEVICE_IS_PAUSED;
			return HOMEGW_DEVICE_FULL;
		}
	}
	if (dev->policy_gen != gen) {
		dev->flags = homegw_device_flags(key);
		dev->policy_gen = gen;
	}
	if (dev->last_tick != tick) {
		dev->last_tick = tick;
		if (!dev->first_tick) /* the kernel made this CPU's entry zeroed */
			dev->first_tick = tick;
	}
	if (what == HOMEGW_DEVICE_DROPPED) {
		dev->dropped++;
		return HOMEGW_DEVICE_COUNTED;
	}
	if (dev->flags & HOMEGW_DEVICE_PAUSED) {
		if (!(how & HOMEGW_DEVICE_UNLESS_PAUSED))
			dev->dropped++;
		return HOMEGW_DEVICE_IS_PAUSED;
	}
	if (what == HOMEGW_DEVICE_FROM) {
		dev->from_packets++;
		dev->from_bytes += bytes;
	} else {
		dev->to_packets++;
		dev->to_bytes += bytes;
	}
	return HOMEGW_DEVICE_COUNTED;
}

/* Whether two MAC addresses are equal (not __builtin_memcmp: clang may emit
 * a call to memcmp, which BPF lacks). */
static __always_inline int homegw_same_mac(const unsigned char *a, const unsigned char *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* Incremental checksum update for a 16-bit field change (RFC 1624). Values
 * as they sit in the packet (network order); so is *sum. */
static __always_inline void homegw_csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
	__u32 csum = (__u16)~*sum;

	csum += (__u16)~old;
	csum += new;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	*sum = ~csum;
}

/* The same for a 32-bit field (an IPv4 address): its two 16-bit words. */
static __always_inline void homegw_csum_replace4(__u16 *sum, __u32 old, __u32 new)
{
	homegw_csum_replace2(sum, (__u16)old, (__u16)new);
	homegw_csum_replace2(sum, (__u16)(old >> 16), (__u16)(new >> 16));
}

#endif /* HOMEGW_H */
