/* "dns": the XDP fast path of the DNS forwarder (LAN chain).
 *
 * A UDP query to DNS_LAN_ADDR:53 asking one A question (class IN), without
 * EDNS or with a plain EDNS0 OPT record (version 0, no options), whose
 * lower-cased name is in dns_cache with a deadline still ahead, is turned into
 * its reply in place and sent back out of the NIC it came in on (redirected
 * to the ingress, homegw_tx_xdp: a veth peer wakes for it, unlike XDP_TX):
 * MACs, addresses and ports swapped, QR/RA set (RD and CD kept), the A
 * records appended after the question (owner = pointer to the question),
 * our OPT record after them if the query had one, IP total length and
 * checksum, UDP length fixed, UDP checksum 0 (allowed for IPv4).
 * The TTL is the whole seconds left to the deadline, rounded up, so it
 * counts down like the Python cache's.
 *
 * Anything else (a miss, an expired entry, another type, EDNS options, IP
 * options, fragments, traffic for other addresses) goes on down the chain
 * unchanged and reaches the Python resolver on the gateway's socket, which
 * fills dns_cache with every answer that fits.
 *
 * Compile-time: DNS_LAN_ADDR (host byte order), DNS_CACHE_SIZE.
 * Keep the structs in step with homegw/modules/dns/fastpath.py. */
#include "homegw.h"
#include "homegw_icmp.h"
#include <uapi/linux/udp.h>

#define DNS_KEY_NAME 128 /* longest name (wire form) the fast path keys on */
#define DNS_MAX_ADDRS 8
#define DNS_PORT 53
#define DNS_TYPE_A 1
#define DNS_CLASS_IN 1
#define DNS_TYPE_OPT 41
#define DNS_OUR_UDP 1232
#define DNS_IP_TTL 64
#define NSEC 1000000000ULL

/* dns_stats indices; fastpath.py reads the names. */
enum dns_stat {
	DNS_STAT_HITS,
	DNS_STAT_MISSES,
	DNS_STAT_EXPIRED,
	DNS_STAT_PASSED, /* a query to us the fast path does not handle */
	DNS_STAT_COUNT,
};

struct dns_key {
	__u8 name[DNS_KEY_NAME]; /* qname wire bytes, lower-cased, zero-padded */
	__u16 qtype;             /* host byte order */
	__u16 pad;
};

struct dns_answer {
	__u64 expires_ns; /* CLOCK_MONOTONIC deadline (bpf_ktime_get_*_ns clock) */
	__u32 count;      /* A records, 1..DNS_MAX_ADDRS */
	__u32 pad;
	__u8 addrs[DNS_MAX_ADDRS][4]; /* network byte order */
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

/* Turn the (already validated) query into the reply; the packet already has
 * its final length. Returns XDP_TX, or XDP_DROP if bounds do not hold. */
static __always_inline int dns_write_reply(struct xdp_md *ctx, u32 name_len, int has_opt,
					   struct dns_answer *ans, u32 count, u32 ttl)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	struct dns_hdr *dns = (void *)(udp + 1);
	unsigned char mac[ETH_ALEN];
	__be32 addr;
	__be16 port;
	u8 *cursor;
	u32 i;

	if ((void *)(dns + 1) > end || name_len > DNS_KEY_NAME || count > DNS_MAX_ADDRS)
		return XDP_DROP;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	u32 udp_len = sizeof(*udp) + sizeof(*dns) + name_len + 4 +
		      count * sizeof(struct dns_rr_a) + (has_opt ? sizeof(struct dns_opt) : 0);
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

	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->len = htons(udp_len);
	udp->check = 0;

	dns->flags = (dns->flags & htons(0x0110)) | htons(0x8080); /* keep RD, CD; set QR, RA */
	dns->ancount = htons(count);
	dns->nscount = 0;
	dns->arcount = htons(has_opt ? 1 : 0);

	/* The mask restates the bound checked above in a form the verifier keeps
	 * through register spills: variable packet offsets must stay small. The
	 * records are then written through a pointer advanced by constants. */
	name_len &= 0xff;
	/* Hide count's bound from clang, or it drops "i < DNS_MAX_ADDRS" from
	 * the loop below (count <= 8 implies it), and the verifier, which does
	 * not know that bound, would see a read past the map value. */
	asm volatile("" : "+r"(count));
	cursor = (u8 *)(dns + 1) + name_len + 4;
#pragma unroll
	for (i = 0; i < DNS_MAX_ADDRS; i++) {
		struct dns_rr_a *rr = (void *)cursor;

		if (i >= count)
			break;
		if ((void *)(rr + 1) > end)
			return XDP_DROP;
		rr->name = htons(0xc00c);
		rr->type = htons(DNS_TYPE_A);
		rr->class = htons(DNS_CLASS_IN);
		rr->ttl = htonl(ttl);
		rr->rdlength = htons(4);
		__builtin_memcpy(rr->addr, ans->addrs[i], 4);
		cursor += sizeof(*rr);
	}
	if (has_opt) {
		struct dns_opt *opt = (void *)cursor;

		if ((void *)(opt + 1) > end)
			return XDP_DROP;
		opt->name = 0;
		opt->type = htons(DNS_TYPE_OPT);
		opt->udp_size = htons(DNS_OUR_UDP);
		opt->ext_rcode = 0;
		opt->version = 0;
		opt->flags = 0;
		opt->rdlength = 0;
	}
	return XDP_TX;
}

int dns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	struct dns_hdr *dns = (void *)(udp + 1);
	struct dns_key key = {};
	u32 name_len, ttl, count, query_len;
	int has_opt;
	u8 *tail;

	if ((void *)(dns + 1) > end || eth->h_proto != htons(ETH_P_IP))
		return homegw_next_xdp(ctx);
	if (ip->daddr != htonl(DNS_LAN_ADDR) || ip->protocol != IPPROTO_UDP ||
	    udp->dest != htons(DNS_PORT))
		return homegw_next_xdp(ctx);
	/* From here on the query is for our resolver: count what happens to it. */
	if (ip->ihl != 5 || (ip->frag_off & htons(0x3fff)) || (dns->flags & htons(0xfa00)) ||
	    dns->qdcount != htons(1) || dns->ancount || dns->nscount ||
	    (dns->arcount != 0 && dns->arcount != htons(1)))
		goto pass;
	has_opt = dns->arcount != 0;
	name_len = ntohs(udp->len) - sizeof(*udp) - sizeof(*dns) - 4 -
		   (has_opt ? sizeof(struct dns_opt) : 0);
	name_len = dns_forget_value(name_len > DNS_KEY_NAME ? 0 : name_len);
	if (name_len == 0 || name_len > DNS_KEY_NAME)
		goto pass;
	query_len = sizeof(*udp) + sizeof(*dns) + name_len + 4 + (has_opt ? sizeof(struct dns_opt) : 0);
	if (ip->tot_len != htons(sizeof(*ip) + query_len))
		goto pass;
	tail = (u8 *)(dns + 1) + name_len;
	if ((void *)(tail + 4) > end)
		goto pass;
	if (tail[-1] != 0 || tail[0] != 0 || tail[1] != DNS_TYPE_A || tail[2] != 0 ||
	    tail[3] != DNS_CLASS_IN)
		goto pass;
	if (has_opt && !dns_plain_opt(tail + 4, end))
		goto pass;
	if (dns_read_name((u8 *)(dns + 1), end, name_len, &key))
		goto pass;

	key.qtype = DNS_TYPE_A;
	struct dns_answer *hit = dns_cache.lookup(&key);
	if (!hit) {
		dns_count(DNS_STAT_MISSES);
		return homegw_next_xdp(ctx);
	}
	u64 expires = hit->expires_ns;
	u64 now = bpf_ktime_get_coarse_ns();
	if (now >= expires) {
		dns_cache.delete(&key);
		dns_count(DNS_STAT_EXPIRED);
		return homegw_next_xdp(ctx);
	}
	count = hit->count;
	if (count == 0 || count > DNS_MAX_ADDRS)
		goto pass;
	ttl = (expires - now + NSEC - 1) / NSEC;

	int old_len = end - data;
	int new_len = sizeof(*eth) + sizeof(*ip) + query_len + count * sizeof(struct dns_rr_a);
	if (bpf_xdp_adjust_tail(ctx, new_len - old_len))
		goto pass;
	dns_count(DNS_STAT_HITS);
	int verdict = dns_write_reply(ctx, name_len, has_opt, hit, count, ttl);
	/* redirected back to the ingress, not XDP_TX: see homegw_tx_xdp */
	return verdict == XDP_TX ? homegw_tx_xdp(ctx) : verdict;

pass:
	dns_count(DNS_STAT_PASSED);
	return homegw_next_xdp(ctx);
}
