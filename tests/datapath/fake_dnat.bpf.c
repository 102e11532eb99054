/* Test double of NAT's inbound translation, for the router's ICMP quotes:
 * UDP or TCP to 203.0.113.2:8081 becomes one to 192.168.1.11:8000, with
 * HOMEGW_F_DNAT and the destination as sent in the cursor, as NAT does. */
#include "homegw.h"
#include "homegw_icmp.h"

int fake_dnat_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports = (void *)(ip + 1);
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (!cur || (void *)(ports + 10) > end || ip->ihl != 5 ||
	    ip->daddr != htonl(0xcb007102) || ports[1] != htons(8081))
		return homegw_next_xdp(ctx);
	__u16 *sum;
	if (ip->protocol == IPPROTO_UDP)
		sum = &ports[3];
	else if (ip->protocol == IPPROTO_TCP)
		sum = &ports[8];
	else
		return homegw_next_xdp(ctx);
	__be32 addr = htonl(0xc0a8010b);
	__be16 port = htons(8000);

	cur->flags |= HOMEGW_F_DNAT;
	cur->orig_daddr = ip->daddr;
	cur->orig_dport = ports[1];
	homegw_csum_replace4(sum, ip->daddr, addr);
	homegw_csum_replace2(sum, ports[1], port);
	homegw_csum_replace4(&ip->check, ip->daddr, addr);
	ip->daddr = addr;
	ports[1] = port;
	return homegw_next_xdp(ctx);
}
