"""The user-module manager's pure parts: placing a module in a chain, finding
its program, the saved records, the audit log, and build refusals read in
the user's terms (clang and verifier texts as this machine's bcc prints them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homegw.control import ConfigRejected
from homegw.dataplane.builds import BuildLimit
from homegw.dataplane.loader import LoadError
from homegw.usermodules import audit as audit_mod
from homegw.usermodules.audit import AuditLog
from homegw.usermodules.compile import refusal
from homegw.usermodules.spec import ModuleUpload, name_problem
from homegw.usermodules.store import FIRST_ID, ModuleRecord, ModuleStore, free_module_id
from homegw.usermodules.uploads import placed, program_of, programs

SOURCE = Path("/state/user-modules/sources/abc.bpf.c")
CLANG = f"""user: cannot compile abc.bpf.c: Failed to compile BPF module <text>
In file included from <built-in>:2:
{SOURCE}:4:9: error: use of undeclared identifier 'nope'
        return nope;
               ^
1 error generated.
"""
VERIFIER = f"""user: verifier refused bad: Failed to load BPF program b'bad': Permission denied
bpf: Failed to load program: Permission denied
0: R1=ctx() R10=fp0
; {{ @ {SOURCE.name}:3
0: (bf) r6 = r1                       ; R1=ctx() R6=ctx()
; return x ? XDP_DROP : hgw_next_xdp(ctx); @ {SOURCE.name}:6
1: (61) r1 = *(u32 *)(r6 +0)          ; R1=pkt(r=0) R6=ctx()
; }} @ {SOURCE.name}:7
2: (61) r1 = *(u32 *)(r1 +100)
invalid access to packet, off=100 size=4, R1(id=0,off=100,r=0)
R1 offset is outside of the packet
processed 3 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("first", ["u", "dhcp", "router", "nat"]),
        ("last", ["dhcp", "router", "nat", "u"]),
        ("before:router", ["dhcp", "u", "router", "nat"]),
        ("after:router", ["dhcp", "router", "u", "nat"]),
        ("after:nat", ["dhcp", "router", "nat", "u"]),
        ("before:gone", ["u", "dhcp", "router", "nat"]),  # the anchor is not loaded now
        ("after:gone", ["dhcp", "router", "nat", "u"]),
    ],
)
def test_a_module_is_placed_where_its_position_says(position: str, expected: list[str]) -> None:
    assert placed(["dhcp", "router", "nat"], "u", position) == expected
    assert placed(["u", "dhcp", "router", "nat"], "u", position) == expected  # moved, once


def test_programs_are_the_non_static_functions_of_the_hooks_context() -> None:
    source = """#include "homegw_user.h"
static __always_inline int helper(struct xdp_md *ctx) { return 0; }
int
first(struct xdp_md *ctx) { return helper(ctx); }
int second(struct xdp_md* ctx) { return XDP_PASS; }
int egress(struct __sk_buff *skb) { return TC_ACT_OK; }
"""
    assert programs(source, "xdp_md") == ["first", "second"]
    assert programs(source, "__sk_buff") == ["egress"]


def upload(**fields) -> ModuleUpload:
    base = {"name": "m", "nic": "lan", "source": "int only(struct xdp_md *ctx) { return 2; }"}
    return ModuleUpload.model_validate({**base, **fields})


def test_the_program_to_chain_is_named_or_the_only_one() -> None:
    assert program_of(upload()) == "only"
    with pytest.raises(ConfigRejected) as refused:
        program_of(upload(hook="tc"))
    assert refused.value.problems[0].loc == "function"
    assert "none" in refused.value.problems[0].msg
    two = "int a(struct xdp_md *ctx) { return 2; }\nint b(struct xdp_md *ctx) { return 2; }"
    with pytest.raises(ConfigRejected, match="problem"):
        program_of(upload(source=two))
    assert program_of(upload(source=two, function="b")) == "b"
    with pytest.raises(ConfigRejected):
        program_of(upload(source=two, function="c"))


def test_names_of_builtin_modules_paths_and_builds_are_refused() -> None:
    for name in ("router", "nat", "order", "audit", "examples", "root_lan", "fragment"):
        assert name_problem(name), name
    assert name_problem("mac_blocklist") is None


def record(name: str, digest: str, **fields) -> ModuleRecord:
    base = dict(module_id=FIRST_ID, version=1, nic="lan", hook="xdp", position="first")
    return ModuleRecord(name=name, function="f", source_sha256=digest, **{**base, **fields})


def test_the_store_keeps_confirmed_records_in_order_and_their_sources(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    a = store.put_source("int a;")
    b = store.put_source("int b;")
    orphan = store.put_source("int c;")
    records = [
        record("a", a.name.removesuffix(".bpf.c"), maps=("blocked",), defines={"N": 3}),
        record("b", b.name.removesuffix(".bpf.c"), module_id=FIRST_ID + 1, enabled=False),
    ]
    trial = store.put_source("int t;")  # a version on trial, not saved yet
    store.save(records, frozenset({trial.name.removesuffix(".bpf.c")}))
    assert ModuleStore(tmp_path).load() == records
    assert trial.exists()  # running: another module's save keeps it
    assert not orphan.exists()  # no saved or running version uses it
    assert store.source(records[0]) == "int a;"
    b.unlink()
    assert [r.name for r in store.load()] == ["a"]  # b's source gone: left out, logged


def test_a_damaged_store_starts_without_user_modules(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    store.root.mkdir(parents=True)
    (store.root / "modules.json").write_text("{not json")
    assert store.load() == []
    (store.root / "modules.json").write_text(json.dumps({"modules": [{"name": "x"}]}))
    assert store.load() == []


def test_module_ids_are_the_lowest_free() -> None:
    assert free_module_id(set()) == FIRST_ID
    assert free_module_id({FIRST_ID, FIRST_ID + 2}) == FIRST_ID + 1


def test_the_audit_log_is_newest_first_bounded_and_survives_a_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    log = AuditLog(tmp_path / "audit.jsonl", lambda: now[0])
    log.record("upload", "a", 1, "192.168.1.11", "lan xdp first")
    now[0] += 1
    log.record("confirm", "a", 1, None)
    with open(tmp_path / "audit.jsonl", "a") as stream:
        stream.write('{"torn": ')
    entries = log.entries()
    assert [e["action"] for e in entries] == ["confirm", "upload"]
    assert entries[1] == {
        "time": 1000.0,
        "action": "upload",
        "module": "a",
        "version": 1,
        "caller": "192.168.1.11",
        "detail": "lan xdp first",
    }
    assert log.entries(limit=1)[0]["action"] == "confirm"
    monkeypatch.setattr(audit_mod, "MAX_BYTES", 2000)
    for i in range(40):
        log.record("map_set", "a", None, None, f"entry {i}")
    assert (tmp_path / "audit.jsonl").stat().st_size <= 2000 + 200
    assert log.entries(limit=1)[0]["detail"] == "entry 39"


def test_a_compile_error_names_the_uploaded_line() -> None:
    refused = refusal(LoadError(CLANG), SOURCE)
    assert (refused.stage, refused.line) == ("compile", 4)
    assert refused.message == "use of undeclared identifier 'nope'"


def test_a_verifier_refusal_gives_its_reason_and_the_last_line_it_walked() -> None:
    refused = refusal(LoadError(VERIFIER), SOURCE)
    assert refused.stage == "verifier"
    assert refused.line == 6  # the closing brace (line 7) says nothing
    assert refused.message == (
        "invalid access to packet, off=100 size=4, R1(id=0,off=100,r=0); "
        "R1 offset is outside of the packet"
    )
    assert "processed 3 insns" in refused.log


def test_limits_are_their_own_stage() -> None:
    assert refusal(BuildLimit("building m took over 60 s"), SOURCE).stage == "limit"
    memory = refusal(LoadError("LLVM ERROR: out of memory"), SOURCE)
    assert (memory.stage, memory.line) == ("limit", None)
