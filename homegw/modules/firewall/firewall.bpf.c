/* Firewall IO module: default deny from the WAN, anti-spoofing on both NICs.
 *
 * XDP runs before netfilter and rp_filter, and the router forwards in XDP:
 * this module is what keeps the WAN out. It only drops or lets a packet go
 * on to the next module; it never rewrites one. "Inside" below means the LAN
 * subnet or a network routed behind a LAN next hop (router.routes).
 *
 * WAN chain [firewall, nat, router, ...], IPv4, in this order:
 *   truncated / bad header          dropped: malformed
 *   source 0/8, 127/8, 224/4+       dropped: wan_martian_source
 *   source = a gateway address      dropped: wan_spoofed_own_address
 *   source inside                   dropped: wan_spoofed_lan_source
 *   to an inside address            dropped: wan_to_lan (the LAN's broadcast
 *                                   and the gateway's LAN address always;
 *                                   the rest goes on, wan_forwarded, with
 *                                   forward_wan_to_lan: a routed LAN)
 *   to the WAN address              goes on (wan_passed): NAT admits sessions,
 *                                   port forwards and the DMZ host, the kernel's
 *                                   input chain guards the rest; an ICMP echo
 *                                   request is dropped (wan_ping_dropped)
 *                                   unless wan_ping
 *   to 255.255.255.255 / the WAN    goes on (wan_passed): DHCP offers; the
 *   subnet's broadcast              kernel's input chain guards the rest
 *   UDP 67 -> 68 elsewhere          goes on (wan_passed): a DHCP offer/ack
 *                                   unicast to an address not ours yet (if
 *                                   it is not, the router hands it to the
 *                                   kernel, whose forward chain drops it)
 *   anything else                   dropped: wan_transit (WAN -> WAN, multicast)
 * LAN chain [..., firewall, router, nat], IPv4:
 *   truncated / bad header          dropped: malformed
 *   source inside (not the gateway) goes on (lan_passed)
 *   other sources to the gateway's  goes on (lan_passed): DHCP from 0.0.0.0,
 *   LAN address, broadcast, 224/4   nothing the router forwards
 *   other sources, anything else    dropped: lan_spoofed_source
 * Non-IPv4 (ARP, IPv6) goes on (non_ipv4): the kernel's nftables table
 * (homegw/kernelpath.py) drops IPv6 from the WAN that is not allowed.
 * A frame the slow path re-injects (HOMEGW_META_REINJECTED: a frame the
 * router held for a neighbour) goes on (reinjected): it passed this module
 * already, and NAT may have translated it to a LAN address since.
 */
#include "homegw.h"
#include <uapi/linux/icmp.h>
#include <uapi/linux/udp.h>

#define FW_MAX_INSIDE_ROUTES 256

#define FW_WAN_PING 1          /* answer ICMP echo to the WAN address */
#define FW_FORWARD_WAN_TO_LAN 2 /* a routed LAN: WAN packets to inside go on */
#define FW_USE_ROUTES 4        /* inside networks beyond the LAN subnet exist */

/* maps.py reads the counter names from this enum. */
enum firewall_counter {
	F_WAN_PASSED,
	F_WAN_FORWARDED,
	F_LAN_PASSED,
	F_NON_IPV4,
	F_MALFORMED,
	F_WAN_TO_LAN,
	F_WAN_TRANSIT,
	F_WAN_SPOOFED_LAN_SOURCE,
	F_WAN_SPOOFED_OWN_ADDRESS,
	F_WAN_MARTIAN_SOURCE,
	F_WAN_PING_DROPPED,
	F_LAN_SPOOFED_SOURCE,
	F_REINJECTED,
	F_COUNTERS,
};

struct fw_settings {
	__be32 lan_net;   /* the LAN subnet's network address (network order) */
	__be32 lan_mask;
	__be32 lan_addr;  /* the gateway's LAN address */
	__be32 lan_bcast; /* the LAN subnet's broadcast address */
	__be32 wan_addr;  /* the gateway's WAN address (0: none yet) */
	__be32 wan_bcast; /* the WAN subnet's broadcast address (0: none) */
	__u32 flags;      /* FW_* */
	__u32 pad;
};

struct fw_route_key {
	__u32 prefixlen;
	__be32 addr;
};

// <0, the addresses and switches the rules use>
BPF_ARRAY(firewall_settings, struct fw_settings, 1);
// <prefix length + network, 1>: inside networks routed via a LAN next hop
BPF_F_TABLE("lpm_trie", struct fw_route_key, u32, firewall_inside, FW_MAX_INSIDE_ROUTES,
	    BPF_F_NO_PREALLOC);
// <enum firewall_counter, packets>
BPF_TABLE_PINNED("percpu_array", u32, u64, firewall_stats, F_COUNTERS,
		 HOMEGW_PIN("firewall_stats"));

static __always_inline int drop(u32 counter)
{
	u64 *value = firewall_stats.lookup(&counter);

	if (value)
		*value += 1;
	return XDP_DROP;
}

static __always_inline int pass(struct xdp_md *ctx, u32 counter)
{
	u64 *value = firewall_stats.lookup(&counter);

	if (value)
		*value += 1;
	return homegw_next_xdp(ctx);
}

static __always_inline int is_martian_source(__be32 addr)
{
	u32 first = ntohl(addr) >> 24;

	return first == 0 || first == 127 || first >= 224;
}

static __always_inline int is_multicast(__be32 addr)
{
	return (ntohl(addr) >> 28) == 0xe;
}

static __always_inline int is_inside(struct fw_settings *cfg, __be32 addr)
{
	if ((addr & cfg->lan_mask) == cfg->lan_net)
		return 1;
	if (!(cfg->flags & FW_USE_ROUTES))
		return 0;
	struct fw_route_key key = { .prefixlen = 32, .addr = addr };
	return firewall_inside.lookup(&key) != NULL;
}

/* The IPv4 header, whole and sane, or NULL. */
static __always_inline struct iphdr *ipv4_header(struct iphdr *ip, void *end)
{
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return NULL;
	u32 header_len = ip->ihl * 4;
	if ((void *)ip + header_len > end)
		return NULL;
	u32 total = ntohs(ip->tot_len);
	if (total < header_len || (void *)ip + total > end)
		return NULL;
	return ip;
}

static __always_inline int is_later_fragment(struct iphdr *ip)
{
	return ip->frag_off & htons(0x1fff);
}

/* The transport header if it is all there (never for a later fragment). */
static __always_inline void *l4_header(struct iphdr *ip, void *end, u32 size)
{
	void *l4 = (void *)ip + ip->ihl * 4;

	if (is_later_fragment(ip) || l4 + size > end)
		return NULL;
	return l4;
}

static __always_inline int is_echo_request(struct iphdr *ip, void *end)
{
	struct icmphdr *icmp = l4_header(ip, end, sizeof(*icmp));

	return ip->protocol == IPPROTO_ICMP && icmp && icmp->type == ICMP_ECHO;
}

static __always_inline int is_dhcp_reply(struct iphdr *ip, void *end)
{
	struct udphdr *udp = l4_header(ip, end, sizeof(*udp));

	return ip->protocol == IPPROTO_UDP && udp && udp->source == htons(67) &&
	       udp->dest == htons(68);
}

static __always_inline int from_wan(struct xdp_md *ctx, struct fw_settings *cfg,
				    struct iphdr *ip, void *end)
{
	__be32 src = ip->saddr, dst = ip->daddr;

	if (is_martian_source(src))
		return drop(F_WAN_MARTIAN_SOURCE);
	if (src == cfg->lan_addr || (cfg->wan_addr && src == cfg->wan_addr))
		return drop(F_WAN_SPOOFED_OWN_ADDRESS);
	if (is_inside(cfg, src))
		return drop(F_WAN_SPOOFED_LAN_SOURCE);
	if (is_inside(cfg, dst)) {
		if (!(cfg->flags & FW_FORWARD_WAN_TO_LAN) || dst == cfg->lan_addr ||
		    dst == cfg->lan_bcast)
			return drop(F_WAN_TO_LAN);
		return pass(ctx, F_WAN_FORWARDED);
	}
	if (cfg->wan_addr && dst == cfg->wan_addr) {
		if (!(cfg->flags & FW_WAN_PING) && is_echo_request(ip, end))
			return drop(F_WAN_PING_DROPPED);
		return pass(ctx, F_WAN_PASSED);
	}
	if (dst == 0xffffffff || (cfg->wan_bcast && dst == cfg->wan_bcast) ||
	    is_dhcp_reply(ip, end))
		return pass(ctx, F_WAN_PASSED);
	return drop(F_WAN_TRANSIT);
}

static __always_inline int from_lan(struct xdp_md *ctx, struct fw_settings *cfg,
				    struct iphdr *ip)
{
	__be32 dst = ip->daddr;

	if (ip->saddr != cfg->lan_addr && is_inside(cfg, ip->saddr))
		return pass(ctx, F_LAN_PASSED);
	/* Not a LAN source: only what stays with the gateway (DHCP from
	 * 0.0.0.0 is broadcast or to the gateway), never what is forwarded. */
	if (dst == cfg->lan_addr || dst == 0xffffffff || dst == cfg->lan_bcast ||
	    is_multicast(dst))
		return pass(ctx, F_LAN_PASSED);
	return drop(F_LAN_SPOOFED_SOURCE);
}

int firewall_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct homegw_cursor *cur = homegw_cursor_xdp();
	u32 zero = 0;
	struct fw_settings *cfg = firewall_settings.lookup(&zero);

	if (!cur || !cfg || (void *)(eth + 1) > end)
		return drop(F_MALFORMED);
	if (homegw_reinjected_xdp(ctx))
		return pass(ctx, F_REINJECTED);
	if (eth->h_proto != htons(ETH_P_IP))
		return pass(ctx, F_NON_IPV4);
	struct iphdr *ip = ipv4_header(data + sizeof(*eth), end);
	if (!ip)
		return drop(F_MALFORMED);
	if (cur->nic == HOMEGW_NIC_WAN)
		return from_wan(ctx, cfg, ip, end);
	return from_lan(ctx, cfg, ip);
}
