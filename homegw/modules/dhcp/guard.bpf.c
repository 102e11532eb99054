/* "dhcp": the lease-aware LAN datapath of the DHCP module (XDP, LAN chain).
 *
 * The DHCP server publishes every MAC <-> address binding in dhcp_bindings.
 * For each frame from the LAN this module
 *   - accounts packets and bytes per device (source MAC) that has a binding;
 *   - with the source guard on (dhcp_guard_config.enabled), drops
 *       IPv4 whose source address is not the binding of the source MAC,
 *       except DHCP client -> server (UDP 68 -> 67, any source: a client
 *       with no or a lost lease must always reach the server);
 *       ARP whose sender address is not the binding of the source MAC, or
 *       whose sender MAC differs from the frame's, except sender 0.0.0.0
 *       (RFC 5227 probes). A dropped answer to an ARP probe (target
 *       0.0.0.0) is punted to the slow path first, so the DHCP server still
 *       sees the conflict it probed for;
 *     frames from the gateway's own MAC and non-IPv4/ARP frames pass;
 *   - counts every drop, then hands allowed frames to the next module.
 */
#include "homegw.h"
#include <uapi/linux/udp.h>
#include <uapi/linux/if_arp.h>

#ifndef DHCP_MAX_BINDINGS
#define DHCP_MAX_BINDINGS 4096
#endif
#define DHCP_BINDING_LEASED 1   /* keep in step with service.py */
#define DHCP_BINDING_RESERVED 2
#define DHCP_REASON_PROBE_ANSWER 1

/* Guard counters (index of dhcp_guard_stats); keep in step with module.py. */
#define GUARD_CHECKED 0      /* frames the guard examined (guard on) */
#define GUARD_DROP_IPV4 1    /* IPv4 with a source not bound to the MAC */
#define GUARD_DROP_ARP 2     /* ARP with a sender not bound to the MAC */
#define GUARD_DEVICES_FULL 3 /* no room in dhcp_devices for a bound MAC */
#define GUARD_COUNTERS 4

struct dhcp_mac {
	__u8 addr[6];
	__u16 pad; /* always 0 */
};

struct dhcp_binding {
	__be32 ipv4;  /* network byte order */
	__u32 flags;  /* DHCP_BINDING_* */
};

struct dhcp_device {
	__u64 packets;
	__u64 bytes;
	__u64 dropped;
};

struct dhcp_guard_config {
	__u32 enabled;
	__u8 gateway_mac[6];
	__u16 pad;
};

struct arp_ipv4 {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

// <source MAC (6 bytes + 2 zero bytes), struct dhcp_binding {ipv4 (network order), flags LEASED 1 | RESERVED 2}>:
// written by the DHCP server on ACK / RELEASE / DECLINE / expiry; read here.
BPF_TABLE_PINNED("hash", struct dhcp_mac, struct dhcp_binding, dhcp_bindings, DHCP_MAX_BINDINGS,
		 HOMEGW_PIN("dhcp_bindings"));
// <source MAC of a bound device, per-CPU {packets, bytes, dropped} received from it on the LAN>
BPF_TABLE_PINNED("percpu_hash", struct dhcp_mac, struct dhcp_device, dhcp_devices,
		 2 * DHCP_MAX_BINDINGS, HOMEGW_PIN("dhcp_devices"));
// <GUARD_* counter index, per-CPU count>
BPF_TABLE_PINNED("percpu_array", u32, u64, dhcp_guard_stats, GUARD_COUNTERS,
		 HOMEGW_PIN("dhcp_guard_stats"));
// <0, guard settings>: written by DhcpModule.on_load (not pinned: config, not state)
BPF_ARRAY(dhcp_guard_config, struct dhcp_guard_config, 1);

static __always_inline void guard_count(u32 index)
{
	u64 *value = dhcp_guard_stats.lookup(&index);
	if (value)
		*value += 1; /* per-CPU: no atomic needed */
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

static __always_inline void account(struct dhcp_mac *key, __u64 bytes, int dropped)
{
	struct dhcp_device *dev = dhcp_devices.lookup(key);
	if (!dev) {
		struct dhcp_device zero = {};
		if (dhcp_devices.update(key, &zero) != 0) {
			guard_count(GUARD_DEVICES_FULL);
			return;
		}
		dev = dhcp_devices.lookup(key);
		if (!dev)
			return;
	}
	if (dropped) {
		dev->dropped += 1;
	} else {
		dev->packets += 1;
		dev->bytes += bytes;
	}
}

/* 1 when the IPv4 packet may pass the guard. */
static __always_inline int ipv4_allowed(struct iphdr *ip, void *end, struct dhcp_binding *b)
{
	if (b && b->ipv4 == ip->saddr)
		return 1;
	if (ip->protocol != IPPROTO_UDP || (ip->frag_off & htons(0x1fff)))
		return 0;
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end)
		return 0;
	return udp->source == htons(68) && udp->dest == htons(67);
}

/* 1 when the ARP packet may pass the guard; a dropped probe answer is punted. */
static __always_inline int arp_allowed(struct xdp_md *ctx, struct ethhdr *eth, struct arp_ipv4 *arp,
				       struct dhcp_binding *b)
{
	if (arp->htype != htons(ARPHRD_ETHER) || arp->ptype != htons(ETH_P_IP) ||
	    arp->hlen != 6 || arp->plen != 4)
		return 0;
	if (arp->spa == 0)
		return 1;
	if (same_mac(arp->sha, eth->h_source) && b && b->ipv4 == arp->spa)
		return 1;
	if (arp->op == htons(ARPOP_REPLY) && arp->tpa == 0)
		homegw_punt_xdp(ctx, DHCP_REASON_PROBE_ANSWER, arp->spa, 0);
	return 0;
}

int dhcp_guard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	u32 zero = 0;

	if ((void *)(eth + 1) > end)
		return homegw_next_xdp(ctx);
	struct dhcp_mac key = {};
	__builtin_memcpy(key.addr, eth->h_source, 6);
	struct dhcp_binding *b = dhcp_bindings.lookup(&key);
	struct dhcp_guard_config *cfg = dhcp_guard_config.lookup(&zero);
	int allowed = 1;

	if (cfg && cfg->enabled && !same_mac(eth->h_source, cfg->gateway_mac)) {
		if (eth->h_proto == htons(ETH_P_IP)) {
			struct iphdr *ip = (void *)(eth + 1);
			guard_count(GUARD_CHECKED);
			allowed = (void *)(ip + 1) <= end && ipv4_allowed(ip, end, b);
			if (!allowed)
				guard_count(GUARD_DROP_IPV4);
		} else if (eth->h_proto == htons(ETH_P_ARP)) {
			struct arp_ipv4 *arp = (void *)(eth + 1);
			guard_count(GUARD_CHECKED);
			allowed = (void *)(arp + 1) <= end && arp_allowed(ctx, eth, arp, b);
			if (!allowed)
				guard_count(GUARD_DROP_ARP);
		}
	}
	if (b)
		account(&key, (__u64)(end - data), !allowed);
	if (!allowed)
		return XDP_DROP;
	return homegw_next_xdp(ctx);
}
