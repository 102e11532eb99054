/* dpi.h: the contract between the DPI module's datapath (dpi.bpf.c) and its
 * control side (maps.py mirrors every struct and constant here with ctypes;
 * keep both in step). Only dpi.bpf.c includes it: no other module reads
 * these maps.
 *
 * A flow is keyed from the LAN host's side whatever direction a packet
 * travels: on the LAN NIC (DPI first in the chain, before NAT) the source is
 * the LAN host; on the WAN NIC (DPI after NAT's reverse translation and the
 * router) the destination is.
 *
 * Per packet of a classified flow the datapath does one per-CPU array lookup
 * (dpi_flow_slots, or for a flow whose slot another holds the per-CPU hash
 * dpi_flows: its verdict and counters, on this CPU) and one array lookup
 * (dpi_policy_gen: has the policy changed since this copy's verdict?).
 */
#ifndef HOMEGW_DPI_H
#define HOMEGW_DPI_H

#ifndef DPI_MAX_FLOWS           /* a define may set it (the datapath tests fill a small table) */
#define DPI_MAX_FLOWS 65536
#endif
#ifndef DPI_SLOTS               /* per-CPU flow slots (a power of 2) */
#define DPI_SLOTS 16384
#endif
#if DPI_SLOTS >= 4              /* slots of a bucket: a key has two buckets (dpi_slot_at) */
#define DPI_WAYS 4
#else
#define DPI_WAYS DPI_SLOTS
#endif
#define DPI_BUCKETS (DPI_SLOTS / DPI_WAYS)
#if DPI_BUCKETS > 65536
#error "a key's two buckets are 16 bits of its hash each: at most 65536 buckets"
#endif
#define DPI_NO_SLOT 0xffffffff
#define DPI_MAX_DNS 65536     /* remote addresses attributed by DNS answers */
#define DPI_MAX_POLICY 16384  /* (device, app/category/all) policy entries */
#define DPI_PUNT_PACKETS 4    /* payload packets of a flow punted for classification, at most */
#ifndef DPI_PUNTS_PER_TICK    /* punts per CPU and HOMEGW_NEIGH_TICK_SHIFT tick (~1.07 s), at most */
#define DPI_PUNTS_PER_TICK 2000
#endif

#define DPI_APP_UNKNOWN 0     /* app id 0: not classified (yet) */
#define DPI_CATEGORY_UNKNOWN 0

/* Where a flow's verdict came from (struct dpi_flow.source), in the
 * issue's order of trust; also the index of the per-source counters. */
#define DPI_SOURCE_NONE 0
#define DPI_SOURCE_DNS 1       /* our DNS forwarder answered the device with this address */
#define DPI_SOURCE_SNI 2       /* TLS ClientHello server name */
#define DPI_SOURCE_HOST 3      /* HTTP Host header */
#define DPI_SOURCE_QUIC 4      /* QUIC Initial, decrypted: its ClientHello's server name */
#define DPI_SOURCE_SIGNATURE 5 /* fixed payload signature (STUN, WireGuard, SSH, ...) */
#define DPI_SOURCE_PORT 6      /* port only: a guess */
#define DPI_SOURCE_UNKNOWN 7   /* looked at, nothing matched */
#define DPI_SOURCES 8

/* struct dpi_flow.state. A zeroed per-CPU copy (the kernel makes the other
 * CPUs' copies zeroed when one CPU inserts) is DPI_STATE_NEW. */
#define DPI_STATE_NEW 0         /* this CPU has not looked at the flow yet */
#define DPI_STATE_CLASSIFYING 1 /* waiting for the slow path's verdict (dpi_classified) */
#define DPI_STATE_DONE 2        /* app known (or given up): one lookup per packet from now */

/* struct dpi_flow.verdict */
#define DPI_VERDICT_PASS 0
#define DPI_VERDICT_BLOCK 1

/* struct dpi_flow.flags */
#define DPI_FLOW_FIN 1          /* a FIN or RST was seen: the GC may remove it early */
#define DPI_FLOW_UNCOUNTED 2    /* no room in dpi_flows when it started (not used in the map) */

/* Policy entry kinds (struct dpi_policy_key.kind). Lookups for a flow, first
 * found wins: (mac, APP, app), (mac, CATEGORY, category), (mac, ALL, 0). */
#define DPI_POLICY_APP 1
#define DPI_POLICY_CATEGORY 2
#define DPI_POLICY_ALL 3        /* the whole device (a timed pause) */
#define DPI_POLICY_HOLD 4       /* (mac, HOLD, 0) -> DPI_ACTION_HOLD: the device has an
				 * app or category block, so the first punted packet of
				 * its TCP and UDP/443 flows waits for its verdict
				 * (dpi.bpf.c) */

/* Policy actions (the value of dpi_policy). */
#define DPI_ACTION_ALLOW 1      /* an "always allowed" exception */
#define DPI_ACTION_BLOCK 2
#define DPI_ACTION_HOLD 3       /* only with DPI_POLICY_HOLD */

/* Slow-path reasons (struct homegw_punt.reason; module id DPI_MODULE_ID). */
#define DPI_MODULE_ID 7
#define DPI_REASON_PAYLOAD 1    /* a payload packet of a classifying flow, LAN -> WAN;
				 * meta0 = its number in the flow (1..DPI_PUNT_PACKETS);
				 * the packet itself goes on (the punt is a copy), but
				 * a held one (DPI_POLICY_HOLD) is dropped */

struct dpi_flow_key {
	__be32 lan_addr;     /* the LAN host */
	__be32 remote_addr;
	__be16 lan_port;     /* TCP/UDP ports; 0 for other protocols */
	__be16 remote_port;
	__u8 proto;          /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];         /* always zero */
};

/* One CPU's copy of a flow. Counters are this CPU's; the control side sums
 * the copies. `mac` is the LAN device (homegw_devices' key form: 6 bytes and
 * 2 zero, as a u64), learnt from the frame's Ethernet source on the LAN and
 * its rewritten destination on the WAN (after the router); 0 when unknown. */
struct dpi_flow {
	__u64 mac;
	__u64 up_bytes;      /* LAN host -> remote */
	__u64 down_bytes;    /* remote -> LAN host */
	__u32 up_packets;
	__u32 down_packets;
	__u32 first_tick;    /* HOMEGW_NEIGH_TICK_SHIFT ticks (~1.07 s) of coarse monotonic time */
	__u32 last_tick;     /* written on change */
	__u32 policy_gen;    /* dpi_policy_gen value `verdict` was decided at */
	__u16 app;           /* DPI_APP_UNKNOWN until classified */
	__u8 category;
	__u8 source;         /* DPI_SOURCE_* */
	__u8 state;          /* DPI_STATE_* */
	__u8 verdict;        /* DPI_VERDICT_* */
	__u8 punted;         /* payload packets punted so far (on this CPU); once
			      * DPI_PUNT_PACKETS, also counts the packets since the
			      * last punt (dpi.bpf.c gives up after some) */
	__u8 flags;          /* DPI_FLOW_* */
};

/* A slot of dpi_flow_slots: a flow's per-CPU copy in one of the slots of
 * its two buckets (dpi_slot_at); key.proto 0: empty. The steady state's
 * lookups: array lookups the verifier inlines, where a hash-map lookup costs
 * 30-40 ns here. Two buckets of DPI_WAYS slots, a new flow taking the
 * emptier, leave almost no flow out: 0.03 % of 10,000 flows in 16,384 slots
 * (one slot per key: 25 %). A flow for which neither bucket has room on this
 * CPU lives in dpi_flows. */
struct dpi_slot {
	struct dpi_flow_key key;
	struct dpi_flow flow;
};

/* A key's hash (maps.py computes the same): a multiplicative hash of its
 * words as they sit in memory. */
static inline __u32 dpi_hash(const struct dpi_flow_key *key)
{
	__u32 ports = (__u32)key->lan_port | ((__u32)key->remote_port << 16);
	__u32 h = key->lan_addr * 0x9e3779b1u ^ key->remote_addr * 0x85ebca77u ^
		  ports * 0xc2b2ae3du ^ key->proto;

	h ^= h >> 15;
	h *= 0x2c1b3c6du;
	h ^= h >> 12;
	return h;
}

/* The index of slot `way` of a key's bucket `choice` (0: the hash's low 16
 * bits, 1: its high 16 bits). */
static inline __u32 dpi_slot_at(__u32 hash, int choice, int way)
{
	__u32 bits = choice ? hash >> 16 : hash;

	return (bits & (DPI_BUCKETS - 1)) * DPI_WAYS + way;
}

/* A flow's classification, written by the slow path (or the DNS answer's
 * attribution); read by a CLASSIFYING copy on each packet until found. */
struct dpi_class {
	__u16 app;
	__u8 category;
	__u8 source;         /* DPI_SOURCE_* */
};

/* What our DNS forwarder answered: the app of the name that resolved to a
 * remote address (the last name wins), until `expires_tick`. */
struct dpi_dns_entry {
	__u16 app;
	__u8 category;
	__u8 pad;
	__u32 expires_tick;  /* HOMEGW_NEIGH_TICK_SHIFT ticks of coarse monotonic time */
};

struct dpi_policy_key {
	__u64 mac;           /* as struct dpi_flow.mac */
	__u16 id;            /* app id (APP), category id (CATEGORY), 0 (ALL) */
	__u8 kind;           /* DPI_POLICY_* */
	__u8 pad[5];         /* always zero */
};

#endif /* HOMEGW_DPI_H */
