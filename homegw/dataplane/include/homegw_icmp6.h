/* homegw_icmp6.h: ICMPv6 errors (RFC 4443) built in place in XDP.
 * Plain helpers (no map access), so modules may #include this file; the
 * caller rate-limits and sends the result with homegw_tx_xdp. */
#ifndef HOMEGW_ICMP6_H
#define HOMEGW_ICMP6_H

#include "homegw_ipv6.h"
#include "homegw_icmp.h"

/* An ICMPv6 error is at most the IPv6 minimum MTU (RFC 4443 2.4 c): its own
 * IPv6 and ICMPv6 headers, then as much of the offending packet as fits. */
#define HOMEGW_ICMP6_ERROR_MAX 1280
#define HOMEGW_ICMP6_HEADERS (sizeof(struct ipv6hdr) + 8)
#define HOMEGW_ICMP6_QUOTE_MAX (HOMEGW_ICMP6_ERROR_MAX - HOMEGW_ICMP6_HEADERS)
#define HOMEGW_ICMP6_BODY_MAX (HOMEGW_ICMP6_ERROR_MAX - sizeof(struct ipv6hdr))
#define HOMEGW_SUM6_BLOCK 256 /* bytes a bpf_csum_diff call sums here */
#define HOMEGW_ICMP6_HOP_LIMIT 64 /* as Linux sends its own */

#define HOMEGW_ICMP6_DEST_UNREACH 1
#define HOMEGW_ICMP6_PACKET_TOO_BIG 2
#define HOMEGW_ICMP6_TIME_EXCEEDED 3
#define HOMEGW_ICMP6_NO_ROUTE 0    /* destination unreachable: no route to destination */
#define HOMEGW_ICMP6_HOP_EXCEEDED 0 /* time exceeded: hop limit exceeded in transit */

/* One's complement sum (unfolded) of the bytes from p to end, at most
 * HOMEGW_ICMP6_BODY_MAX of them: 256-byte blocks through bpf_csum_diff, the
 * rest (under 256 bytes) by homegw_sum_to_end. */
static __always_inline __u32 homegw_sum6_to_end(void *p, void *end)
{
	__u64 sum = 0;

	for (int i = 0; i < HOMEGW_ICMP6_BODY_MAX / HOMEGW_SUM6_BLOCK; i++) {
		if (p + HOMEGW_SUM6_BLOCK > end)
			break;
		sum += (__u32)bpf_csum_diff(0, 0, p, HOMEGW_SUM6_BLOCK, 0);
		p += HOMEGW_SUM6_BLOCK;
	}
	sum += homegw_sum_to_end(p, end);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

/* Whether RFC 4443 2.4 (e) allows an error of `type` about this packet, as
 * far as it tells: never about an ICMPv6 error (types below 128; a later
 * fragment cannot tell, so none about it either), nor to a source that is
 * not one host (multicast, unspecified, loopback, IPv4-embedded), nor about a
 * packet to a multicast address unless it is a packet too big. l4 is the
 * walk of ip6's extension headers (homegw_ipv6_walk, HOMEGW_V6_OK). */
static __always_inline int homegw_icmp6_error_allowed(struct ipv6hdr *ip6, void *end,
						      const struct homegw_l4v6 *l4, __u8 type)
{
	if (homegw_ipv6_is_martian_source(&ip6->saddr))
		return 0;
	if (homegw_ipv6_is_multicast(&ip6->daddr) && type != HOMEGW_ICMP6_PACKET_TOO_BIG)
		return 0;
	if (l4->proto != IPPROTO_ICMPV6)
		return 1;
	if (l4->fragment == HOMEGW_V6_LATER_FRAGMENT)
		return 0;
	__u8 *icmp_type = (__u8 *)ip6 + (l4->l4_off & 0x3ff);
	if ((void *)(icmp_type + 1) > end)
		return 0; /* cannot tell: send nothing */
	return *icmp_type >= 128; /* informational (echo, ...): an error may be sent */
}

/* Turn the frame into an ICMPv6 error about it, to be sent back out of the
 * NIC it came in on: Ethernet addresses swapped, a new IPv6 header from src
 * to the offender's source, the ICMPv6 header (type, code, 4 bytes `rest`,
 * network order: the MTU of a packet too big), then as much of the offending
 * packet as fits in HOMEGW_ICMP6_ERROR_MAX bytes; the checksum covers the
 * pseudo-header (RFC 8200 8.1). Returns -1 (frame unchanged) for a frame
 * without a whole IPv6 header and the payload it claims. The caller checks
 * homegw_icmp6_error_allowed. */
static __always_inline int homegw_icmp6_error_xdp(struct xdp_md *ctx, __u8 type, __u8 code,
						  const struct in6_addr *src, __be32 rest)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	unsigned char mac_us[ETH_ALEN], mac_them[ETH_ALEN];
	struct in6_addr offender, from = *src;

	if ((void *)(ip6 + 1) > end)
		return -1;
	__u32 total = sizeof(*ip6) + ntohs(ip6->payload_len);
	if (data + ETH_HLEN + total > end)
		return -1;
	__u32 quote = total < HOMEGW_ICMP6_QUOTE_MAX ? total : HOMEGW_ICMP6_QUOTE_MAX;
	__builtin_memcpy(mac_us, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(mac_them, eth->h_source, ETH_ALEN);
	offender = ip6->saddr;

	/* Room in front: the offending packet then sits right after the new
	 * ICMPv6 header, where the quote belongs; the tail is cut after it. */
	if (bpf_xdp_adjust_head(ctx, -(int)HOMEGW_ICMP6_HEADERS))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	int length = ETH_HLEN + HOMEGW_ICMP6_HEADERS + quote;
	if (bpf_xdp_adjust_tail(ctx, length - (int)(end - data)))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + HOMEGW_ICMP6_HEADERS > end)
		return -1;

	eth = data;
	ip6 = data + ETH_HLEN;
	__u8 *icmp = (void *)(ip6 + 1);
	__u16 body = HOMEGW_ICMP6_HEADERS - sizeof(*ip6) + quote;

	__builtin_memcpy(eth->h_dest, mac_them, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac_us, ETH_ALEN);
	eth->h_proto = htons(ETH_P_IPV6);

	*(__be32 *)ip6 = htonl(0x60000000); /* version 6, traffic class and flow label 0 */
	ip6->payload_len = htons(body);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = HOMEGW_ICMP6_HOP_LIMIT;
	ip6->saddr = from;
	ip6->daddr = offender;

	icmp[0] = type;
	icmp[1] = code;
	*(__u16 *)(icmp + 2) = 0;
	*(__be32 *)(icmp + 4) = rest;
	/* pseudo-header: both addresses, the upper-layer length, next header */
	__u64 sum = (__u32)bpf_csum_diff(0, 0, (__be32 *)&ip6->saddr, 32, 0);
	sum += htons(body);
	sum += htons(IPPROTO_ICMPV6);
	sum += homegw_sum6_to_end(icmp, end);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	*(__u16 *)(icmp + 2) = homegw_csum_fold((__u32)sum);
	return 0;
}

#endif /* HOMEGW_ICMP6_H */
