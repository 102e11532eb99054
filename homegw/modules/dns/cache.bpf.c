/* "dns": the XDP fast path of the DNS forwarder (LAN chain).
 *
 * A UDP query to the gateway's DNS -- DNS_LAN_ADDR:53 over IPv4, or over
 * IPv6 one of the gateway's LAN addresses in dns_addrs6, port 53, UDP right
 * after the fixed IPv6 header -- asking one A or AAAA question (class IN),
 * without EDNS or with a plain EDNS0 OPT record (version 0, no options),
 * whose lower-cased name and type are in dns_cache with a deadline still
 * ahead, is turned into its reply in place and sent back out of the NIC it
 * came in on (redirected to the ingress, homegw_tx_xdp: a veth peer wakes
 * for it, unlike XDP_TX): MACs, addresses and ports swapped, QR/RA set (RD
 * and CD kept), the A or AAAA records appended after the question (owner =
 * pointer to the question), our OPT record after them if the query had one,
 * UDP length fixed. IPv4: total length and header checksum, UDP checksum 0
 * (allowed for IPv4). IPv6: payload length, hop limit 64, traffic class and
 * flow label 0, and the UDP checksum computed in full over the reply (it is
 * mandatory for IPv6; the query's own is not trusted, a veth leaves it
 * partial). The TTL is the whole seconds left to the deadline, rounded up,
 * so it counts down like the Python cache's. The frame grows at its tail,
 * or, without room there (a veth's copy has only its alignment slack), at
 * its front with the headers and question moved; with room neither way the
 * hit is counted no_room and goes on to Python.
 *
 * Anything else (a miss, an expired entry, another type, EDNS options, IP
 * options or IPv6 extension headers, fragments, a multicast IPv6 source,
 * traffic for other addresses) goes on down the chain unchanged and reaches
 * the Python resolver on the gateway's socket, which fills dns_cache with
 * every answer that fits.
 *
 * Compile-time: DNS_LAN_ADDR (host byte order), DNS_CACHE_SIZE.
 * Keep the structs in step with homegw/modules/dns/fastpath.py. */
#include "homegw.h"
#include "homegw_icmp.h"
#include <uapi/linux/udp.h>
#include <uapi/linux/ipv6.h>

#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

#define DNS_KEY_NAME 128 /* longest name (wire form) the fast path keys on */
#define DNS_MAX_ADDRS 8
#define DNS_PORT 53
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_TYPE_OPT 41
#define DNS_OUR_UDP 1232
#define DNS_IP_TTL 64
#define NSEC 1000000000ULL
/* what a reply may grow by at the front: 8 AAAA records */
#define DNS_MAX_GROW (DNS_MAX_ADDRS * 28)
/* headers and question moved to the front then: Ethernet, IPv6, UDP, DNS, name, type+class */
#define DNS_MAX_BLOCK (14 + 40 + 8 + 12 + DNS_KEY_NAME + 4)
#define DNS_MAX_ADDRS6 16 /* gateway LAN IPv6 addresses the fast path answers on */

/* dns_stats indices; fastpath.py reads the names. */
enum dns_stat {
	DNS_STAT_HITS,
	DNS_STAT_MISSES,
	DNS_STAT_EXPIRED,
	DNS_STAT_PASSED, /* a query to us the fast path does not handle */
	DNS_STAT_NO_ROOM, /* a hit whose frame could not grow to the reply: Python answers */
	DNS_STAT_COUNT,
};

struct dns_key {
	__u8 name[DNS_KEY_NAME]; /* qname wire bytes, lower-cased, zero-padded */
	__u16 qtype;             /* host byte order */
	__u16 pad;
};

struct dns_answer {
	__u64 expires_ns; /* CLOCK_MONOTONIC deadline (bpf_ktime_get_*_ns clock) */
	__u32 count;      /* records, 1..DNS_MAX_ADDRS */
	__u32 pad;
	/* network byte order: 4 bytes used of each for A, 16 for AAAA */
	__u8 addrs[DNS_MAX_ADDRS][16];
};

struct dns_hdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

struct dns_rr_a {
	__be16 name; /* 0xc00c: pointer to the question's name */
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlength;
	__u8 addr[4];
} __attribute__((packed));

struct dns_rr_aaaa {
	__be16 name; /* 0xc00c: pointer to the question's name */
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlength;
	__u8 addr[16];
} __attribute__((packed));

struct dns_opt {
	__u8 name; /* root */
	__be16 type;
	__be16 udp_size;
	__u8 ext_rcode;
	__u8 version;
	__be16 flags;
	__be16 rdlength;
} __attribute__((packed));

// <struct dns_key (lower-cased qname wire bytes, fixed-size, + qtype), struct dns_answer {deadline, A records}>
BPF_TABLE_PINNED("lru_hash", struct dns_key, struct dns_answer, dns_cache, DNS_CACHE_SIZE,
		 HOMEGW_PIN("dns_cache"));
// <struct in6_addr (a gateway LAN address, network order), 1>: written by
// DnsModule.on_ipv6 from the IPv6 facts
BPF_HASH(dns_addrs6, struct in6_addr, u8, DNS_MAX_ADDRS6);
// <DNS_STAT_* index, queries to the gateway's DNS address by outcome (per CPU)>
BPF_TABLE_PINNED("percpu_array", u32, u64, dns_stats, DNS_STAT_COUNT, HOMEGW_PIN("dns_stats"));

// <0, name length of the query in hand on this CPU>: a value read back from a
// map is unknown to the verifier, so one pass covers every name length
// instead of one pass per length (which exceeds the verifier's budget).
BPF_PERCPU_ARRAY(dns_scratch, u32, 1);

/* value (< 256) as a scalar the verifier only knows to be below 256 */
static __always_inline u32 dns_forget_value(u32 value)
{
	u32 zero = 0;
	u32 *slot = dns_scratch.lookup(&zero);

	if (!slot)
		return 0;
	*slot = value;
	return *(volatile u32 *)slot & 0xff;
}

static __always_inline void dns_count(u32 index)
{
	u64 *value = dns_stats.lookup(&index);

	if (value)
		*value += 1;
}

/* Copy name_len bytes of the question's name into key, lower-cased.
 *
 * The label structure is not parsed: only the resolver writes keys, and only
 * valid uncompressed names, so a key that matches is such a name (length
 * bytes are below 64, never letters, so lower-casing every byte is safe).
 * The name's length is known from the UDP length. Branch-free lower-casing
 * keeps the verifier's work linear in the name's length. */
static __always_inline int dns_read_name(u8 *name, void *end, u32 name_len, struct dns_key *key)
{
	for (u32 i = 0; i < DNS_KEY_NAME; i++) {
		u8 *p = name + i;
		u64 c, shifted;

		if (i >= name_len)
			break;
		/* opaque to clang: else it folds the checks into a trip count
		 * computed on pkt_end, which the verifier forbids */
		asm volatile("" : "+r"(end));
		if ((void *)(p + 1) > end)
			return -1;
		c = *p;
		shifted = c + 256 - 'A'; /* 'A'..'Z' -> 256..281 */
		c |= ((shifted >> 8) & ((shifted - 282) >> 63) & 1) << 5;
		key->name[i] = c;
	}
	return 0;
}

/* Is there a plain EDNS0 OPT record at p (version 0, no options)? */
static __always_inline int dns_plain_opt(u8 *p, void *end)
{
	struct dns_opt *opt = (void *)p;

	if ((void *)(opt + 1) > end)
		return 0;
	return opt->name == 0 && opt->type == htons(DNS_TYPE_OPT) && opt->version == 0 &&
	       opt->rdlength == 0;
}

/* Where the query's DNS message is and what it asks, once checked. */
struct dns_query {
	u32 name_len;  /* wire bytes of the question's name */
	u32 query_len; /* UDP bytes of the query (header included) */
	int has_opt;
	u16 qtype;
};

/* Check the DNS part of a query whose UDP header is at udp (in the frame)
 * and find it in dns_cache. Returns the hit, or NULL with *outcome set:
 * DNS_STAT_PASSED, _MISSES or _EXPIRED (counted by the caller's path). */
static __always_inline struct dns_answer *dns_lookup(struct udphdr *udp, void *end,
						     struct dns_query *q, u32 *outcome)
{
	struct dns_hdr *dns = (void *)(udp + 1);
	struct dns_key key = {};
	u8 *tail;

	*outcome = DNS_STAT_PASSED;
	if ((void *)(dns + 1) > end)
		return NULL;
	if ((dns->flags & htons(0xfa00)) || dns->qdcount != htons(1) || dns->ancount ||
	    dns->nscount || (dns->arcount != 0 && dns->arcount != htons(1)))
		return NULL;
	q->has_opt = dns->arcount != 0;
	u32 name_len = ntohs(udp->len) - sizeof(*udp) - sizeof(*dns) - 4 -
		       (q->has_opt ? sizeof(struct dns_opt) : 0);
	name_len = dns_forget_value(name_len > DNS_KEY_NAME ? 0 : name_len);
	if (name_len == 0 || name_len > DNS_KEY_NAME)
		return NULL;
	q->name_len = name_len;
	q->query_len = sizeof(*udp) + sizeof(*dns) + name_len + 4 +
		       (q->has_opt ? sizeof(struct dns_opt) : 0);
	tail = (u8 *)(dns + 1) + name_len;
	if ((void *)(tail + 4) > end)
		return NULL;
	if (tail[-1] != 0 || tail[0] != 0 || (tail[1] != DNS_TYPE_A && tail[1] != DNS_TYPE_AAAA) ||
	    tail[2] != 0 || tail[3] != DNS_CLASS_IN)
		return NULL;
	if (q->has_opt && !dns_plain_opt(tail + 4, end))
		return NULL;
	if (dns_read_name((u8 *)(dns + 1), end, name_len, &key))
		return NULL;
	/* Forget what each exit of the name loop taught the verifier about
	 * name_len (a different bound per exit), so the states after it prune
	 * into one instead of each running the rest of the program. */
	q->name_len = dns_forget_value(name_len);
	key.qtype = q->qtype = tail[1];
	struct dns_answer *hit = dns_cache.lookup(&key);
	if (!hit) {
		*outcome = DNS_STAT_MISSES;
		return NULL;
	}
	if (bpf_ktime_get_coarse_ns() >= hit->expires_ns) {
		dns_cache.delete(&key);
		*outcome = DNS_STAT_EXPIRED;
		return NULL;
	}
	return hit;
}

static __always_inline u32 dns_rr_size(u16 qtype)
{
	return qtype == DNS_TYPE_AAAA ? sizeof(struct dns_rr_aaaa) : sizeof(struct dns_rr_a);
}

/* One answer record at p, owner = pointer to the question; size (4 or 16,
 * a constant at each call) bytes of data from addr. 0, or -1 past the end. */
static __always_inline int dns_put_rr(u8 *p, void *end, u16 type, u32 ttl, const u8 *addr,
				      u32 size)
{
	struct dns_rr_a *rr = (void *)p; /* the fields before the data are the same */

	if ((void *)(p + sizeof(*rr) - 4 + size) > end)
		return -1;
	rr->name = htons(0xc00c);
	rr->type = htons(type);
	rr->class = htons(DNS_CLASS_IN);
	rr->ttl = htonl(ttl);
	rr->rdlength = htons(size);
	__builtin_memcpy(rr->addr, addr, size);
	return 0;
}

/* Write the DNS reply behind the UDP header at udp (the frame already has its
 * final length): the header's counts and flags, the records, our OPT record.
 * 0, or -1 if bounds do not hold. */
static __always_inline int dns_write_message(struct udphdr *udp, void *end, struct dns_query *q,
					     struct dns_answer *ans, u32 count, u32 ttl)
{
	struct dns_hdr *dns = (void *)(udp + 1);
	u32 name_len = q->name_len;
	u8 *cursor;
	u32 i;

	if ((void *)(dns + 1) > end || name_len > DNS_KEY_NAME || count > DNS_MAX_ADDRS)
		return -1;
	dns->flags = (dns->flags & htons(0x0110)) | htons(0x8080); /* keep RD, CD; set QR, RA */
	dns->ancount = htons(count);
	dns->nscount = 0;
	dns->arcount = htons(q->has_opt ? 1 : 0);

	/* The mask restates the bound checked above in a form the verifier keeps
	 * through register spills: variable packet offsets must stay small. The
	 * records are then written through a pointer advanced by constants. */
	name_len &= 0xff;
	/* Hide count's bound from clang, or it drops "i < DNS_MAX_ADDRS" from
	 * the loop below (count <= 8 implies it), and the verifier, which does
	 * not know that bound, would see a read past the map value. */
	asm volatile("" : "+r"(count));
	cursor = (u8 *)(dns + 1) + name_len + 4;
	if (q->qtype == DNS_TYPE_AAAA) {
#pragma unroll
		for (i = 0; i < DNS_MAX_ADDRS; i++) {
			if (i >= count)
				break;
			if (dns_put_rr(cursor, end, DNS_TYPE_AAAA, ttl, ans->addrs[i], 16))
				return -1;
			cursor += sizeof(struct dns_rr_aaaa);
		}
	} else {
#pragma unroll
		for (i = 0; i < DNS_MAX_ADDRS; i++) {
			if (i >= count)
				break;
			if (dns_put_rr(cursor, end, DNS_TYPE_A, ttl, ans->addrs[i], 4))
				return -1;
			cursor += sizeof(struct dns_rr_a);
		}
	}
	if (q->has_opt) {
		struct dns_opt *opt = (void *)cursor;

		if ((void *)(opt + 1) > end)
			return -1;
		opt->name = 0;
		opt->type = htons(DNS_TYPE_OPT);
		opt->udp_size = htons(DNS_OUR_UDP);
		opt->ext_rcode = 0;
		opt->version = 0;
		opt->flags = 0;
		opt->rdlength = 0;
	}
	return 0;
}

static __always_inline void dns_swap_macs(struct ethhdr *eth)
{
	unsigned char mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
}

static __always_inline void dns_swap_ports(struct udphdr *udp, u32 udp_len)
{
	__be16 port = udp->source;

	udp->source = udp->dest;
	udp->dest = port;
	udp->len = htons(udp_len);
	udp->check = 0;
}

/* Move the first `block` bytes of the frame, which sit `grow` bytes in,
 * to its start (the frame was just grown at its front). 0, or -1. */
static __always_inline int dns_move_front(struct xdp_md *ctx, u32 grow, u32 block)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	/* restated bound (<= DNS_MAX_GROW, checked by the caller) where clang
	 * cannot drop it as known: the verifier does not know it */
	asm volatile("" : "+r"(grow));
	grow &= 0x3ff;
	for (u32 i = 0; i < DNS_MAX_BLOCK; i++) {
		u8 *dst = data + i;
		u8 *src = data + grow + i;

		if (i >= block)
			break;
		asm volatile("" : "+r"(end)); /* as in dns_read_name */
		if ((void *)(dst + 1) > end || (void *)(src + 1) > end)
			return -1;
		*dst = *src; /* dst < src: copying upwards never reads a byte written */
	}
	return 0;
}

/* The reply's length in UDP bytes, and the frame grown (or shrunk) to it:
 * at the tail, or, where the frame has no room there (a veth hands XDP a
 * copy with only its 64-byte alignment slack), at the front, the headers
 * and question moved there. 0, -1 (no room either way: the frame is
 * unchanged) or -2 (the frame is spoilt). */
static __always_inline int dns_resize(struct xdp_md *ctx, int old_len, u32 l3_len,
				      struct dns_query *q, u32 count, u32 *udp_len)
{
	*udp_len = q->query_len + count * dns_rr_size(q->qtype);
	int new_len = sizeof(struct ethhdr) + l3_len + *udp_len;
	/* a scalar to clang from here on: else it folds old_len's packet
	 * pointers into the sum, and the verifier forbids arithmetic on pkt_end */
	asm volatile("" : "+r"(old_len));
	int grow = new_len - old_len;
	if (!bpf_xdp_adjust_tail(ctx, grow))
		return 0;
	if (grow <= 0 || grow > DNS_MAX_GROW || bpf_xdp_adjust_head(ctx, -grow))
		return -1;
	u32 block = sizeof(struct ethhdr) + l3_len + sizeof(struct udphdr) + sizeof(struct dns_hdr) +
		    dns_forget_value(q->name_len) + 4;
	/* cannot fail for a frame checked as the query was; if it did, the
	 * frame is half moved: -2, dropped */
	return dns_move_front(ctx, grow, block) ? -2 : 0;
}

/* The answer to a hit, over IPv4. XDP_TX (to send), or XDP_DROP. */
static __always_inline int dns_reply4(struct xdp_md *ctx, int old_len, struct dns_query *q,
				      struct dns_answer *ans, u32 count, u32 ttl)
{
	u32 udp_len;

	int resized = dns_resize(ctx, old_len, sizeof(struct iphdr), q, count, &udp_len);
	if (resized)
		return resized == -1 ? XDP_PASS : XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	__be32 addr;

	if ((void *)(udp + 1) > end)
		return XDP_DROP;
	dns_swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tos = 0;
	ip->tot_len = htons(sizeof(*ip) + udp_len);
	ip->id = 0;
	ip->frag_off = htons(0x4000); /* DF */
	ip->ttl = DNS_IP_TTL;
	ip->check = 0;
	ip->check = homegw_ip_csum(ip);
	dns_swap_ports(udp, udp_len);
	return dns_write_message(udp, end, q, ans, count, ttl) ? XDP_DROP : XDP_TX;
}

/* The answer to a hit, over IPv6: the UDP checksum over the pseudo-header
 * and the whole reply. XDP_TX (to send), or XDP_DROP. */
static __always_inline int dns_reply6(struct xdp_md *ctx, int old_len, struct dns_query *q,
				      struct dns_answer *ans, u32 count, u32 ttl)
{
	u32 udp_len;

	int resized = dns_resize(ctx, old_len, sizeof(struct ipv6hdr), q, count, &udp_len);
	if (resized)
		return resized == -1 ? XDP_PASS : XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip6 + 1);
	struct in6_addr addr;

	if ((void *)(udp + 1) > end)
		return XDP_DROP;
	dns_swap_macs(eth);
	addr = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = addr;
	*(__be32 *)ip6 = htonl(0x60000000); /* version 6, traffic class 0, flow label 0 */
	ip6->payload_len = htons(udp_len);
	ip6->hop_limit = DNS_IP_TTL;
	dns_swap_ports(udp, udp_len);
	if (dns_write_message(udp, end, q, ans, count, ttl))
		return XDP_DROP;
	/* pseudo-header (RFC 8200 8.1): both addresses, UDP length, next header */
	u64 sum = (u32)bpf_csum_diff(0, 0, (__be32 *)&ip6->saddr, 2 * sizeof(struct in6_addr), 0);
	sum += htons(udp_len) + htons(IPPROTO_UDP);
	sum += homegw_sum_to_end(udp, end);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	__u16 check = homegw_csum_fold((u32)sum);
	udp->check = check ? check : 0xffff; /* 0 means "no checksum" */
	return XDP_TX;
}

/* The UDP header of an IPv4 query to our resolver, or NULL. */
static __always_inline struct udphdr *dns_udp4(void *data, void *end)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || ip->daddr != htonl(DNS_LAN_ADDR) ||
	    ip->protocol != IPPROTO_UDP || udp->dest != htons(DNS_PORT))
		return NULL;
	return udp;
}

/* The UDP header of an IPv6 query to our resolver (UDP right after the
 * fixed header), or NULL. */
static __always_inline struct udphdr *dns_udp6(void *data, void *end)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip6 + 1);

	if ((void *)(udp + 1) > end || ip6->nexthdr != IPPROTO_UDP || udp->dest != htons(DNS_PORT))
		return NULL;
	if (!dns_addrs6.lookup(&ip6->daddr))
		return NULL;
	return udp;
}

/* Whether the IP layer of a query to us is one the fast path answers:
 * no IPv4 options or fragments, the lengths agreeing with the UDP length,
 * a unicast IPv6 source. */
static __always_inline int dns_l3_plain(void *data, int v6, u32 udp_len)
{
	if (v6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		return ip6->payload_len == htons(udp_len) && ip6->saddr.s6_addr[0] != 0xff;
	}
	struct iphdr *ip = data + sizeof(struct ethhdr);

	return ip->ihl == 5 && !(ip->frag_off & htons(0x3fff)) &&
	       ip->tot_len == htons(sizeof(*ip) + udp_len);
}

int dns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct dns_query q = {};
	struct udphdr *udp;
	u32 outcome, count, ttl;
	int v6;

	if ((void *)(eth + 1) > end)
		return homegw_next_xdp(ctx);
	v6 = eth->h_proto == htons(ETH_P_IPV6);
	if (v6)
		udp = dns_udp6(data, end);
	else if (eth->h_proto == htons(ETH_P_IP))
		udp = dns_udp4(data, end);
	else
		udp = NULL;
	if (!udp)
		return homegw_next_xdp(ctx);
	/* From here on the query is for our resolver: count what happens to it. */
	struct dns_answer *hit = NULL;
	outcome = DNS_STAT_PASSED;
	if (dns_l3_plain(data, v6, ntohs(udp->len)))
		hit = dns_lookup(udp, end, &q, &outcome);
	if (!hit) {
		dns_count(outcome);
		return homegw_next_xdp(ctx);
	}
	count = hit->count;
	if (count == 0 || count > DNS_MAX_ADDRS) {
		dns_count(DNS_STAT_PASSED);
		return homegw_next_xdp(ctx);
	}
	u64 now = bpf_ktime_get_coarse_ns();
	u64 expires = hit->expires_ns;
	ttl = expires > now ? (expires - now + NSEC - 1) / NSEC : 0;
	int old_len = end - data;
	int verdict = v6 ? dns_reply6(ctx, old_len, &q, hit, count, ttl)
			 : dns_reply4(ctx, old_len, &q, hit, count, ttl);
	if (verdict == XDP_PASS) { /* the frame could not be resized: unchanged */
		dns_count(DNS_STAT_NO_ROOM);
		return homegw_next_xdp(ctx);
	}
	dns_count(DNS_STAT_HITS);
	/* redirected back to the ingress, not XDP_TX: see homegw_tx_xdp */
	return verdict == XDP_TX ? homegw_tx_xdp(ctx) : verdict;
}
