/* homegw_icmp.h: checksums and ICMPv4 errors built in place in XDP.
 * Plain helpers (no map access), so modules may #include this file. */
#ifndef HOMEGW_ICMP_H
#define HOMEGW_ICMP_H

#include <uapi/linux/icmp.h>

#define HOMEGW_ICMP_QUOTE 28 /* offending IPv4 header (IHL 5) + 8 bytes (RFC 792) */
#define HOMEGW_ICMP_ERROR_LEN \
	(ETH_HLEN + sizeof(struct iphdr) + sizeof(struct icmphdr) + HOMEGW_ICMP_QUOTE)

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

/* Turn the frame into an ICMP error about it, to be sent back with XDP_TX:
 * Ethernet addresses swapped, a new IPv4 header from src_ip to the offender's
 * source, the ICMP header (type, code, 4 bytes `rest`, network order), then
 * the offending IPv4 header and its first 8 payload bytes. Only IHL 5
 * offenders of at least 28 IP bytes; returns -1 (frame unchanged) otherwise. */
static __always_inline int homegw_icmp_error_xdp(struct xdp_md *ctx, __u8 type, __u8 code,
						 __be32 src_ip, __be32 rest)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	unsigned char mac_us[ETH_ALEN], mac_them[ETH_ALEN];
	const int grow = sizeof(struct iphdr) + sizeof(struct icmphdr);

	if (data + ETH_HLEN + HOMEGW_ICMP_QUOTE > end || ip->ihl != 5)
		return -1;
	__builtin_memcpy(mac_us, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(mac_them, eth->h_source, ETH_ALEN);
	__be32 offender = ip->saddr;

	/* Room in front: the offending IP header then sits right after the new
	 * ICMP header, where the quote belongs. */
	if (bpf_xdp_adjust_head(ctx, -grow))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (bpf_xdp_adjust_tail(ctx, (int)HOMEGW_ICMP_ERROR_LEN - (int)(end - data)))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + HOMEGW_ICMP_ERROR_LEN > end)
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
	ip->tot_len = htons(HOMEGW_ICMP_ERROR_LEN - ETH_HLEN);
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
	__u16 *word = (__u16 *)icmp;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (sizeof(struct icmphdr) + HOMEGW_ICMP_QUOTE) / 2; i++)
		sum += word[i];
	icmp->checksum = homegw_csum_fold(sum);
	return 0;
}

#endif /* HOMEGW_ICMP_H */
