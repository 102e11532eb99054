"""A user module's build child under its limits: a source that makes clang
work for minutes (a macro expanding to 262,144 statements) is stopped at the
time limit, and one that needs more memory than allowed is stopped too; a
normal module builds within the limits the manager sets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from homegw.dataplane.builds import BuildLimit, BuildLimits, BuildSpec, get_builds
from homegw.usermodules.module import COMPILE_LIMITS

BOMB = """#include "homegw_user.h"
#define A0 x = x * 3 + 1;
#define A1 A0 A0 A0 A0 A0 A0 A0 A0
#define A2 A1 A1 A1 A1 A1 A1 A1 A1
#define A3 A2 A2 A2 A2 A2 A2 A2 A2
#define A4 A3 A3 A3 A3 A3 A3 A3 A3
#define A5 A4 A4 A4 A4 A4 A4 A4 A4
#define A6 A5 A5 A5 A5 A5 A5 A5 A5
int bomb(struct xdp_md *ctx)
{
	volatile __u64 x = ctx->data;
	A6
	return x ? XDP_DROP : hgw_next_xdp(ctx);
}
"""
SMALL = """#include "homegw_user.h"
int small(struct xdp_md *ctx)
{
	hgw_count(0);
	return hgw_next_xdp(ctx);
}
"""


def spec(tmp_path: Path, pin_dir: str, text: str, limits: BuildLimits) -> BuildSpec:
    source = tmp_path / "m.bpf.c"
    source.write_text(text)
    return BuildSpec("m", source, pin_dir, 150, {}, sdk=True, limits=limits)


def test_the_build_child_is_stopped_at_its_time_limit(tmp_path: Path, pin_dir: str) -> None:
    started = time.monotonic()
    with pytest.raises(BuildLimit, match="took over 3 s"):
        get_builds([spec(tmp_path, pin_dir, BOMB, BuildLimits(timeout_s=3))])
    assert time.monotonic() - started < 3 + 5


def test_the_build_child_is_stopped_at_its_memory_limit(tmp_path: Path, pin_dir: str) -> None:
    limits = BuildLimits(timeout_s=60, memory_bytes=400 << 20)
    with pytest.raises(BuildLimit, match="400 MiB"):
        get_builds([spec(tmp_path, pin_dir, BOMB, limits)])


def test_a_normal_module_builds_within_the_managers_limits(tmp_path: Path, pin_dir: str) -> None:
    (build,) = get_builds([spec(tmp_path, pin_dir, SMALL, COMPILE_LIMITS)])
    try:
        assert set(build.manifest["programs"]) == {"small"}
        assert not build.manifest["maps"]["hgw_counters"]["shared"]
    finally:
        build.cleanup()
