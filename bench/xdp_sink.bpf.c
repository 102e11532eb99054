/* Packet sink for the benchmarks: counts IPv4/UDP frames and drops all. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>

// <0, frames received on this CPU>
BPF_PERCPU_ARRAY(sink_count, u64, 1);

int xdp_sink(struct xdp_md *ctx)
{
	u32 zero = 0;
	u64 *count = sink_count.lookup(&zero);

	if (count)
		*count += 1;
	return XDP_DROP;
}
