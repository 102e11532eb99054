"""The IO Module framework through BPF_PROG_TEST_RUN: chains, order, toggling,
slow path, pinning. Packets go in through the NIC's root program, exactly as
on the wire."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from homegw.dataplane.abi import MAX_MODULES, Hook, Nic
from homegw.dataplane.build import function_types
from homegw.dataplane.builds import BuildSpec, get_builds
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


# -- builds: compiled in a child, pinned, reused ----------------------------------------


def test_a_new_dataplane_reuses_the_pinned_builds(dataplane: Dataplane, stamps, pin_dir) -> None:
    dataplane.set_order(Nic.LAN, ["stampA", "stampB"])
    first = {name: loaded.bpf.program_id("stamp_xdp") for name, loaded in dataplane.modules.items()}
    root = dataplane._roots[Nic.LAN].program_id("homegw_root_xdp")
    dataplane.close()
    again = Dataplane(pin_dir, {})
    again.load()
    try:
        assert again._roots[Nic.LAN].reused
        assert again._roots[Nic.LAN].program_id("homegw_root_xdp") == root
        a, b = again.add_modules([StampModule("A", 16), StampModule("B", 17)])
        assert a.bpf.reused and b.bpf.reused
        assert {
            "stampA": a.bpf.program_id("stamp_xdp"),
            "stampB": b.bpf.program_id("stamp_xdp"),
        } == first
        # the chains the last "process" installed still run
        assert run_lan(again, udp_frame(b"....")).data == udp_frame(b"AB..")
    finally:
        again.close()


class Restamp(StampModule):
    """stampA with one more compile-time option: another build of stampA."""

    def defines(self) -> dict[str, int | str]:
        return {**super().defines(), "STAMP_UNUSED_OPTION": 1}


def test_a_changed_option_switches_in_a_new_build_and_prunes_the_old(
    dataplane: Dataplane, pin_dir: str
) -> None:
    old = dataplane.add_module(StampModule("A", 16))
    dataplane.set_order(Nic.LAN, ["stampA"])
    for _ in range(3):
        assert run_lan(dataplane, udp_frame(b"....")).data == udp_frame(b"A...")
    assert old.module.counter("stamped") == 3
    old_dir = old.bpf.build_dir
    dataplane.close()

    again = Dataplane(pin_dir, {})
    again.load()
    try:
        new = again.add_module(Restamp("A", 16))
        assert not new.bpf.reused and new.bpf.build_dir != old_dir
        # the private counter came over from the old build
        assert new.module.counter("stamped") == 3
        again.set_order(Nic.LAN, ["stampA"])
        assert run_lan(again, udp_frame(b"....")).data == udp_frame(b"A...")
        assert new.module.counter("stamped") == 4
        assert old_dir.exists()
        again.prune()
        assert not old_dir.exists() and new.bpf.build_dir.exists()
        assert run_lan(again, udp_frame(b"....")).data == udp_frame(b"A...")
    finally:
        again.close()


def test_a_pinned_map_of_another_capacity_is_migrated(pin_dir: str, tmp_path: Path) -> None:
    """A shared pin whose max_entries changed: a new map, the entries copied."""
    from bcc import BPF

    os.makedirs(pin_dir)
    old = BPF(text=f'BPF_TABLE_PINNED("hash", u32, u64, grown, 4, "{pin_dir}/grown");')
    old["grown"][ctypes.c_uint32(5)] = ctypes.c_uint64(55)
    old.cleanup()
    source = tmp_path / "src.bpf.c"
    source.write_text(
        '#include "homegw.h"\n'
        'BPF_TABLE_PINNED("hash", u32, u64, grown, 64, HOMEGW_PIN("grown"));\n'
        "int f(struct xdp_md *ctx) { u32 k = 0; grown.lookup(&k); return XDP_PASS; }\n"
    )
    try:
        [build] = get_builds([BuildSpec("grower", source, pin_dir)])
        table = build["grown"]
        assert table.max_entries == 64
        assert table[ctypes.c_uint32(5)].value == 55
        build.cleanup()
    finally:
        source.unlink()


def test_a_pinned_map_whose_type_changed_is_dropped(pin_dir: str, tmp_path: Path) -> None:
    os.makedirs(pin_dir)
    source = tmp_path / "src.bpf.c"
    text = (
        '#include "homegw.h"\nstruct v {{ {fields}; }};\n'
        'BPF_TABLE_PINNED("hash", u32, struct v, kept, 8, HOMEGW_PIN("kept"));\n'
        "int f(struct xdp_md *ctx) {{ u32 k = 0; kept.lookup(&k); return XDP_PASS; }}\n"
    )
    try:
        source.write_text(text.format(fields="u32 a; u32 b"))
        [first] = get_builds([BuildSpec("typed", source, pin_dir)])
        first["kept"][ctypes.c_uint32(1)] = first["kept"].Leaf(1, 2)
        first.cleanup()
        source.write_text(text.format(fields="u16 a; u16 b; u32 c"))  # same size, other layout
        [second] = get_builds([BuildSpec("typed", source, pin_dir)])
        assert len(second["kept"]) == 0  # not misread as (a, b, c)
        assert [f[0] for f in second["kept"].Leaf._fields_] == ["a", "b", "c"]
        second.cleanup()
    finally:
        source.unlink()


def test_program_types_come_from_the_context_argument() -> None:
    text = "int a(struct xdp_md *ctx) {}\nint b (struct __sk_buff *skb) {}\nstatic int c(int x) {}"
    assert function_types(text) == {"a": "xdp", "b": "tc"}


def test_a_punt_right_after_the_reader_starts_is_delivered(dataplane: Dataplane, stamps) -> None:
    """Each new reader (a restarted appliance) gets the punts sent at once:
    registering the rings with epoll must not swallow their first wakeup."""
    dataplane.set_order(Nic.LAN, ["stampA", "stampB"])
    for _ in range(10):
        reader = SlowPath(f"{dataplane.pin_dir}/slowpath")
        got = threading.Event()
        reader.register(16, REASON_PUNT, lambda _p, got=got: got.set())
        reader.start()
        try:
            assert (
                run_lan(dataplane, udp_frame(b"slow", dport=STAMP_PUNT_PORT)).verdict == "XDP_DROP"
            )
            assert got.wait(timeout=10), "punt never reached the new reader"
            assert reader.received == 1
        finally:
            reader.stop()


def test_a_failing_build_names_its_error_and_leaves_no_child(pin_dir: str, tmp_path: Path) -> None:
    def source(name: str, body: str) -> Path:
        path = tmp_path / f"{name}.bpf.c"
        path.write_text(f'#include "homegw.h"\nint {name}(struct xdp_md *ctx) {{ {body} }}\n')
        return path

    [first] = get_builds([BuildSpec("first", source("first", "return XDP_PASS;"), pin_dir)])
    first.cleanup()
    together = [
        BuildSpec("broken", source("broken", "return undefined_name;"), pin_dir),
        BuildSpec("fine", source("fine", "return XDP_DROP;"), pin_dir),
    ]
    with pytest.raises(LoadError, match=r"broken\.bpf\.c:2.*undefined_name"):
        get_builds(together)
    assert build_children(pin_dir) == []


def build_children(pin_dir: str) -> list[Path]:
    """Processes whose command line names pin_dir (build children)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if pin_dir.encode() in (proc / "cmdline").read_bytes():
                found.append(proc)
        except OSError:
            continue  # gone meanwhile
    return found
