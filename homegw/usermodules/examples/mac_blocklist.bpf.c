/* MAC blocklist (an example user IO module): frames from a LAN device whose
 * MAC is in the `blocked` map end at the gateway's LAN port.
 *
 * LAN NIC, XDP, first in the chain. Outcomes, each counted:
 *   source MAC in `blocked`  dropped (blocked)
 *   any other frame          the next module (passed)
 *   shorter than an Ethernet header: the next module (short; the modules
 *     after it drop what they cannot parse)
 * Through the API: PUT /api/v1/modules/user/mac_blocklist/maps/blocked with
 * {"key": "<the MAC's 12 hex digits>0000", "value": "01"} blocks a device,
 * DELETE .../maps/blocked/<key> lets it back. A gateway sees only the frames
 * sent to it: two LAN hosts on the same switch still reach each other.
 */
#include "homegw_user.h"

#define BLOCKED_MAX 1024

enum { PASSED, BLOCKED, SHORT };

// <device MAC (hgw_mac_key: the 6 bytes, 2 zero), 1: its frames are dropped>
BPF_HASH(blocked, __u64, __u8, BLOCKED_MAX);

int mac_blocklist(struct xdp_md *ctx)
{
	struct hgw_packet p;

	if (hgw_parse_xdp(ctx, &p) < 0) {
		hgw_count(SHORT);
		return hgw_next_xdp(ctx);
	}
	__u64 key = hgw_mac_key(p.eth->h_source);
	if (blocked.lookup(&key)) {
		hgw_count(BLOCKED);
		return XDP_DROP;
	}
	hgw_count(PASSED);
	return hgw_next_xdp(ctx);
}
