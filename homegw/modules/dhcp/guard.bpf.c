/* "dhcp": the lease-aware LAN datapath of the DHCP module (XDP, LAN chain).
 *
 * The DHCP server publishes every MAC <-> address binding in dhcp_bindings.
 * Every frame from the LAN meets these rules, in order; a drop is counted
 * in dhcp_guard_stats under the reason given:
 *   1. Ethernet source = the gateway's own LAN MAC: dropped, guard on or off
 *      (GUARD_DROPPED_GATEWAY_MAC). The gateway never receives its own frames,
 *      so this is a LAN device impersonating the gateway.
 *   2. With the source guard on (dhcp_guard_config.enabled), IPv4:
 *      a. a DHCP server message (UDP source port 67 to port 68, unfragmented
 *         or first fragment): dropped whoever sends it, bound or not
 *         (GUARD_DROPPED_DHCP_SERVER): the gateway is the LAN's DHCP server, so
 *         this is a rogue server;
 *      b. source address = the binding of the source MAC: passes;
 *      c. DHCP client -> server (UDP 68 -> 67) with any source address
 *         passes, but only to the server: to 255.255.255.255 in a frame to
 *         the broadcast MAC, or to the gateway's LAN address in a frame to
 *         the gateway's MAC (a client with no or a lost lease must always
 *         reach the server, and nothing else);
 *      d. anything else, a truncated header included: dropped
 *         (GUARD_DROPPED_IPV4).
 *      ARP: dropped (GUARD_DROPPED_ARP) unless the sender address is the
 *      binding of the source MAC and the sender MAC is the frame's, or the
 *      sender address is 0.0.0.0 (RFC 5227 probes). A dropped answer to an
 *      ARP probe (target 0.0.0.0) is punted to the slow path first
 *      (DHCP_REASON_PROBE_ANSWER), so the DHCP server still sees the
 *      conflict it probed for.
 *      Other ethertypes pass.
 *   3. With the guard off, everything but rule 1 passes unchecked.
 *   4. A dropped frame from a MAC that has a binding is counted as its
 *      `dropped` in the chain's device table (homegw_devices; what is
 *      forwarded the router counts there); allowed frames go to the next
 *      module.
 */
#include "homegw.h"
#include <uapi/linux/udp.h>

/* ARP's hardware type and opcode (RFC 826, IANA), not <uapi/linux/if_arp.h>:
 * it includes the kernel's netdevice.h and bpf.h, which bookworm's bcc cannot
 * compile with 6.12's headers (struct bpf_wq and others it does not know) */
#define ARPHRD_ETHER 1
#define ARPOP_REPLY 2

#ifndef DHCP_MAX_BINDINGS
#define DHCP_MAX_BINDINGS 4096
#endif
#define DHCP_REASON_PROBE_ANSWER 1

/* Guard counters (index of dhcp_guard_stats); module.py reads the names. */
enum guard_counter {
	GUARD_CHECKED,             /* frames the guard examined (guard on) */
	GUARD_DROPPED_IPV4,        /* IPv4 with a source not bound to the MAC */
	GUARD_DROPPED_ARP,         /* ARP with a sender not bound to the MAC */
	GUARD_DEVICES_FULL,        /* no room in homegw_devices for a bound MAC */
	GUARD_DROPPED_GATEWAY_MAC, /* Ethernet source = the gateway's LAN MAC */
	GUARD_DROPPED_DHCP_SERVER, /* DHCP server message (UDP 67 -> 68) from the LAN */
	GUARD_COUNTERS,
};
/* Verdict of a rule: ALLOWED, or the GUARD_DROPPED_* counter of the drop.
 * (0 is GUARD_CHECKED's index, never a drop reason.) */
#define ALLOWED 0

#define DHCP_SERVER_PORT 67
#define DHCP_CLIENT_PORT 68

struct dhcp_mac {
	__u8 addr[6];
	__u16 pad; /* always 0 */
};

struct dhcp_binding {
	__be32 ipv4;  /* network byte order */
	__u32 flags;  /* service.py's BINDING_*: for userspace, the guard ignores them */
};

struct dhcp_guard_config {
	__u32 enabled;      /* the source guard (rules 2a-2d and ARP) */
	__u8 gateway_mac[6]; /* all zero: unknown, rule 1 off */
	__u16 pad;
	__be32 gateway_ip;  /* the gateway's LAN address, network order */
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

// <source MAC (6 bytes + 2 zero bytes), struct dhcp_binding {ipv4 (network order), flags}>:
// written by the DHCP server on ACK / RELEASE / DECLINE / expiry; read here.
BPF_TABLE_PINNED("hash", struct dhcp_mac, struct dhcp_binding, dhcp_bindings, DHCP_MAX_BINDINGS,
		 HOMEGW_PIN("dhcp_bindings"));
// <GUARD_* counter index, per-CPU count>. Pinned under a new name when
// GUARD_COUNTERS grew to 6: bcc reuses a pinned map without checking its
// size, and the 4-entry "dhcp_guard_stats" of older versions would lose the
// new counters (that stale pin goes with the next reboot).
BPF_TABLE_PINNED("percpu_array", u32, u64, dhcp_guard_stats, GUARD_COUNTERS,
		 HOMEGW_PIN("dhcp_guard_counters"));
// <0, struct dhcp_guard_config {enabled, gateway_mac, gateway_ip}>: written by
// DhcpModule.set_source_guard (not pinned: config, not state)
BPF_ARRAY(dhcp_guard_config, struct dhcp_guard_config, 1);

static __always_inline void guard_count(u32 index)
{
	u64 *value = dhcp_guard_stats.lookup(&index);
	if (value)
		*value += 1; /* per-CPU: no atomic needed */
}


static __always_inline int is_zero_mac(const __u8 *a)
{
	return (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0;
}

static __always_inline int is_broadcast_mac(const __u8 *a)
{
	return (a[0] & a[1] & a[2] & a[3] & a[4] & a[5]) == 0xff;
}

/* The UDP header of an unfragmented packet or a first fragment, else NULL. */
static __always_inline struct udphdr *udp_header(struct iphdr *ip, void *end)
{
	if (ip->protocol != IPPROTO_UDP || ip->ihl < 5 || (ip->frag_off & htons(0x1fff)))
		return NULL;
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > end)
		return NULL;
	return udp;
}

/* Rule 2c: DHCP client -> server, to the server and nowhere else. */
static __always_inline int dhcp_to_server(struct ethhdr *eth, struct iphdr *ip, struct udphdr *udp,
					  struct dhcp_guard_config *cfg)
{
	if (udp->source != htons(DHCP_CLIENT_PORT) || udp->dest != htons(DHCP_SERVER_PORT))
		return 0;
	if (ip->daddr == 0xffffffff)
		return is_broadcast_mac(eth->h_dest);
	return ip->daddr == cfg->gateway_ip && homegw_same_mac(eth->h_dest, cfg->gateway_mac);
}

/* Rules 2a-2d for an IPv4 frame: ALLOWED or the drop counter. */
static __always_inline int ipv4_verdict(struct ethhdr *eth, struct iphdr *ip, void *end,
					struct dhcp_binding *b, struct dhcp_guard_config *cfg)
{
	if ((void *)(ip + 1) > end)
		return GUARD_DROPPED_IPV4;
	struct udphdr *udp = udp_header(ip, end);
	if (udp && udp->source == htons(DHCP_SERVER_PORT) && udp->dest == htons(DHCP_CLIENT_PORT))
		return GUARD_DROPPED_DHCP_SERVER;
	if (b && b->ipv4 == ip->saddr)
		return ALLOWED;
	if (udp && dhcp_to_server(eth, ip, udp, cfg))
		return ALLOWED;
	return GUARD_DROPPED_IPV4;
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
	if (homegw_same_mac(arp->sha, eth->h_source) && b && b->ipv4 == arp->spa)
		return 1;
	if (arp->op == htons(ARPOP_REPLY) && arp->tpa == 0)
		homegw_punt_xdp(ctx, DHCP_REASON_PROBE_ANSWER, arp->spa, 0);
	return 0;
}

/* Rules 1-3: ALLOWED or the drop counter. */
static __always_inline int guard_verdict(struct xdp_md *ctx, struct ethhdr *eth, void *end,
					 struct dhcp_binding *b)
{
	u32 zero = 0;
	struct dhcp_guard_config *cfg = dhcp_guard_config.lookup(&zero);

	if (!cfg)
		return ALLOWED;
	if (!is_zero_mac(cfg->gateway_mac) && homegw_same_mac(eth->h_source, cfg->gateway_mac))
		return GUARD_DROPPED_GATEWAY_MAC;
	if (!cfg->enabled)
		return ALLOWED;
	if (eth->h_proto == htons(ETH_P_IP)) {
		guard_count(GUARD_CHECKED);
		return ipv4_verdict(eth, (void *)(eth + 1), end, b, cfg);
	}
	if (eth->h_proto == htons(ETH_P_ARP)) {
		struct arp_ipv4 *arp = (void *)(eth + 1);
		guard_count(GUARD_CHECKED);
		if ((void *)(arp + 1) > end || !arp_allowed(ctx, eth, arp, b))
			return GUARD_DROPPED_ARP;
	}
	return ALLOWED;
}

int dhcp_guard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return homegw_next_xdp(ctx);
	struct dhcp_mac key = {};
	__builtin_memcpy(key.addr, eth->h_source, 6);
	struct dhcp_binding *b = dhcp_bindings.lookup(&key);
	int verdict = guard_verdict(ctx, eth, end, b);

	if (verdict != ALLOWED) {
		/* only a bound device's: random source MACs must not fill the table */
		__u64 bytes = (__u64)(end - data);
		if (b && homegw_count_device(eth->h_source, bytes, HOMEGW_DEVICE_DROPPED,
					     bpf_ktime_get_coarse_ns()))
			guard_count(GUARD_DEVICES_FULL);
		guard_count(verdict);
		return XDP_DROP;
	}
	return homegw_next_xdp(ctx);
}
