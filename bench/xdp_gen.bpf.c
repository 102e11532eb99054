/* Traffic generator for the benchmarks, run with BPF_PROG_RUN in live-frames
 * mode: every run sends the template frame out of the generator's NIC
 * (XDP_TX) with its UDP source port cycling over FLOWS values. One run in
 * PACE is sent, the others dropped, to offer a steady lower rate. L3_LEN is
 * 20 (IPv4, UDP checksum 0: none) or 40 (IPv6: the template's UDP checksum,
 * made for source port BASE_PORT, is updated with the port, RFC 1624).
 *
 * Live-frame pages are recycled without being re-initialised, and the
 * gateway (veth) forwards in place in those very pages: TTL, MACs and
 * checksums come back changed. So every run writes the whole header again. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#ifndef L3_LEN
#define L3_LEN 20
#endif
#define HDR_LEN (14 + L3_LEN + 8) /* Ethernet + IPv4 or IPv6 + UDP */
#define BASE_PORT 10000

struct header {
	unsigned char bytes[HDR_LEN];
};

// <0, runs so far on this CPU>
BPF_PERCPU_ARRAY(gen_runs, u64, 1);
// <0, the frame's Ethernet + IPv4 + UDP header as it must leave>
BPF_ARRAY(gen_template, struct header, 1);

int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct udphdr *udp = data + sizeof(struct ethhdr) + L3_LEN;
	u32 zero = 0;
	u64 *runs = gen_runs.lookup(&zero);
	struct header *template = gen_template.lookup(&zero);

	if ((void *)(udp + 1) > end || !runs || !template)
		return XDP_DROP;
	u64 n = (*runs)++;
	if (PACE > 1 && n % PACE)
		return XDP_DROP;
	__builtin_memcpy(data, template->bytes, HDR_LEN);
	__u16 port = BASE_PORT + (n / PACE) % FLOWS;
	udp->source = htons(port);
	if (udp->check) {
		__u32 sum = (__u16)~udp->check + (__u16)~htons(BASE_PORT) + htons(port);
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		udp->check = ~sum;
	}
	return XDP_TX;
}
