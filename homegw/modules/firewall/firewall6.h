/* firewall6.h: the IPv6 firewall's pure parts (no map access: bcc rewrites
 * map calls only in firewall.bpf.c, which holds the rules that use maps).
 * The outcomes are listed in firewall.bpf.c's header comment, which includes
 * this file through FIREWALL6_HEADER (its path, set by module.py). */
#ifndef FIREWALL6_H
#define FIREWALL6_H

#include "homegw_ipv6.h"
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#define FW6_MAX_PINHOLES 64

#define FW6_PING_LAN 1 /* ICMPv6 echo requests from the WAN reach LAN hosts */

/* struct fw6_session.tcp_seen: set once each (__sync_fetch_and_or) */
#define FW6_TCP_REPLY 1   /* a packet came back from the remote */
#define FW6_TCP_FIN_OUT 2
#define FW6_TCP_FIN_IN 4
#define FW6_TCP_RST 8

/* struct fw6_settings.timeout_ns */
#define FW6_T_UDP 0
#define FW6_T_TCP_ESTABLISHED 1
#define FW6_T_TCP_TRANSITORY 2
#define FW6_T_ICMP 3
#define FW6_T_OTHER 4
#define FW6_TIMEOUTS 5

#define FW6_PINHOLE_IID 1 /* match the host's interface id in any inside prefix */

#define FW6_ICMP_ECHO_REQUEST 128
#define FW6_ICMP_ECHO_REPLY 129

struct fw6_settings {
	__u32 flags;    /* FW6_* */
	__u32 pinholes; /* entries of firewall6_pinholes in use */
	__u64 timeout_ns[FW6_TIMEOUTS];
};

struct fw6_prefix_key {
	__u32 prefixlen;
	struct in6_addr addr;
};

/* One inbound rule: protocol, a port range (host order), a host. */
struct fw6_pinhole {
	__u8 proto;
	__u8 flags; /* FW6_PINHOLE_IID: only the last 64 bits of host count */
	__u16 port_low;
	__u16 port_high;
	__u16 pad;
	struct in6_addr host;
};

/* A flow a LAN host opened, as seen from the LAN: ports are TCP/UDP ports,
 * the echo identifier (ICMPv6, lan_port), or 0 (other protocols). */
struct fw6_session_key {
	struct in6_addr lan;
	struct in6_addr remote;
	__be16 lan_port;
	__be16 remote_port;
	__u8 proto;
	__u8 pad[3];
};

struct fw6_session {
	__u64 last_seen_ns; /* written when its HOMEGW_NEIGH_TICK_SHIFT tick changes */
	__u64 tcp_seen;     /* FW6_TCP_* (64 bits: BPF's atomic or) */
};

/* Fragments of an admitted inbound first fragment (RFC 8200 4.5). */
struct fw6_frag_key {
	struct in6_addr src;
	struct in6_addr dst;
	__be32 id;
};

#define FW6_FRAG_TIMEOUT_NS (60ULL * 1000000000ULL) /* reassembly time (RFC 8200) */
#define FW6_PING_INTERVAL_NS 10000000ULL /* echo requests to LAN hosts: 100/s per CPU */
#define FW6_PING_BURST 50

struct fw6_rate {
	__u64 budget_ns;
	__u64 last_ns;
};

/* The fixed header, whole and sane (version 6, a payload length that fits
 * the frame: no jumbograms on Ethernet), or NULL. */
static __always_inline struct ipv6hdr *fw6_header(void *l3, void *end)
{
	struct ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) > end || ip6->version != 6 || ip6->payload_len == 0)
		return NULL;
	if ((void *)(ip6 + 1) + ntohs(ip6->payload_len) > end)
		return NULL;
	return ip6;
}

/* Never a destination on the wire: unspecified, loopback, IPv4-embedded. */
static __always_inline int fw6_is_martian_destination(const struct in6_addr *a)
{
	return homegw_ipv6_is_unspecified_or_loopback(a) || homegw_ipv6_is_v4_embedded(a);
}

static __always_inline int fw6_is_unspecified(const struct in6_addr *a)
{
	return !(a->s6_addr32[0] | a->s6_addr32[1] | a->s6_addr32[2] | a->s6_addr32[3]);
}

/* RFC 4890 4.3: ICMPv6 types a router forwards. Errors (destination
 * unreachable, packet too big, time exceeded, parameter problem), echo, and
 * Mobile IPv6's home agent and prefix messages (144-147) pass; neighbour
 * discovery, MLD, router renumbering (138), node information (139, 140),
 * the experimental (100, 101, 200, 201) and unallocated types never do. */
static __always_inline int fw6_icmp_forwardable(__u8 type)
{
	return (type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB) ||
	       type == FW6_ICMP_ECHO_REQUEST || type == FW6_ICMP_ECHO_REPLY ||
	       (type >= 144 && type <= 147);
}

static __always_inline int fw6_icmp_is_error(__u8 type)
{
	return type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
}

/* The ICMPv6 type at l4, 0 (never forwarded) if the header is short. */
static __always_inline __u8 fw6_icmp_type(void *l4, void *end)
{
	if (l4 + 8 > end)
		return 0;
	return ((struct icmp6hdr *)l4)->icmp6_type;
}

/* Bytes of the upper-layer header a rule needs: the ports, the echo id. */
static __always_inline __u32 fw6_l4_needed(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return sizeof(struct tcphdr);
	if (proto == IPPROTO_UDP)
		return sizeof(struct udphdr);
	if (proto == IPPROTO_ICMPV6)
		return 8;
	return 0;
}

/* The upper-layer header at l4_off if the bytes a rule needs are there. */
static __always_inline void *fw6_l4(struct ipv6hdr *ip6, void *end, struct homegw_l4v6 *w)
{
	void *l4 = (void *)ip6 + (w->l4_off & 0x7ff);

	if (l4 + fw6_l4_needed(w->proto) > end)
		return NULL;
	return l4;
}

/* The session key of a packet from LAN host `lan` to `remote` whose
 * upper-layer header is at l4; outbound: l4's source port is the LAN
 * host's. -1 if the ports or the echo id are not in the frame (checked here
 * with constant sizes, as the verifier wants). */
static __always_inline int fw6_key(struct fw6_session_key *key, const struct in6_addr *lan,
				   const struct in6_addr *remote, __u8 proto, void *l4, void *end,
				   int outbound)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->lan = *lan;
	key->remote = *remote;
	key->proto = proto;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMPV6)
		return 0;
	if (l4 + 8 > end)
		return -1;
	if (proto == IPPROTO_ICMPV6) {
		key->lan_port = ((struct icmp6hdr *)l4)->icmp6_identifier;
		return 0;
	}
	__be16 *ports = l4; /* source, destination: TCP and UDP alike */
	key->lan_port = outbound ? ports[0] : ports[1];
	key->remote_port = outbound ? ports[1] : ports[0];
	return 0;
}

/* The FW6_TCP_* bits a TCP segment adds, in direction `outbound`. */
static __always_inline __u64 fw6_tcp_bits(struct tcphdr *tcp, void *end, int outbound)
{
	__u64 bits = 0;

	if ((void *)(tcp + 1) > end)
		return 0;
	if (tcp->rst)
		bits |= FW6_TCP_RST;
	if (tcp->fin)
		bits |= outbound ? FW6_TCP_FIN_OUT : FW6_TCP_FIN_IN;
	if (!outbound)
		bits |= FW6_TCP_REPLY;
	return bits;
}

/* Idle time a session may have (RFC 5382/4787/5508 values, as NAT's). */
static __always_inline __u64 fw6_timeout(struct fw6_settings *cfg, __u8 proto, __u64 tcp_seen)
{
	if (proto == IPPROTO_TCP) {
		int closing = (tcp_seen & FW6_TCP_RST) ||
			      ((tcp_seen & FW6_TCP_FIN_OUT) && (tcp_seen & FW6_TCP_FIN_IN));
		if ((tcp_seen & FW6_TCP_REPLY) && !closing)
			return cfg->timeout_ns[FW6_T_TCP_ESTABLISHED];
		return cfg->timeout_ns[FW6_T_TCP_TRANSITORY];
	}
	if (proto == IPPROTO_UDP)
		return cfg->timeout_ns[FW6_T_UDP];
	if (proto == IPPROTO_ICMPV6)
		return cfg->timeout_ns[FW6_T_ICMP];
	return cfg->timeout_ns[FW6_T_OTHER];
}

/* Whether a pinhole admits a packet to dst of protocol proto, port (host order). */
static __always_inline int fw6_pinhole_matches(struct fw6_pinhole *rule, const struct in6_addr *dst,
					       __u8 proto, __u16 port)
{
	if (rule->proto != proto || port < rule->port_low || port > rule->port_high)
		return 0;
	if (rule->host.s6_addr32[2] != dst->s6_addr32[2] ||
	    rule->host.s6_addr32[3] != dst->s6_addr32[3])
		return 0;
	return (rule->flags & FW6_PINHOLE_IID) || homegw_ipv6_in_64(dst, &rule->host);
}

#endif /* FIREWALL6_H */
