/* The ceiling: a bare XDP redirect LAN -> WAN with a fixed MAC rewrite and
 * nothing else (no route, no TTL, no checksum). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>

int xdp_redirect_bare(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	const unsigned char src[ETH_ALEN] = { SRC_MAC };
	const unsigned char dst[ETH_ALEN] = { DST_MAC };

	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	return bpf_redirect(OUT_IFINDEX, 0);
}
