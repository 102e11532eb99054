/* nat_parse.h: the NAT module's pure helpers, no map access (bcc rewrites
 * map calls only in the main file): the settings and state structs, packet
 * parsing, checksum-keeping field writes, ICMP classification, port rules.
 * nat.bpf.c includes it through NAT_PARSE_H (its path, set by module.py). */
#ifndef NAT_PARSE_INCLUDED
#define NAT_PARSE_INCLUDED

#include <uapi/linux/icmp.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#define NAT_REMOTE_BUCKETS 4096 /* power of two: per-remote budget buckets */
#define NAT_PRIVILEGED_LOW 512  /* privileged source ports map into 512-1023 */
#define NAT_PRIVILEGED_HIGH 1023
#define NAT_BLOCK_SHIFT 7       /* a block: 128 ports, 64 of each parity */
#define NAT_BLOCK_PORTS 64      /* ports of one parity in a block */
#define NAT_BLOCKS (65536 >> NAT_BLOCK_SHIFT)
#define NAT_OCCUPANCY_SLOTS (4 * 2 * NAT_BLOCKS) /* TCP, UDP, ICMP, (spare) x parity x block */

/* Keep in step with Settings in maps.py. */
struct nat_settings {
	__be32 wan_addr;  /* 0: no WAN address, nothing is translated */
	__be32 lan_addr;  /* source of the ICMP errors sent to LAN hosts */
	__u16 pool_low;   /* host order */
	__u16 pool_high;
	__u16 kernel_low; /* the kernel's ephemeral ports: the gateway's own */
	__u16 kernel_high;
	__u32 endpoint_independent_filtering;
	__be32 dmz_addr;  /* unsolicited inbound goes here (0: dropped) */
	__u16 admin_port; /* host order; the web UI's TCP port (0: none) */
	unsigned char lan_mac[ETH_ALEN]; /* source of hairpinned frames */
	__u32 hash_seed;      /* of the per-remote budget buckets */
	__u32 in_sessions;    /* sessions created from outside, at most */
	__u32 in_per_remote;  /* ... per remote address (bucket) */
	__u32 in_per_port;    /* ... per external port */
};

/* What a translation needs to know about the packet. */
struct pkt {
	struct iphdr *ip;
	void *l4;      /* TCP/UDP/ICMP header, NULL for a later fragment */
	__be16 *sport; /* source port (or ICMP query id), NULL if none */
	__be16 *dport; /* destination port (or ICMP query id), NULL if none */
	__u16 *l4sum;  /* L4 checksum field, NULL if none or UDP with none */
	int pseudo;    /* the L4 checksum covers the IP addresses (TCP, UDP) */
	__u8 tcp_flags;
};

enum l4_kind {
	L4_PORTS,      /* TCP, UDP, or an ICMP query (or its reply) with an id */
	L4_ICMP_ERROR, /* see the icmp_error_* functions */
	L4_ICMP_OTHER, /* ICMP without an id, or a query in the wrong direction */
	L4_TRUNCATED,  /* TCP/UDP/ICMP header cut short */
	L4_OTHER,      /* ESP, GRE, ...: no ports */
};

/* ICMP queries carry an identifier (RFC 792/950): requests go out, their
 * replies come in. */
static __always_inline int icmp_query(__u8 type, int outbound)
{
	if (outbound)
		return type == ICMP_ECHO || type == ICMP_TIMESTAMP || type == ICMP_INFO_REQUEST ||
		       type == ICMP_ADDRESS;
	return type == ICMP_ECHOREPLY || type == ICMP_TIMESTAMPREPLY || type == ICMP_INFO_REPLY ||
	       type == ICMP_ADDRESSREPLY;
}

static __always_inline int icmp_error_type(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* Parse the L4 header of a non-fragment or first fragment. */
static __always_inline enum l4_kind parse_l4(struct pkt *p, void *end, int outbound)
{
	struct iphdr *ip = p->ip;
	void *l4 = (void *)ip + ip->ihl * 4;

	p->l4 = l4;
	p->pseudo = 1;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return L4_TRUNCATED;
		p->sport = &tcp->source;
		p->dport = &tcp->dest;
		p->l4sum = &tcp->check;
		p->tcp_flags = ((__u8 *)tcp)[13];
		return L4_PORTS;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > end)
			return L4_TRUNCATED;
		p->sport = &udp->source;
		p->dport = &udp->dest;
		p->l4sum = udp->check ? &udp->check : NULL;
		return L4_PORTS;
	}
	if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > end)
			return L4_TRUNCATED;
		if (icmp_error_type(icmp->type))
			return L4_ICMP_ERROR;
		if (!icmp_query(icmp->type, outbound))
			return L4_ICMP_OTHER;
		p->sport = &icmp->un.echo.id;
		p->dport = &icmp->un.echo.id;
		p->l4sum = &icmp->checksum;
		p->pseudo = 0;
		return L4_PORTS;
	}
	return L4_OTHER;
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

static __always_inline int is_later_fragment(struct iphdr *ip)
{
	return ip->frag_off & htons(0x1fff);
}

static __always_inline int is_first_fragment(struct iphdr *ip)
{
	return (ip->frag_off & htons(0x3fff)) == htons(0x2000); /* MF, offset 0 */
}

static __always_inline __be16 remote_port(struct pkt *p, int outbound)
{
	if (!p->pseudo)
		return 0; /* ICMP query: the remote has no port */
	return outbound ? *p->dport : *p->sport;
}

/* The gateway's own ports (host order), never handed out by NAT nor the
 * DMZ: the kernel's ephemeral range (also ICMP ids of its pings), DNS, the
 * web UI, and UDP 68 of its DHCP client. */
static __always_inline int gateways_own_port(struct nat_settings *cfg, __u16 port, __u8 proto)
{
	if (port >= cfg->kernel_low && port <= cfg->kernel_high)
		return 1;
	if (proto == IPPROTO_ICMP)
		return 0;
	if (port == 53 || (cfg->admin_port && port == cfg->admin_port))
		return 1;
	return proto == IPPROTO_UDP && port == 68;
}

/* Ports the allocator hands out: the pool, and 512-1023 for privileged
 * source ports. Their bindings are counted per block (nat_ports_*). */
static __always_inline int allocatable(struct nat_settings *cfg, __u16 port)
{
	return (port >= cfg->pool_low && port <= cfg->pool_high) ||
	       (port >= NAT_PRIVILEGED_LOW && port <= NAT_PRIVILEGED_HIGH);
}

static __always_inline __u32 occupancy_slot(__u8 proto, __u16 port)
{
	__u32 kind = proto == IPPROTO_TCP ? 0 : proto == IPPROTO_UDP ? 1 : 2;
	return (kind * 2 + (port & 1)) * NAT_BLOCKS + (port >> NAT_BLOCK_SHIFT);
}

static __always_inline __u32 remote_bucket(__be32 addr, __u32 seed)
{
	__u32 h = (addr ^ seed) * 0x9e3779b1u;

	h ^= h >> 15;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	return h & (NAT_REMOTE_BUCKETS - 1);
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

	if ((void *)(icmp + 1) > end || !icmp_error_type(icmp->type))
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
		e->l4sum = words + 1, e->sport = e->dport = words + 2; /* query id */
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

#endif /* NAT_PARSE_INCLUDED */
