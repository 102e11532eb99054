/* homegw_ipv6.h: IPv6 parsing shared by the modules that look at IPv6 (the
 * router forwards it, the firewall filters it). Nothing here writes a packet.
 *
 * homegw_ipv6_walk finds the upper-layer header behind the extension
 * headers (RFC 8200 4), bounded: at most HOMEGW_IPV6_MAX_EXT headers within
 * the first HOMEGW_IPV6_MAX_EXT_BYTES bytes. What it cannot walk it reports
 * (a negative outcome); callers drop that, counted: never misparsed.
 */
#ifndef HOMEGW_IPV6_H
#define HOMEGW_IPV6_H

#include "homegw.h"
#include <uapi/linux/ipv6.h>
#include <uapi/linux/icmpv6.h>

#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

#define HOMEGW_IPV6_MAX_EXT 6          /* extension headers walked, at most */
#define HOMEGW_IPV6_MAX_EXT_BYTES 512  /* their bytes, at most */

#define HOMEGW_NEXTHDR_HOP 0
#define HOMEGW_NEXTHDR_ROUTING 43
#define HOMEGW_NEXTHDR_FRAGMENT 44
#define HOMEGW_NEXTHDR_ESP 50
#define HOMEGW_NEXTHDR_AH 51
#define HOMEGW_NEXTHDR_NONE 59
#define HOMEGW_NEXTHDR_DEST 60
#define HOMEGW_NEXTHDR_MOBILITY 135
#define HOMEGW_NEXTHDR_HIP 139
#define HOMEGW_NEXTHDR_SHIM6 140

/* struct homegw_l4v6.fragment */
#define HOMEGW_V6_NOT_FRAGMENT 0
#define HOMEGW_V6_FIRST_FRAGMENT 1 /* offset 0, more follow: upper layer present */
#define HOMEGW_V6_LATER_FRAGMENT 2 /* offset > 0: no upper-layer header here */

/* homegw_ipv6_walk's outcomes */
#define HOMEGW_V6_OK 0
#define HOMEGW_V6_TRUNCATED -1 /* a header runs past the frame */
#define HOMEGW_V6_TOO_MANY -2  /* over HOMEGW_IPV6_MAX_EXT headers or _EXT_BYTES */
#define HOMEGW_V6_HOP_NOT_FIRST -3 /* hop-by-hop options after another header (RFC 8200 4.1) */

/* What is behind the extension headers. */
struct homegw_l4v6 {
	__u8 proto;         /* upper-layer protocol: TCP, UDP, ICMPv6, ESP, NONE, ... */
	__u8 fragment;      /* HOMEGW_V6_*_FRAGMENT */
	__u8 hop_by_hop;    /* a hop-by-hop options header was present */
	__u8 routing_type;  /* type of the routing header, 0xff: none */
	__u8 segments_left; /* of the routing header */
	__u8 ext_count;     /* extension headers walked */
	__u16 l4_off;       /* offset of the upper-layer header from the IPv6 header */
	__be32 frag_id;     /* the fragment header's identification (network order) */
};

static __always_inline int homegw_ipv6_is_ext(__u8 next)
{
	return next == HOMEGW_NEXTHDR_HOP || next == HOMEGW_NEXTHDR_ROUTING ||
	       next == HOMEGW_NEXTHDR_FRAGMENT || next == HOMEGW_NEXTHDR_DEST ||
	       next == HOMEGW_NEXTHDR_AH || next == HOMEGW_NEXTHDR_MOBILITY ||
	       next == HOMEGW_NEXTHDR_HIP || next == HOMEGW_NEXTHDR_SHIM6;
}

/* Walk the extension headers of the IPv6 packet at ip6 (its fixed header
 * already bounds-checked); fills *out. HOMEGW_V6_OK or a negative outcome. */
static __always_inline int homegw_ipv6_walk(struct ipv6hdr *ip6, void *end, struct homegw_l4v6 *out)
{
	__u8 next = ip6->nexthdr;
	__u32 off = sizeof(*ip6);

	out->fragment = HOMEGW_V6_NOT_FRAGMENT;
	out->hop_by_hop = 0;
	out->routing_type = 0xff;
	out->segments_left = 0;
	out->ext_count = 0;
	out->frag_id = 0;
#pragma unroll
	for (int i = 0; i < HOMEGW_IPV6_MAX_EXT; i++) {
		if (!homegw_ipv6_is_ext(next))
			goto done;
		if (off > HOMEGW_IPV6_MAX_EXT_BYTES)
			return HOMEGW_V6_TOO_MANY;
		__u8 *hdr = (__u8 *)ip6 + off;
		if ((void *)(hdr + 8) > end)
			return HOMEGW_V6_TRUNCATED;
		out->ext_count++;
		if (next == HOMEGW_NEXTHDR_HOP) {
			if (i != 0)
				return HOMEGW_V6_HOP_NOT_FIRST;
			out->hop_by_hop = 1;
		}
		if (next == HOMEGW_NEXTHDR_FRAGMENT) {
			__be16 frag_off = *(__be16 *)(hdr + 2);
			out->frag_id = *(__be32 *)(hdr + 4);
			if (ntohs(frag_off) & 0xfff8) { /* offset > 0 */
				out->fragment = HOMEGW_V6_LATER_FRAGMENT;
				out->proto = hdr[0];
				out->l4_off = off + 8;
				return HOMEGW_V6_OK;
			}
			if (ntohs(frag_off) & 1) /* M: more fragments follow */
				out->fragment = HOMEGW_V6_FIRST_FRAGMENT;
			next = hdr[0];
			off += 8;
			continue;
		}
		if (next == HOMEGW_NEXTHDR_ROUTING) {
			out->routing_type = hdr[2];
			out->segments_left = hdr[3];
		}
		/* AH counts its length in 4-byte units (RFC 4302), the others in 8 */
		__u32 len = next == HOMEGW_NEXTHDR_AH ? ((__u32)hdr[1] + 2) * 4 : ((__u32)hdr[1] + 1) * 8;
		next = hdr[0];
		off += len;
	}
	if (homegw_ipv6_is_ext(next))
		return HOMEGW_V6_TOO_MANY;
done:
	if (off > HOMEGW_IPV6_MAX_EXT_BYTES)
		return HOMEGW_V6_TOO_MANY;
	out->proto = next;
	out->l4_off = off;
	return HOMEGW_V6_OK;
}

/* Address classes (RFC 4291), on addresses as they sit in the packet. */
static __always_inline int homegw_ipv6_is_multicast(const struct in6_addr *a)
{
	return a->s6_addr[0] == 0xff;
}

static __always_inline int homegw_ipv6_is_link_local(const struct in6_addr *a)
{
	return a->s6_addr[0] == 0xfe && (a->s6_addr[1] & 0xc0) == 0x80;
}

static __always_inline int homegw_ipv6_is_unspecified_or_loopback(const struct in6_addr *a)
{
	return !(a->s6_addr32[0] | a->s6_addr32[1] | a->s6_addr32[2]) &&
	       (a->s6_addr32[3] == 0 || a->s6_addr32[3] == htonl(1));
}

/* ::ffff:0:0/96 (IPv4-mapped) and ::/96 (IPv4-compatible): never on the wire */
static __always_inline int homegw_ipv6_is_v4_embedded(const struct in6_addr *a)
{
	return !(a->s6_addr32[0] | a->s6_addr32[1]) &&
	       (a->s6_addr32[2] == 0 || a->s6_addr32[2] == htonl(0xffff));
}

/* Not a unicast source anybody may use beyond its link (RFC 4291, RFC 6890):
 * multicast, unspecified, loopback, IPv4-mapped/compatible. */
static __always_inline int homegw_ipv6_is_martian_source(const struct in6_addr *a)
{
	return homegw_ipv6_is_multicast(a) || homegw_ipv6_is_unspecified_or_loopback(a) ||
	       homegw_ipv6_is_v4_embedded(a);
}

static __always_inline int homegw_ipv6_equal(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->s6_addr32[0] == b->s6_addr32[0] && a->s6_addr32[1] == b->s6_addr32[1] &&
	       a->s6_addr32[2] == b->s6_addr32[2] && a->s6_addr32[3] == b->s6_addr32[3];
}

/* Whether the first 64 bits equal those of prefix (a /64). */
static __always_inline int homegw_ipv6_in_64(const struct in6_addr *a, const struct in6_addr *prefix)
{
	return a->s6_addr32[0] == prefix->s6_addr32[0] && a->s6_addr32[1] == prefix->s6_addr32[1];
}

#endif /* HOMEGW_IPV6_H */
