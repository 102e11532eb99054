/* NAT IO module: masquerade, port forwarding and hairpinning in XDP.
 *
 * Chains: LAN [... router, nat]: after the router decided a packet leaves by
 * the WAN, its source becomes the WAN address and a mapped port (SNAT); a
 * packet from the LAN to the WAN address (router: local) is hairpinned. WAN
 * [nat, router, ...]: a packet to the WAN address gets the internal address
 * and port of its binding (DNAT), then the router forwards it to the LAN.
 *
 * RFC 4787/5382/5508 behaviour:
 *   mapping   endpoint-independent: nat_mappings <internal endpoint, port>
 *             and nat_bindings <external port, internal endpoint>, shared by
 *             both directions and all CPUs; the source port is kept when free
 *             (and outside the kernel's ephemeral range), else random in the
 *             pool (privileged ports stay privileged).
 *   filtering address-and-port-dependent (a session <ext port, remote> must
 *             exist) or endpoint-independent (the binding suffices); port
 *             forwards are static bindings open to anyone.
 *   ICMP      echo identifiers are mapped like ports; errors get their
 *             embedded header translated and never touch a mapping.
 *   limits    HASH maps, never LRU: no live session is evicted. A full table
 *             refuses the new flow with ICMP type 3 code 13 (RFC 5508 REQ-8).
 *   timeouts  the datapath stamps last_seen; gc.py expires by state.
 *   fragments the first fragment's translation is remembered (nat_frags) and
 *             applied to the later ones; later-before-first are dropped.
 *   ESP, GRE  passthrough for one LAN host per remote peer (nat_others).
 *
 * One file although long: bcc rewrites map calls only in the translation
 * unit it is given, so every helper that touches a map must live here.
 */
#include "homegw.h"
#include "homegw_icmp.h"
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#ifndef NAT_MAX_SESSIONS
#define NAT_MAX_SESSIONS 65536
#endif
#define NAT_MAX_FORWARD_PORTS 8192
#define NAT_MAX_FRAGS 4096
#define NAT_MAX_OTHERS 1024
#define NAT_PORT_TRIES 16

#define REASON_NEIGH_MISS 1 /* the router's reason: its handler resolves for us */
#define ROUTER_MODULE_ID 2

#define BINDING_STATIC 1     /* a port forward: open to any remote */
#define BINDING_QUARANTINE 2 /* freed, not reusable yet (RFC 6888: 120 s) */

#define TCP_SEEN_SYN_OUT 1
#define TCP_SEEN_SYN_IN 2
#define TCP_SEEN_FIN_OUT 4
#define TCP_SEEN_FIN_IN 8
#define TCP_SEEN_RST 16

/* Keep in step with homegw/modules/nat/maps.py. */
enum nat_counter {
	N_OUT,
	N_IN,
	N_HAIRPIN,
	N_NEW_MAPPING,
	N_NEW_SESSION,
	N_REFUSED_FULL,
	N_PORTS_EXHAUSTED,
	N_UNSOLICITED,
	N_ICMP_ERROR,
	N_FRAGMENT,
	N_FRAGMENT_DROPPED,
	N_OTHER_PROTO,
	N_NEIGH_MISS,
	N_COUNTERS,
};

struct nat_settings {
	__be32 wan_addr;  /* 0: no WAN address, nothing is translated */
	__be32 lan_addr;  /* source of the ICMP errors sent to LAN hosts */
	__u16 pool_low;   /* host order */
	__u16 pool_high;
	__u16 kernel_low; /* the kernel's ephemeral ports: never kept */
	__u16 kernel_high;
	__u32 endpoint_independent_filtering;
	__be32 dmz_addr;  /* unsolicited inbound goes here (0: dropped) */
};

struct endpoint {
	__be32 addr;
	__be16 port; /* port, or ICMP echo identifier */
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
	__u32 tcp_seen; /* TCP_SEEN_* */
	__u32 pad;
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

struct neighbour { /* router.bpf.c's, read here for hairpinned packets */
	unsigned char mac[ETH_ALEN];
	__u16 nic;
};

// <0, addresses, port pool, filtering>
BPF_ARRAY(nat_settings, struct nat_settings, 1);
// <internal endpoint (proto, address, port), its external port>
BPF_TABLE_PINNED("hash", struct endpoint, struct mapping, nat_mappings, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_mappings"));
// <proto + external port, internal endpoint and flags>
BPF_TABLE_PINNED("hash", struct binding_key, struct binding, nat_bindings, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_bindings"));
// <proto + external port + remote endpoint, last_seen and TCP state>
BPF_TABLE_PINNED("hash", struct session_key, struct session, nat_sessions, NAT_MAX_SESSIONS,
		 HOMEGW_PIN("nat_sessions"));
// <first fragment's (src, dst, id, proto, direction), addresses it got>: LRU is
// fine here, a fragment train lives for milliseconds
BPF_TABLE("lru_hash", struct frag_key, struct frag, nat_frags, NAT_MAX_FRAGS);
// <proto (ESP, GRE) + remote address, the LAN host talking to it>
BPF_TABLE_PINNED("hash", struct other_key, struct other, nat_others, NAT_MAX_OTHERS,
		 HOMEGW_PIN("nat_others"));
// <next-hop IPv4 address, MAC and NIC>: the router's map
BPF_TABLE_PINNED("hash", __be32, struct neighbour, router_neigh, 4096,
		 HOMEGW_PIN("router_neigh"));
// <enum nat_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, nat_stats, N_COUNTERS, HOMEGW_PIN("nat_stats"));

static __always_inline void count(u32 counter)
{
	u64 *value = nat_stats.lookup(&counter);

	if (value)
		*value += 1;
}

/* What a translation needs to know about the packet. */
struct pkt {
	struct iphdr *ip;
	void *l4;      /* TCP/UDP/ICMP header, NULL for a later fragment */
	__be16 *sport; /* source port (or echo id), NULL if none */
	__be16 *dport; /* destination port (or echo id), NULL if none */
	__u16 *l4sum;  /* L4 checksum field, NULL if none or UDP with none */
	int pseudo;    /* the L4 checksum covers the IP addresses (TCP, UDP) */
	__u8 tcp_flags;
};

/* Parse the L4 header of a non-fragment or first fragment. Returns 0 for a
 * translatable TCP/UDP/ICMP echo packet (echo requests outbound, replies
 * inbound), 1 for an ICMP error, 2 for ICMP the kernel answers, -1 for
 * another protocol or a truncated header. */
static __always_inline int parse_l4(struct pkt *p, void *end, int outbound)
{
	struct iphdr *ip = p->ip;
	void *l4 = (void *)ip + ip->ihl * 4;

	p->l4 = l4;
	p->pseudo = 1;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return -1;
		p->sport = &tcp->source;
		p->dport = &tcp->dest;
		p->l4sum = &tcp->check;
		p->tcp_flags = ((__u8 *)tcp)[13];
		return 0;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > end)
			return -1;
		p->sport = &udp->source;
		p->dport = &udp->dest;
		p->l4sum = udp->check ? &udp->check : NULL;
		return 0;
	}
	if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > end)
			return -1;
		if (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED ||
		    icmp->type == ICMP_PARAMETERPROB)
			return 1; /* an error: see the icmp_error_* functions */
		/* queries go out, their replies come in; the rest is the kernel's */
		if (icmp->type != (outbound ? ICMP_ECHO : ICMP_ECHOREPLY))
			return 2;
		p->sport = &icmp->un.echo.id;
		p->dport = &icmp->un.echo.id;
		p->l4sum = &icmp->checksum;
		p->pseudo = 0;
		return 0;
	}
	return -1;
}

static __always_inline void set_addr(struct pkt *p, __be32 *field, __be32 value)
{
	if (p->l4sum && p->pseudo)
		homegw_csum_replace4(p->l4sum, *field, value);
	homegw_csum_replace4(&p->ip->check, *field, value);
	*field = value;
}

static __always_inline void set_port(struct pkt *p, __be16 *field, __be16 value)
{
	if (p->l4sum) {
		homegw_csum_replace2(p->l4sum, *field, value);
		if (p->ip->protocol == IPPROTO_UDP && !*p->l4sum)
			*p->l4sum = 0xffff;
	}
	*field = value;
}

static __always_inline u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* Bind ext_port to the internal endpoint if the port is free. 0 on success,
 * -EEXIST when taken, another negative errno when the table is full. */
static __always_inline int try_bind(struct endpoint *internal, __u16 ext_port)
{
	struct binding_key key = { .ext_port = htons(ext_port), .proto = internal->proto };
	struct binding value = { .internal = *internal, .last_seen = now_ns() };

	return nat_bindings.insert(&key, &value);
}

static __always_inline int allocate_port(struct endpoint *internal, struct nat_settings *cfg,
					 __be16 *ext_port)
{
	__u16 wanted = ntohs(internal->port);
	int err;

	if (wanted && (wanted < cfg->kernel_low || wanted > cfg->kernel_high)) {
		err = try_bind(internal, wanted);
		if (err == 0) {
			*ext_port = internal->port;
			return 0;
		}
		if (err != -EEXIST)
			return err;
	}
	__u16 low = cfg->pool_low, span = cfg->pool_high - cfg->pool_low + 1;
	if (wanted && wanted < 1024) { /* keep privileged ports privileged */
		low = 512;
		span = 512;
	}
	for (int i = 0; i < NAT_PORT_TRIES; i++) {
		__u16 port = low + bpf_get_prandom_u32() % span;
		err = try_bind(internal, port);
		if (err == 0) {
			*ext_port = htons(port);
			return 0;
		}
		if (err != -EEXIST)
			return err;
	}
	count(N_PORTS_EXHAUSTED);
	return -EADDRNOTAVAIL;
}

/* The external port of an internal endpoint, mapping it on first use. */
static __always_inline int map_endpoint(struct endpoint *internal, struct nat_settings *cfg,
					__be16 *ext_port)
{
	struct mapping *found = nat_mappings.lookup(internal);

	if (found) {
		*ext_port = found->ext_port;
		return 0;
	}
	int err = allocate_port(internal, cfg, ext_port);
	if (err)
		return err;
	struct mapping value = { .ext_port = *ext_port };
	err = nat_mappings.insert(internal, &value);
	if (err) { /* another CPU mapped it meanwhile, or the table is full */
		struct binding_key key = { .ext_port = *ext_port, .proto = internal->proto };
		nat_bindings.delete(&key);
		found = nat_mappings.lookup(internal);
		if (!found)
			return err;
		*ext_port = found->ext_port;
		return 0;
	}
	count(N_NEW_MAPPING);
	return 0;
}

static __always_inline int touch_session(struct session_key *key, __u8 tcp_flags, int outbound,
					 u64 now)
{
	struct session *s = nat_sessions.lookup(key);
	__u32 seen = 0;

	if (key->proto == IPPROTO_TCP) {
		if (tcp_flags & 0x02) /* SYN */
			seen |= outbound ? TCP_SEEN_SYN_OUT : TCP_SEEN_SYN_IN;
		if (tcp_flags & 0x01) /* FIN */
			seen |= outbound ? TCP_SEEN_FIN_OUT : TCP_SEEN_FIN_IN;
		if (tcp_flags & 0x04) /* RST */
			seen |= TCP_SEEN_RST;
	}
	if (s) {
		s->last_seen = now;
		s->tcp_seen |= seen;
		return 0;
	}
	struct session value = { .last_seen = now, .tcp_seen = seen };
	int err = nat_sessions.insert(key, &value);
	if (err == 0)
		count(N_NEW_SESSION);
	return err == -EEXIST ? 0 : err;
}

/* Refuse a new outbound flow: ICMP destination unreachable, communication
 * administratively prohibited (type 3 code 13), back to the LAN host. */
static __always_inline int refuse(struct xdp_md *ctx, struct homegw_cursor *cur,
				  struct nat_settings *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	count(N_REFUSED_FULL);
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	/* as it arrived: the ICMP goes back to the sender, by the LAN NIC */
	__builtin_memcpy(eth->h_source, cur->in_src_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, cur->in_dst_mac, ETH_ALEN);
	cur->fwd = HOMEGW_FWD_KERNEL;
	if (homegw_icmp_error_xdp(ctx, ICMP_DEST_UNREACH, 13, cfg->lan_addr, 0))
		return XDP_DROP;
	return XDP_TX;
}

static __always_inline void remember_fragment(struct pkt *p, __be32 old_s, __be32 old_d, int inbound)
{
	if (!(p->ip->frag_off & htons(0x2000))) /* MF clear: not a first fragment */
		return;
	struct frag_key key = { old_s, old_d, p->ip->id, p->ip->protocol, inbound };
	struct frag value = { p->ip->saddr, p->ip->daddr };
	nat_frags.update(&key, &value);
}

/* A later fragment: no ports; the first fragment's addresses. */
static __always_inline int translate_fragment(struct iphdr *ip, int inbound)
{
	struct frag_key key = { ip->saddr, ip->daddr, ip->id, ip->protocol, inbound };
	struct frag *f = nat_frags.lookup(&key);

	if (!f) {
		count(N_FRAGMENT_DROPPED);
		return -1;
	}
	homegw_csum_replace4(&ip->check, ip->saddr, f->new_saddr);
	homegw_csum_replace4(&ip->check, ip->daddr, f->new_daddr);
	ip->saddr = f->new_saddr;
	ip->daddr = f->new_daddr;
	count(N_FRAGMENT);
	return 0;
}

/* The embedded packet of an ICMP error (RFC 5508 REQ-4/5): IP header (IHL 5)
 * and at least the 8 bytes holding the ports. */
struct embedded {
	struct icmphdr *icmp;
	struct iphdr *ip;
	__be16 *sport;
	__be16 *dport;
	__u16 *l4sum; /* TCP's lies beyond the 8 quoted bytes: not updated */
};

static __always_inline int parse_icmp_error(struct pkt *p, void *end, struct embedded *e)
{
	struct icmphdr *icmp = p->l4;

	if ((void *)(icmp + 1) > end)
		return -1;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
	    icmp->type != ICMP_PARAMETERPROB)
		return -1;
	struct iphdr *inner = (void *)(icmp + 1);
	if ((void *)(inner + 1) + 8 > end || inner->ihl != 5)
		return -1;
	if (homegw_ip_csum_check(inner))
		return -1; /* RFC 5508 REQ-3: a bad embedded header is dropped */
	__u16 *words = (void *)(inner + 1);
	e->icmp = icmp;
	e->ip = inner;
	e->sport = words;
	e->dport = words + 1;
	e->l4sum = NULL;
	if (inner->protocol == IPPROTO_UDP && words[3])
		e->l4sum = words + 3;
	else if (inner->protocol == IPPROTO_ICMP)
		e->l4sum = words + 1, e->sport = e->dport = words + 2; /* echo id */
	else if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP)
		return -1;
	return 0;
}

/* Change a field of the embedded packet, keeping its checksums and the
 * ICMP checksum (which covers the embedded bytes) right. */
static __always_inline void embedded_set16(struct embedded *e, __be16 *field, __be16 value)
{
	if (e->l4sum && e->l4sum != field) {
		__u16 old_l4 = *e->l4sum;
		homegw_csum_replace2(e->l4sum, *field, value);
		homegw_csum_replace2(&e->icmp->checksum, old_l4, *e->l4sum);
	}
	homegw_csum_replace2(&e->icmp->checksum, *field, value);
	*field = value;
}

static __always_inline void embedded_set_addr(struct embedded *e, __be32 *field, __be32 value)
{
	/* the embedded IP checksum changes too, and the ICMP checksum sees both */
	__u16 old_check = e->ip->check;
	homegw_csum_replace4(&e->ip->check, *field, value);
	homegw_csum_replace2(&e->icmp->checksum, old_check, e->ip->check);
	if (e->l4sum && e->ip->protocol == IPPROTO_UDP) {
		__u16 old_l4 = *e->l4sum;
		homegw_csum_replace4(e->l4sum, *field, value);
		homegw_csum_replace2(&e->icmp->checksum, old_l4, *e->l4sum);
	}
	homegw_csum_replace4(&e->icmp->checksum, *field, value);
	*field = value;
}

static __always_inline int is_later_fragment(struct iphdr *ip)
{
	return ip->frag_off & htons(0x1fff);
}

static __always_inline __be16 remote_port(struct pkt *p, int outbound)
{
	if (!p->pseudo)
		return 0; /* ICMP echo: the remote has no port */
	return outbound ? *p->dport : *p->sport;
}

/* ESP, GRE and other protocols without ports: the address only, one LAN
 * host per remote peer. */
static __always_inline int other_out(struct xdp_md *ctx, struct pkt *p, struct nat_settings *cfg)
{
	struct other_key key = { .remote_addr = p->ip->daddr, .proto = p->ip->protocol };
	struct other value = { .int_addr = p->ip->saddr, .last_seen = now_ns() };

	nat_others.update(&key, &value);
	set_addr(p, &p->ip->saddr, cfg->wan_addr);
	count(N_OTHER_PROTO);
	return homegw_next_xdp(ctx);
}

static __always_inline int other_in(struct xdp_md *ctx, struct pkt *p)
{
	struct other_key key = { .remote_addr = p->ip->saddr, .proto = p->ip->protocol };
	struct other *found = nat_others.lookup(&key);

	if (!found)
		return homegw_next_xdp(ctx); /* the gateway's own, or nobody's: the kernel */
	found->last_seen = now_ns();
	set_addr(p, &p->ip->daddr, found->int_addr);
	count(N_OTHER_PROTO);
	return homegw_next_xdp(ctx);
}

/* A LAN host's ICMP error about a packet that came in through NAT: the
 * embedded destination was translated on the way in; undo that. */
static __always_inline int icmp_error_out(struct xdp_md *ctx, struct pkt *p, void *end,
					  struct nat_settings *cfg)
{
	struct embedded e;

	if (parse_icmp_error(p, end, &e))
		return XDP_DROP;
	struct endpoint internal = { e.ip->daddr, *e.dport, e.ip->protocol };
	struct mapping *m = nat_mappings.lookup(&internal);
	if (!m)
		return XDP_DROP;
	embedded_set16(&e, e.dport, m->ext_port);
	embedded_set_addr(&e, &e.ip->daddr, cfg->wan_addr);
	set_addr(p, &p->ip->saddr, cfg->wan_addr);
	count(N_ICMP_ERROR);
	return homegw_next_xdp(ctx);
}

/* An ICMP error about a packet we sent out for a LAN host: to that host,
 * with the embedded source as the host sent it. Mappings are not touched. */
static __always_inline int icmp_error_in(struct xdp_md *ctx, struct pkt *p, void *end)
{
	struct embedded e;

	if (parse_icmp_error(p, end, &e))
		return homegw_next_xdp(ctx); /* not about us: the kernel's */
	struct binding_key key = { .ext_port = *e.sport, .proto = e.ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b)
		return homegw_next_xdp(ctx); /* about the gateway's own traffic */
	embedded_set16(&e, e.sport, b->internal.port);
	embedded_set_addr(&e, &e.ip->saddr, b->internal.addr);
	set_addr(p, &p->ip->daddr, b->internal.addr);
	count(N_ICMP_ERROR);
	return homegw_next_xdp(ctx);
}

/* LAN -> WAN: the source becomes the WAN address and the mapped port. */
static __always_inline int outbound(struct xdp_md *ctx, struct homegw_cursor *cur,
				    struct nat_settings *cfg, struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip))
		return translate_fragment(ip, 0) ? XDP_DROP : homegw_next_xdp(ctx);
	int kind = parse_l4(&p, end, 1);
	if (kind == 1)
		return icmp_error_out(ctx, &p, end, cfg);
	if (kind == 2)
		return homegw_next_xdp(ctx);
	if (kind < 0)
		return other_out(ctx, &p, cfg);

	struct endpoint internal = { ip->saddr, *p.sport, ip->protocol };
	__be16 ext_port;
	if (map_endpoint(&internal, cfg, &ext_port))
		return refuse(ctx, cur, cfg);
	struct session_key session = { ip->daddr, remote_port(&p, 1), ext_port, ip->protocol };
	if (touch_session(&session, p.tcp_flags, 1, now_ns()))
		return refuse(ctx, cur, cfg);

	__be32 old_saddr = ip->saddr, old_daddr = ip->daddr;
	set_addr(&p, &ip->saddr, cfg->wan_addr);
	set_port(&p, p.sport, ext_port);
	remember_fragment(&p, old_saddr, old_daddr, 0);
	count(N_OUT);
	return homegw_next_xdp(ctx);
}

/* Whether the binding lets a packet from (remote_addr, remote_port) in. */
static __always_inline int allowed_in(struct binding *b, struct nat_settings *cfg,
				      struct session_key *session)
{
	if (b->flags & BINDING_QUARANTINE)
		return 0;
	if ((b->flags & BINDING_STATIC) || cfg->endpoint_independent_filtering)
		return 1;
	return nat_sessions.lookup(session) != NULL;
}

/* WAN -> the WAN address: to the internal endpoint of the binding. */
static __always_inline int inbound(struct xdp_md *ctx, struct nat_settings *cfg,
				   struct iphdr *ip, void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip))
		return translate_fragment(ip, 1) ? XDP_DROP : homegw_next_xdp(ctx);
	int kind = parse_l4(&p, end, 0);
	if (kind == 1)
		return icmp_error_in(ctx, &p, end);
	if (kind == 2)
		return homegw_next_xdp(ctx);
	if (kind < 0)
		return other_in(ctx, &p);

	struct binding_key key = { .ext_port = *p.dport, .proto = ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	__u16 port = ntohs(*p.dport);
	if (!b) {
		int gateways_own = (port >= cfg->kernel_low && port <= cfg->kernel_high) ||
				   (ip->protocol == IPPROTO_UDP && port == 68);
		if (cfg->dmz_addr && !gateways_own) {
			set_addr(&p, &ip->daddr, cfg->dmz_addr);
			count(N_IN);
			return homegw_next_xdp(ctx);
		}
		if (port >= cfg->pool_low && port <= cfg->pool_high) {
			count(N_UNSOLICITED); /* no socket of the gateway uses the pool */
			return XDP_DROP;
		}
		return homegw_next_xdp(ctx); /* the gateway's own, or its input guard */
	}
	struct session_key session = { ip->saddr, remote_port(&p, 0), *p.dport, ip->protocol };
	if (!allowed_in(b, cfg, &session)) {
		count(N_UNSOLICITED); /* silently: RFC 5382 REQ-4 */
		return XDP_DROP;
	}
	u64 now = now_ns();
	if (touch_session(&session, p.tcp_flags, 0, now))
		return XDP_DROP;
	b->last_seen = now;

	__be32 old_saddr = ip->saddr, old_daddr = ip->daddr;
	set_addr(&p, &ip->daddr, b->internal.addr);
	set_port(&p, p.dport, b->internal.port);
	remember_fragment(&p, old_saddr, old_daddr, 1);
	count(N_IN);
	return homegw_next_xdp(ctx);
}

/* LAN -> the WAN address (RFC 4787 REQ-9): both translations, so the
 * internal server sees the client's external address and port, and back
 * out of the LAN NIC. */
static __always_inline int hairpin(struct xdp_md *ctx, struct homegw_cursor *cur,
				   struct nat_settings *cfg, struct ethhdr *eth, struct iphdr *ip,
				   void *end)
{
	struct pkt p = { .ip = ip };

	if (is_later_fragment(ip) || parse_l4(&p, end, 1) != 0)
		return homegw_next_xdp(ctx);
	struct binding_key key = { .ext_port = *p.dport, .proto = ip->protocol };
	struct binding *b = nat_bindings.lookup(&key);
	if (!b)
		return homegw_next_xdp(ctx); /* a service of the gateway itself */
	__be32 server = b->internal.addr;
	struct neighbour *neigh = router_neigh.lookup(&server);
	if (!neigh || neigh->nic != HOMEGW_NIC_LAN) {
		/* The router's slow path resolves it and sends this frame again. */
		count(N_NEIGH_MISS);
		struct homegw_punt hdr = {
			.module = ROUTER_MODULE_ID, .reason = REASON_NEIGH_MISS,
			.ifindex = ctx->ingress_ifindex, .meta = { server, HOMEGW_NIC_LAN, 0, 0 },
		};
		__u64 len = (__u64)(end - (void *)eth);
		__u64 cap = len > HOMEGW_PUNT_MAX_BYTES ? HOMEGW_PUNT_MAX_BYTES : len;
		hdr.pkt_len = len;
		slowpath.perf_submit_skb(ctx, cap, &hdr, sizeof(hdr));
		return XDP_DROP;
	}
	if (ip->ttl <= 1)
		return homegw_next_xdp(ctx); /* the kernel sends time exceeded */

	struct endpoint client = { ip->saddr, *p.sport, ip->protocol };
	__be16 client_port;
	if (map_endpoint(&client, cfg, &client_port))
		return XDP_DROP;
	struct session_key seen_by_server = { cfg->wan_addr, client_port, *p.dport, ip->protocol };
	if (!allowed_in(b, cfg, &seen_by_server)) {
		count(N_UNSOLICITED);
		return XDP_DROP;
	}
	struct session_key session = { cfg->wan_addr, *p.dport, client_port, ip->protocol };
	u64 now = now_ns();
	if (touch_session(&session, p.tcp_flags, 1, now))
		return XDP_DROP;
	b->last_seen = now;

	set_addr(&p, &ip->saddr, cfg->wan_addr);
	set_port(&p, p.sport, client_port);
	set_addr(&p, &ip->daddr, server);
	set_port(&p, p.dport, b->internal.port);
	__u16 old_word = *(__u16 *)&ip->ttl;
	ip->ttl--;
	homegw_csum_replace2(&ip->check, old_word, *(__u16 *)&ip->ttl);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN); /* our LAN MAC */
	__builtin_memcpy(eth->h_dest, neigh->mac, ETH_ALEN);
	cur->fwd = HOMEGW_FWD_REDIRECT;
	cur->out_ifindex = cur->ifindex;
	cur->out_nic = HOMEGW_NIC_LAN;
	count(N_HAIRPIN);
	return homegw_next_xdp(ctx);
}

int nat_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct homegw_cursor *cur = homegw_cursor_xdp();
	u32 zero = 0;
	struct nat_settings *cfg = nat_settings.lookup(&zero);

	if (!cur || !cfg || !cfg->wan_addr || (void *)(ip + 1) > end ||
	    eth->h_proto != htons(ETH_P_IP) || ip->ihl < 5)
		return homegw_next_xdp(ctx);
	if (cur->nic == HOMEGW_NIC_LAN) {
		if (cur->fwd == HOMEGW_FWD_REDIRECT && cur->out_nic == HOMEGW_NIC_WAN)
			return outbound(ctx, cur, cfg, ip, end);
		if ((cur->flags & HOMEGW_F_LOCAL) && ip->daddr == cfg->wan_addr)
			return hairpin(ctx, cur, cfg, eth, ip, end);
		return homegw_next_xdp(ctx);
	}
	if (ip->daddr == cfg->wan_addr)
		return inbound(ctx, cfg, ip, end);
	return homegw_next_xdp(ctx);
}
