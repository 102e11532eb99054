/* The dataplane's fragment program, in chain_fragment[0]: the chain's end
 * (homegw_finish_xdp) tail-calls it for a packet the router marked
 * HOMEGW_F_FRAGMENT, after every module (NAT included) has done its work.
 * It hands the packet to the slow path (module HOMEGW_DATAPLANE_ID, reason
 * HOMEGW_REASON_FRAGMENT, meta0 egress ifindex, meta1 egress NIC), whose
 * fragmenter (fragment.py) sends the fragments out of the egress NIC, and
 * drops it here. The router never marks a frame the punt cannot carry whole;
 * should one come, it is dropped. */
#include "homegw.h"

int homegw_fragment_xdp(struct xdp_md *ctx)
{
	struct homegw_cursor *cur = homegw_cursor_xdp();

	if (cur && ctx->data_end - ctx->data <= HOMEGW_PUNT_MAX_BYTES)
		homegw_punt_as_xdp(ctx, HOMEGW_DATAPLANE_ID, HOMEGW_REASON_FRAGMENT,
				   cur->out_ifindex, cur->out_nic);
	return XDP_DROP;
}
