/* homegw_icmp.h: checksums and ICMPv4 errors built in place in XDP.
 * Plain helpers (no map access), so modules may #include this file. */
#ifndef HOMEGW_ICMP_H
#define HOMEGW_ICMP_H

#include <uapi/linux/icmp.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

/* An ICMP error is at most 576 IP bytes (RFC 1812 4.3.2.3): its own IPv4
 * and ICMP headers, then as much of the offending packet as fits. */
#define HOMEGW_ICMP_ERROR_MAX 576
#define HOMEGW_ICMP_HEADERS (sizeof(struct iphdr) + sizeof(struct icmphdr))
#define HOMEGW_ICMP_QUOTE_MAX (HOMEGW_ICMP_ERROR_MAX - HOMEGW_ICMP_HEADERS)
#define HOMEGW_SUM_BLOCK 64 /* bytes a bpf_csum_diff call sums (it takes <= 512) */

#define HOMEGW_IP_DF 0x4000
#define HOMEGW_IP_MF 0x2000
#define HOMEGW_IP_OFFSET 0x1fff

static __always_inline __u16 homegw_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Folded one's complement sum of a 20-byte IPv4 header: with check = 0 it
 * is the checksum to write; over a received header it is 0 when intact. */
static __always_inline __u16 homegw_ip_csum(struct iphdr *ip)
{
	__u16 *word = (__u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	return homegw_csum_fold(sum);
}

/* Nonzero when a 20-byte IPv4 header's checksum is wrong. */
static __always_inline int homegw_ip_csum_check(struct iphdr *ip)
{
	return homegw_ip_csum(ip) != 0;
}

/* One's complement sum (unfolded) of the bytes from p to end, at most
 * HOMEGW_ICMP_ERROR_MAX + 8 of them: blocks through bpf_csum_diff, then
 * 16-bit words, then an odd last byte as the high half of a zero-padded
 * word. Bounded loops with a bounds check each, as the verifier wants. */
static __always_inline __u32 homegw_sum_to_end(void *p, void *end)
{
	__u64 sum = 0;

	for (int i = 0; i < (HOMEGW_ICMP_ERROR_MAX + 8) / HOMEGW_SUM_BLOCK; i++) {
		if (p + HOMEGW_SUM_BLOCK > end)
			break;
		sum += (__u32)bpf_csum_diff(0, 0, p, HOMEGW_SUM_BLOCK, 0);
		p += HOMEGW_SUM_BLOCK;
	}
	for (int i = 0; i < HOMEGW_SUM_BLOCK / 2; i++) {
		if (p + 2 > end)
			break;
		sum += *(__u16 *)p;
		p += 2;
	}
	if (p + 1 <= end) {
		__u16 last = 0;
		*(__u8 *)&last = *(__u8 *)p;
		sum += last;
	}
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

/* The cases RFC 1812 4.3.2.7 forbids an ICMP error for, as far as the
 * packet tells (the caller adds the link layer and its subnet broadcast):
 * a non-first fragment, an ICMP error, a source that is not one host (0/8,
 * 127/8, multicast, class E and broadcast), a multicast or broadcast
 * destination. ip must lie in the frame with its IHL checked. */
static __always_inline int homegw_icmp_error_allowed(struct iphdr *ip, void *end)
{
	__u32 src = ntohl(ip->saddr), dst = ntohl(ip->daddr);

	if (ip->frag_off & htons(HOMEGW_IP_OFFSET))
		return 0;
	if ((src >> 24) == 0 || (src >> 24) == 127 || (src >> 28) >= 0xe)
		return 0;
	if ((dst >> 28) >= 0xe) /* multicast, class E, 255.255.255.255 */
		return 0;
	if (ip->protocol != IPPROTO_ICMP)
		return 1;
	__u8 *type = (void *)ip + ip->ihl * 4;
	if ((void *)(type + 1) > end)
		return 0; /* cannot tell: send nothing */
	switch (*type) {
	case ICMP_ECHOREPLY:
	case ICMP_ECHO:
	case ICMP_TIMESTAMP:
	case ICMP_TIMESTAMPREPLY:
	case ICMP_INFO_REQUEST:
	case ICMP_INFO_REPLY:
	case ICMP_ADDRESS:
	case ICMP_ADDRESSREPLY:
		return 1; /* queries */
	default:
		return 0; /* errors, and types unknown to RFC 1812: no error about them */
	}
}

/* Undo an inbound destination translation in the offending packet before it
 * is quoted: destination address (IP checksum fixed) and the TCP/UDP
 * destination port or ICMP echo identifier (their checksum fixed). Fields
 * past the end of the frame are left: they are not quoted anyway. */
static __always_inline void homegw_quote_untranslate(struct iphdr *ip, void *end,
						     __be32 orig_daddr, __be16 orig_dport)
{
	__be32 daddr = ip->daddr;
	void *l4 = (void *)ip + ip->ihl * 4;

	homegw_csum_replace4(&ip->check, daddr, orig_daddr);
	ip->daddr = orig_daddr;
	if (ip->frag_off & htons(HOMEGW_IP_OFFSET))
		return;
	if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) {
		__be16 *dport = l4 + 2;
		if ((void *)(dport + 1) > end)
			return;
		__be16 port = *dport;
		*dport = orig_dport;
		__u16 *sum = ip->protocol == IPPROTO_UDP ? l4 + 6 : l4 + 16;
		if ((void *)(sum + 1) > end || (ip->protocol == IPPROTO_UDP && !*sum))
			return; /* not quoted, or a UDP datagram without checksum */
		homegw_csum_replace4(sum, daddr, orig_daddr);
		homegw_csum_replace2(sum, port, orig_dport);
		if (ip->protocol == IPPROTO_UDP && !*sum)
			*sum = 0xffff;
	} else if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > end)
			return;
		__be16 id = icmp->un.echo.id;
		icmp->un.echo.id = orig_dport;
		homegw_csum_replace2(&icmp->checksum, id, orig_dport);
	}
}

/* Turn the frame into an ICMP error about it, to be sent back out of the
 * NIC it came in on: Ethernet addresses swapped, a new IPv4 header from
 * src_ip to the offender's source, the ICMP header (type, code, 4 bytes
 * `rest`, network order), then as much of the offending packet as fits in
 * HOMEGW_ICMP_ERROR_MAX bytes. With orig_daddr nonzero the quote shows the
 * packet as it was before an inbound translation (homegw_quote_untranslate).
 * Returns -1 (frame unchanged) for a frame without a whole IPv4 header and
 * the total length it claims. The caller checks homegw_icmp_error_allowed. */
static __always_inline int homegw_icmp_error_quoting_xdp(struct xdp_md *ctx, __u8 type,
							 __u8 code, __be32 src_ip, __be32 rest,
							 __be32 orig_daddr, __be16 orig_dport)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	unsigned char mac_us[ETH_ALEN], mac_them[ETH_ALEN];

	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return -1;
	__u32 total = ntohs(ip->tot_len);
	if (total < ip->ihl * 4 || data + ETH_HLEN + total > end)
		return -1;
	__u32 quote = total < HOMEGW_ICMP_QUOTE_MAX ? total : HOMEGW_ICMP_QUOTE_MAX;
	if (orig_daddr)
		homegw_quote_untranslate(ip, end, orig_daddr, orig_dport);
	__builtin_memcpy(mac_us, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(mac_them, eth->h_source, ETH_ALEN);
	__be32 offender = ip->saddr;

	/* Room in front: the offending IP header then sits right after the new
	 * ICMP header, where the quote belongs; the tail is cut after the quote. */
	if (bpf_xdp_adjust_head(ctx, -(int)HOMEGW_ICMP_HEADERS))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	int length = ETH_HLEN + HOMEGW_ICMP_HEADERS + quote;
	if (bpf_xdp_adjust_tail(ctx, length - (int)(end - data)))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + HOMEGW_ICMP_HEADERS > end)
		return -1;

	eth = data;
	ip = data + ETH_HLEN;
	struct icmphdr *icmp = (void *)(ip + 1);

	__builtin_memcpy(eth->h_dest, mac_them, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac_us, ETH_ALEN);
	eth->h_proto = htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0xc0; /* internetwork control, as Linux sends its errors */
	ip->tot_len = htons(HOMEGW_ICMP_HEADERS + quote);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->saddr = src_ip;
	ip->daddr = offender;
	ip->check = 0;
	ip->check = homegw_ip_csum(ip);

	icmp->type = type;
	icmp->code = code;
	icmp->checksum = 0;
	icmp->un.gateway = rest;
	icmp->checksum = homegw_csum_fold(homegw_sum_to_end(icmp, end));
	return 0;
}

/* The same without a translation to undo. */
static __always_inline int homegw_icmp_error_xdp(struct xdp_md *ctx, __u8 type, __u8 code,
						 __be32 src_ip, __be32 rest)
{
	return homegw_icmp_error_quoting_xdp(ctx, type, code, src_ip, rest, 0, 0);
}

#endif /* HOMEGW_ICMP_H */
