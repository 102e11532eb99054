"""The IO Module framework through BPF_PROG_TEST_RUN: chains, order, toggling,
slow path, pinning. Packets go in through the NIC's root program, exactly as
on the wire."""

from __future__ import annotations

import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import MAX_MODULES, Hook, Nic
from homegw.dataplane.chain import ChainError
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.loader import LoadError, compile_source
from homegw.dataplane.pinned import read_chain_stats
from homegw.dataplane.slowpath import Punt, SlowPath
from homegw.dataplane.testrun import prog_test_run
from tests.fixtures.stamp import REASON_PUNT, STAMP_PORT, STAMP_PUNT_PORT, StampModule

LAN_MAC, GW_MAC = "02:00:00:00:01:0b", "02:00:00:00:01:01"


def udp_frame(payload: bytes, dport: int = STAMP_PORT) -> bytes:
    frame = (
        Ether(src=LAN_MAC, dst=GW_MAC)
        / IP(src="192.168.1.11", dst="192.168.1.1", id=7)
        / UDP(sport=40000, dport=dport)
        / payload
    )
    return bytes(frame)


def run_lan(dp: Dataplane, frame: bytes):
    return prog_test_run(dp.root_fd(Nic.LAN, Hook.XDP), frame)


@pytest.fixture
def stamps(dataplane: Dataplane) -> tuple[StampModule, StampModule]:
    a, b = StampModule("A", 16), StampModule("B", 17)
    dataplane.add_module(a)
    dataplane.add_module(b)
    return a, b


def test_empty_chain_passes_packet_unchanged(dataplane: Dataplane) -> None:
    frame = udp_frame(b"....")
    result = run_lan(dataplane, frame)
    assert result.verdict == "XDP_PASS"
    assert result.data == frame


def test_modules_run_in_configured_order(dataplane: Dataplane, stamps) -> None:
    dataplane.set_order(Nic.LAN, ["stampA", "stampB"])
    result = run_lan(dataplane, udp_frame(b"...."))
    assert result.verdict == "XDP_PASS"
    # Exact bytes, UDP checksum included: scapy computes it for the expected frame.
    assert result.data == udp_frame(b"AB..")

    dataplane.set_order(Nic.LAN, ["stampB", "stampA"])
    assert run_lan(dataplane, udp_frame(b"....")).data == udp_frame(b"BA..")


def test_chains_are_per_nic(dataplane: Dataplane, stamps) -> None:
    dataplane.set_order(Nic.LAN, ["stampA"])
    dataplane.set_order(Nic.WAN, ["stampB", "stampA"])
    assert run_lan(dataplane, udp_frame(b"....")).data == udp_frame(b"A...")
    wan = prog_test_run(dataplane.root_fd(Nic.WAN, Hook.XDP), udp_frame(b"...."))
    assert wan.data == udp_frame(b"BA..")


def test_disable_and_enable_swap_only_that_module(dataplane: Dataplane, stamps) -> None:
    dataplane.set_order(Nic.LAN, ["stampA", "stampB"])
    dataplane.set_enabled("stampA", False)
    assert dataplane.chain_of(Nic.LAN, Hook.XDP) == ["stampB"]
    assert run_lan(dataplane, udp_frame(b"....")).data == udp_frame(b"B...")
    dataplane.set_enabled("stampA", True)
    assert run_lan(dataplane, udp_frame(b"....")).data == udp_frame(b"AB..")


def test_tc_chain_runs_modules_at_egress(dataplane: Dataplane, stamps) -> None:
    a, b = stamps
    dataplane.set_order(Nic.WAN, ["stampA", "stampB"])
    dataplane.set_enabled("stampB", False)
    result = prog_test_run(dataplane.root_fd(Nic.WAN, Hook.TC), udp_frame(b"...."), hook="tc")
    assert result.verdict == "TC_ACT_OK"
    assert (a.counter("tc_seen"), b.counter("tc_seen")) == (1, 0)


def test_root_counts_every_packet_in_a_pinned_map(dataplane: Dataplane, pin_dir: str) -> None:
    frame = udp_frame(b"....")
    for _ in range(3):
        run_lan(dataplane, frame)
    assert read_chain_stats(pin_dir, Nic.LAN, Hook.XDP) == (3, 3 * len(frame))
    assert read_chain_stats(pin_dir, Nic.WAN, Hook.XDP) == (0, 0)


def test_pinned_state_is_reused_by_a_new_dataplane(dataplane: Dataplane, pin_dir: str) -> None:
    run_lan(dataplane, udp_frame(b"...."))
    dataplane.close()
    again = Dataplane(pin_dir, {})
    again.load()
    try:
        assert again.chain_stats(Nic.LAN, Hook.XDP).packets == 1
        run_lan(again, udp_frame(b"...."))
        assert again.chain_stats(Nic.LAN, Hook.XDP).packets == 2
    finally:
        again.close()


def test_punt_reaches_the_modules_handler(dataplane: Dataplane, stamps) -> None:
    a, _ = stamps
    got = threading.Event()
    dataplane.slowpath.register(a.module_id, REASON_PUNT, lambda p: (a.punts.append(p), got.set()))
    dataplane.slowpath.start()
    dataplane.set_order(Nic.LAN, ["stampA", "stampB"])
    frame = udp_frame(b"slow", dport=STAMP_PUNT_PORT)
    result = run_lan(dataplane, frame)
    assert result.verdict == "XDP_DROP"
    assert got.wait(timeout=10), "punt never reached the handler"
    punt = a.punts[0]
    assert (punt.module, punt.reason, punt.pkt_len) == (16, REASON_PUNT, len(frame))
    assert punt.meta[0] == ord("A")
    assert punt.packet == frame


def test_malformed_slowpath_message_is_counted_not_raised(dataplane: Dataplane) -> None:
    slowpath = SlowPath(None)
    slowpath.dispatch(b"\x01\x02")
    assert (slowpath.received, slowpath.failed) == (1, 1)


def test_failing_handler_is_contained() -> None:
    slowpath = SlowPath(None)

    def boom(_punt: Punt) -> None:
        raise RuntimeError("handler bug")

    slowpath.register(16, 1, boom)
    header = bytes([16, 0, 1, 0]) + bytes(4) + (4).to_bytes(4, "little") + bytes(16)
    slowpath.dispatch(header + b"abcd")
    assert (slowpath.received, slowpath.failed) == (1, 1)


def test_too_many_modules_rejected(dataplane: Dataplane) -> None:
    chain = dataplane._chains[Hook.XDP]
    with pytest.raises(ChainError, match=f"at most {MAX_MODULES}"):
        chain.install(Nic.LAN, [0] * (MAX_MODULES + 1))


def test_compile_error_names_file_and_line(tmp_path, pin_dir: str) -> None:
    broken = tmp_path / "broken.bpf.c"
    broken.write_text('#include "homegw.h"\nint f(struct xdp_md *ctx) { return undefined_name; }\n')
    with pytest.raises(LoadError) as info:
        compile_source(broken, pin_dir=pin_dir)
    assert "broken.bpf.c:2" in str(info.value)
    assert "undefined_name" in str(info.value)
