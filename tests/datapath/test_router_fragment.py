"""Packets over the egress MTU without DF, through BPF_PROG_TEST_RUN: the
router marks them (HOMEGW_F_FRAGMENT), NAT after it translates them, and the
chain's end punts them to the dataplane's fragmenter instead of handing them
to the kernel (which would send them out untranslated)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.config import parse_config
from homegw.dataplane.abi import DATAPLANE_ID, REASON_FRAGMENT, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.modules.nat.module import NatModule
from homegw.modules.router.module import RouterModule
from tests.datapath.punts import PuntLog, one_cpu
from tests.datapath.router_kit import (
    CONFIG,
    ISP_MAC,
    WAN_GW_IP,
    WAN_IFINDEX,
    WAN_MAC,
    fake_nic,
    forwarded,
    lan_frame,
    load_router,
    run,
)

WAN_MTU = 1000


@pytest.fixture
def router(dataplane: Dataplane) -> Iterator[RouterModule]:
    with one_cpu():
        yield load_router(
            dataplane, CONFIG, iface_info=functools.partial(fake_nic, wan_mtu=WAN_MTU)
        )


def test_over_mtu_without_df_punted_whole_for_fragmenting(
    dataplane: Dataplane, router: RouterModule
) -> None:
    punts = PuntLog(dataplane, router, (DATAPLANE_ID, REASON_FRAGMENT))
    frame = lan_frame(size=1200)
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    [punt] = punts.drain()
    assert (punt.module, punt.reason, punt.meta[:2]) == (
        DATAPLANE_ID,
        REASON_FRAGMENT,
        (WAN_IFINDEX, Nic.WAN),
    )
    assert (punt.pkt_len, punt.packet) == (len(frame), forwarded(frame, WAN_MAC, ISP_MAC))
    assert router.stats()["counters"]["to_fragment"] == 1


def test_at_the_mtu_forwarded_as_usual(dataplane: Dataplane, router: RouterModule) -> None:
    frame = lan_frame(size=WAN_MTU - 28)
    result = run(dataplane, Nic.LAN, frame)
    assert (result.verdict, result.data) == ("XDP_REDIRECT", forwarded(frame, WAN_MAC, ISP_MAC))


def test_over_the_punt_cap_dropped_and_counted(dataplane: Dataplane, router: RouterModule) -> None:
    punts = PuntLog(dataplane, router, (DATAPLANE_ID, REASON_FRAGMENT))
    frame = lan_frame(size=1514 - 42 + 1)  # one byte over what a punt carries
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    assert punts.drain() == []
    counters = router.stats()["counters"]
    assert (counters["frag_too_big"], counters["to_kernel"]) == (1, 0)


def test_nat_translates_it_before_the_punt(dataplane: Dataplane, router: RouterModule) -> None:
    nat = NatModule(parse_config(CONFIG), run_gc=False)
    dataplane.add_module(nat)
    dataplane.set_order(Nic.LAN, ["router", "nat"])
    punts = PuntLog(dataplane, router, (DATAPLANE_ID, REASON_FRAGMENT))
    frame = lan_frame(size=1200)
    assert run(dataplane, Nic.LAN, frame).verdict == "XDP_DROP"
    [punt] = punts.drain()
    sent = Ether(punt.packet)
    assert (sent[IP].src, sent[IP].dst, sent[IP].ttl) == (WAN_GW_IP, "198.51.100.80", 63)
    assert sent[UDP].payload.load == b"x" * 1200
    resum = IP(bytes(sent[IP]))  # checksums as scapy computes them afresh
    del resum.chksum, resum[UDP].chksum
    rebuilt = IP(bytes(resum))
    assert (rebuilt.chksum, rebuilt[UDP].chksum) == (sent[IP].chksum, sent[UDP].chksum)
