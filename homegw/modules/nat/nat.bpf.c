/* NAT IO module: masquerade, port forwarding and hairpinning in XDP.
 *
 * Chains: LAN [... router, nat]: after the router decided a packet leaves by
 * the WAN, its source becomes the WAN address and a mapped port (SNAT); a
 * packet from the LAN to the WAN address (router: local) is hairpinned. WAN
 * [firewall, nat, router, ...]: a packet to the WAN address gets the internal
 * address and port of its binding (DNAT, recorded in the cursor:
 * HOMEGW_F_DNAT, orig_daddr/orig_dport), then the router forwards it.
 *
 * Outcomes, LAN -> WAN (nothing leaves untranslated):
 *   TCP/UDP/ICMP query  SNAT (mapping, session); table full -> ICMP 3/13 back
 *   ICMP error          embedded packet translated back, or dropped
 *   other ICMP, truncated, no WAN address  dropped, counted
 *   ESP/GRE/other       source address only (nat_others)
 *   later fragment      the first's translation, or held (punted) until it
 * WAN -> the WAN address:
 *   bound port          DNAT when the binding's filtering lets it in
 *   unbound port        the DMZ host (TCP/UDP), else dropped (pool) or the
 *                       kernel's (the gateway's own services)
 *   ICMP error          to the LAN host only if it matches a live session
 *   later fragment      as outbound
 * LAN -> the WAN address: TCP/UDP to a binding hairpinned, else the kernel's.
 * IPv6, both ways: on as it is (no NAT66: the router forwards it untranslated
 *   and the firewall holds it to RFC 6092), counted ipv6_passed.
 *
 * RFC 4787/5382/5508 behaviour:
 *   mapping   endpoint-independent: nat_mappings <internal endpoint, port>
 *             and nat_bindings <external port, internal endpoint>, shared by
 *             both directions and all CPUs; the source port is kept when free
 *             and not the gateway's own (kernel ephemeral range, 53, 68, the
 *             web UI), else a free port of the pool of the same parity
 *             (REQ-4; privileged ports stay privileged): a random block of
 *             the pool whose counters (nat_ports_*) show a free port.
 *   filtering address-and-port-dependent (a session <ext port, remote> must
 *             exist) or endpoint-independent (the binding suffices); port
 *             forwards and the DMZ host's bindings are open to anyone.
 *   budget    sessions created from outside (port forwards, DMZ, EIF) count
 *             against a budget, in total, per remote address (bucket) and per
 *             external port (RFC 6888 REQ-4/5): strangers cannot fill the
 *             table the home's own flows need. The datapath counts created
 *             (nat_in_created), userspace counts released (nat_in_released):
 *             one writer per value.
 *   limits    HASH maps, never LRU: no live session is evicted. A full table
 *             refuses the new flow with ICMP type 3 code 13 (RFC 5508 REQ-8).
 *   timeouts  the datapath stamps last_seen; gc.py expires by state.
 *   fragments the first fragment's translation is remembered (nat_frags) and
 *             applied to the later ones, on every path; a later one before
 *             its first is punted (rate-limited) and held by module.py, which
 *             sends it again when the datapath reports the first (REQ-14).
 *   ESP, GRE  passthrough for one LAN host per remote peer (nat_others).
 *
 * Long although the pure helpers live in nat_parse.h: bcc rewrites map calls
 * only in the translation unit it is given, so every helper that touches a
 * map must live here.
 */
#include "homegw.h"
#include "homegw_icmp.h"
#include NAT_PARSE_H

#ifndef NAT_MAX_SESSIONS
#define NAT_MAX_SESSIONS 65536
#endif
#define NAT_MAX_FORWARD_PORTS 8192
#define NAT_MAX_FRAGS 4096
#define NAT_MAX_WAITING 256
#define NAT_MAX_OTHERS 1024
#define NAT_MAX_SCAN_BLOCKS 256 /* blocks of the largest pool (1024-32767): 249 */
#define NAT_SCAN_CHUNK 32       /* blocks one run of nat_alloc looks at */
#define BUDGET_TOTAL 0
#define BUDGET_REMOTE 1 /* + bucket */
#define BUDGET_PORT (1 + NAT_REMOTE_BUCKETS) /* + external port */
#define BUDGET_SLOTS (BUDGET_PORT + 65536)
#define FRAG_PUNT_INTERVAL_NS 1000000ULL /* early fragments punted: 1000/s per CPU */
#define FRAG_PUNT_BURST 32

#define NAT_REASON_FRAG_EARLY 1 /* a later fragment before its first: hold it */
#define NAT_REASON_FRAG_READY 2 /* that first came: send the held ones again */

/* The module's programs (nat_progs): the chain runs nat_xdp, whose fast path
 * handles established flows; everything else is tail-called. */
#define NAT_PROG_OUT 0     /* LAN -> WAN but an established flow's packet */
#define NAT_PROG_IN 1      /* WAN -> WAN address but an established flow's */
#define NAT_PROG_HAIRPIN 2 /* LAN -> WAN address */
#define NAT_PROG_ALLOC 3   /* a new mapping, then back to the caller's program */
#define NAT_PROGS 4

#define BINDING_STATIC 1     /* a port forward: open to any remote */
#define BINDING_QUARANTINE 2 /* freed, not reusable yet (RFC 6888: 120 s) */
#define BINDING_DMZ 4        /* made for the DMZ host: open to any remote */

#define SESSION_INBOUND 1 /* created from outside: counts against the budget */

#define TCP_SEEN_SYN_OUT 1
#define TCP_SEEN_SYN_IN 2
#define TCP_SEEN_FIN_OUT 4
#define TCP_SEEN_FIN_IN 8
#define TCP_SEEN_RST 16

/* maps.py reads the counter names from this enum. */
enum nat_counter {
	N_TRANSLATED_OUT,
	N_TRANSLATED_IN,
	N_HAIRPINNED,
	N_NEW_MAPPINGS,
	N_NEW_SESSIONS,
	N_REFUSED_TABLE_FULL,
	N_PORTS_EXHAUSTED,
	N_UNSOLICITED_DROPPED,
	N_ICMP_ERRORS_TRANSLATED,
	N_FRAGMENTS_TRANSLATED,
	N_FRAGMENTS_DROPPED, /* early fragment over the punt rate, or too long */
	N_OTHER_PROTOCOL,
	N_HAIRPIN_NEIGHBOUR_MISS,
	N_INBOUND_BUDGET_FULL,  /* new inbound session: the total budget is used up */
	N_INBOUND_REMOTE_CAP,   /* ... that remote address has its share */
	N_INBOUND_PORT_CAP,     /* ... that external port has its share */
	N_INBOUND_TABLE_FULL,   /* ... the session table is full */
	N_NEW_INBOUND_SESSIONS,  /* sessions created from outside (also in N_NEW_SESSIONS) */
	N_NEW_DMZ_BINDINGS,             /* new DMZ bindings */
	N_ICMP_ERRORS_UNMATCHED, /* inbound error: no live session for the quote */
	N_ICMP_ERRORS_BAD,  /* malformed, or quoting a packet we did not send */
	N_ICMP_OUT_DROPPED, /* LAN ICMP without an identifier */
	N_TRUNCATED_DROPPED,       /* TCP/UDP/ICMP header cut short */
	N_UNTRANSLATABLE_DROPPED,  /* LAN -> WAN without a WAN address, or not IP */
	N_FRAGMENTS_PUNTED,   /* early fragments punted to be held */
	N_FRAGMENT_FIRSTS_NOTIFIED,  /* first fragments that released held ones */
	N_HAIRPIN_NEIGHBOUR_LIMITED,   /* hairpin to an unresolved server, its punt rate-limited */
	N_IPV6_PASSED,  /* IPv6, on untranslated (no NAT66) */
	N_COUNTERS,
};

struct endpoint {
	__be32 addr;
	__be16 port; /* port, or ICMP query identifier */
	__u8 proto;
	__u8 pad;
};

struct mapping {
	__be16 ext_port;
	__u16 pad;
};

struct binding_key {
	__be16 ext_port;
	__u8 proto;
	__u8 pad;
};

struct binding {
	struct endpoint internal;
	__u32 flags; /* BINDING_* */
	__u64 last_seen;
};

struct session_key {
	__be32 remote_addr;
	__be16 remote_port;
	__be16 ext_port;
	__u8 proto;
	__u8 pad[3];
};

struct session {
	__u64 last_seen;
	__u32 tcp_seen;      /* TCP_SEEN_*, set with atomic OR (8-byte aligned) */
	__u16 remote_bucket; /* SESSION_INBOUND: its per-remote budget bucket */
	__u8 origin;         /* SESSION_* */
	__u8 pad;
};

struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 inbound;
};

struct frag {
	__be32 new_saddr;
	__be32 new_daddr;
};

struct other_key {
	__be32 remote_addr;
	__u8 proto;
	__u8 pad[3];
};

struct other {
	__be32 int_addr;
	__u32 pad;
	__u64 last_seen;
};

struct punt_rate {
	__u64 next_ns;
};

/* What nat_alloc is asked to map, by nat_out or nat_hairpin (per CPU: the
 * chain of a packet runs on one CPU). */
struct alloc_request {
	struct endpoint internal;
	__u32 back;    /* NAT_PROG_* to go on with */
	__u64 at;      /* the asking packet's clock: it is asked once */
	__u32 stage;   /* 0: keep the port, 1: scan */
	__u16 low, high; /* the class scanned: these ports (host order) ... */
	__u32 parity;  /* ... of this parity, or the other when `other` */
	__u32 other;
	__u32 from;    /* next block (relative) */
	__u32 scanned; /* blocks of this parity looked at */
};

struct occupancy {
	__u64 slot[NAT_OCCUPANCY_SLOTS]; /* occupancy_slot() */
};

// <0, addresses, port pool, filtering, budgets>
BPF_ARRAY(nat_settings, struct nat_settings, 1);
// <internal endpoint (proto, address, port), its external port>
BPF_TABLE_PINNED("hash", struct endpoint, struct mapping, nat_mappings, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_mappings"));
// <proto + external port, internal endpoint and flags>
BPF_TABLE_PINNED("hash", struct binding_key, struct binding, nat_bindings, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_bindings"));
// <proto + external port + remote endpoint, last_seen, TCP state, origin>
BPF_TABLE_PINNED("hash", struct session_key, struct session, nat_sessions, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_sessions"));
// <first fragment's (src, dst, id, proto, direction), addresses it got>: LRU is
// fine here, a fragment train lives for milliseconds
BPF_TABLE("lru_hash", struct frag_key, struct frag, nat_frags, NAT_MAX_FRAGS);
// <proto (ESP, GRE) + remote address, the LAN host talking to it>
BPF_TABLE_PINNED("hash", struct other_key, struct other, nat_others, NAT_MAX_OTHERS,
		 HOMEGW_PIN("nat_others"));
// <first fragment's (src, dst, id, proto, direction), since when userspace
// holds later fragments of it>: written by userspace only
BPF_TABLE("hash", struct frag_key, u64, nat_frag_waiting, NAT_MAX_WAITING);
// <0, when this CPU may punt the next early fragment>
BPF_PERCPU_ARRAY(nat_frag_punt_rate, struct punt_rate, 1);
// <BUDGET_* slot, sessions created from outside there>: written by the datapath only
BPF_ARRAY(nat_in_created, u64, BUDGET_SLOTS);
// <BUDGET_* slot, of those, the ones expired>: written by userspace only
BPF_ARRAY(nat_in_released, u64, BUDGET_SLOTS);
// <0, per (protocol, parity, block of 128 ports): bindings the datapath made
// there, less the ones it took back>: written by the datapath only (atomics),
// zeroed by userspace at load (as a fresh map would be). Pinned so that a
// benchmark that empties the pinned NAT maps can empty it too.
BPF_TABLE_PINNED("array", u32, struct occupancy, nat_ports_bound, 1,
		 HOMEGW_PIN("nat_ports_bound"));
// <0, per slot: bindings userspace removed there, less the ones it made or
// reserved (the web UI's port)>: written by userspace only. One value, so
// that the allocator's loop reads both without a lookup per block.
BPF_ARRAY(nat_ports_freed, struct occupancy, 1);
// <0, what this CPU's nat_alloc is to map>
BPF_PERCPU_ARRAY(nat_alloc_req, struct alloc_request, 1);
// <NAT_PROG_*, program of that path>: filled by module.py
BPF_PROG_ARRAY(nat_progs, NAT_PROGS);
// <enum nat_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, nat_stats, N_COUNTERS, HOMEGW_PIN("nat_stats"));

static __always_inline void count(u32 counter)
{
	u64 *value = nat_stats.lookup(&counter);

	if (value)
		*value += 1;
}

static __always_inline u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* The cursor learns the destination as the remote sent it (homegw.h). */
static __always_inline void mark_dnat(struct homegw_cursor *cur, __be32 daddr, __be16 dport)
{
	cur->flags |= HOMEGW_F_DNAT;
	cur->orig_daddr = daddr;
	cur->orig_dport = dport;
}

/* -- ports -------------------------------------------------------------------- */

static __always_inline void count_bound(struct nat_settings *cfg, __u8 proto, __u16 port, s64 n)
{
	u32 zero = 0;
	struct occupancy *bound = nat_ports_bound.lookup(&zero);

	u32 slot = homegw_mask(occupancy_slot(proto, port), NAT_OCCUPANCY_SLOTS - 1);

	if (bound && allocatable(cfg, port))
		__sync_fetch_and_add(&bound->slot[slot], n);
}

/* Bind ext_port (host order) to the internal endpoint if the port is free.
 * 0 on success, -EEXIST when taken, another negative errno when full. */
static __always_inline int try_bind(struct endpoint *internal, struct nat_settings *cfg,
				    __u16 ext_port, __u32 flags, u64 now)
{
	struct binding_key key = { .ext_port = htons(ext_port), .proto = internal->proto };
	struct binding value = { .internal = *internal, .flags = flags, .last_seen = now };
	int err = nat_bindings.insert(&key, &value);

	if (err == 0)
		count_bound(cfg, internal->proto, ext_port, 1);
	return err;
}

static __always_inline void unbind_own(struct nat_settings *cfg, __u8 proto, __be16 ext_port)
{
	struct binding_key key = { .ext_port = ext_port, .proto = proto };

	if (nat_bindings.delete(&key) == 0)
		count_bound(cfg, proto, ntohs(ext_port), -1);
}

/* Which blocks of [low, high] one parity class spans, and what they hold.
 * Userspace counts a block's ports outside the range (and the web UI's) as
 * taken, so every block holds NAT_BLOCK_PORTS when full. */
struct port_class {
	__u16 low, high;
	__u32 parity;
	__u32 first, blocks; /* first block, number of blocks (<= NAT_MAX_SCAN_BLOCKS) */
	__u32 slot_base;     /* occupancy slot of the first block */
	struct occupancy *bound, *freed;
};

static __always_inline int port_class(struct port_class *c, __u16 low, __u16 high,
				      __u32 parity, __u8 proto)
{
	u32 zero = 0;

	c->low = low;
	c->high = high;
	c->parity = parity;
	c->first = low >> NAT_BLOCK_SHIFT;
	c->blocks = (high >> NAT_BLOCK_SHIFT) - c->first + 1;
	c->slot_base = occupancy_slot(proto, (c->first << NAT_BLOCK_SHIFT) | parity);
	c->bound = nat_ports_bound.lookup(&zero);
	c->freed = nat_ports_freed.lookup(&zero);
	return c->bound && c->freed && c->blocks <= NAT_MAX_SCAN_BLOCKS ? 0 : -1;
}

/* Of the `n` (<= NAT_SCAN_CHUNK) blocks from block `from` on (relative,
 * wrapping), the offset of the first whose counters show a free port; -1 if
 * none. */
static __always_inline int free_block(struct port_class *c, __u32 from, __u32 n)
{
#pragma nounroll
	for (__u32 i = 0; i < NAT_SCAN_CHUNK; i++) {
		__u32 rel = from + i;
		if (rel >= c->blocks)
			rel -= c->blocks;
		__u32 slot = homegw_mask(c->slot_base + rel, NAT_OCCUPANCY_SLOTS - 1);
		if (i >= n)
			break;
		if (c->bound->slot[slot] - c->freed->slot[slot] < NAT_BLOCK_PORTS)
			return i;
	}
	return -1;
}

/* Bind a free port of the class in the block, from a random one on. */
static __always_inline int bind_in_block(struct endpoint *internal, struct nat_settings *cfg,
					 struct port_class *c, __u32 rel, u64 now,
					 __be16 *ext_port)
{
	__u32 base = ((c->first + rel) << NAT_BLOCK_SHIFT) | c->parity;
	__u32 from = bpf_get_prandom_u32();

#pragma nounroll
	for (__u32 k = 0; k < NAT_BLOCK_PORTS; k++) {
		__u32 port = base + (((from + k) & (NAT_BLOCK_PORTS - 1)) << 1);
		if (port < c->low || port > c->high || port == cfg->admin_port)
			continue; /* the web UI's: its slot is counted as taken */
		int err = try_bind(internal, cfg, port, 0, now);
		if (err != -EEXIST) {
			if (err == 0)
				*ext_port = htons(port);
			return err;
		}
	}
	return -EEXIST;
}

/* Map the internal endpoint to the port bound for it: 0, or an errno.
 * Another CPU may have mapped it meanwhile: then that mapping. */
static __always_inline int finish_mapping(struct endpoint *internal, struct nat_settings *cfg,
					  __be16 ext_port)
{
	struct mapping value = { .ext_port = ext_port };
	int err = nat_mappings.insert(internal, &value);

	if (err) { /* another CPU mapped it meanwhile, or the table is full */
		unbind_own(cfg, internal->proto, ext_port);
		return nat_mappings.lookup(internal) ? 0 : err;
	}
	count(N_NEW_MAPPINGS);
	return 0;
}

/* The first step of an allocation: the source port itself when free and
 * not the gateway's own (1: bound, 0: go on scanning, < 0: failed); else
 * the class to scan: pool (or 512-1023 for a privileged port), parity. */
static __always_inline int keep_port(struct alloc_request *req, struct endpoint *internal,
				     struct nat_settings *cfg)
{
	__u16 wanted = ntohs(internal->port);

	if (wanted && !gateways_own_port(cfg, wanted, internal->proto)) {
		int err = try_bind(internal, cfg, wanted, 0, req->at);
		if (err != -EEXIST)
			return err == 0 ? 1 : err;
	}
	req->low = cfg->pool_low;
	req->high = cfg->pool_high;
	if (wanted && wanted < 1024) { /* keep privileged ports privileged */
		req->low = NAT_PRIVILEGED_LOW;
		req->high = NAT_PRIVILEGED_HIGH;
	}
	if (req->low > req->high)
		return -EADDRNOTAVAIL;
	req->parity = wanted & 1; /* RFC 4787 REQ-4; the other parity when full */
	req->other = 0;
	req->scanned = 0;
	req->from = bpf_get_prandom_u32() % (((req->high >> NAT_BLOCK_SHIFT) -
					      (req->low >> NAT_BLOCK_SHIFT)) + 1);
	req->stage = 1;
	return 0;
}

/* One step of the scan: NAT_SCAN_CHUNK blocks of the class. 1: bound (port
 * in *ext_port), 0: go on (next step), < 0: failed (every block of both
 * parities looked at, or an error). */
static __always_inline int scan_step(struct alloc_request *req, struct endpoint *internal,
				     struct nat_settings *cfg, __be16 *ext_port)
{
	struct port_class c;

	if (port_class(&c, req->low, req->high, req->parity ^ req->other, internal->proto))
		return -ENOMEM;
	__u32 left = c.blocks - req->scanned, n = left < NAT_SCAN_CHUNK ? left : NAT_SCAN_CHUNK;
	int found = free_block(&c, req->from, n);
	__u32 step = n;
	if (found >= 0) {
		__u32 rel = req->from + found;
		if (rel >= c.blocks)
			rel -= c.blocks;
		int err = bind_in_block(internal, cfg, &c, rel, req->at, ext_port);
		if (err != -EEXIST)
			return err == 0 ? 1 : err;
		step = found + 1; /* the counters were stale: on from the next block */
	}
	req->scanned += step;
	req->from += step;
	if (req->from >= c.blocks)
		req->from -= c.blocks;
	if (req->scanned < c.blocks)
		return 0;
	if (req->other) {
		count(N_PORTS_EXHAUSTED);
		return -EADDRNOTAVAIL;
	}
	req->other = 1;
	req->scanned = 0;
	return 0;
}

/* The external port of an internal endpoint. On first use nat_alloc maps it
 * (a program of its own: the allocator's loops are verified once there, not
 * once per packet layout here) and tail-calls `back` again, which then finds
 * the mapping. Nonzero: no port (the allocation just failed). */
static __always_inline int map_endpoint(struct xdp_md *ctx, struct endpoint *internal, u64 now,
					__u32 back, __be16 *ext_port)
{
	struct mapping *found = nat_mappings.lookup(internal);
	u32 zero = 0;

	if (found) {
		*ext_port = found->ext_port;
		return 0;
	}
	struct alloc_request *req = nat_alloc_req.lookup(&zero);
	if (!req)
		return -ENOMEM;
	if (req->at == now && req->internal.addr == internal->addr &&
	    req->internal.port == internal->port && req->internal.proto == internal->proto)
		return -EADDRNOTAVAIL; /* this packet came back from nat_alloc unmapped */
	req->internal = *internal;
	req->at = now;
	req->back = back;
	req->stage = 0;
	nat_progs.call(ctx, NAT_PROG_ALLOC);
	return -ENOMEM;
}

/* -- sessions ----------------------------------------------------------------- */

static __always_inline __u32 tcp_bits(__u8 proto, __u8 flags, int outbound)
{
	__u32 seen = 0;

	if (proto != IPPROTO_TCP)
		return 0;
	if (flags & 0x02) /* SYN */
		seen |= outbound ? TCP_SEEN_SYN_OUT : TCP_SEEN_SYN_IN;
	if (flags & 0x01) /* FIN */
		seen |= outbound ? TCP_SEEN_FIN_OUT : TCP_SEEN_FIN_IN;
	if (flags & 0x04) /* RST */
		seen |= TCP_SEEN_RST;
	return seen;
}

/* Shared by CPUs: a bit is set atomically and only when new, the stamp
 * written only when it changed (the coarse clock ticks every few ms). */
static __always_inline void refresh(struct session *s, __u32 seen, u64 now)
{
	/* 32-bit atomics need ALU32, which bcc does not enable: OR into the
	 * 8-byte word whose low half (little endian) is tcp_seen; the high half
	 * (bucket, origin) is ORed with 0, so unchanged. */
	if (seen & ~s->tcp_seen)
		__sync_fetch_and_or((__u64 *)&s->tcp_seen, (__u64)seen);
	if (s->last_seen != now)
		s->last_seen = now;
}

static __always_inline void refresh_binding(struct binding *b, u64 now)
{
	if (b->last_seen != now)
		b->last_seen = now;
}

/* A session made by the home's own traffic (or found). 0, or an errno. */
static __always_inline int touch_session(struct session_key *key, __u32 seen, u64 now)
{
	struct session *s = nat_sessions.lookup(key);

	if (s) {
		refresh(s, seen, now);
		return 0;
	}
	struct session value = { .last_seen = now, .tcp_seen = seen };
	int err = nat_sessions.insert(key, &value);
	if (err == 0) {
		count(N_NEW_SESSIONS);
		homegw_no_fastpath_xdp(); /* a flow's first packet: learnt from its next */
		return 0;
	}
	if (err != -EEXIST)
		return err;
	s = nat_sessions.lookup(key); /* another CPU made it: our bits too */
	if (s)
		refresh(s, seen, now);
	return 0;
}

/* Take one from a budget slot: 0, or -1 (nothing taken) when at cap. */
static __always_inline int budget_take(u32 slot, u32 cap)
{
	u64 *created = nat_in_created.lookup(&slot);
	u64 *released = nat_in_released.lookup(&slot);

	if (!created || !released)
		return -1;
	u64 before = __sync_fetch_and_add(created, 1);
	if (before - *released >= cap) {
		__sync_fetch_and_add(created, -1);
		return -1;
	}
	return 0;
}

static __always_inline void budget_give(u32 slot)
{
	u64 *created = nat_in_created.lookup(&slot);

	if (created)
		__sync_fetch_and_add(created, -1);
}

static __always_inline void budget_give_all(u32 bucket, __be16 ext_port)
{
	budget_give(BUDGET_TOTAL);
	budget_give(BUDGET_REMOTE + bucket);
	budget_give(BUDGET_PORT + ntohs(ext_port));
}

/* A session a packet from outside creates: within the inbound budget, in
 * total, per remote and per port. 0 (made or found), or -1: drop. */
static __always_inline int new_inbound_session(struct session_key *key, __u32 seen,
					       struct nat_settings *cfg, u64 now)
{
	u32 bucket = remote_bucket(key->remote_addr, cfg->hash_seed);

	if (budget_take(BUDGET_TOTAL, cfg->in_sessions)) {
		count(N_INBOUND_BUDGET_FULL);
		return -1;
	}
	if (budget_take(BUDGET_REMOTE + bucket, cfg->in_per_remote)) {
		budget_give(BUDGET_TOTAL);
		count(N_INBOUND_REMOTE_CAP);
		return -1;
	}
	if (budget_take(BUDGET_PORT + ntohs(key->ext_port), cfg->in_per_port)) {
		budget_give(BUDGET_TOTAL);
		budget_give(BUDGET_REMOTE + bucket);
		count(N_INBOUND_PORT_CAP);
		return -1;
	}
	struct session value = {
		.last_seen = now, .tcp_seen = seen, .remote_bucket = bucket,
		.origin = SESSION_INBOUND,
	};
	int err = nat_sessions.insert(key, &value);
	if (err == 0) {
		count(N_NEW_SESSIONS);
		count(N_NEW_INBOUND_SESSIONS);
		homegw_no_fastpath_xdp(); /* a flood of new remotes learns nothing */
		return 0;
	}
	budget_give_all(bucket, key->ext_port);
	if (err == -EEXIST) {
		struct session *s = nat_sessions.lookup(key);
		if (s)
			refresh(s, seen, now);
		return 0;
	}
	count(N_INBOUND_TABLE_FULL);
	return -1;
}

/* Refuse a new outbound flow: ICMP destination unreachable, communication
 * administratively prohibited (type 3 code 13), back to the LAN host. */
static __always_inline int refuse(struct xdp_md *ctx, struct homegw_cursor *cur,
				  struct nat_settings *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	count(N_REFUSED_TABLE_FULL);
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	/* as it arrived: the ICMP goes back to the sender, by the LAN NIC */
	__builtin_memcpy(eth->h_source, cur->in_src_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, cur->in_dst_mac, ETH_ALEN);
	cur->fwd = HOMEGW_FWD_KERNEL;
	if (homegw_icmp_error_xdp(ctx, ICMP_DEST_UNREACH, 13, cfg->lan_addr, 0))
		return XDP_DROP;
	return homegw_tx_xdp(ctx); /* not XDP_TX: see homegw_tx_xdp */
}

/* -- fragments ---------------------------------------------------------------- */

static __always_inline void frag_punt_header(struct homegw_punt *hdr, struct xdp_md *ctx,
					     __u16 reason, struct frag_key *key)
{
	hdr->module = HOMEGW_MODULE_ID;
	hdr->reason = reason;
	hdr->ifindex = ctx->ingress_ifindex;
	hdr->meta[0] = key->saddr;
	hdr->meta[1] = key->daddr;
	hdr->meta[2] = key->id | (__u32)key->proto << 16 | (__u32)key->inbound << 24;
	hdr->meta[3] = 0;
}

/* A first fragment was translated: its later ones follow (translate_later),
 * and the ones userspace holds are sent again (a punt without the packet). */
static __always_inline void remember_fragment(struct xdp_md *ctx, struct iphdr *ip,
					      __be32 old_s, __be32 old_d, int inbound)
{
	if (!is_first_fragment(ip))
		return;
	struct frag_key key = { old_s, old_d, ip->id, ip->protocol, inbound };
	struct frag value = { ip->saddr, ip->daddr };
	nat_frags.update(&key, &value);
	if (!nat_frag_waiting.lookup(&key))
		return;
	struct homegw_punt hdr = {};
	frag_punt_header(&hdr, ctx, NAT_REASON_FRAG_READY, &key);
	slowpath.perf_submit(ctx, &hdr, sizeof(hdr));
	count(N_FRAGMENT_FIRSTS_NOTIFIED);
}

static __always_inline int punt_allowed(void)
{
	u32 zero = 0;
	struct punt_rate *rate = nat_frag_punt_rate.lookup(&zero);
	u64 now = now_ns();

	if (!rate)
		return 0;
	u64 floor = now - FRAG_PUNT_BURST * FRAG_PUNT_INTERVAL_NS;
	u64 next = rate->next_ns < floor ? floor : rate->next_ns;
	if (next > now)
		return 0;
	rate->next_ns = next + FRAG_PUNT_INTERVAL_NS; /* per-CPU: plain write */
	return 1;
}

/* A later fragment before its first: to userspace, which holds it, then
 * sends it through the chain again. Outbound, the router has already
 * forwarded it: it goes up as it arrived (MACs, TTL) to be routed again. */
static __always_inline int hold_fragment(struct xdp_md *ctx, struct homegw_cursor *cur,
					 struct frag_key *key)
{
	__u64 len = (__u64)(ctx->data_end - ctx->data);
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct iphdr *ip = (void *)(eth + 1);

	if (len > HOMEGW_PUNT_MAX_BYTES || !punt_allowed() ||
	    (void *)(ip + 1) > (void *)(long)ctx->data_end) {
		count(N_FRAGMENTS_DROPPED);
		return XDP_DROP;
	}
	if (!key->inbound) {
		__builtin_memcpy(eth->h_source, cur->in_src_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, cur->in_dst_mac, ETH_ALEN);
		__u16 old_word = *(__u16 *)&ip->ttl;
		ip->ttl++;
		homegw_csum_replace2(&ip->check, old_word, *(__u16 *)&ip->ttl);
	}
	struct homegw_punt hdr = {};
	frag_punt_header(&hdr, ctx, NAT_REASON_FRAG_EARLY, key);
	hdr.pkt_len = len;
	slowpath.perf_submit_skb(ctx, len, &hdr, sizeof(hdr));
	count(N_FRAGMENTS_PUNTED);
	return XDP_DROP;
}

/* A later fragment: no ports; the first fragment's addresses. */
static __always_inline int translate_later(struct xdp_md *ctx, struct homegw_cursor *cur,
					   struct iphdr *ip, int inbound)
{
	struct frag_key key = { ip->saddr, ip->daddr, ip->id, ip->protocol, inbound };
	struct frag *f = nat_frags.lookup(&key);

	if (!f)
		return hold_fragment(ctx, cur, &key);
	if (inbound && f->new_daddr != ip->daddr)
		mark_dnat(cur, ip->daddr, 0);
	homegw_csum_replace4(&ip->check, ip->saddr, f->new_saddr);
	homegw_csum_replace4(&ip->check, ip->daddr, f->new_daddr);
	ip->saddr = f->new_saddr;
	ip->daddr = f->new_daddr;
	count(N_FRAGMENTS_TRANSLATED);
	return homegw_next_xdp(ctx);
}

/* -- ESP, GRE and other protocols without ports -------------------------------- */

/* The address only, one LAN host per remote peer. */
static __always_inline int other_out(struct xdp_md *ctx, struct pkt *p, struct nat_settings *cfg)
{
	struct iphdr *ip = p->ip;
	struct other_key key = { .remote_addr = ip->daddr, .proto = ip->protocol };
	struct other *found = nat_others.lookup(&key);
	u64 now = now_ns();

	if (found && found->int_addr == ip->saddr) {
		if (found->last_seen != now)
			found->last_seen = now;
	} else {
		struct other value = { .int_addr = ip->saddr, .last_seen = now };
		nat_others.update(&key, &value);
	}
	__be32 old_saddr = ip->saddr;
	set_addr(p, &ip->saddr, cfg->wan_addr);
	remember_fragment(ctx, ip, old_saddr, ip->daddr, 0);
	count(N_OTHER_PROTOCOL);
	return homegw_next_xdp(ctx);
}

static __always_inline int other_in(struct xdp_md *ctx, struct homegw_cursor *cur, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	struct other_key key = { .remote_addr = ip->saddr, .proto = ip->protocol };
	struct other *found = nat_others.lookup(&key);

	if (!found)
		return homegw_next_xdp(ctx); /* the gateway's own, or nobody's: the kernel */
	u64 now = now_ns();
	if (found->last_seen != now)
		found->last_seen = now;
	__be32 old_daddr = ip->daddr;
	mark_dnat(cur, old_daddr, 0);
	set_addr(p, &ip->daddr, found->int_addr);
	remember_fragment(ctx, ip, ip->saddr, old_daddr, 1);
	count(N_OTHER_PROTOCOL);
	return homegw_next_xdp(ctx);
}

/* -- ICMP errors ---------------------------------------------------------------- */

/* A LAN host's ICMP error about a packet that came in through NAT: the
 * embedded destination was translated on the way in; undo that. */
static __always_inline int icmp_error_out(struct xdp_md *ctx, struct pkt *p, void *end,
					  struct nat_settings *cfg)
{
	struct embedded e;

	if (parse_icmp_error(p, end, &e)) {
		count(N_ICMP_ERRORS_BAD);
		return XDP_DROP;
	}
	struct endpoint internal = { e.ip->daddr, *e.dport, e.ip->protocol };
	struct mapping *m = nat_mappings.lookup(&internal);
	if (!m) {
		count(N_ICMP_ERRORS_UNMATCHED);
		return XDP_DROP;
	}
	embedded_set16(&e, e.dport, m->ext_port);
	embedded_set_addr(&e, &e.ip->daddr, cfg->wan_addr);
	set_addr(p, &p->ip->saddr, cfg->wan_addr);
	count(N_ICMP_ERRORS_TRANSLATED);
	return homegw_next_xdp(ctx);
}

/* An ICMP error about a packet we sent out for a LAN host: to that host,
 * with the embedded source as the host sent it, only if the quote is ours
 * (from the WAN address) and of a live session. Mappings are not touched. */
static __always_inline int icmp_error_in(struct xdp_md *ctx, struct homegw_cursor *cur,
					 struct pkt *p, void *end, struct nat_settings *cfg)
{
	struct embedded e;

	if (parse_icmp_error(p, end, &e) || e.ip->saddr != cfg->wan_addr) {
		count(N_ICMP_ERRORS_BAD);
		return XDP_DROP;
	}
	struct binding_key key = { .ext_port = *e.sport, .proto = e.ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b) {
		if (gateways_own_port(cfg, ntohs(*e.sport), e.ip->protocol))
			return homegw_next_xdp(ctx); /* about the gateway's own traffic */
		count(N_ICMP_ERRORS_UNMATCHED);
		return XDP_DROP;
	}
	__be16 remote = e.ip->protocol == IPPROTO_ICMP ? 0 : *e.dport;
	struct session_key session = { e.ip->daddr, remote, *e.sport, e.ip->protocol };
	if (!nat_sessions.lookup(&session)) {
		count(N_ICMP_ERRORS_UNMATCHED);
		return XDP_DROP;
	}
	mark_dnat(cur, p->ip->daddr, 0);
	embedded_set16(&e, e.sport, b->internal.port);
	embedded_set_addr(&e, &e.ip->saddr, b->internal.addr);
	set_addr(p, &p->ip->daddr, b->internal.addr);
	count(N_ICMP_ERRORS_TRANSLATED);
	return homegw_next_xdp(ctx);
}

/* -- the two directions ------------------------------------------------------- */

/* LAN -> WAN: the source becomes the WAN address and the mapped port. */
static __always_inline int outbound(struct xdp_md *ctx, struct homegw_cursor *cur,
				    struct nat_settings *cfg, struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip))
		return translate_later(ctx, cur, ip, 0);
	switch (parse_l4(&p, end, 1)) {
	case L4_PORTS:
		break;
	case L4_ICMP_ERROR:
		return icmp_error_out(ctx, &p, end, cfg);
	case L4_ICMP_OTHER:
		count(N_ICMP_OUT_DROPPED);
		return XDP_DROP;
	case L4_TRUNCATED:
		count(N_TRUNCATED_DROPPED);
		return XDP_DROP;
	default:
		return other_out(ctx, &p, cfg);
	}

	u64 now = now_ns();
	struct endpoint internal = { ip->saddr, *p.sport, ip->protocol };
	__be16 ext_port;
	if (map_endpoint(ctx, &internal, now, NAT_PROG_OUT, &ext_port))
		return refuse(ctx, cur, cfg);
	struct session_key session = { ip->daddr, remote_port(&p, 1), ext_port, ip->protocol };
	if (touch_session(&session, tcp_bits(ip->protocol, p.tcp_flags, 1), now))
		return refuse(ctx, cur, cfg);

	__be32 old_saddr = ip->saddr;
	set_addr(&p, &ip->saddr, cfg->wan_addr);
	set_port(&p, p.sport, ext_port);
	remember_fragment(ctx, ip, old_saddr, ip->daddr, 0);
	count(N_TRANSLATED_OUT);
	return homegw_next_xdp(ctx);
}

/* Whether a binding lets a stranger (no session yet) in. */
static __always_inline int open_to_anyone(struct binding *b, struct nat_settings *cfg)
{
	return (b->flags & (BINDING_STATIC | BINDING_DMZ)) || cfg->endpoint_independent_filtering ||
	       (cfg->dmz_addr && b->internal.addr == cfg->dmz_addr);
}

/* DNAT of an inbound packet to (addr, port); the cursor keeps the original. */
static __always_inline int dnat(struct xdp_md *ctx, struct homegw_cursor *cur, struct pkt *p,
				__be32 addr, __be16 port)
{
	struct iphdr *ip = p->ip;
	__be32 old_daddr = ip->daddr;

	mark_dnat(cur, old_daddr, *p->dport);
	set_addr(p, &ip->daddr, addr);
	set_port(p, p->dport, port);
	remember_fragment(ctx, ip, ip->saddr, old_daddr, 1);
	count(N_TRANSLATED_IN);
	return homegw_next_xdp(ctx);
}

/* Unsolicited TCP/UDP to a port no binding holds: to the DMZ host, which
 * gets a binding open to anyone and the session, within the budget. */
static __always_inline int dmz_in(struct xdp_md *ctx, struct homegw_cursor *cur,
				  struct nat_settings *cfg, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	struct session_key session = { ip->saddr, *p->sport, *p->dport, ip->protocol };
	u64 now = now_ns();

	if (new_inbound_session(&session, tcp_bits(ip->protocol, p->tcp_flags, 0), cfg, now))
		return XDP_DROP;
	struct endpoint internal = { cfg->dmz_addr, *p->dport, ip->protocol };
	if (try_bind(&internal, cfg, ntohs(*p->dport), BINDING_DMZ, now) == 0) {
		struct mapping value = { .ext_port = *p->dport };
		nat_mappings.insert(&internal, &value); /* its replies: this port */
		count(N_NEW_DMZ_BINDINGS);
	}
	return dnat(ctx, cur, p, cfg->dmz_addr, *p->dport);
}

static __always_inline int unbound_in(struct xdp_md *ctx, struct homegw_cursor *cur,
				      struct nat_settings *cfg, struct pkt *p)
{
	__u8 proto = p->ip->protocol;
	__u16 port = ntohs(*p->dport);

	if (proto == IPPROTO_ICMP || gateways_own_port(cfg, port, proto))
		return homegw_next_xdp(ctx); /* the gateway's own, or its input guard */
	if (cfg->dmz_addr)
		return dmz_in(ctx, cur, cfg, p);
	if (port >= cfg->pool_low && port <= cfg->pool_high) {
		count(N_UNSOLICITED_DROPPED); /* no socket of the gateway uses the pool */
		return XDP_DROP;
	}
	return homegw_next_xdp(ctx);
}

/* WAN -> the WAN address: to the internal endpoint of the binding. */
static __always_inline int inbound(struct xdp_md *ctx, struct homegw_cursor *cur,
				   struct nat_settings *cfg, struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip))
		return translate_later(ctx, cur, ip, 1);
	switch (parse_l4(&p, end, 0)) {
	case L4_PORTS:
		break;
	case L4_ICMP_ERROR:
		return icmp_error_in(ctx, cur, &p, end, cfg);
	case L4_ICMP_OTHER:
		return homegw_next_xdp(ctx); /* echo requests and the like: the kernel's */
	case L4_TRUNCATED:
		count(N_TRUNCATED_DROPPED);
		return XDP_DROP;
	default:
		return other_in(ctx, cur, &p);
	}

	struct binding_key key = { .ext_port = *p.dport, .proto = ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b)
		return unbound_in(ctx, cur, cfg, &p);
	if (b->flags & BINDING_QUARANTINE) {
		count(N_UNSOLICITED_DROPPED);
		return XDP_DROP;
	}
	struct session_key session = { ip->saddr, remote_port(&p, 0), *p.dport, ip->protocol };
	struct session *s = nat_sessions.lookup(&session);
	__u32 seen = tcp_bits(ip->protocol, p.tcp_flags, 0);
	u64 now = now_ns();
	if (s) {
		refresh(s, seen, now);
	} else {
		if (!open_to_anyone(b, cfg)) {
			count(N_UNSOLICITED_DROPPED); /* silently: RFC 5382 REQ-4 */
			return XDP_DROP;
		}
		if (new_inbound_session(&session, seen, cfg, now))
			return XDP_DROP;
	}
	refresh_binding(b, now);
	return dnat(ctx, cur, &p, b->internal.addr, b->internal.port);
}

/* LAN -> the WAN address (RFC 4787 REQ-9): TCP/UDP only, both translations,
 * so the internal server sees the client's external address and port, and
 * back out of the LAN NIC from its own MAC. */
static __always_inline int hairpin(struct xdp_md *ctx, struct homegw_cursor *cur,
				   struct nat_settings *cfg, struct ethhdr *eth, struct iphdr *ip,
				   void *end)
{
	struct pkt p = { .ip = ip };

	if ((eth->h_dest[0] & 1) || is_later_fragment(ip)) /* broadcast, multicast */
		return homegw_next_xdp(ctx);
	if (!(*(__u32 *)cfg->lan_mac | *(__u16 *)&cfg->lan_mac[4]))
		return homegw_next_xdp(ctx); /* our MAC unknown: hairpinning is off */
	if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) ||
	    parse_l4(&p, end, 1) != L4_PORTS)
		return homegw_next_xdp(ctx);
	struct binding_key key = { .ext_port = *p.dport, .proto = ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b)
		return homegw_next_xdp(ctx); /* a service of the gateway itself */
	__be32 server = b->internal.addr;
	int miss = 0;
	struct homegw_neighbour *neigh = homegw_neighbour_xdp(ctx, server, HOMEGW_NIC_LAN, now_ns(), &miss);
	if (!neigh) {
		/* punted: the router's slow path resolves it and sends this frame
		 * again; or rate-limited (a punt for it went up moments ago) */
		count(miss == HOMEGW_NEIGH_PUNTED ? N_HAIRPIN_NEIGHBOUR_MISS : N_HAIRPIN_NEIGHBOUR_LIMITED);
		return XDP_DROP;
	}
	if (ip->ttl <= 1)
		return homegw_next_xdp(ctx); /* the kernel sends time exceeded */

	u64 now = now_ns();
	struct endpoint client = { ip->saddr, *p.sport, ip->protocol };
	__be16 client_port;
	if (map_endpoint(ctx, &client, now, NAT_PROG_HAIRPIN, &client_port))
		return XDP_DROP;
	struct session_key seen_by_server = { cfg->wan_addr, client_port, *p.dport, ip->protocol };
	if (b->flags & BINDING_QUARANTINE ||
	    (!open_to_anyone(b, cfg) && !nat_sessions.lookup(&seen_by_server))) {
		count(N_UNSOLICITED_DROPPED);
		return XDP_DROP;
	}
	struct session_key session = { cfg->wan_addr, *p.dport, client_port, ip->protocol };
	if (touch_session(&session, tcp_bits(ip->protocol, p.tcp_flags, 1), now))
		return XDP_DROP;
	refresh_binding(b, now);

	mark_dnat(cur, ip->daddr, *p.dport);
	set_addr(&p, &ip->saddr, cfg->wan_addr);
	set_port(&p, p.sport, client_port);
	set_addr(&p, &ip->daddr, server);
	set_port(&p, p.dport, b->internal.port);
	__u16 old_word = *(__u16 *)&ip->ttl;
	ip->ttl--;
	homegw_csum_replace2(&ip->check, old_word, *(__u16 *)&ip->ttl);
	__builtin_memcpy(eth->h_source, cfg->lan_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, neigh->mac, ETH_ALEN);
	cur->fwd = HOMEGW_FWD_REDIRECT;
	cur->out_ifindex = cur->ifindex;
	cur->out_nic = HOMEGW_NIC_LAN;
	count(N_HAIRPINNED);
	return homegw_next_xdp(ctx);
}

static __always_inline int to_wan(struct homegw_cursor *cur)
{
	return cur->nic == HOMEGW_NIC_LAN && cur->fwd == HOMEGW_FWD_REDIRECT &&
	       cur->out_nic == HOMEGW_NIC_WAN;
}

/* -- the programs ------------------------------------------------------------- */

/* An established flow out: its mapping and session exist. -1: not one. */
static __always_inline int established_out(struct xdp_md *ctx, struct nat_settings *cfg,
					   struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip) || parse_l4(&p, end, 1) != L4_PORTS)
		return -1;
	struct endpoint internal = { ip->saddr, *p.sport, ip->protocol };
	struct mapping *m = nat_mappings.lookup(&internal);
	if (!m)
		return -1;
	__be16 ext_port = m->ext_port;
	struct session_key session = { ip->daddr, remote_port(&p, 1), ext_port, ip->protocol };
	struct session *s = nat_sessions.lookup(&session);
	if (!s)
		return -1;
	refresh(s, tcp_bits(ip->protocol, p.tcp_flags, 1), now_ns());
	__be32 old_saddr = ip->saddr;
	set_addr(&p, &ip->saddr, cfg->wan_addr);
	set_port(&p, p.sport, ext_port);
	remember_fragment(ctx, ip, old_saddr, ip->daddr, 0);
	count(N_TRANSLATED_OUT);
	return homegw_next_xdp(ctx);
}

/* An established flow in: a binding in use and its session. -1: not one. */
static __always_inline int established_in(struct xdp_md *ctx, struct homegw_cursor *cur,
					  struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip) || parse_l4(&p, end, 0) != L4_PORTS)
		return -1;
	struct binding_key key = { .ext_port = *p.dport, .proto = ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b || (b->flags & BINDING_QUARANTINE))
		return -1;
	struct session_key session = { ip->saddr, remote_port(&p, 0), *p.dport, ip->protocol };
	struct session *s = nat_sessions.lookup(&session);
	if (!s)
		return -1;
	u64 now = now_ns();
	refresh(s, tcp_bits(ip->protocol, p.tcp_flags, 0), now);
	refresh_binding(b, now);
	return dnat(ctx, cur, &p, b->internal.addr, b->internal.port);
}

/* The chain's state for this packet; NULL when NAT has nothing to do. */
static __always_inline struct nat_settings *nat_start(struct xdp_md *ctx,
						      struct homegw_cursor **cur)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	u32 zero = 0;
	struct nat_settings *cfg = nat_settings.lookup(&zero);

	*cur = homegw_cursor_xdp();
	if (!*cur || !cfg || !cfg->wan_addr || (void *)(ip + 1) > end ||
	    eth->h_proto != htons(ETH_P_IP) || ip->ihl < 5)
		return NULL;
	/* opaque, or the compiler turns the callers' !cfg into a second test
	 * of ihl, after which a 6.1 verifier takes cfg for the NULL it was
	 * on the other path ("invalid mem access 'scalar'") */
	homegw_barrier_var(cfg);
	return cfg;
}

/* What NAT cannot translate must not leave by the WAN. */
static __always_inline int untranslated(struct xdp_md *ctx, struct homegw_cursor *cur)
{
	if (!cur || !to_wan(cur))
		return homegw_next_xdp(ctx);
	count(N_UNTRANSLATABLE_DROPPED);
	return XDP_DROP;
}

int nat_out(struct xdp_md *ctx)
{
	struct homegw_cursor *cur;
	struct nat_settings *cfg = nat_start(ctx, &cur);
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = (void *)(long)ctx->data + ETH_HLEN;

	if (!cfg || (void *)(ip + 1) > end)
		return untranslated(ctx, cur);
	return outbound(ctx, cur, cfg, ip, end);
}

int nat_in(struct xdp_md *ctx)
{
	struct homegw_cursor *cur;
	struct nat_settings *cfg = nat_start(ctx, &cur);
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = (void *)(long)ctx->data + ETH_HLEN;

	if (!cfg || (void *)(ip + 1) > end)
		return untranslated(ctx, cur);
	return inbound(ctx, cur, cfg, ip, end);
}

int nat_hairpin(struct xdp_md *ctx)
{
	struct homegw_cursor *cur;
	struct nat_settings *cfg = nat_start(ctx, &cur);
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct iphdr *ip = (void *)(eth + 1);

	if (!cfg || (void *)(ip + 1) > end)
		return untranslated(ctx, cur);
	return hairpin(ctx, cur, cfg, eth, ip, end);
}

/* A new mapping for req->internal: the source port kept, or a scan of the
 * pool, NAT_SCAN_CHUNK blocks per run (each run is verified once, and the
 * whole pool takes at most 2 * 256 / NAT_SCAN_CHUNK tail calls); then back
 * to the asking program, which finds the mapping or refuses the flow. */
int nat_alloc(struct xdp_md *ctx)
{
	struct homegw_cursor *cur;
	struct nat_settings *cfg = nat_start(ctx, &cur);
	u32 zero = 0;
	struct alloc_request *req = nat_alloc_req.lookup(&zero);

	if (!cfg || !req)
		return untranslated(ctx, cur);
	struct endpoint internal = req->internal;
	__be16 ext_port = internal.port;
	int done = req->stage ? scan_step(req, &internal, cfg, &ext_port)
			      : keep_port(req, &internal, cfg);
	if (done == 0) {
		nat_progs.call(ctx, NAT_PROG_ALLOC);
		done = -ENOMEM;
	}
	if (done > 0 && finish_mapping(&internal, cfg, ext_port) == 0)
		req->at = 0; /* mapped: the caller finds it, and no later packet is refused */
	nat_progs.call(ctx, req->back);
	return untranslated(ctx, cur);
}

/* The chain's entry: established flows here, the rest tail-called. */
int nat_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur;
	struct nat_settings *cfg = nat_start(ctx, &cur);
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = (void *)(long)ctx->data + ETH_HLEN;
	int verdict = -1;

	if (!cfg || (void *)(ip + 1) > end) {
		/* off IPv4's path: nat_start said "not IPv4" (or no WAN address) */
		if ((void *)(ip + 1) <= end &&
		    ((struct ethhdr *)(long)ctx->data)->h_proto == htons(ETH_P_IPV6)) {
			count(N_IPV6_PASSED);
			return homegw_next_xdp(ctx);
		}
		return untranslated(ctx, cur);
	}
	if (cur->nic == HOMEGW_NIC_LAN) {
		if (to_wan(cur)) {
			verdict = established_out(ctx, cfg, ip, end);
			if (verdict < 0)
				nat_progs.call(ctx, NAT_PROG_OUT);
			return verdict < 0 ? untranslated(ctx, cur) : verdict;
		}
		if ((cur->flags & HOMEGW_F_LOCAL) && ip->daddr == cfg->wan_addr)
			nat_progs.call(ctx, NAT_PROG_HAIRPIN);
		return homegw_next_xdp(ctx);
	}
	if (ip->daddr != cfg->wan_addr)
		return homegw_next_xdp(ctx);
	verdict = established_in(ctx, cur, ip, end);
	if (verdict >= 0)
		return verdict;
	nat_progs.call(ctx, NAT_PROG_IN);
	count(N_UNTRANSLATABLE_DROPPED);
	return XDP_DROP;
}
