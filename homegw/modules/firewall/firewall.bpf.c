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
 * Neither IPv4 nor IPv6 (ARP) goes on (non_ipv4).
 *
 * IPv6 (RFC 6092 simple security, RFC 4890 ICMPv6), both chains first:
 *   bad version / payload length    dropped: v6_malformed (also a first
 *   (none, or past the frame),      fragment without the whole upper-layer
 *   upper-layer header cut short    header, RFC 7112)
 *   extension headers cut short     dropped: v6_ext_truncated
 *   over 6 of them / 512 bytes      dropped: v6_ext_too_many
 *   hop-by-hop not first            dropped: v6_ext_hop_not_first
 *   routing header type 0           dropped: v6_routing_type0 (RFC 5095)
 *   destination ::, ::1, v4-mapped  dropped: v6_martian_destination
 * WAN chain, IPv6 ("inside": facts.inside and the LAN prefixes; "own":
 * the gateway's addresses, facts.own):
 *   source multicast, ::, ::1,      dropped: v6_wan_martian_source (a
 *   v4-mapped/compatible            link-local source to an inside address too)
 *   source own (not link-local)     dropped: v6_wan_spoofed_own_address
 *   source inside                   dropped: v6_wan_spoofed_lan_source
 *   to own, link-local, multicast   goes on (v6_wan_passed): the kernel's
 *                                   nftables input chain guards the gateway
 *   to neither own nor inside       dropped: v6_wan_transit
 *   to inside, a later fragment     goes on (v6_wan_fragment) if its first
 *                                   fragment was admitted (firewall6_frags),
 *                                   else dropped: v6_fragment_unadmitted
 *   to inside, ICMPv6 not in the    dropped: v6_icmp_filtered
 *   RFC 4890 transit list
 *   to inside, a reply to a live    goes on (v6_wan_reply): TCP/UDP by ports,
 *   session a LAN host opened       echo reply by identifier, others by
 *                                   addresses and protocol
 *   to inside, an ICMPv6 error      goes on (v6_wan_icmp_error) if the packet
 *                                   it quotes (from that LAN host) is a live
 *                                   session's, else dropped:
 *                                   v6_icmp_error_unmatched
 *   to inside, echo request         goes on (v6_wan_ping) with
 *                                   firewall.ipv6_ping_lan, 100/s per CPU
 *                                   (else dropped: v6_ping_rate_limited),
 *                                   without: dropped: v6_ping_lan_dropped
 *   to inside, TCP/UDP to a pinhole goes on (v6_wan_pinhole)
 *   to inside, anything else        dropped: v6_unsolicited
 *   (an admitted first fragment is remembered for its later fragments)
 * LAN chain, IPv6:
 *   source ::                       goes on to multicast (DAD), v6_lan_passed,
 *                                   else dropped: v6_lan_spoofed_source
 *   source link-local               goes on to link-local, multicast, own
 *                                   (v6_lan_passed), else dropped:
 *                                   v6_lan_spoofed_source
 *   source own or not inside        dropped: v6_lan_spoofed_source
 *   to own, link-local, multicast,  goes on (v6_lan_passed)
 *   inside
 *   to outside, ICMPv6 not in the   dropped: v6_icmp_filtered
 *   RFC 4890 transit list
 *   to outside                      goes on (v6_lan_outbound); any TCP segment,
 *                                   UDP, echo request, other protocols create
 *                                   or refresh the session
 *                                   (v6_sessions_created); the table full:
 *                                   dropped, v6_sessions_full. ICMPv6 errors,
 *                                   echo replies, later fragments: no session
 * Sessions: firewall6_sessions, a shared hash (never per-CPU): last_seen
 * written when its tick changes, TCP bits with atomics; expired in the
 * datapath by the timeouts of firewall6_settings, removed by module.py.
 *
 * Both families: a frame the slow path re-injects (HOMEGW_META_REINJECTED: a frame the
 * router held for a neighbour) goes on (reinjected): it passed this module
 * already, and NAT may have translated it to a LAN address since.
 *
 * Long for one reason: bcc rewrites map calls only in the translation unit
 * it is given, so the IPv6 rules that touch maps live here; firewall6.h has
 * the rest (parsing, the ICMPv6 list, keys, timeouts).
 */
#include "homegw.h"
#include <uapi/linux/icmp.h>
#include <uapi/linux/udp.h>
#include FIREWALL6_HEADER

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
	F_V6_WAN_PASSED,
	F_V6_WAN_REPLY,
	F_V6_WAN_ICMP_ERROR,
	F_V6_WAN_PING,
	F_V6_WAN_PINHOLE,
	F_V6_WAN_FRAGMENT,
	F_V6_LAN_PASSED,
	F_V6_LAN_OUTBOUND,
	F_V6_SESSIONS_CREATED,
	F_V6_MALFORMED,
	F_V6_EXT_TRUNCATED,
	F_V6_EXT_TOO_MANY,
	F_V6_EXT_HOP_NOT_FIRST,
	F_V6_ROUTING_TYPE0,
	F_V6_MARTIAN_DESTINATION,
	F_V6_WAN_MARTIAN_SOURCE,
	F_V6_WAN_SPOOFED_OWN_ADDRESS,
	F_V6_WAN_SPOOFED_LAN_SOURCE,
	F_V6_WAN_TRANSIT,
	F_V6_FRAGMENT_UNADMITTED,
	F_V6_ICMP_FILTERED,
	F_V6_ICMP_ERROR_UNMATCHED,
	F_V6_PING_RATE_LIMITED,
	F_V6_PING_LAN_DROPPED,
	F_V6_UNSOLICITED,
	F_V6_LAN_SPOOFED_SOURCE,
	F_V6_SESSIONS_FULL,
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

/* ---- IPv6 (firewall6.h holds the parts without maps) ---- */

#ifndef FW6_MAX_SESSIONS
#define FW6_MAX_SESSIONS 65536
#endif
#define FW6_MAX_PREFIXES 64 /* sessions6.py MAX_INSIDE */
#define FW6_MAX_OWN 256     /* sessions6.py MAX_OWN */
#define FW6_MAX_FRAGS 4096

// <0, IPv6 switches, pinholes in use, session timeouts>
BPF_ARRAY(firewall6_settings, struct fw6_settings, 1);
// <prefix length + prefix, 1>: inside (facts.inside and facts.lan_prefixes)
BPF_F_TABLE("lpm_trie", struct fw6_prefix_key, u32, firewall6_inside, FW6_MAX_PREFIXES,
	    BPF_F_NO_PREALLOC);
// <address, 1>: the gateway's own addresses on both NICs (facts.own)
BPF_HASH(firewall6_own, struct in6_addr, u32, FW6_MAX_OWN);
// <index, pinhole>: the first fw6_settings.pinholes entries are the rules
BPF_ARRAY(firewall6_pinholes, struct fw6_pinhole, FW6_MAX_PINHOLES);
// <LAN host, remote, ports, protocol, last seen + TCP bits>: flows LAN hosts opened
BPF_TABLE_PINNED("hash", struct fw6_session_key, struct fw6_session, firewall6_sessions,
		 FW6_MAX_SESSIONS, HOMEGW_PIN("firewall6_sessions"));
// <source, destination, fragment id, when its first fragment was admitted>
BPF_TABLE("lru_hash", struct fw6_frag_key, u64, firewall6_frags, FW6_MAX_FRAGS);
// <0, this CPU's budget for echo requests to LAN hosts>
BPF_PERCPU_ARRAY(firewall6_ping_rate, struct fw6_rate, 1);

static __always_inline void count(u32 counter)
{
	u64 *value = firewall_stats.lookup(&counter);

	if (value)
		*value += 1;
}

static __always_inline int fw6_is_own(const struct in6_addr *a)
{
	return firewall6_own.lookup((struct in6_addr *)a) != NULL;
}

static __always_inline int fw6_is_inside(const struct in6_addr *a)
{
	struct fw6_prefix_key key = { .prefixlen = 128, .addr = *a };

	return firewall6_inside.lookup(&key) != NULL;
}

/* A destination that stays with the gateway (or its link). */
static __always_inline int fw6_for_gateway(const struct in6_addr *dst)
{
	return homegw_ipv6_is_multicast(dst) || homegw_ipv6_is_link_local(dst) || fw6_is_own(dst);
}

/* The live session of key, or NULL (an idle one is as good as gone). */
static __always_inline struct fw6_session *fw6_live(struct fw6_settings *cfg,
						    struct fw6_session_key *key, u64 now)
{
	struct fw6_session *s = firewall6_sessions.lookup(key);

	if (!s)
		return NULL;
	u64 last = s->last_seen_ns; /* another CPU may have written a later now */
	if (now > last && now - last > fw6_timeout(cfg, key->proto, s->tcp_seen))
		return NULL;
	return s;
}

/* Mark a use: last_seen when its tick changed, new TCP bits atomically. */
static __always_inline void fw6_touch(struct fw6_session *s, u64 now, u64 bits)
{
	if ((s->last_seen_ns >> HOMEGW_NEIGH_TICK_SHIFT) != (now >> HOMEGW_NEIGH_TICK_SHIFT))
		s->last_seen_ns = now;
	if ((s->tcp_seen & bits) != bits)
		__sync_fetch_and_or(&s->tcp_seen, bits);
}

/* An outbound packet's session, made or refreshed; 0, or -1 when the table is full. */
static __always_inline int fw6_outbound_session(struct fw6_session_key *key, u64 now, u64 bits,
						int fresh)
{
	struct fw6_session *s = firewall6_sessions.lookup(key);

	if (s) {
		if (fresh && s->tcp_seen) /* a new SYN on a closed flow's ports */
			__sync_fetch_and_and(&s->tcp_seen, 0);
		fw6_touch(s, now, bits);
		return 0;
	}
	struct fw6_session made = { .last_seen_ns = now, .tcp_seen = bits };
	if (firewall6_sessions.insert(key, &made) == 0) {
		count(F_V6_SESSIONS_CREATED);
		return 0;
	}
	s = firewall6_sessions.lookup(key); /* another CPU made it, or the table is full */
	if (!s)
		return -1;
	fw6_touch(s, now, bits);
	return 0;
}

/* What an ICMPv6 error from the WAN quotes: a packet a LAN host (the
 * error's destination) sent in a live session. */
static __always_inline int fw6_error_matches(struct fw6_settings *cfg, struct ipv6hdr *ip6,
					     void *icmp, void *end, u64 now)
{
	struct ipv6hdr *quoted = icmp + 8;
	struct homegw_l4v6 qw = {};
	struct fw6_session_key key;

	if ((void *)(quoted + 1) > end || !homegw_ipv6_equal(&quoted->saddr, &ip6->daddr))
		return 0;
	if (homegw_ipv6_walk(quoted, end, &qw) != HOMEGW_V6_OK ||
	    qw.fragment == HOMEGW_V6_LATER_FRAGMENT)
		return 0;
	void *l4 = fw6_l4(quoted, end, &qw);
	if (!l4)
		return 0;
	if (qw.proto == IPPROTO_ICMPV6 && fw6_icmp_type(l4, end) != FW6_ICMP_ECHO_REQUEST)
		return 0;
	if (fw6_key(&key, &quoted->saddr, &quoted->daddr, qw.proto, l4, end, 1) < 0)
		return 0;
	return fw6_live(cfg, &key, now) != NULL;
}

static __always_inline int fw6_ping_allowed(u64 now)
{
	u32 zero = 0;
	struct fw6_rate *rate = firewall6_ping_rate.lookup(&zero);

	if (!rate)
		return 0;
	u64 budget = rate->budget_ns + (now - rate->last_ns);
	if (budget > FW6_PING_BURST * FW6_PING_INTERVAL_NS)
		budget = FW6_PING_BURST * FW6_PING_INTERVAL_NS;
	rate->last_ns = now;
	if (budget < FW6_PING_INTERVAL_NS) {
		rate->budget_ns = budget;
		return 0;
	}
	rate->budget_ns = budget - FW6_PING_INTERVAL_NS;
	return 1;
}

/* Whether a pinhole admits the inbound packet of key. */
static __always_inline int fw6_pinhole(struct fw6_settings *cfg, struct fw6_session_key *key)
{
	__u16 port = ntohs(key->lan_port);
	u32 used = cfg->pinholes;

	for (u32 i = 0; i < FW6_MAX_PINHOLES; i++) {
		/* i opaque to the compiler, or it merges the two bounds into
		 * i < min(used, FW6_MAX_PINHOLES): a 6.1 verifier learns no bound
		 * from a register and walks the loop until it gives up */
		homegw_barrier_var(i);
		if (i >= used)
			break;
		/* the key a copy: with i's own address taken, a 6.12 verifier
		 * cannot see i change and calls the loop infinite */
		u32 index = i;
		struct fw6_pinhole *rule = firewall6_pinholes.lookup(&index);
		if (rule && fw6_pinhole_matches(rule, &key->lan, key->proto, port))
			return 1;
	}
	return 0;
}

/* The counter of an inbound packet to an inside address (not a later
 * fragment): one of the v6_wan_* passes, or a drop reason. */
static __always_inline u32 fw6_inbound(struct fw6_settings *cfg, struct ipv6hdr *ip6, void *end,
				       struct homegw_l4v6 *w, u64 now)
{
	struct fw6_session_key key;
	void *l4 = fw6_l4(ip6, end, w);

	if (!l4)
		return F_V6_MALFORMED;
	if (w->proto == IPPROTO_ICMPV6) {
		__u8 type = fw6_icmp_type(l4, end);
		if (!fw6_icmp_forwardable(type))
			return F_V6_ICMP_FILTERED;
		if (fw6_icmp_is_error(type))
			return fw6_error_matches(cfg, ip6, l4, end, now) ? F_V6_WAN_ICMP_ERROR
									 : F_V6_ICMP_ERROR_UNMATCHED;
		if (type == FW6_ICMP_ECHO_REQUEST) {
			if (!(cfg->flags & FW6_PING_LAN))
				return F_V6_PING_LAN_DROPPED;
			return fw6_ping_allowed(now) ? F_V6_WAN_PING : F_V6_PING_RATE_LIMITED;
		}
		if (type != FW6_ICMP_ECHO_REPLY)
			return F_V6_UNSOLICITED;
	}
	if (fw6_key(&key, &ip6->daddr, &ip6->saddr, w->proto, l4, end, 0) < 0)
		return F_V6_MALFORMED;
	struct fw6_session *s = fw6_live(cfg, &key, now);
	if (s) {
		u64 bits = w->proto == IPPROTO_TCP ? fw6_tcp_bits(l4, end, 0) : 0;
		fw6_touch(s, now, bits);
		return F_V6_WAN_REPLY;
	}
	if ((w->proto == IPPROTO_TCP || w->proto == IPPROTO_UDP) && fw6_pinhole(cfg, &key))
		return F_V6_WAN_PINHOLE;
	return F_V6_UNSOLICITED;
}

static __always_inline int fw6_is_pass(u32 counter)
{
	return counter >= F_V6_WAN_PASSED && counter <= F_V6_LAN_OUTBOUND;
}

static __always_inline int fw6_verdict(struct xdp_md *ctx, u32 counter)
{
	return fw6_is_pass(counter) ? pass(ctx, counter) : drop(counter);
}

static __always_inline void fw6_frag_key(struct fw6_frag_key *key, struct ipv6hdr *ip6, __be32 id)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->src = ip6->saddr;
	key->dst = ip6->daddr;
	key->id = id;
}

/* A later fragment from the WAN goes on when its first one was admitted. */
static __always_inline u32 fw6_later_fragment(struct ipv6hdr *ip6, struct homegw_l4v6 *w, u64 now)
{
	struct fw6_frag_key key;

	fw6_frag_key(&key, ip6, w->frag_id);
	u64 *admitted = firewall6_frags.lookup(&key);
	if (!admitted || (now > *admitted && now - *admitted > FW6_FRAG_TIMEOUT_NS))
		return F_V6_FRAGMENT_UNADMITTED;
	return F_V6_WAN_FRAGMENT;
}

static __always_inline int fw6_from_wan(struct xdp_md *ctx, struct fw6_settings *cfg,
					struct ipv6hdr *ip6, void *end, struct homegw_l4v6 *w)
{
	struct in6_addr *src = &ip6->saddr, *dst = &ip6->daddr;

	if (homegw_ipv6_is_martian_source(src))
		return drop(F_V6_WAN_MARTIAN_SOURCE);
	/* a link-local address is the link's: the ISP router may be fe80::1
	 * as the gateway is on the LAN */
	if (!homegw_ipv6_is_link_local(src) && fw6_is_own(src))
		return drop(F_V6_WAN_SPOOFED_OWN_ADDRESS);
	if (fw6_is_inside(src))
		return drop(F_V6_WAN_SPOOFED_LAN_SOURCE);
	if (fw6_for_gateway(dst))
		return pass(ctx, F_V6_WAN_PASSED);
	if (!fw6_is_inside(dst))
		return drop(F_V6_WAN_TRANSIT);
	if (homegw_ipv6_is_link_local(src))
		return drop(F_V6_WAN_MARTIAN_SOURCE);
	u64 now = bpf_ktime_get_coarse_ns();
	if (w->fragment == HOMEGW_V6_LATER_FRAGMENT)
		return fw6_verdict(ctx, fw6_later_fragment(ip6, w, now));
	u32 counter = fw6_inbound(cfg, ip6, end, w, now);
	if (fw6_is_pass(counter) && w->fragment == HOMEGW_V6_FIRST_FRAGMENT) {
		struct fw6_frag_key key;
		fw6_frag_key(&key, ip6, w->frag_id);
		firewall6_frags.update(&key, &now);
	}
	return fw6_verdict(ctx, counter);
}

/* LAN -> outside: the RFC 4890 transit list, then the session. */
static __always_inline int fw6_outbound(struct xdp_md *ctx, struct ipv6hdr *ip6, void *end,
					struct homegw_l4v6 *w)
{
	struct fw6_session_key key;
	u64 bits = 0;
	int fresh = 0;

	if (w->fragment == HOMEGW_V6_LATER_FRAGMENT)
		return pass(ctx, F_V6_LAN_OUTBOUND);
	void *l4 = fw6_l4(ip6, end, w);
	if (!l4)
		return drop(F_V6_MALFORMED);
	if (w->proto == IPPROTO_ICMPV6) {
		__u8 type = fw6_icmp_type(l4, end);
		if (!fw6_icmp_forwardable(type))
			return drop(F_V6_ICMP_FILTERED);
		if (type != FW6_ICMP_ECHO_REQUEST) /* errors, replies: no session */
			return pass(ctx, F_V6_LAN_OUTBOUND);
	}
	if (w->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > end)
			return drop(F_V6_MALFORMED);
		bits = fw6_tcp_bits(tcp, end, 1);
		fresh = tcp->syn && !tcp->ack;
	}
	if (fw6_key(&key, &ip6->saddr, &ip6->daddr, w->proto, l4, end, 1) < 0)
		return drop(F_V6_MALFORMED);
	if (fw6_outbound_session(&key, bpf_ktime_get_coarse_ns(), bits, fresh) < 0)
		return drop(F_V6_SESSIONS_FULL);
	return pass(ctx, F_V6_LAN_OUTBOUND);
}

static __always_inline int fw6_from_lan(struct xdp_md *ctx, struct ipv6hdr *ip6, void *end,
					struct homegw_l4v6 *w)
{
	struct in6_addr *src = &ip6->saddr, *dst = &ip6->daddr;

	if (fw6_is_unspecified(src)) /* duplicate address detection */
		return homegw_ipv6_is_multicast(dst) ? pass(ctx, F_V6_LAN_PASSED)
						     : drop(F_V6_LAN_SPOOFED_SOURCE);
	if (homegw_ipv6_is_link_local(src))
		return fw6_for_gateway(dst) ? pass(ctx, F_V6_LAN_PASSED)
					    : drop(F_V6_LAN_SPOOFED_SOURCE);
	if (fw6_is_own(src) || !fw6_is_inside(src))
		return drop(F_V6_LAN_SPOOFED_SOURCE);
	if (fw6_for_gateway(dst) || fw6_is_inside(dst))
		return pass(ctx, F_V6_LAN_PASSED);
	return fw6_outbound(ctx, ip6, end, w);
}

static __always_inline u32 fw6_walk_counter(int outcome)
{
	if (outcome == HOMEGW_V6_TRUNCATED)
		return F_V6_EXT_TRUNCATED;
	if (outcome == HOMEGW_V6_TOO_MANY)
		return F_V6_EXT_TOO_MANY;
	return F_V6_EXT_HOP_NOT_FIRST;
}

static __always_inline int firewall6(struct xdp_md *ctx, struct homegw_cursor *cur, void *l3,
				     void *end)
{
	u32 zero = 0;
	struct fw6_settings *cfg = firewall6_settings.lookup(&zero);
	struct ipv6hdr *ip6 = fw6_header(l3, end);
	struct homegw_l4v6 w = {};

	if (!cfg || !ip6)
		return drop(F_V6_MALFORMED);
	int outcome = homegw_ipv6_walk(ip6, end, &w);
	if (outcome != HOMEGW_V6_OK)
		return drop(fw6_walk_counter(outcome));
	if (w.routing_type == 0)
		return drop(F_V6_ROUTING_TYPE0);
	if (fw6_is_martian_destination(&ip6->daddr))
		return drop(F_V6_MARTIAN_DESTINATION);
	if (cur->nic == HOMEGW_NIC_WAN)
		return fw6_from_wan(ctx, cfg, ip6, end, &w);
	return fw6_from_lan(ctx, ip6, end, &w);
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
	if (eth->h_proto == htons(ETH_P_IPV6))
		return firewall6(ctx, cur, data + sizeof(*eth), end);
	if (eth->h_proto != htons(ETH_P_IP))
		return pass(ctx, F_NON_IPV4);
	struct iphdr *ip = ipv4_header(data + sizeof(*eth), end);
	if (!ip)
		return drop(F_MALFORMED);
	if (cur->nic == HOMEGW_NIC_WAN)
		return from_wan(ctx, cfg, ip, end);
	return from_lan(ctx, cfg, ip);
}
